"""Clock offsets of remote capture points, estimated from synthetic observations with known offsets."""

from __future__ import annotations

import json
import random
import re
from ipaddress import IPv4Address
from pathlib import Path

import numpy as np
import pytest

from tests.synth import TOPOLOGY, Scenario, build
from tracer.analysis.analyze import analyze
from tracer.analysis.clock import apply_offsets, correct_clocks, estimate
from tracer.capture.pcapfile import read_capture
from tracer.capture.pcapng_writer import write_pcapng
from tracer.model.observations import Observations, PacketClass
from tracer.model.path import expected_path
from tracer.model.probe import ProbeSpec
from tracer.model.tag import ProbeKind
from tracer.run.replay import load_run, replay_run
from tracer.topofile import load_topology

TOPO = load_topology(TOPOLOGY)
WEST, EAST = IPv4Address("192.0.2.10"), IPv4Address("198.51.100.10")
REQ = expected_path(TOPO, WEST, EAST, TOPO.nodes["west"])
REP = expected_path(TOPO, EAST, WEST, TOPO.nodes["east"])
RUN = 0x5EED0002
T0 = 1_700_000_000_000_000_000
US = 1_000


def observations(
    offsets: dict[str, int],
    count: int = 8,
    replies: bool = True,
    delay_us: tuple[int, int] = (20, 80),
    die_after: str | None = None,
    seed: int = 7,
) -> Observations:
    """Probes along the lab's paths; each node stamps with true time + its offset.

    Every hop adds a random delay (the same distribution both ways, as NTP assumes).
    ``die_after``: requests vanish after this point (so no replies either).
    """
    rng = random.Random(seed)
    points = TOPO.points()
    rows: list[dict[str, int]] = []
    esp_seq = {0: 0, 1: 0}
    for k in range(count):
        t = T0 + k * 200_000_000
        for d, path in enumerate((REQ, REP) if replies and die_after is None else (REQ,)):
            seq_here = None
            for hop in path.hops:
                t += rng.randint(*delay_us) * US
                row = {"ts_ns": t + offsets.get(hop.node, 0), "point": points.index(hop.point), "ipver": 4}
                if hop.esp is None:
                    row |= {"src": int(path.src), "dst": int(path.dst), "tag_kind": int(ProbeKind.PING), "tag_run": RUN,
                            "tag_seq": k, "cls": int(PacketClass.ECHO_REQUEST if d == 0 else PacketClass.ECHO_REPLY),
                            "proto": 1}
                else:
                    if seq_here is None:
                        esp_seq[d] += 1
                        seq_here = esp_seq[d]
                    row |= {"src": int(hop.esp.src), "dst": int(hop.esp.dst), "cls": int(PacketClass.ESP),
                            "spi": 0xC0000001 + d, "esp_seq": seq_here, "udp_encap": 1, "proto": 17}
                rows.append(row)
                if hop.point == die_after:
                    break
    obs = Observations.empty(len(rows), points)
    for name in obs.cols:
        values = [r.get(name, 0) for r in rows]
        obs.cols[name] = np.array(values, dtype=obs.cols[name].dtype)
    return obs


def _ms(note: str) -> float:
    """The offset a clock note states, in ms."""
    m = re.search(r"estimated at ([+-][0-9.]+) ms", note)
    assert m, note
    return float(m.group(1))


def test_two_way_recovers_a_known_offset() -> None:
    offset = 12_345_678  # east-gw's clock runs 12.3 ms ahead
    obs = observations({"east-gw": offset})
    (est,) = estimate(obs, [REQ, REP], ["east-gw"]).values()
    assert est.method == "two-way"
    # Wires to east-gw: router:eth1 → east-gw:wan0 (ESP, requests), east-gw:lan0 → east:eth0 (requests),
    # and the replies back; per-hop delays 20-80 µs, so the medians cancel to within tens of µs.
    assert abs(est.offset_ns - offset) < 30 * US
    assert est.forward == est.reverse == 2 * 8
    assert set(est.wires) == {"east-gw:wan0 ↔ router:eth1", "east-gw:lan0 ↔ east:eth0"}
    assert "clock of east-gw estimated at +12.3" in est.describe() and "both ways" in est.describe()


def test_negative_offset() -> None:
    offsets = {n: e.offset_ns for n, e in estimate(observations({"east-gw": -3_000_000_000}), [REQ, REP], ["east-gw"]).items()}
    assert abs(offsets["east-gw"] + 3_000_000_000) < 30 * US


def test_one_way_assumes_the_fastest_crossing_took_no_time() -> None:
    offset = 5_000_000
    # Requests die at east-gw:wan0 (decapsulation failed): only router:eth1 → east-gw:wan0 crossings.
    obs = observations({"east-gw": offset}, die_after="east-gw:wan0")
    (est,) = estimate(obs, [REQ, REP], ["east-gw"]).values()
    assert est.method == "one-way" and (est.forward, est.reverse) == (8, 0)
    # An upper bound: true offset + the fastest wire delay (20-80 µs here).
    assert offset + 20 * US <= est.offset_ns <= offset + 80 * US
    assert "one way only" in est.describe()


def test_one_way_reverse_only() -> None:
    # Replies alone cross into east-gw (east:eth0 → east-gw:lan0) and out of it
    # (east-gw:wan0 → router:eth1): both ways. Their ESP alone: out of it only.
    obs = observations({"east-gw": 7_000_000})
    rep_only = obs.select(obs["cls"] != PacketClass.ECHO_REQUEST)
    rep_only = rep_only.select(~((rep_only["cls"] == PacketClass.ESP) & (rep_only["spi"] == 0xC0000001)))
    (est,) = estimate(rep_only, [REQ, REP], ["east-gw"]).values()
    assert est.method == "two-way"  # the reply alone crosses into and out of east-gw
    assert abs(est.offset_ns - 7_000_000) < 30 * US
    only_out = rep_only.select(rep_only["cls"] == PacketClass.ESP)
    (est,) = estimate(only_out, [REQ, REP], ["east-gw"]).values()
    assert est.method == "one-way" and est.reverse == 8 and est.forward == 0
    assert 7_000_000 - 80 * US <= est.offset_ns <= 7_000_000 - 20 * US  # −min(rev): a lower bound


def test_apply_offsets_moves_only_that_nodes_points() -> None:
    obs = observations({"east-gw": 1_000_000})
    moved = apply_offsets(obs, TOPO, {"east-gw": 1_000_000})
    east_gw = np.isin(obs["point"], [obs.point_index(p) for p in obs.points if p.startswith("east-gw:")])
    assert np.array_equal(moved["ts_ns"][east_gw], obs["ts_ns"][east_gw] - 1_000_000)
    assert np.array_equal(moved["ts_ns"][~east_gw], obs["ts_ns"][~east_gw])
    assert moved["spi"] is obs["spi"]  # other columns are shared, not copied
    assert apply_offsets(obs, TOPO, {}) is obs


def test_corrected_clock_restores_the_order_along_the_path() -> None:
    obs = observations({"east-gw": -50_000_000})  # 50 ms behind: east-gw "sees" packets before router sent them
    fixed, notes = correct_clocks(obs, TOPO, [REQ, REP], ["east-gw"])
    for k in range(8):
        times = [int(fixed["ts_ns"][(fixed["point"] == fixed.point_index(h.point)) & (fixed["tag_seq"] == k)
                                     & (fixed["cls"] != PacketClass.ESP)].min())
                 for h in REQ.hops if h.esp is None]
        assert times == sorted(times)
    assert len(notes) == 1 and abs(_ms(notes[0]) + 50.0) < 0.03


def test_remote_nodes_behind_remote_nodes_are_estimated_in_turn() -> None:
    offsets = {"router": 2_000_000, "east-gw": -9_000_000}
    found = estimate(observations(offsets), [REQ, REP], ["router", "east-gw"])
    assert set(found) == {"router", "east-gw"}
    for node, off in offsets.items():
        assert abs(found[node].offset_ns - off) < 60 * US, node  # errors add up along the chain


def test_all_nodes_remote_uses_the_first_as_reference() -> None:
    offsets = {"west-gw": 1_000_000, "east": 4_000_000}
    nodes = ["west", "west-gw", "router", "east-gw", "east"]
    found = estimate(observations(offsets), [REQ, REP], nodes)
    assert set(found) == set(nodes) - {"west"}
    assert abs(found["east"].offset_ns - 4_000_000) < 120 * US
    assert "relative to west's clock" in found["east"].describe()


def test_no_shared_packets_means_unknown_and_untouched() -> None:
    obs = observations({"east-gw": 1_000_000})
    blind = obs.select(~np.isin(obs["point"], [obs.point_index("router:eth1"), obs.point_index("east:eth0")]))
    fixed, notes = correct_clocks(blind, TOPO, [REQ, REP], ["east-gw"])
    assert fixed is blind
    assert notes == ["clock of east-gw unknown: no packet was seen at both ends of a wire to it; its timestamps are "
                     "used as recorded (delays to and from it may be off)"]


def test_analyze_reports_and_corrects_the_offset() -> None:
    obs = observations({"east-gw": 3_000_000}, count=3)
    spec = ProbeSpec(RUN, ProbeKind.PING, WEST, EAST, "west", 3, remote_nodes=("east-gw",))
    v = analyze(TOPO, obs, spec)
    assert v.status.value == "delivered"
    (note,) = [w for w in v.warnings if w.startswith("clock of east-gw")]
    assert abs(_ms(note) - 3.0) < 0.03
    # Without the remote mark nothing is estimated (same verdict otherwise).
    plain = analyze(TOPO, obs, ProbeSpec(RUN, ProbeKind.PING, WEST, EAST, "west", 3))
    assert not any(w.startswith("clock of") for w in plain.warnings) and plain.status == v.status


def test_replay_takes_remote_nodes_from_the_manifest(tmp_path: Path) -> None:
    run = build(Scenario(), tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    offset = 250_000_000  # 250 ms ahead
    for c in manifest["captures"]:
        if c["point"].startswith("east-gw:"):
            c |= {"backend": "ssh", "remote": True}
            cap = read_capture(run / c["file"])
            recs = [(int(cap.ts_ns[i]) + offset, cap.frame(i), int(cap.wire_len[i])) for i in range(len(cap))]
            write_pcapng(run / c["file"], recs, if_name=c["point"], linktype=cap.interfaces[0].linktype, drops=0)
    (run / "manifest.json").write_text(json.dumps(manifest))
    (v,) = replay_run(load_run([run]))
    assert v.status.value == "delivered"
    (note,) = [w for w in v.warnings if w.startswith("clock of east-gw")]
    # synth.py spaces hops 40 µs apart both ways: two-way recovers the offset exactly.
    assert "estimated at +250.000 ms" in note and "both ways" in note


@pytest.mark.parametrize("remote", [(), ("nowhere",)])
def test_unknown_or_no_remote_nodes_change_nothing(remote: tuple[str, ...]) -> None:
    obs = observations({})
    fixed, notes = correct_clocks(obs, TOPO, [REQ, REP], remote)
    assert fixed is obs and notes == []
