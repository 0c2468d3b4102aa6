"""Capture files → capture points, whatever their names (tracer.run.capturemap): each rule, its
precedence, ambiguity and unused captures; and replay of renamed files giving the run's verdict."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import tracer.capture.forkmap as forkmap
import tracer.capture.observe as observe
import tracer.run.capturemap as capturemap
from tests.json_contract import validated
from tests.synth import POINTS, TOPOLOGY, Scenario, build
from tracer.capture.pcapfile import read_capture
from tracer.capture.pcapng_writer import write_pcapng
from tracer.cli import main
from tracer.errors import BadInput
from tracer.model.topology import Topology
from tracer.run.capturemap import Source, map_captures, read_points_file, split_name, stem
from tracer.run.replay import load_run, replay_run
from tracer.topofile import load_topology

TOPO = load_topology(TOPOLOGY)
LOOP = (b"\x00" * 12 + b"\x08\x00"  # Ethernet, as tcpdump -i lo writes it; an echo 127.0.0.1 → 127.0.0.1
        + bytes.fromhex("4500001c00010000400100007f0000017f000001") + bytes.fromhex("0800f7fe00010000"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run (west → east, the request lost inside west-gw between lan0 and ipsec0)."""
    return build(Scenario(drop_after={("request", "west-gw:lan0"): None}), tmp_path_factory.mktemp("map") / "run")


def frames(run_dir: Path, point: str) -> tuple[int, list[tuple[int, bytes, int]]]:
    cap = read_capture(run_dir / f"{point.replace(':', '_')}.pcapng")
    return cap.interfaces[0].linktype, [(int(cap.ts_ns[i]), cap.frame(i), int(cap.wire_len[i])) for i in range(len(cap))]


def write_pcap(path: Path, linktype: int, records: list[tuple[int, bytes, int]]) -> Path:
    """Classic pcap (no interface name at all), microseconds, like tcpdump -w."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for ts, data, wire in records:
            f.write(struct.pack("<IIII", ts // 10**9, ts % 10**9 // 1000, len(data), wire) + data)
    return path


def as_pcap(run_dir: Path, point: str, path: Path) -> Path:
    return write_pcap(path, *frames(run_dir, point))


def as_pcapng(run_dir: Path, point: str, path: Path, if_name: str) -> Path:
    linktype, recs = frames(run_dir, point)
    write_pcapng(path, recs, if_name=if_name, linktype=linktype)
    return path


def mapped(sources: list[Source], topo: Topology = TOPO) -> dict[str, tuple[str | None, str]]:
    return {m.label.rsplit("/", 1)[-1]: (m.point, m.how) for m in map_captures(sources, topo).mapping}


# --- rule 3: file names ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["west-gw:lan0.pcap", "west-gw__lan0.pcap", "west-gw_lan0.cap",
                                  "west-gw-lan0.pcapng", "west-gw_lan0.PCAP"])
def test_file_name_forms(run_dir, tmp_path, name):
    f = as_pcap(run_dir, "west-gw:lan0", tmp_path / name)
    assert mapped([Source(f)]) == {name: ("west-gw:lan0", "file name")}


def test_a_compressed_capture_says_so(run_dir, tmp_path):
    import gzip

    f = tmp_path / "west_eth0.pcap.gz"
    f.write_bytes(gzip.compress(as_pcap(run_dir, "west:eth0", tmp_path / "w.pcap").read_bytes()))
    with pytest.raises(BadInput) as e:
        map_captures([Source(f)], TOPO)
    assert str(e.value) == f"{f}: a gzip-compressed file: uncompress it first (gunzip -k {f})"


def test_file_name_splits_against_the_topology_names_with_separators_in_them():
    # "west-gw_ipsec0": '-' inside the node name; only the '_' split names a real interface.
    assert split_name("west-gw_ipsec0", TOPO) == (["west-gw:ipsec0"], [])
    assert split_name("west-gw-ipsec0", TOPO) == (["west-gw:ipsec0"], [])
    assert split_name("west-gw_lo", TOPO) == ([], ["west-gw:lo", "west:gw_lo"])
    assert stem("a/b/west_eth0.pcapng") == "west_eth0" and stem("x.cap") == "x"


def test_file_name_ambiguity_is_one_line_listing_the_candidates(run_dir, tmp_path):
    topo = Topology.from_dict({"nodes": {
        "a": {"role": "host", "interfaces": {"b_c": {"addresses": ["192.0.2.1/24"]}}},
        "a_b": {"role": "host", "interfaces": {"c": {"addresses": ["192.0.2.2/24"]}}},
    }, "links": [{"ends": ["a:b_c", "a_b:c"]}]})
    f = as_pcap(run_dir, "west:eth0", tmp_path / "a_b_c.pcap")
    with pytest.raises(BadInput) as e:
        map_captures([Source(f)], topo)
    assert str(e.value) == (f"{f}: file name 'a_b_c' is ambiguous: it names a:b_c and a_b:c "
                            "(map it with --point POINT=FILE)")
    assert "\n" not in str(e.value)
    # An explicit point settles it.
    assert mapped([Source(f, "a_b:c")], topo) == {"a_b_c.pcap": ("a_b:c", "option")}


# --- unused ----------------------------------------------------------------------------------------

def test_captures_of_interfaces_not_in_the_topology_are_unused_not_fatal(run_dir, tmp_path):
    lo = write_pcap(tmp_path / "west_lo.pcap", 1, [(1, LOOP, len(LOOP))])
    bare = write_pcap(tmp_path / "lo.pcap", 1, [(1, LOOP, len(LOOP))])
    empty = write_pcap(tmp_path / "nothing.pcap", 1, [])
    west = as_pcap(run_dir, "west:eth0", tmp_path / "west_eth0.pcap")
    run = map_captures([Source(lo), Source(bare), Source(empty), Source(west)], TOPO)
    why = {Path(m.file).name: (m.point, m.why) for m in run.mapping}
    assert why == {
        "west_lo.pcap": (None, "file name: west:lo is not an interface of the topology"),
        "lo.pcap": (None, "no topology subnet holds its addresses (127.0.0.1)"),
        "nothing.pcap": (None, "no packets"),
        "west_eth0.pcap": ("west:eth0", "'west_eth0'"),
    }
    assert run.seen.obs.points == ["west:eth0"]  # unused files add no point and no packet
    assert len(run.seen.obs) == len(read_capture(west))


def test_a_node_the_topology_lacks_is_unused_and_nothing_of_the_topology_is_an_error(run_dir, tmp_path):
    sw = as_pcapng(run_dir, "west:eth0", tmp_path / "capture.pcapng", "sw1:port3")
    west = as_pcap(run_dir, "west:eth0", tmp_path / "west_eth0.pcap")
    first = map_captures([Source(sw), Source(west)], TOPO).mapping[0]
    assert (first.point, first.why) == (None, "pcapng name 'sw1:port3': the topology has no node sw1")
    with pytest.raises(BadInput) as e:
        map_captures([Source(sw)], TOPO)
    assert str(e.value) == (f"no capture is of an interface of topology {TOPOLOGY}: {sw}: "
                            "pcapng name 'sw1:port3': the topology has no node sw1")


# --- rule 2: pcapng interface names, multi-interface split ----------------------------------------

def test_pcapng_name_beats_the_file_name(run_dir, tmp_path):
    f = as_pcapng(run_dir, "router:eth1", tmp_path / "west_eth0.pcapng", "router:eth1")
    assert mapped([Source(f)]) == {"west_eth0.pcapng": ("router:eth1", "pcapng name")}


def test_bare_pcapng_name_unique_in_topology_or_on_the_file_names_node(run_dir, tmp_path):
    f = as_pcapng(run_dir, "router:eth1", tmp_path / "capture.pcapng", "eth1")  # only router has eth1
    assert mapped([Source(f)]) == {"capture.pcapng": ("router:eth1", "pcapng name")}
    g = as_pcapng(run_dir, "east-gw:lan0", tmp_path / "east-gw.pcapng", "lan0")  # lan0: both gateways
    m = map_captures([Source(g)], TOPO).mapping[0]
    assert (m.point, m.how, m.why) == ("east-gw:lan0", "pcapng name", "'lan0' on node east-gw (file name)")


def test_pcapng_description_when_the_name_says_nothing(run_dir, tmp_path):
    """Windows dumpcap names an interface \\Device\\NPF_{GUID} and describes it: the description decides."""
    linktype, recs = frames(run_dir, "west-gw:lan0")

    def block(btype: int, body: bytes) -> bytes:
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    def opt(code: int, value: bytes) -> bytes:
        return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)

    idb = struct.pack("<HHI", linktype, 0, 262144) + opt(2, b"\\Device\\NPF_{5A1B}") + opt(3, b"west-gw:lan0") \
        + opt(9, b"\x09") + opt(0, b"")
    data = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + block(1, idb)
    for ts, frame, wire in recs:
        pad = frame + b"\0" * (-len(frame) % 4)
        data += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), wire) + pad)
    f = tmp_path / "capture.pcapng"
    f.write_bytes(data)
    run = map_captures([Source(f)], TOPO)
    assert [(m.point, m.how, m.why) for m in run.mapping] == [("west-gw:lan0", "pcapng description", "'west-gw:lan0'")]
    assert len(run.seen.obs) == len(recs) > 0


def test_multi_interface_pcapng_is_split_by_interface(run_dir, tmp_path):
    """mergecap (Wireshark's tool) keeps each input's interface: one file, three points, one unused."""
    parts = [as_pcapng(run_dir, "west-gw:lan0", tmp_path / "1.pcapng", "lan0"),
             as_pcapng(run_dir, "west-gw:ipsec0", tmp_path / "2.pcapng", "ipsec0"),
             as_pcapng(run_dir, "west-gw:wan0", tmp_path / "3.pcapng", "wan0")]
    lo = tmp_path / "4.pcapng"
    write_pcapng(lo, [(1, LOOP, len(LOOP))], if_name="lo", linktype=1)
    merged = tmp_path / "west-gw.pcapng"
    subprocess.run(["mergecap", "-w", merged, *parts, lo], check=True, capture_output=True)
    assert len(read_capture(merged).interfaces) == 4
    run = map_captures([Source(merged)], TOPO)
    assert [(m.label.rsplit("/", 1)[-1], m.point) for m in run.mapping] == [
        ("west-gw.pcapng#0 (lan0)", "west-gw:lan0"), ("west-gw.pcapng#1 (ipsec0)", "west-gw:ipsec0"),
        ("west-gw.pcapng#2 (wan0)", "west-gw:wan0"), ("west-gw.pcapng#3 (lo)", None)]
    obs = run.seen.obs
    for point in ("west-gw:lan0", "west-gw:ipsec0", "west-gw:wan0"):
        n = int((obs["point"] == obs.point_index(point)).sum())
        assert n == len(frames(run_dir, point)[1]), point


def test_an_interface_of_a_link_type_tracer_cannot_read_is_unused_unless_mapped(run_dir, tmp_path):
    west = as_pcapng(run_dir, "west:eth0", tmp_path / "1.pcapng", "eth0")
    usb = tmp_path / "2.pcapng"
    write_pcapng(usb, [(1, bytes(48), 48)], if_name="usbmon1", linktype=189)
    both = tmp_path / "west.pcapng"
    subprocess.run(["mergecap", "-w", both, west, usb], check=True, capture_output=True)
    run = map_captures([Source(both)], TOPO)
    assert [(m.point, m.why) for m in run.mapping] == [
        ("west:eth0", "'eth0' on node west (file name)"),
        (None, "pcapng name 'usbmon1' in a file of node west: west:usbmon1 is not an interface of the topology")]
    other = tmp_path / "capture.pcapng"  # named after no node: the link type is what says it
    named = as_pcapng(run_dir, "west:eth0", tmp_path / "3.pcapng", "west:eth0")
    subprocess.run(["mergecap", "-w", other, named, usb], check=True, capture_output=True)
    assert map_captures([Source(other)], TOPO).mapping[1].why == "link type 189, which tracer does not read"
    with pytest.raises(BadInput, match=r"unsupported link type 189 on interface usbmon1"):
        map_captures([Source(usb, "west:eth0")], TOPO)


@pytest.mark.parametrize("when", ["first file refused", "last file refused", "ctrl-c after the last head"])
def test_an_error_while_mapping_leaves_no_worker(run_dir, tmp_path, monkeypatch, when):
    """Cut short while mapping (a point on a link type tracer cannot read, or a Ctrl-C once
    every head is read): the workers forked to read the files are stopped and reaped, not left
    waiting for their turn (holding memory and the shared columns) nor as zombies."""
    monkeypatch.setattr(forkmap, "cores", lambda: 2)  # fork on a one-core machine too
    usb = tmp_path / "usb.pcapng"
    write_pcapng(usb, [(1, bytes(48), 48)], if_name="usbmon1", linktype=189)
    sources = [Source(as_pcap(run_dir, p, tmp_path / f"{p.replace(':', '_')}.pcap")) for p in ("west:eth0", "east:eth0")]
    monkeypatch.setattr(observe, "PARALLEL_FROM", 0)  # every read forks
    stop: type[BaseException] = BadInput
    if when == "first file refused":
        sources.insert(0, Source(usb, "west-gw:lan0"))
    elif when == "last file refused":
        sources.append(Source(usb, "west-gw:lan0"))
    else:
        def interrupted(decided: object) -> None:
            raise KeyboardInterrupt
        monkeypatch.setattr(capturemap, "_set_aside_merged", interrupted)
        stop = KeyboardInterrupt
    with pytest.raises(stop):
        map_captures(sources, TOPO)
    with pytest.raises(ChildProcessError):  # none running, none unreaped
        os.waitpid(-1, os.WNOHANG)


# --- rule 1: options and mapping files ------------------------------------------------------------

def test_option_beats_every_name_and_the_points_file(run_dir, tmp_path):
    f = as_pcapng(run_dir, "west:eth0", tmp_path / "east_eth0.pcapng", "east:eth0")
    assert mapped([Source(f, "west:eth0")]) == {"east_eth0.pcapng": ("west:eth0", "option")}
    (tmp_path / "points.toml").write_text('"west:eth0" = "east_eth0.pcapng"\n"router_eth0" = ["a.pcap", "b.pcap"]\n')
    assert read_points_file(tmp_path / "points.toml") == [
        ("west:eth0", tmp_path / "east_eth0.pcapng"), ("router_eth0", tmp_path / "a.pcap"),
        ("router_eth0", tmp_path / "b.pcap")]
    with pytest.raises(BadInput, match=r"^capture point 'nowhere:eth0' is not an interface of topology .*"
                       r" \(its nodes: west, west-gw, router, east-gw, east\)$"):
        map_captures([Source(f, "nowhere:eth0")], TOPO)


def test_bad_points_file_is_one_line(tmp_path):
    (tmp_path / "p.toml").write_text('"west:eth0" = 3\n')
    with pytest.raises(BadInput, match=r"'west:eth0' must be a file name or a list of file names$"):
        read_points_file(tmp_path / "p.toml")


# --- rule 4: content -------------------------------------------------------------------------------

def test_content_decides_only_when_one_interface_fits(tmp_path):
    run_dir = build(Scenario(), tmp_path / "run")  # all delivered: ESP on every wan hop
    # Both ends of a link share its subnet: the ESP between the gateways fits four interfaces.
    # Naming the others does not narrow it down (no guessing by elimination): unused, and said.
    named = [as_pcap(run_dir, p, tmp_path / f"{p.replace(':', '_')}.pcap") for p in POINTS if p != "router:eth1"]
    mystery = as_pcap(run_dir, "router:eth1", tmp_path / "mystery.pcap")
    loaded = load_run([*named, mystery], TOPOLOGY)
    m = loaded.mapping[-1]
    assert (m.point, m.how) == (None, "unused")
    assert m.candidates == ("east-gw:wan0", "router:eth0", "router:eth1", "west-gw:wan0")
    assert f"{mystery}: not used: its addresses fit several capture points (east-gw:wan0, router:eth0, " \
        "router:eth1, west-gw:wan0): map it with --point POINT=FILE" in loaded.warnings
    # A topology holding one end of the link only: the addresses name it.
    west_only = Topology.from_dict({"nodes": {
        "west": {"role": "host", "interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]},
                                                 "eth1": {"addresses": ["198.18.9.1/30"]}}},
        "far": {"role": "host", "interfaces": {"eth0": {"addresses": ["198.18.9.2/30"]}}},
    }, "links": [{"ends": ["west:eth1", "far:eth0"]}]})
    lan = as_pcap(run_dir, "west-gw:lan0", tmp_path / "lan.pcap")
    (m,) = map_captures([Source(lan)], west_only).mapping
    assert (m.point, m.how, m.why) == ("west:eth0", "content",
                                       "address 192.0.2.10 is on west:eth0's subnet, and on no other interface's")


def test_merged_capture_of_several_hops_is_named_as_such_not_offered_to_point_at(tmp_path):
    """mergecap of classic pcap files (or tcpdump -i any) is one interface holding several: the same
    packet at several TTLs says so; the hint is one file per interface, not --point (which would be wrong)."""
    run_dir = build(Scenario(), tmp_path / "run")
    linktype, a = frames(run_dir, "west-gw:wan0")
    assert linktype == 1  # Ethernet: the IPv4 header at 14, its TTL at 14 + 8
    # The same packets a router further on (TTL one lower): what mergecap of its capture adds.
    b = [(ts + 1000, data[:22] + bytes([data[22] - 1]) + data[23:], wire) for ts, data, wire in a]
    merged = write_pcap(tmp_path / "merged.pcap", linktype, sorted(a + b))
    with pytest.raises(BadInput, match=r"merged.pcap: it holds the same packets at several hops \(TTL 64 and 63\): "
                       r".* give tracer one capture file per interface$"):
        map_captures([Source(merged)], TOPO)
    # One hop's file alone is still only ambiguous, and --point stays the advice.
    one = write_pcap(tmp_path / "one.pcap", linktype, a)
    with pytest.raises(BadInput, match=r"one.pcap: its addresses fit several capture points .*: map it with --point "
                       r"POINT=FILE \(and 1 more\)$"):
        map_captures([Source(one), Source(merged)], TOPO)


def test_content_ignores_packets_that_crossed_a_router(run_dir, tmp_path):
    """A transit capture holds its flows' end addresses, not its link's: read by every address it
    would be placed on an end host's link. Only packets still carrying the TTL they were sent with
    say which link they are on; a capture without any is unused, said why (found on a hand-built
    network: dumpcap -i p1 on a router was placed on the first router's p1 by the source's subnet)."""
    west_only = Topology.from_dict({"nodes": {
        "west": {"role": "host", "interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]},
                                                 "eth1": {"addresses": ["198.18.9.1/30"]}}},
        "far": {"role": "host", "interfaces": {"eth0": {"addresses": ["198.18.9.2/30"]}}},
    }, "links": [{"ends": ["west:eth1", "far:eth0"]}]})
    linktype, recs = frames(run_dir, "west-gw:lan0")
    assert linktype == 1 and {data[22] for _, data, _ in recs} == {64}  # Ethernet; TTL at 14 + 8
    transit = write_pcap(tmp_path / "transit.pcap", linktype,
                         [(ts, data[:22] + bytes([62]) + data[23:], wire) for ts, data, wire in recs])
    m, lan = map_captures([Source(transit), Source(as_pcap(run_dir, "west-gw:lan0", tmp_path / "lan.pcap"))],
                          west_only).mapping
    assert (m.point, m.how) == (None, "unused") and (lan.point, lan.how) == ("west:eth0", "content")
    assert m.why.startswith("every IPv4 packet in it had crossed a router (TTL below 64, 128 or 255)")


# --- the whole replay ------------------------------------------------------------------------------

def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["replay", *map(str, args)])
    return code, out.getvalue()


def test_renamed_files_replay_to_the_run_directorys_verdict(run_dir, tmp_path):
    (want,) = replay_run(load_run([run_dir]))
    seps = ["_", "__", "-", "_"]
    files = [as_pcap(run_dir, p, tmp_path / f"{p.replace(':', seps[k % 4])}.pcap") for k, p in enumerate(POINTS)]
    lo = write_pcap(tmp_path / "west_lo.pcap", 1, [(1, LOOP, len(LOOP))])
    (got,) = replay_run(load_run([*files, lo], TOPOLOGY))
    assert (got.status, got.summary) == (want.status, want.summary)
    code, text = _cli("-t", TOPOLOGY, *files, lo)
    assert code == 1 and "lost inside west-gw between lan0 and ipsec0" in text
    assert "captures → capture points" in text
    assert re.search(r"/west_lo.pcap +unused: file name: west:lo is not an interface of the topology\n", text)
    code, out = _cli("-t", TOPOLOGY, *files[1:], "--point", f"west:eth0={files[0]}", "--json")
    full = validated(out)
    doc = full["runs"][0]
    assert code == 1 and doc["status"] == "loss"
    assert {m["point"]: m["how"] for m in full["capture_map"]}["west:eth0"] == "option"
    # A mapping file, for names no rule reads ("a.pcap", "b.pcap"):
    a, b = files[0].rename(tmp_path / "a.pcap"), files[1].rename(tmp_path / "b.pcap")
    (tmp_path / "points.toml").write_text('"west:eth0" = "a.pcap"\n"west-gw:lan0" = "b.pcap"\n')
    code, out = _cli("-t", TOPOLOGY, a, *files[2:], "--points", tmp_path / "points.toml", "--json")
    full = validated(out)
    assert (code, full["runs"][0]["summary"]) == (1, want.summary)
    assert [(m["file"], m["point"], m["how"]) for m in full["capture_map"] if m["how"] == "option"] == [
        (str(a), "west:eth0", "option"), (str(b), "west-gw:lan0", "option")]


def test_the_whole_path_in_one_mergecap_pcapng_replays_the_same(run_dir, tmp_path):
    merged = tmp_path / "whole-path.pcapng"
    subprocess.run(["mergecap", "-w", merged, *sorted(run_dir.glob("*.pcapng"))], check=True, capture_output=True)
    assert len(read_capture(merged).interfaces) == len(POINTS)
    (want,) = replay_run(load_run([run_dir]))
    loaded = load_run([merged], TOPOLOGY)
    assert {m.point for m in loaded.mapping} == set(POINTS) and {m.how for m in loaded.mapping} == {"pcapng name"}
    (got,) = replay_run(loaded)
    assert (got.status, got.summary, got.exit_code) == (want.status, want.summary, want.exit_code)


def test_a_folder_of_hand_named_captures_with_its_topology(run_dir, tmp_path):
    folder = tmp_path / "by-hand"
    folder.mkdir()
    for p in POINTS:
        as_pcap(run_dir, p, folder / f"{p.replace(':', '_')}.pcap")
    write_pcap(folder / "west_lo.pcap", 1, [(1, LOOP, len(LOOP))])
    (folder / "topology.toml").write_bytes(TOPOLOGY.read_bytes())
    (folder / "notes.txt").write_text("not a capture")
    code, text = _cli(folder)
    assert code == 1 and "lost inside west-gw between lan0 and ipsec0" in text
    assert re.search(r"west_lo.pcap +unused: file name: west:lo is not an interface of the topology\n", text)


def test_run_directory_output_has_no_mapping(run_dir):
    code, out = _cli(run_dir, "--json")
    assert code == 1
    assert "capture_map" not in validated(out)


def test_mergecap_is_there():
    assert shutil.which("mergecap"), "Wireshark's mergecap (bootstrap installs tshark, which brings it)"


@pytest.mark.parametrize(("name", "flow"), [("gw-forward-drop", None), ("esp-blocked", None), ("snat-east-gw", None),
                                          ("udp-gw-forward-drop", "udp")])
def test_forked_workers_read_hand_captures_as_this_process_does(name: str, flow: str | None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Hand captures (mapped by file name, some unused, untagged flows): read by forked workers
    (every replay forks when PARALLEL_FROM is 0) into the same mapping, rows and verdicts."""
    plain = Path(__file__).resolve().parents[2] / "captures" / "plain"
    files = sorted((plain / name).glob("*.pcap"))

    def replay() -> tuple[list, dict, list]:
        loaded = load_run(files, plain / "topology.toml")
        obs = loaded.observations
        return ([m.to_dict() for m in loaded.mapping], {k: v.tolist() for k, v in obs.cols.items()},
                [v.to_dict() for v in replay_run(loaded, flow=flow)])

    want = replay()
    monkeypatch.setattr(observe, "PARALLEL_FROM", 0)
    assert replay() == want
