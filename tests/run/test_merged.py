"""The merged run.pcapng: every point's packets in time order, interfaces named node:iface,
drop counts kept, each probe packet commented with what the verdict says about it — read
back by tshark (Wireshark's own reader) and by tracer's replay; and the Lua dissector for the
probe tag, run by tshark on recorded captures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP

from tests.analysis.test_extract import eth
from tests.capture.test_pcapng_writer import tshark_rows
from tests.cli.tracer_cmd import CAPTURES, ROOT, tracer
from tracer.capture import read_capture, write_pcapng
from tracer.model.tag import ProbeKind, ProbeTag
from tracer.run.manifest import RUN_PCAPNG
from tracer.run.merged import write_run_pcapng
from tracer.run.replay import load_run, replay_run

needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="needs tshark")
LUA = ROOT / "contrib" / "wireshark" / "tracer_tag.lua"


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(CAPTURES / name, tmp_path / name))


@needs_tshark
def test_merged_run_is_time_ordered_and_commented(tmp_path):
    run = _copy("mtu-blackhole", tmp_path)
    r = tracer("replay", run, "--write-pcapng")
    assert r.code == 1 and f"wrote {run / RUN_PCAPNG} (15 packets)" in r.err, r
    rows = tshark_rows(run / RUN_PCAPNG, "frame.time_epoch", "frame.interface_name", "frame.comment")
    assert len(rows) == 15
    times = [float(t) for t, _i, _c in rows]
    assert times == sorted(times)
    by_point = {(i, c.split(" ")[5]) : c for _t, i, c in rows}  # (point, seq) → comment
    # The router's eth0 is the last point that saw each request, and says so; earlier points
    # say where the probe was lost, and the ESP carrier names its SPI and ESP seq.
    assert by_point[("router:eth0", "0")] == (
        "tracer ping run 0xe2d9f17f seq 0 request (ESP SPI 0xf2837769 seq 1): last seen here: "
        "lost inside router between eth0 and eth1 (forward)")
    assert by_point[("west:eth0", "2")] == (
        "tracer ping run 0xe2d9f17f seq 2 request: lost inside router between eth0 and eth1 (forward)")
    assert sum("last seen here" in c for _t, _i, c in rows) == 3
    # Every point of the run is an interface, those that captured nothing too.
    points = {i.name for i in read_capture(run / RUN_PCAPNG).interfaces}
    assert len(points) == 10 and {"router:eth1", "east:eth0"} <= points


@needs_tshark
def test_delivered_probes_say_so_both_ways(tmp_path):
    run = _copy("all-delivered", tmp_path)
    assert tracer("replay", run, "--write-pcapng").code == 0
    comments = [c for (c,) in tshark_rows(run / RUN_PCAPNG, "frame.comment")]
    assert comments and all(c.endswith(": delivered") for c in comments)
    assert {c.split(" ")[6].rstrip(":") for c in comments} == {"request", "reply"}


def test_merged_file_replays_to_the_same_verdict_and_is_not_read_twice(tmp_path):
    run = _copy("gw-forward-drop", tmp_path)
    loaded = load_run([run])
    before = replay_run(loaded)
    write_run_pcapng(tmp_path / "merged.pcapng", loaded.observations, before, {"west-gw:lan0": 7})
    alone = replay_run(load_run([tmp_path / "merged.pcapng"], run / "topology.toml"))
    assert [v.summary for v in alone] == [v.summary for v in before]
    drops = {i.name: i.drops for i in read_capture(tmp_path / "merged.pcapng").interfaces}
    assert drops["west-gw:lan0"] == 7 and drops["west:eth0"] is None
    # In a run directory without manifest, a run.pcapng beside the per-point files is not
    # read as one more capture (every packet would be seen twice).
    (run / "manifest.json").unlink()
    shutil.copy(tmp_path / "merged.pcapng", run / RUN_PCAPNG)
    assert len(load_run([run], run / "topology.toml").observations) == len(loaded.observations)


def test_write_pcapng_needs_a_file_name_for_capture_files(tmp_path):
    f = CAPTURES / "gw-forward-drop" / "west_eth0.pcapng"
    r = tracer("replay", "-t", CAPTURES / "gw-forward-drop" / "topology.toml", f, "--write-pcapng")
    assert (r.code, r.out) == (2, "") and "--write-pcapng: name the FILE" in r.err
    r = tracer("replay", "-t", CAPTURES / "gw-forward-drop" / "topology.toml", f, "--write-pcapng", f)
    assert r.code == 2 and "would overwrite an input" in r.err


def _lua(capture: Path, *fields: str, filt: str = "tracer") -> list[list[str]]:
    return tshark_rows(capture, *fields, options=("-X", f"lua_script:{LUA}", "-Y", filt))


@needs_tshark
def test_lua_dissector_reads_echo_tags():
    rows = _lua(CAPTURES / "all-delivered" / "west_eth0.pcapng", "icmp.type", "tracer.kind", "tracer.run",
                "tracer.seq", "tracer.carrier", "tracer.quoted")
    assert rows == [[t, "1", "0x5349c591", str(q), "ICMP echo payload", "0"] for q in range(3) for t in ("8", "0")]


@needs_tshark
def test_lua_dissector_reads_ike_spi_tags_and_quotes():
    rows = _lua(CAPTURES / "dead-responder" / "router_eth0.pcapng", "icmp.type", "tracer.kind", "tracer.seq",
                "tracer.quoted", "tracer.carrier")
    probes = [r for r in rows if r[0] == ""]
    quotes = [r for r in rows if r[0] == "3"]
    assert probes and quotes
    assert {(r[1], r[3], r[4]) for r in probes} == {("2", "0", "IKE initiator SPI")}
    assert {(r[1], r[3]) for r in quotes} == {("2", "1")}
    assert {r[2] for r in quotes} <= {r[2] for r in probes}


@needs_tshark
def test_lua_dissector_filters_and_flags_a_bad_check(tmp_path):
    assert [r[0] for r in _lua(CAPTURES / "all-delivered" / "west_eth0.pcapng", "icmp.type",
                               filt="tracer.seq == 1")] == ["8", "0"]
    good = ProbeTag(0x1234ABCD, ProbeKind.MTU, 7).encode()
    bad = good[:15] + bytes([good[15] ^ 1])
    frames = [bytes(eth() / IP(src="192.0.2.1", dst="198.51.100.1") / ICMP(id=1, seq=7) / (tag + bytes(40)))
              for tag in (good, bad)]
    write_pcapng(tmp_path / "t.pcapng", [(i, f, len(f)) for i, f in enumerate(frames)], if_name="a:b", linktype=1)
    rows = _lua(tmp_path / "t.pcapng", "frame.number", "tracer.kind", "tracer.run", "tracer.seq", "_ws.expert.message")
    assert [r[:4] for r in rows] == [["1", "3", "0x1234abcd", "7"], ["2", "3", "0x1234abcd", "7"]]
    assert "check word" not in rows[0][4] and "tracer tag check word does not match" in rows[1][4]
