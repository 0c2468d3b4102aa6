"""Bad input to the real command line: exit 2, exactly one line on stderr saying what was wrong,
no traceback, nothing on stdout. A capture cut short after its header is not bad input: what
it holds is replayed and the cut is a warning."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from tests.cli.tracer_cmd import CAPTURES, TOPOLOGY, assert_bad_input, tracer

ALL_DELIVERED = CAPTURES / "all-delivered"


def test_nonexistent_capture(tmp_path: Path) -> None:
    missing = tmp_path / "west:eth0.pcapng"
    assert_bad_input(tracer("replay", "--topology", TOPOLOGY, missing), f"tracer: {missing}: no such capture file")


def test_directory_without_manifest_or_captures(tmp_path: Path) -> None:
    assert_bad_input(tracer("replay", tmp_path), f"tracer: {tmp_path}: no manifest.json and no .pcap/.pcapng files")


def test_directory_of_captures_without_manifest_needs_a_topology(tmp_path: Path) -> None:
    shutil.copy(ALL_DELIVERED / "west_eth0.pcapng", tmp_path)
    assert_bad_input(tracer("replay", tmp_path),
                     "tracer: no topology: pass --topology FILE (run directories carry their own)")


def test_bad_run_id() -> None:
    assert_bad_input(tracer("replay", ALL_DELIVERED, "--run", "zz"),
                     "tracer: run id 'zz' is not a number (like 0x1a2b3c4d)")


def test_run_id_not_in_the_captures() -> None:
    assert_bad_input(tracer("replay", ALL_DELIVERED, "--run", "0x1"), "tracer: run 0x1 not found in the captures")


def test_topology_not_found(tmp_path: Path) -> None:
    topo = tmp_path / "nope.toml"
    assert_bad_input(tracer("replay", "--topology", topo, ALL_DELIVERED / "west_eth0.pcapng"),
                     f"tracer: {topo}: topology file not found")


def test_topology_not_toml(tmp_path: Path) -> None:
    topo = tmp_path / "bad.toml"
    topo.write_text("nodes = [\n")
    assert_bad_input(tracer("replay", "--topology", topo, ALL_DELIVERED / "west_eth0.pcapng"),
                     f"tracer: {topo}: not valid TOML: Invalid value (at end of document)")


def test_capture_point_not_in_topology(tmp_path: Path) -> None:
    # The pcapng names its interface router:eth0; in this topology the router is called core.
    cap = shutil.copy(ALL_DELIVERED / "router_eth0.pcapng", tmp_path / "capture.pcapng")
    other = tmp_path / "other.toml"
    other.write_text(TOPOLOGY.read_text().replace("nodes.router", "nodes.core").replace('"router:', '"core:'))
    assert_bad_input(tracer("replay", "--topology", other, cap),
                     f"tracer: no capture is of an interface of topology {other}: {cap}: "
                     "pcapng name 'router:eth0': the topology has no node router")


def test_unknown_option() -> None:
    assert_bad_input(tracer("replay", ALL_DELIVERED, "--bogus"),
                     "tracer: unrecognized arguments: --bogus (see tracer --help)")


def test_unknown_command() -> None:
    assert_bad_input(tracer("trace", "west", "east"),
                     "tracer: argument COMMAND: invalid choice: 'trace' "
                     "(choose from 'replay', 'check', 'topology', 'ping', 'ike', 'mtu', 'watch', 'lab', 'plot', 'report') "
                     "(see tracer --help)")


def test_check_unknown_node() -> None:
    r = tracer("check", "-t", TOPOLOGY, "nosuch")
    assert r.code == 2 and r.out == "" and r.err.startswith(f"tracer: {TOPOLOGY}: no node 'nosuch' (nodes: ")


def test_garbage_file_as_capture(tmp_path: Path) -> None:
    cap = tmp_path / "west:eth0.pcap"
    cap.write_bytes(b"garbage!" * 64)
    assert_bad_input(tracer("replay", "--topology", TOPOLOGY, cap),
                     f"tracer: {cap}: not a pcap or pcapng file (starts with 67617262)")


def test_empty_file_as_capture(tmp_path: Path) -> None:
    cap = tmp_path / "west:eth0.pcap"
    cap.write_bytes(b"")
    assert_bad_input(tracer("replay", "--topology", TOPOLOGY, cap), f"tracer: {cap}: empty file (no capture header)")


# A classic pcap header, little-endian microseconds, Ethernet, as a sniffer writes it first.
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


def test_pcap_truncated_inside_its_header(tmp_path: Path) -> None:
    cap = tmp_path / "west:eth0.pcap"
    cap.write_bytes(PCAP_HEADER[:10])
    assert_bad_input(tracer("replay", "--topology", TOPOLOGY, cap),
                     f"tracer: {cap}: truncated pcap file header (10 of 24 bytes)")


def test_pcap_truncated_inside_its_first_record(tmp_path: Path) -> None:
    cap = tmp_path / "west:eth0.pcap"
    # Record header says 98 bytes captured; only 40 follow.
    cap.write_bytes(PCAP_HEADER + struct.pack("<IIII", 1_700_000_000, 0, 98, 98) + bytes(40))
    assert_bad_input(tracer("replay", "--topology", TOPOLOGY, cap),
                     f"tracer: {cap}: record 1 runs past end of file (record 1 at offset 24 needs 114 bytes, 56 left)")


def test_run_dir_whose_capture_lost_its_tail_still_replays(tmp_path: Path) -> None:
    # The last block of west_eth0.pcapng is the sniffer's statistics block, after every packet:
    # cut 10 bytes off it and the packets are all still there; the cut is one warning line.
    run = Path(shutil.copytree(ALL_DELIVERED, tmp_path / "run"))
    cap = run / "west_eth0.pcapng"
    cap.write_bytes(cap.read_bytes()[:-10])
    r = tracer("replay", run)
    assert (r.code, r.err) == (0, ""), r
    assert r.out.splitlines()[1] == "OK    3/3 echo requests delivered and answered (west → east)"
    warnings = [ln for ln in r.out.splitlines() if ln.startswith("warning: ")]
    assert warnings == [f"warning: {cap}: truncated after 6 records (block at offset 884 needs 40 bytes, 30 left)",
                        "warning: west_eth0.pcapng: ends without the statistics block its sniffer writes when it "
                        "stops (the manifest gives its drops): cut short, so what it lacks proves nothing"]
