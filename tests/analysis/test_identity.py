"""Untagged traffic: a plain ping or a UDP exchange, captured hop by hop without tracer's tag,
is told apart by its invariant fields and replayed through the one analysis to the right hop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synth import POINTS, TOPOLOGY, UNTAGGED_ID, Scenario, build
from tracer.analysis.analyze import analyze
from tracer.analysis.identity import untagged_flows
from tracer.errors import BadInput, NoTraffic
from tracer.model import flowfilter
from tracer.model.observations import Observations, PacketClass
from tracer.model.probe import ProbeSpec
from tracer.model.verdict import Outcome, Status
from tracer.run.replay import load_run, replay_run
from tracer.topofile import load_topology

ROOT = Path(__file__).resolve().parents[2]


def replay_files(sc: Scenario, tmp_path: Path, **kw):
    """Build the captures, then replay them as a person would: the files and a topology, no manifest."""
    run_dir = build(sc, tmp_path / "run")
    files = [run_dir / f"{p.replace(':', '_')}.pcapng" for p in POINTS if p not in sc.omit]
    return replay_run(load_run(files, TOPOLOGY), **kw)


def lost(v):
    return [(f.direction, f.where) for f in v.findings if f.outcome == Outcome.LOST]


def test_plain_ping_delivered(tmp_path):
    (v,) = replay_files(Scenario(untagged="echo"), tmp_path)
    assert v.status == Status.DELIVERED and v.kind == "ping"
    assert v.summary == "3/3 echo requests delivered and answered (west → east)"
    # ESP hops too: tied to the untagged echoes by (SPI, seq) at the encapsulating gateway.
    assert all(s == "seen" for t in v.probes for s in t.sightings)
    assert sorted({t.seq for t in v.probes}) == [1, 2, 3]  # ping's own sequence numbers
    assert v.flow == f"ICMP echo 192.0.2.10 → 198.51.100.10 id {UNTAGGED_ID} (untagged, by identifier and sequence)"
    assert v.to_dict()["flow"] == v.flow


def test_plain_ping_lost_inside_a_gateway(tmp_path):
    sc = Scenario(untagged="echo", drop_after={("request", "west-gw:lan0"): None})
    (v,) = replay_files(sc, tmp_path)
    assert v.status == Status.LOSS
    assert lost(v) == [("request", "inside west-gw between lan0 and ipsec0 (forward)")]


def test_plain_ping_reply_lost_on_esp_wire(tmp_path):
    sc = Scenario(untagged="echo", drop_after={("reply", "router:eth1"): {1}})
    (v,) = replay_files(sc, tmp_path)
    assert lost(v) == [("reply", "inside router between eth1 and eth0 (forward)")]
    assert next(f for f in v.findings if f.outcome == Outcome.LOST).seqs == (2,)


def test_capture_gap_is_not_loss(tmp_path):
    sc = Scenario(untagged="echo", gaps={("request", "west-gw:ipsec0", 0)})
    (v,) = replay_files(sc, tmp_path)
    assert v.status == Status.DELIVERED


def test_missing_capture_on_the_decisive_stretch_is_inconclusive(tmp_path):
    sc = Scenario(untagged="echo", drop_after={("request", "router:eth0"): None}, omit={"router:eth1"})
    (v,) = replay_files(sc, tmp_path)
    assert v.status == Status.INCONCLUSIVE


def test_udp_exchange_needs_a_flow_filter(tmp_path):
    sc = Scenario(untagged="udp", drop_after={("reply", "east-gw:lan0"): {2}})
    with pytest.raises(NoTraffic, match=r"^no traffic of interest in the captures: no tracer probe and no ICMP echo"):
        replay_files(sc, tmp_path)
    (v,) = replay_files(sc, tmp_path / "2", flow="udp and host west and port 53")
    assert v.kind == "flow" and v.status == Status.LOSS
    assert v.flow == "UDP 192.0.2.10:40000 → 198.51.100.10:53 (untagged, by IP ID, ports and first bytes)"
    # Every packet is a probe of its own: three queries there, two answers back (the third lost).
    f = next(f for f in v.findings if f.outcome == Outcome.LOST)
    assert (f.direction, f.where, f.count, f.total) == ("reply", "inside east-gw between lan0 and ipsec0 (forward)", 1, 3)
    there = [f for f in v.findings if f.direction == "request"]
    assert [(f.outcome, f.count, f.total) for f in there] == [(Outcome.DELIVERED, 3, 3)]


def test_udp_exchange_delivered(tmp_path):
    (v,) = replay_files(Scenario(untagged="udp"), tmp_path, flow="udp port 53".replace(" port", " and port"))
    assert v.status == Status.DELIVERED
    assert v.summary == "6/6 packets delivered (3 there, 3 back; west ↔ east)"


def test_packets_the_invariants_cannot_tell_apart_are_left_out(tmp_path):
    # IP ID 0 (Linux, unconnected UDP with DF) and one payload: numbered payloads tell them apart...
    (v,) = replay_files(Scenario(untagged="udp", udp_ipid=0), tmp_path, flow="udp and port 53")
    assert v.status == Status.DELIVERED and not any("left out" in w for w in v.warnings)
    # ...the same query three times does not: no guess, an inconclusive verdict that says why.
    sc = Scenario(untagged="udp", udp_ipid=0, udp_payload=b"same")
    (v,) = replay_files(sc, tmp_path / "2", flow="udp and port 53")
    assert v.status == Status.INCONCLUSIVE and v.exit_code == 3
    assert ("packets of the flow left out: 2 identities were each shared by several packets (same addresses, IP ID, "
            "ports and first bytes, or ICMP identifier and sequence)") in v.warnings


def test_udp_filter_also_selects_the_tunnel_between_the_gateways(tmp_path):
    vs = replay_files(Scenario(untagged="udp"), tmp_path, flow="udp")
    assert sorted(v.flow.split(" (")[0] for v in vs) == [
        "ESP-in-UDP 198.18.1.1:4500 → 198.18.2.1:4500", "UDP 192.0.2.10:40000 → 198.51.100.10:53"]
    assert all(v.status == Status.DELIVERED for v in vs)


def test_a_filter_that_selects_nothing_is_no_traffic(tmp_path):
    with pytest.raises(NoTraffic, match="nothing that --flow 'tcp' selects"):
        replay_files(Scenario(untagged="echo"), tmp_path, flow="tcp")


def test_flow_filter_words_are_checked(tmp_path):
    with pytest.raises(BadInput, match="unknown word 'hots'"):
        replay_files(Scenario(untagged="echo"), tmp_path, flow="icmp and hots west")
    with pytest.raises(BadInput, match="host 'mars' is neither a node of the topology nor an IPv4 address"):
        replay_files(Scenario(untagged="echo"), tmp_path / "2", flow="icmp and host mars")


def test_tagged_probes_win_unless_a_flow_is_asked_for(tmp_path):
    # Tagged runs replay as before; --flow traces the untagged traffic beside them instead.
    sc = Scenario(background=1)
    (v,) = replay_files(sc, tmp_path)
    assert v.flow is None and v.run == sc.run
    (u,) = replay_files(sc, tmp_path / "2", flow="udp and host west")
    assert u.kind == "flow" and u.flow.startswith("UDP 192.0.2.10:5000 → 198.51.100.10:9")


def test_esp_keys_identify_untagged_echoes_inside_the_tunnel(tmp_path):
    # Background in the SA within the gateway's encap time: without keys, which ESP packet carried
    # which echo is ambiguous and the loss between the gateways inconclusive; decrypted, the echo
    # inside (addresses, identifier, sequence) says it, and the loss is located.
    sc = Scenario(untagged="echo", esp_key=bytes(range(20)), background=2, background_offset_ns=20_000,
                  drop_after={("request", "router:eth0"): None})
    (v,) = replay_files(sc, tmp_path)
    assert v.status == Status.INCONCLUSIVE
    (v,) = replay_files(sc, tmp_path / "2", esp_keys=tmp_path / "run.esp_sa")
    assert lost(v) == [("request", "inside router between eth0 and eth1 (forward)")]
    assert "ESP decrypted with keys: 3 probe carriers identified by the tag inside" in v.notes


def test_a_udp_exchange_is_followed_across_a_nat_and_renumbered():
    # east-gw rewrites the query's source to its own address and port as it leaves lan0 (the
    # answer back the other way): one flow, the NAT side's packets numbered as the origin's.
    west, east, east_gw = 0xC000020A, 0xC633640A, 0xC6336401
    clear = ["west:eth0", "west-gw:lan0", "west-gw:ipsec0", "east-gw:ipsec0"]
    nat_side = ["east-gw:lan0", "east:eth0"]
    rows = []
    for k in range(3):
        t = 1_700_000_000_000_000_000 + k * 200_000_000
        query = {"ipid": 100 + k, "l4_hash": 7000 + k, "ip_len": 40, "cls": PacketClass.UDP, "proto": 17, "ipver": 4}
        answer = {"ipid": 900 + k, "l4_hash": 8000 + k, "ip_len": 41, "cls": PacketClass.UDP, "proto": 17, "ipver": 4}
        for h, p in enumerate(clear):
            rows.append(query | {"point": p, "ts_ns": t + h * 1000, "src": west, "dst": east, "sport": 40000, "dport": 53})
        for h, p in enumerate(nat_side):
            rows.append(query | {"point": p, "ts_ns": t + 5000 + h * 1000, "src": east_gw, "dst": east, "sport": 1024,
                                 "dport": 53})
        if k == 2:
            continue  # the last answer is lost inside east-gw, after the NAT undid nothing
        for h, p in enumerate(reversed(nat_side)):
            rows.append(answer | {"point": p, "ts_ns": t + 9000 + h * 1000, "src": east, "dst": east_gw, "sport": 53,
                                  "dport": 1024})
        for h, p in enumerate(reversed(clear)):
            rows.append(answer | {"point": p, "ts_ns": t + 12000 + h * 1000, "src": east, "dst": west, "sport": 53,
                                  "dport": 40000})
    points = clear + nat_side
    obs = Observations.empty(len(rows), points)
    for i, row in enumerate(rows):
        for key, value in row.items():
            obs.cols[key][i] = points.index(value) if key == "point" else value
    topo = load_topology(ROOT / "captures" / "plain" / "topology.toml")
    tagged, flows = untagged_flows(obs, topo, flowfilter.parse("udp"))
    (f,) = flows
    assert (str(f.src), f.sport, str(f.dst), f.dport, f.packets) == ("192.0.2.10", 40000, "198.51.100.10", 53, 5)
    assert f.nat == ("NAT at east-gw: the flow continues as UDP 198.51.100.1:1024 → 198.51.100.10:53 (followed by IP "
                     "ID and first bytes)",)
    # Both sides carry the same numbers: queries 0, 2, 4 and answers 1, 3.
    for p in points:
        at = tagged["point"] == points.index(p)
        assert sorted(tagged["tag_seq"][at].tolist()) == [0, 1, 2, 3, 4]
    v = analyze(topo, tagged, ProbeSpec(f.run, f.kind, f.src, f.dst, flow=f.text(), notes=f.nat))
    assert v.status == Status.DELIVERED  # 5 packets seen, each everywhere it was due; an unsent answer is no loss
