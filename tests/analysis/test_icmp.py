"""ICMP errors as evidence, offline: synthetic runs on the 5-node topology in which a node answers
the tagged probe (or the ESP that carries it) with "fragmentation needed" or "time exceeded",
replayed end to end; the verdict's diagnoses name the error, its sender, what it was about, the
next-hop MTU and each capture point that saw it. Errors about other runs or other traffic are
not evidence."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP

from tests.json_contract import one_run
from tests.synth import EAST, WEST, IcmpError, Scenario, build, icmp_error_bytes
from tracer.cli import main
from tracer.model.tag import ProbeKind, ProbeTag, icmp_id_for
from tracer.model.verdict import Outcome, Status, Verdict
from tracer.run.replay import load_run, replay_run

ROUTER_ETH0 = "198.18.1.254"  # router's address on the west-gw side
ROUTER_ETH1 = "198.18.2.254"  # router's address on the east-gw side
WEST_GW_LAN = "192.0.2.1"
# Where an error sent back towards west is captured, in order, from the router...
BACK_TO_WEST_GW = ("router:eth0", "west-gw:wan0")  # ... to west-gw (about ESP)
BACK_TO_WEST = ("router:eth0", "west-gw:wan0", "west-gw:lan0", "west:eth0")  # ... to west (about the cleartext)
BIG = {q: 1372 for q in range(3)}  # ICMP payload: 1400-byte IP packets
RUN = Scenario().run


def verdict(sc: Scenario, tmp_path: Path) -> Verdict:
    (v,) = replay_run(load_run([build(sc, tmp_path / "run")]))
    return v


def icmp_lines(v: Verdict) -> list[str]:
    return sorted(d for d in v.diagnoses if d.startswith("ICMP "))


def test_fragmentation_needed_about_the_probe(tmp_path: Path) -> None:
    # No SA (the probe leaks out wan0 in the clear) and the router's next hop has MTU 1280: the
    # router answers each 1400-byte DF probe with "fragmentation needed" quoting it, back to west.
    sc = Scenario(leak=True, sizes=BIG, df=True, drop_after={("request", "router:eth0"): None},
                  icmp_errors=[IcmpError("request", "router:eth0", ROUTER_ETH0, 3, 4, BACK_TO_WEST, mtu=1280)])
    v = verdict(sc, tmp_path)
    assert icmp_lines(v) == [  # one line per capture point, not one per probe
        "ICMP fragmentation needed from 198.18.1.254 about the probe, next-hop MTU 1280, seen at router:eth0",
        "ICMP fragmentation needed from 198.18.1.254 about the probe, next-hop MTU 1280, seen at west-gw:lan0",
        "ICMP fragmentation needed from 198.18.1.254 about the probe, next-hop MTU 1280, seen at west-gw:wan0",
        "ICMP fragmentation needed from 198.18.1.254 about the probe, next-hop MTU 1280, seen at west:eth0",
    ]
    # The quoted echo requests are not taken for replies coming back to west.
    assert [f.direction for f in v.findings] == ["request"]


def test_time_exceeded_about_the_probe(tmp_path: Path) -> None:
    sc = Scenario(leak=True, drop_after={("request", "router:eth0"): None},
                  icmp_errors=[IcmpError("request", "router:eth0", ROUTER_ETH0, 11, 0, BACK_TO_WEST)])
    v = verdict(sc, tmp_path)
    assert icmp_lines(v) == [
        "ICMP TTL exceeded from 198.18.1.254 about the probe, seen at router:eth0",
        "ICMP TTL exceeded from 198.18.1.254 about the probe, seen at west-gw:lan0",
        "ICMP TTL exceeded from 198.18.1.254 about the probe, seen at west-gw:wan0",
        "ICMP TTL exceeded from 198.18.1.254 about the probe, seen at west:eth0",
    ]


def test_gateway_tunnel_mtu_answers_with_fragmentation_needed(tmp_path: Path) -> None:
    # The healthy lab's ipsec0 has MTU 1400: west-gw answers a 1450-byte DF probe from its LAN side.
    sc = Scenario(sizes={q: 1422 for q in range(3)}, df=True, drop_after={("request", "west-gw:lan0"): None},
                  icmp_errors=[IcmpError("request", "west-gw:lan0", WEST_GW_LAN, 3, 4, ("west-gw:lan0", "west:eth0"),
                                         mtu=1400)])
    v = verdict(sc, tmp_path)
    assert v.summary == "3/3 echo requests lost inside west-gw between lan0 and ipsec0 (forward)"
    assert icmp_lines(v) == [
        "ICMP fragmentation needed from 192.0.2.1 about the probe, next-hop MTU 1400, seen at west-gw:lan0",
        "ICMP fragmentation needed from 192.0.2.1 about the probe, next-hop MTU 1400, seen at west:eth0",
    ]


def test_fragmentation_needed_about_the_esp_carrier(tmp_path: Path) -> None:
    # Inside the tunnel the router drops the ESP (1400 + tunnel overhead > 1280) and tells west-gw.
    sc = Scenario(sizes=BIG, df=True, drop_after={("request", "router:eth0"): None},
                  icmp_errors=[IcmpError("request", "router:eth0", ROUTER_ETH0, 3, 4, BACK_TO_WEST_GW, mtu=1280)])
    v = verdict(sc, tmp_path)
    assert (v.status, v.summary) == (Status.LOSS, "3/3 echo requests lost inside router between eth0 and eth1 (forward)")
    assert icmp_lines(v) == [
        "ICMP fragmentation needed from 198.18.1.254 about ESP, next-hop MTU 1280, seen at router:eth0",
        "ICMP fragmentation needed from 198.18.1.254 about ESP, next-hop MTU 1280, seen at west-gw:wan0",
    ]


def test_fragmentation_needed_about_the_reply_carrier(tmp_path: Path) -> None:
    # The reply's ESP (east-gw → west-gw) is answered by the router's east side.
    sc = Scenario(drop_after={("reply", "router:eth1"): None},
                  icmp_errors=[IcmpError("reply", "router:eth1", ROUTER_ETH1, 3, 4, ("router:eth1", "east-gw:wan0"),
                                         mtu=1280)])
    v = verdict(sc, tmp_path)
    assert v.summary == "echo requests delivered; 3/3 echo replies lost inside router between eth1 and eth0 (forward)"
    assert icmp_lines(v) == [
        "ICMP fragmentation needed from 198.18.2.254 about ESP, next-hop MTU 1280, seen at east-gw:wan0",
        "ICMP fragmentation needed from 198.18.2.254 about ESP, next-hop MTU 1280, seen at router:eth1",
    ]


def test_mtu_frag_needed_about_the_esp_carrier_is_still_a_blackhole_for_the_source(tmp_path: Path) -> None:
    # tracer mtu with sizes 1200 and 1300: the 1300-byte probe's ESP is too big for the router's
    # 1280-byte link, and the router says so — to west-gw, about the ESP packet. The source hears
    # nothing: from where the probes start that is a blackhole, and the router's message is named.
    sc = Scenario(kind=ProbeKind.MTU, count=2, sizes={0: 1172, 1: 1272}, df=True,
                  drop_after={("request", "router:eth0"): {1}},
                  icmp_errors=[IcmpError("request", "router:eth0", ROUTER_ETH0, 3, 4, BACK_TO_WEST_GW, mtu=1280,
                                         seqs=frozenset({1}))])
    v = verdict(sc, tmp_path)
    assert v.summary == ("path MTU 1200–1299 bytes: 1200-byte probes delivered, "
                         "1300-byte probes lost inside router between eth0 and eth1 (forward): a PMTUD blackhole")
    assert v.mtu is not None and (v.mtu.largest_delivered, v.mtu.smallest_lost) == (1200, 1300)
    assert [(f.node, f.next_hop_mtu, f.size, f.about, f.reached_source) for f in v.mtu.frag_needed] == [
        ("router", 1280, 1300, "esp", False)]
    assert [d for d in v.diagnoses if not d.startswith(("ICMP ", "the tunnel adds"))] == [
        "1300-byte probes vanish inside router between eth0 and eth1 (forward) while 1200-byte ones pass, and no "
        "ICMP 'fragmentation needed' reaches the source: a PMTUD blackhole (router (198.18.1.254) did send one "
        "(next-hop MTU 1280) about the ESP packet carrying it, to the tunnel gateway, seen at west-gw:wan0, "
        "router:eth0, and it went no further)"]
    assert icmp_lines(v) == [
        "ICMP fragmentation needed from 198.18.1.254 about ESP, next-hop MTU 1280, seen at router:eth0",
        "ICMP fragmentation needed from 198.18.1.254 about ESP, next-hop MTU 1280, seen at west-gw:wan0",
    ]


def test_mtu_run_without_icmp_is_a_blackhole(tmp_path: Path) -> None:
    sc = Scenario(kind=ProbeKind.MTU, count=2, sizes={0: 1172, 1: 1272}, df=True,
                  drop_after={("request", "router:eth0"): {1}})
    v = verdict(sc, tmp_path)
    assert icmp_lines(v) == []
    assert v.exit_code == 1 and v.mtu is not None and v.mtu.blackhole and not v.mtu.frag_needed
    assert v.diagnoses[0] == (
        "1300-byte probes vanish inside router between eth0 and eth1 (forward) while 1200-byte ones pass, and no "
        "ICMP 'fragmentation needed' reaches the source: a PMTUD blackhole (a link MTU below the packet size there, "
        "its ICMP errors filtered or never sent)")


def test_mtu_silence_after_an_error_that_reached_the_source_is_not_a_blackhole(tmp_path: Path) -> None:
    # west-gw (tunnel MTU 1400) answers the 1450-byte probe with 'fragmentation needed' and it
    # reaches west; the 1500-byte probe vanishes at the same place with no error (ICMP rate
    # limiting does this). PMTUD demonstrably works for one size: calling the run a blackhole
    # would contradict a packet at the source, so the verdict says it cannot decide.
    sc = Scenario(kind=ProbeKind.MTU, count=3, sizes={0: 1372, 1: 1422, 2: 1472}, df=True,
                  drop_after={("request", "west-gw:lan0"): {1, 2}},
                  icmp_errors=[IcmpError("request", "west-gw:lan0", WEST_GW_LAN, 3, 4, ("west-gw:lan0", "west:eth0"),
                                         mtu=1400, seqs=frozenset({1}))])
    v = verdict(sc, tmp_path)
    assert v.mtu is not None and not v.mtu.blackhole
    assert [(f.size, f.about, f.reached_source) for f in v.mtu.frag_needed] == [(1450, "probe", True)]
    assert v.status == Status.INCONCLUSIVE and v.exit_code == 3
    assert v.summary == ("path MTU 1400–1449 bytes: 1400-byte probes delivered, 1450-byte probes refused with ICMP "
                         "fragmentation needed from west-gw (192.0.2.1), next-hop MTU 1400; larger probes vanished "
                         "without ICMP: inconclusive")
    assert ("1500-byte probes vanished inside west-gw between lan0 and ipsec0 (forward) with no ICMP 'fragmentation "
            "needed' reaching the source, yet one about the 1450-byte probe did (ICMP fragmentation needed from "
            "west-gw (192.0.2.1), next-hop MTU 1400): ICMP errors rate-limited or lost, or a second limit — not "
            "called a PMTUD blackhole; inconclusive") in v.diagnoses
    assert not any("a PMTUD blackhole (" in d for d in v.diagnoses)


def test_mtu_every_size_refused_to_the_source_is_delivered(tmp_path: Path) -> None:
    # The same run with the error reaching west for both larger sizes: PMTUD working, exit 0.
    sc = Scenario(kind=ProbeKind.MTU, count=3, sizes={0: 1372, 1: 1422, 2: 1472}, df=True,
                  drop_after={("request", "west-gw:lan0"): {1, 2}},
                  icmp_errors=[IcmpError("request", "west-gw:lan0", WEST_GW_LAN, 3, 4, ("west-gw:lan0", "west:eth0"),
                                         mtu=1400, seqs=frozenset({1, 2}))])
    v = verdict(sc, tmp_path)
    assert v.mtu is not None and not v.mtu.blackhole and v.status == Status.DELIVERED
    assert not any("inconclusive" in d for d in v.diagnoses)


# --- hand-built errors: what is quoted decides whether it is evidence --------------------------------------------

def probe_quote(run: int, seq: int = 0) -> bytes:
    """The first 548 bytes of a tagged 1400-byte echo request from west to east, as a router quotes it."""
    tag = ProbeTag(run, ProbeKind.PING, seq).encode()
    return bytes(IP(src=WEST, dst=EAST, flags="DF") / ICMP(type=8, id=icmp_id_for(run), seq=seq) / (tag + bytes(1356)))[:548]


def error_run(tmp_path: Path, quoted: bytes, type_: int = 3, code: int = 4, mtu: int = 1280) -> Verdict:
    """A delivered run, plus one ICMP error from the router to west quoting ``quoted``, seen at west:eth0."""
    packet = icmp_error_bytes(ROUTER_ETH0, WEST, type_, code, quoted, mtu)
    v = verdict(Scenario(extra=[("west:eth0", 50_000_000, packet)]), tmp_path)
    assert v.status == Status.DELIVERED
    return v


def test_hand_built_error_quoting_our_probe(tmp_path: Path) -> None:
    v = error_run(tmp_path, probe_quote(RUN))
    assert icmp_lines(v) == [
        "ICMP fragmentation needed from 198.18.1.254 about the probe, next-hop MTU 1280, seen at west:eth0"]


def test_error_quoting_the_quote_of_eight_bytes_only(tmp_path: Path) -> None:
    # RFC 792 routers quote the IP header and only 8 bytes: the echo id ties it to the run.
    v = error_run(tmp_path, probe_quote(RUN)[:28])
    assert icmp_lines(v) == [
        "ICMP fragmentation needed from 198.18.1.254 about the probe, next-hop MTU 1280, seen at west:eth0"]


def test_error_about_another_runs_probe_is_ignored(tmp_path: Path) -> None:
    other = RUN ^ 0x00FF0000
    assert icmp_id_for(other) != icmp_id_for(RUN)
    assert icmp_lines(error_run(tmp_path, probe_quote(other))) == []


def test_error_about_other_traffic_is_ignored(tmp_path: Path) -> None:
    unrelated = bytes(IP(src=WEST, dst="203.0.113.7") / UDP(sport=5000, dport=53) / bytes(30))
    assert icmp_lines(error_run(tmp_path, unrelated)) == []


@pytest.mark.parametrize(
    ("type_", "code", "name"),
    [
        (3, 0, "net unreachable"),
        (3, 1, "host unreachable"),
        (3, 3, "port unreachable"),
        (3, 10, "host prohibited"),
        (3, 13, "administratively prohibited"),
        (3, 9, "type 3 code 9"),
        (12, 0, "type 12 code 0"),
    ],
)
def test_other_icmp_errors_are_named(tmp_path: Path, type_: int, code: int, name: str) -> None:
    v = error_run(tmp_path, probe_quote(RUN), type_, code, mtu=0)
    assert icmp_lines(v) == [f"ICMP {name} from 198.18.1.254 about the probe, seen at west:eth0"]


def test_cli_json_carries_the_icmp_diagnosis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sc = Scenario(sizes=BIG, df=True, drop_after={("request", "router:eth0"): None},
                  icmp_errors=[IcmpError("request", "router:eth0", ROUTER_ETH0, 3, 4, ("router:eth0",), mtu=1280)])
    run = build(sc, tmp_path / "run")
    assert main(["replay", str(run), "--json"]) == 1
    doc = one_run(capsys.readouterr().out)
    assert doc["diagnoses"] == [
        "ICMP fragmentation needed from 198.18.1.254 about ESP, next-hop MTU 1280, seen at router:eth0"]
    assert main(["replay", str(run)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "note: ICMP fragmentation needed from 198.18.1.254 about ESP, next-hop MTU 1280, seen at router:eth0" in out
    lost = [f for f in doc["findings"] if f["outcome"] == Outcome.LOST.value]
    assert [f["where"] for f in lost] == ["inside router between eth0 and eth1 (forward)"]
