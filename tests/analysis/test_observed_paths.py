"""Issue 9, "follow the probes where they really go", pinned on a network that is not the lab
(tests/analysis/netsite.py): hand-made observations → ``analyze`` → the verdict's status, each
finding's words, the probes' sightings on the expected path and their observed paths. Every
expected value is written by hand.

Request path h1 → h2 (``*``: ESP of tunnel t12, SPI 0x51000012 towards edge2)::

    0 h1:eth0  1 edge1:lan0  2 edge1:xfrm0  3 edge1:wan0*  4 core1:eth0*  5 core1:eth1*  6 edge2:wan0*  7 edge2:lan0  8 h2:eth0
        wire       forward       encap          wire          forward         wire          decap         wire

Reply path h2 → h1 (SPI 0x51000021 towards edge1)::

    0 h2:eth0  1 edge2:lan0  2 edge2:wan0*  3 core1:eth1*  4 core1:eth0*  5 edge1:wan0*  6 edge1:xfrm0  7 edge1:lan0  8 h1:eth0

Off the expected paths: core2 (routes both LANs), edge1:wan1, edge2:wan1, core1:eth2.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from tests.analysis.netsite import (
    ALL_POINTS,
    CORE1_ETH1,
    CORE1_ETH2,
    EDGE1_WAN,
    EDGE2_WAN,
    H1,
    H2,
    H3,
    HOP_NS,
    REPLY_EDGES,
    REPLY_HOPS,
    REQUEST_EDGES,
    REQUEST_HOPS,
    SPI_12,
    SPI_21,
    T0,
    US,
    T,
    echo,
    esp,
    observations,
    reply,
    request,
    spec,
    time_exceeded,
    topology,
)
from tracer.analysis.analyze import analyze
from tracer.model.direction import Direction
from tracer.model.observed import Divergence, Form, Loop, ObservedProbe, Place, Seen
from tracer.model.verdict import Finding, Outcome, ProbeTrace, Sighting, Status, Verdict

S, M, U, R, E, L = (Sighting.SEEN, Sighting.MISSED, Sighting.UNOBSERVED, Sighting.UNRELIABLE,
                    Sighting.ELSEWHERE, Sighting.LEAKED)
REQ, REP = Direction.REQUEST, Direction.REPLY
LOST, DELIVERED, INCONCLUSIVE = Outcome.LOST, Outcome.DELIVERED, Outcome.INCONCLUSIVE
CLEAR, ESP = Form.CLEAR, Form.ESP
EXPECTED, LEAK, OFF, UNMAPPED = Place.EXPECTED, Place.LEAK, Place.OFF_PATH, Place.UNMAPPED

NO_IKE_SA = ("no SA or policy on edge1 covered 198.18.1.10 → 198.18.2.10, which tunnel t12 should carry: "
             "is its IKE SA up? (swanctl --list-sas on edge1)")
NO_MANUAL_SA = ("no SA or policy on edge1 covered 198.18.1.10 → 198.18.2.10, which tunnel t12 should carry: "
                "are its SAs and policies installed? (ip xfrm state; ip xfrm policy on edge1)")
SA_UP_EDGE1 = ("tunnel t12's SAs were up (its ESP crossed the network during the run), yet edge1 sent "
               "198.18.1.10 → 198.18.2.10 around it: a route or policy rule that wins over the tunnel's "
               "(ip rule; ip route show table all on edge1)")
SA_UP_EDGE2 = ("tunnel t12's SAs were up (its ESP crossed the network during the run), yet edge2 sent "
               "198.18.2.10 → 198.18.1.10 around it: a route or policy rule that wins over the tunnel's "
               "(ip rule; ip route show table all on edge2)")
LEAK_EDGE1 = "left edge1 by wan0 in the clear instead of into xfrm0"  # device-based end: names its device
LEAK_EDGE2 = "left edge2 by wan0 in the clear instead of into tunnel t12"  # policy-based end: names the tunnel


def verdict(rows: list[dict[str, Any]], *, points: list[str] | None = None, keying: str = "ike",
            encapsulation: str = "esp", drops: dict[str, int] | None = None, src: IPv4Address = H1,
            dst: IPv4Address = H2) -> Verdict:
    return analyze(topology(keying, encapsulation), observations(rows, points), spec(1, src, dst), drops)


def only(v: Verdict, direction: Direction) -> Finding:
    mine = [f for f in v.findings if f.direction == direction]
    assert len(mine) == 1, v.findings
    return mine[0]


def trace(v: Verdict, direction: Direction, seq: int = 0) -> ProbeTrace:
    return next(t for t in v.probes if t.direction == direction and t.seq == seq)


def clear(point: str, h: int, ttl: int, place: Place, t: int = T0) -> Seen:
    """The echo in the clear at ``point``, h hops (10 µs each) after ``t``."""
    return Seen(point, t + h * HOP_NS, CLEAR, place, ttl)


def carried(point: str, h: int, place: Place, esp_seq: int = 101, *, reply_sa: bool = False, t: int = T0) -> Seen:
    """Its ESP carrier (TTL 64, plain ESP: ports 0) at ``point``, h hops after ``t``."""
    src, dst = (EDGE2_WAN, EDGE1_WAN) if reply_sa else (EDGE1_WAN, EDGE2_WAN)
    return Seen(point, t + h * HOP_NS, ESP, place, 64, (SPI_21 if reply_sa else SPI_12, esp_seq),
                (int(src), 0, int(dst), 0))


def went_nowhere_odd(v: Verdict) -> None:
    """A probe that went elsewhere is never a capture gap or a miss on its expected path."""
    for o in v.observed:
        t = trace(v, o.direction, o.seq)
        assert Sighting.GAP not in t.sightings and Sighting.MISSED not in t.sightings, t.sightings


REPLY_RTT = 500 * US  # netsite.reply(k) leaves h2 500 µs after the request left h1


# ---------------------------------------------------------------------------------------------
# 10. Everything as expected: no observed paths, no divergence.


def test_everything_on_the_expected_path_has_no_observed_path():
    v = verdict(request(0) + reply(0))
    assert [(h.point, "esp" if h.esp else "clear") for h in v.paths[REQ].hops] == REQUEST_HOPS
    assert [e.value for e in v.paths[REQ].edges] == REQUEST_EDGES
    assert [(h.point, "esp" if h.esp else "clear") for h in v.paths[REP].hops] == REPLY_HOPS
    assert [e.value for e in v.paths[REP].edges] == REPLY_EDGES
    assert v.status == Status.DELIVERED
    assert v.observed == ()
    assert v.findings == (
        Finding(REQ, DELIVERED, 1, 1, "delivered to h2", "h2:eth0", seqs=(0,)),
        Finding(REP, DELIVERED, 1, 1, "delivered to h1", "h1:eth0", seqs=(0,)),
    )
    assert trace(v, REQ).sightings == (S,) * 9 and trace(v, REP).sightings == (S,) * 9
    assert not any(line.startswith("diverged") for line in v.explanations())


# ---------------------------------------------------------------------------------------------
# 1. A cleartext leak that dies at the next router (core1 has no route to the LANs).


def leak_to_core1() -> list[dict[str, Any]]:
    """Request 0: h1, edge1:lan0, then out edge1:wan0 in the clear (TTL 63) into core1:eth0."""
    return [*request(0, [0, 1]), echo("edge1:wan0", T(0) + 3 * HOP_NS, 0, ttl=63),
            echo("core1:eth0", T(0) + 4 * HOP_NS, 0, ttl=63)]


@pytest.mark.parametrize(("keying", "cause"), [("ike", NO_IKE_SA), ("manual", NO_MANUAL_SA)])
def test_leak_dies_at_the_next_router(keying: str, cause: str):
    v = verdict(leak_to_core1(), keying=keying)
    assert v.status == Status.LOSS
    assert v.findings == (Finding(
        REQ, LOST, 1, 1, f"inside core1 after arriving on eth0, having {LEAK_EDGE1}", "core1:eth0", None, None,
        f"{cause}; likely: then core1 dropped it: it has no route to 198.18.2.10 (by the topology)", (0,), LEAK_EDGE1),)
    t = trace(v, REQ)
    assert t.sightings == (S, S, E, L, L, E, E, E, E)
    assert (t.outcome, t.last_seen, t.first_missed) == (LOST, 1, None)
    assert v.observed == (ObservedProbe(0, REQ, (
        clear("h1:eth0", 0, 64, EXPECTED), clear("edge1:lan0", 1, 64, EXPECTED),
        clear("edge1:wan0", 3, 63, LEAK), clear("core1:eth0", 4, 63, LEAK),
    ), Divergence("leak", "edge1:lan0", "edge1:wan0", LEAK_EDGE1)),)
    assert v.observed[0].path_text() == "h1:eth0 → edge1:lan0 → edge1:wan0 [clear, leak] → core1:eth0 [clear, leak]"
    assert v.summary == f"1/1 echo requests lost inside core1 after arriving on eth0, having {LEAK_EDGE1}"
    went_nowhere_odd(v)


@pytest.mark.parametrize("keying", ["ike", "manual"])
def test_leak_while_the_tunnels_esp_was_seen_says_the_sas_were_up(keying: str):
    # ESP of t12 (an earlier packet of the reply SA) crossed core1 during the run: its SAs were up,
    # so the leak is a route or rule winning over the tunnel, whatever keys it.
    rows = [*leak_to_core1(), esp("core1:eth1", T0 - 2000 * US, 7, reply=True), esp("edge1:wan0", T0 - 1990 * US, 7, reply=True)]
    f = only(verdict(rows, keying=keying), REQ)
    assert (f.outcome, f.where, f.divergence) == (LOST, f"inside core1 after arriving on eth0, having {LEAK_EDGE1}",
                                                  LEAK_EDGE1)
    assert f.reason == f"{SA_UP_EDGE1}; likely: then core1 dropped it: it has no route to 198.18.2.10 (by the topology)"


# ---------------------------------------------------------------------------------------------
# 3a. Asymmetric return: the replies leave edge2 (policy-based) in the clear and die at core1.


def test_replies_leak_at_the_far_gateway_and_die_at_the_router():
    rows = request(0) + reply(0, [0, 1]) + [echo("edge2:wan0", T(0) + REPLY_RTT + 2 * HOP_NS, 0, reply=True, ttl=63),
                                            echo("core1:eth1", T(0) + REPLY_RTT + 3 * HOP_NS, 0, reply=True, ttl=63)]
    v = verdict(rows)
    assert v.status == Status.LOSS
    assert v.findings == (
        Finding(REQ, DELIVERED, 1, 1, "delivered to h2", "h2:eth0", seqs=(0,)),
        Finding(REP, LOST, 1, 1, f"inside core1 after arriving on eth1, having {LEAK_EDGE2}", "core1:eth1", None, None,
                f"{SA_UP_EDGE2}; likely: then core1 dropped it: it has no route to 198.18.1.10 (by the topology)", (0,),
                LEAK_EDGE2),
    )
    assert trace(v, REQ).sightings == (S,) * 9
    t = trace(v, REP)
    assert t.sightings == (S, S, L, L, E, E, E, E, E)
    assert (t.outcome, t.last_seen, t.first_missed) == (LOST, 1, None)
    tr = T0 + REPLY_RTT
    assert v.observed == (ObservedProbe(0, REP, (
        clear("h2:eth0", 0, 64, EXPECTED, tr), clear("edge2:lan0", 1, 64, EXPECTED, tr),
        clear("edge2:wan0", 2, 63, LEAK, tr), clear("core1:eth1", 3, 63, LEAK, tr),
    ), Divergence("leak", "edge2:lan0", "edge2:wan0", LEAK_EDGE2)),)
    assert v.summary == f"echo requests delivered; 1/1 echo replies lost inside core1 after arriving on eth1, having {LEAK_EDGE2}"
    went_nowhere_odd(v)


# ---------------------------------------------------------------------------------------------
# 2. / 3c. A leak that still arrives (routers forward the cleartext after all): delivered, with the
# divergence and where it rejoined.


def test_request_leak_that_arrives_is_delivered_with_its_divergence():
    leaked = [echo("edge1:wan0", T(0) + 3 * HOP_NS, 0, ttl=63), echo("core1:eth0", T(0) + 4 * HOP_NS, 0, ttl=63),
              echo("core1:eth1", T(0) + 5 * HOP_NS, 0, ttl=62), echo("edge2:wan0", T(0) + 6 * HOP_NS, 0, ttl=62),
              echo("edge2:lan0", T(0) + 7 * HOP_NS, 0, ttl=61), echo("h2:eth0", T(0) + 8 * HOP_NS, 0, ttl=61)]
    v = verdict(request(0, [0, 1]) + leaked + reply(0))
    text = f"{LEAK_EDGE1}, and rejoined the expected path at edge2:lan0"
    assert v.status == Status.DELIVERED
    f = only(v, REQ)
    assert (f.outcome, f.count, f.where, f.divergence, f.seqs) == (DELIVERED, 1, "delivered to h2", text, (0,))
    assert only(v, REP) == Finding(REP, DELIVERED, 1, 1, "delivered to h1", "h1:eth0", seqs=(0,))
    assert trace(v, REQ).sightings == (S, S, E, L, L, L, L, S, S)
    assert trace(v, REQ).outcome == DELIVERED
    assert v.observed == (ObservedProbe(0, REQ, (
        clear("h1:eth0", 0, 64, EXPECTED), clear("edge1:lan0", 1, 64, EXPECTED),
        clear("edge1:wan0", 3, 63, LEAK), clear("core1:eth0", 4, 63, LEAK), clear("core1:eth1", 5, 62, LEAK),
        clear("edge2:wan0", 6, 62, LEAK), clear("edge2:lan0", 7, 61, EXPECTED), clear("h2:eth0", 8, 61, EXPECTED),
    ), Divergence("leak", "edge1:lan0", "edge1:wan0", text, "edge2:lan0")),)
    assert f"diverged (request): {text}" in v.explanations()
    went_nowhere_odd(v)


def test_reply_leak_that_arrives_is_delivered_with_its_divergence():
    tr = T(0) + REPLY_RTT
    leaked = [echo("edge2:wan0", tr + 2 * HOP_NS, 0, reply=True, ttl=63),
              echo("core1:eth1", tr + 3 * HOP_NS, 0, reply=True, ttl=63),
              echo("core1:eth0", tr + 4 * HOP_NS, 0, reply=True, ttl=62),
              echo("edge1:wan0", tr + 5 * HOP_NS, 0, reply=True, ttl=62),
              echo("edge1:lan0", tr + 7 * HOP_NS, 0, reply=True, ttl=61),
              echo("h1:eth0", tr + 8 * HOP_NS, 0, reply=True, ttl=61)]
    v = verdict(request(0) + reply(0, [0, 1]) + leaked)
    text = f"{LEAK_EDGE2}, and rejoined the expected path at edge1:lan0"
    assert v.status == Status.DELIVERED
    f = only(v, REP)
    assert (f.outcome, f.where, f.divergence) == (DELIVERED, "delivered to h1", text)
    # edge1:xfrm0 (decap) is where the reply would have come out of the tunnel: it went elsewhere.
    assert trace(v, REP).sightings == (S, S, L, L, L, L, E, S, S)
    assert [(s.point, s.place) for s in v.observed[0].seen] == [
        ("h2:eth0", EXPECTED), ("edge2:lan0", EXPECTED), ("edge2:wan0", LEAK), ("core1:eth1", LEAK),
        ("core1:eth0", LEAK), ("edge1:wan0", LEAK), ("edge1:lan0", EXPECTED), ("h1:eth0", EXPECTED)]
    assert v.observed[0].divergence == Divergence("leak", "edge2:lan0", "edge2:wan0", text, "edge1:lan0")
    assert f"diverged (reply): {text}" in v.explanations()
    went_nowhere_odd(v)


# ---------------------------------------------------------------------------------------------
# 3b. Asymmetric return through another router: edge2 sends the replies out wan1 in the clear,
# core2 routes them to edge1:wan1, and they arrive.


def replies_through_core2() -> list[dict[str, Any]]:
    tr = T(0) + REPLY_RTT
    return request(0) + reply(0, [0, 1]) + [
        echo("edge2:wan1", tr + 2 * HOP_NS, 0, reply=True, ttl=63),
        echo("core2:eth1", tr + 3 * HOP_NS, 0, reply=True, ttl=63),
        echo("core2:eth0", tr + 4 * HOP_NS, 0, reply=True, ttl=62),
        echo("edge1:wan1", tr + 5 * HOP_NS, 0, reply=True, ttl=62),
        echo("edge1:lan0", tr + 7 * HOP_NS, 0, reply=True, ttl=61),
        echo("h1:eth0", tr + 8 * HOP_NS, 0, reply=True, ttl=61)]


def test_replies_through_another_router_arrive():
    v = verdict(replies_through_core2())
    assert v.status == Status.DELIVERED
    f = only(v, REP)
    assert (f.outcome, f.count, f.total, f.where, f.seqs) == (DELIVERED, 1, 1, "delivered to h1", (0,))
    assert f.divergence is not None and f.divergence.startswith("left edge2 by wan1 ")
    assert f.divergence.endswith(", and rejoined the expected path at edge1:lan0")
    assert trace(v, REP).sightings == (S, S, E, E, E, E, E, S, S)
    (o,) = v.observed
    tr = T0 + REPLY_RTT
    assert o.seen == (
        clear("h2:eth0", 0, 64, EXPECTED, tr), clear("edge2:lan0", 1, 64, EXPECTED, tr),
        clear("edge2:wan1", 2, 63, OFF, tr), clear("core2:eth1", 3, 63, OFF, tr), clear("core2:eth0", 4, 62, OFF, tr),
        clear("edge1:wan1", 5, 62, OFF, tr), clear("edge1:lan0", 7, 61, EXPECTED, tr),
        clear("h1:eth0", 8, 61, EXPECTED, tr))
    assert (o.divergence.kind, o.divergence.after, o.divergence.at, o.divergence.rejoined) == (
        "off-path", "edge2:lan0", "edge2:wan1", "edge1:lan0")
    assert o.path_text() == ("h2:eth0 → edge2:lan0 → edge2:wan1 [clear, off-path] → core2:eth1 [clear, off-path] → "
                             "core2:eth0 [clear, off-path] → edge1:wan1 [clear, off-path] → edge1:lan0 → h1:eth0")
    went_nowhere_odd(v)


def test_replies_through_another_router_name_the_policy_gateways_real_exit():
    f = only(verdict(replies_through_core2()), REP)
    assert f.divergence == "left edge2 by wan1 instead of wan0, and rejoined the expected path at edge1:lan0"


def test_requests_through_another_router_name_the_tunnel_device_they_skipped():
    # The same on the way out: edge1 (device-based) sends the request out wan1 in the clear.
    rows = [*request(0, [0, 1]),
            echo("edge1:wan1", T(0) + 3 * HOP_NS, 0, ttl=63), echo("core2:eth0", T(0) + 4 * HOP_NS, 0, ttl=63),
            echo("core2:eth1", T(0) + 5 * HOP_NS, 0, ttl=62), echo("edge2:wan1", T(0) + 6 * HOP_NS, 0, ttl=62),
            echo("edge2:lan0", T(0) + 7 * HOP_NS, 0, ttl=61), echo("h2:eth0", T(0) + 8 * HOP_NS, 0, ttl=61), *reply(0)]
    v = verdict(rows)
    assert v.status == Status.DELIVERED
    f = only(v, REQ)
    assert (f.outcome, f.where, f.divergence) == (
        DELIVERED, "delivered to h2", "left edge1 by wan1 instead of xfrm0, and rejoined the expected path at edge2:lan0")
    assert trace(v, REQ).sightings == (S, S, E, E, E, E, E, S, S)


def test_a_diverted_probe_that_arrived_was_last_seen_at_its_destination():
    v = verdict(replies_through_core2())
    assert (trace(v, REP).outcome, trace(v, REP).last_seen) == (DELIVERED, 8)
    assert only(v, REP).last_seen == "h1:eth0"


# ---------------------------------------------------------------------------------------------
# 4. A routing loop: the leaked request bounces between core1 and core2 on their eth2 link until
# its TTL runs out; core1 sends ICMP time exceeded quoting it.


def looping_request() -> list[dict[str, Any]]:
    rows = leak_to_core1()
    # core1 sends it out eth2 with TTL 62, core2 sends it back with 61, core1 out again with 60, ...
    # each pass seen on both ends of the link; TTL 1 arrives at core1, which gives up.
    t = T(0) + 5 * HOP_NS
    for ttl in range(62, 0, -1):
        first, second = ("core1:eth2", "core2:eth2") if ttl % 2 == 0 else ("core2:eth2", "core1:eth2")
        rows += [echo(first, t, 0, ttl=ttl), echo(second, t + 1 * US, 0, ttl=ttl)]
        t += HOP_NS
    return [*rows, time_exceeded("core1:eth2", t, 0, CORE1_ETH2)]


def test_routing_loop_between_two_routers():
    v = verdict(looping_request())
    loop_text = ("routing loop between core1 and core2: seen 62 times on core1:eth2, TTL 62→1, "
                 "ICMP time exceeded from 203.0.113.1")
    assert v.status == Status.LOSS
    assert v.findings == (Finding(
        REQ, LOST, 1, 1, "in a routing loop between core1 and core2", "core1:eth2", None, None,
        f"{NO_IKE_SA}; {loop_text}", (0,), LEAK_EDGE1),)
    t = trace(v, REQ)
    assert t.sightings == (S, S, E, L, L, E, E, E, E)
    assert (t.outcome, t.last_seen, t.first_missed) == (LOST, 1, None)
    (o,) = v.observed
    assert o.loop == Loop(("core1", "core2"), "core1:eth2", 62, 62, 1, "203.0.113.1")
    assert o.divergence == Divergence("leak", "edge1:lan0", "edge1:wan0", LEAK_EDGE1)
    assert len(o.seen) == 4 + 2 * 62
    assert o.seen[4:8] == (
        Seen("core1:eth2", T0 + 5 * HOP_NS, CLEAR, OFF, 62), Seen("core2:eth2", T0 + 5 * HOP_NS + US, CLEAR, OFF, 62),
        Seen("core2:eth2", T0 + 6 * HOP_NS, CLEAR, OFF, 61), Seen("core1:eth2", T0 + 6 * HOP_NS + US, CLEAR, OFF, 61))
    assert o.path_text() == ("h1:eth0 → edge1:lan0 → edge1:wan0 [clear, leak] → core1:eth0 [clear, leak] → "
                             "core1:eth2 [clear, off-path] → core2:eth2 [clear, off-path] → ⟲ core1:eth2")
    assert "note: ICMP TTL exceeded from 203.0.113.1 about the probe, seen at core1:eth2" in v.explanations()
    went_nowhere_odd(v)


def test_loop_without_an_icmp_error_says_no_sender():
    rows = [r for r in looping_request() if r["cls"] != 5]  # no ICMP error captured
    f = only(verdict(rows), REQ)
    assert f.reason == f"{NO_IKE_SA}; routing loop between core1 and core2: seen 62 times on core1:eth2, TTL 62→1"


# ---------------------------------------------------------------------------------------------
# 5. A detour inside the topology: core1 sends the ESP out eth2 (to core2) instead of eth1.


def detour_request(*, to_core2: bool = True) -> list[dict[str, Any]]:
    rows = [*request(0, range(5)), esp("core1:eth2", T(0) + 5 * HOP_NS, 101)]
    return rows + ([esp("core2:eth2", T(0) + 6 * HOP_NS, 101)] if to_core2 else [])


def test_detour_dies_at_the_off_path_router():
    v = verdict(detour_request())
    assert v.status == Status.LOSS
    assert v.findings == (Finding(
        REQ, LOST, 1, 1, "inside core2 after arriving on eth2, having left core1 by eth2 instead of eth1",
        "core2:eth2", None, None, "likely: then core2 dropped it: it has no route to 198.51.100.1 (by the topology)", (0,),
        "left core1 by eth2 instead of eth1"),)
    t = trace(v, REQ)
    assert t.sightings == (S, S, S, S, S, E, E, E, E)
    assert (t.outcome, t.last_seen, t.first_missed) == (LOST, 4, None)
    assert t.esp[3:7] == ((SPI_12, 101),) * 4
    assert v.observed == (ObservedProbe(0, REQ, (
        clear("h1:eth0", 0, 64, EXPECTED), clear("edge1:lan0", 1, 64, EXPECTED), clear("edge1:xfrm0", 2, 63, EXPECTED),
        carried("edge1:wan0", 3, EXPECTED), carried("core1:eth0", 4, EXPECTED),
        carried("core1:eth2", 5, OFF), carried("core2:eth2", 6, OFF),
    ), Divergence("off-path", "core1:eth0", "core1:eth2", "left core1 by eth2 instead of eth1")),)
    assert v.observed[0].path_text() == ("h1:eth0 → edge1:lan0 → edge1:xfrm0 → edge1:wan0 → core1:eth0 → "
                                         "core1:eth2 [esp, off-path] → core2:eth2 [esp, off-path]")
    went_nowhere_odd(v)


def test_reply_detour_dies_at_the_off_path_router():
    tr = T(0) + REPLY_RTT
    rows = request(0) + reply(0, range(4)) + [esp("core1:eth2", tr + 4 * HOP_NS, 201, reply=True),
                                              esp("core2:eth2", tr + 5 * HOP_NS, 201, reply=True)]
    v = verdict(rows)
    f = only(v, REP)
    assert f == Finding(REP, LOST, 1, 1, "inside core2 after arriving on eth2, having left core1 by eth2 instead of eth0",
                        "core2:eth2", None, None, "likely: then core2 dropped it: it has no route to 192.0.2.1 (by the topology)",
                        (0,), "left core1 by eth2 instead of eth0")
    assert trace(v, REP).sightings == (S, S, S, S, E, E, E, E, E)
    assert [(s.point, s.form, s.place) for s in v.observed[0].seen[2:]] == [
        ("edge2:wan0", ESP, EXPECTED), ("core1:eth1", ESP, EXPECTED), ("core1:eth2", ESP, OFF), ("core2:eth2", ESP, OFF)]
    assert v.observed[0].seen[2] == carried("edge2:wan0", 2, EXPECTED, 201, reply_sa=True, t=T0 + REPLY_RTT)


def test_detour_lost_on_the_wire_it_took():
    # Seen leaving core1 by eth2, never at core2:eth2 (captured): lost on that wire.
    v = verdict(detour_request(to_core2=False))
    assert v.findings == (Finding(
        REQ, LOST, 1, 1, "on the wire core1:eth2 → core2:eth2, having left core1 by eth2 instead of eth1",
        "core1:eth2", "core2:eth2", "wire", "likely: left core1:eth2 but never arrived at core2:eth2", (0,),
        "left core1 by eth2 instead of eth1"),)
    assert trace(v, REQ).sightings == (S, S, S, S, S, E, E, E, E)


def test_leak_detoured_to_a_router_that_routes_it_is_lost_in_that_router():
    # The leaked request goes core1 → core2 (which routes 198.18.2.0/24 out eth1) and dies there.
    rows = [*leak_to_core1(), echo("core1:eth2", T(0) + 5 * HOP_NS, 0, ttl=62), echo("core2:eth2", T(0) + 6 * HOP_NS, 0, ttl=62)]
    v = verdict(rows)
    assert v.findings == (Finding(
        REQ, LOST, 1, 1, f"inside core2 between eth2 and eth1 (forward), having {LEAK_EDGE1}", "core2:eth2",
        "core2:eth1", "forward",
        f"{NO_IKE_SA}; likely: core2 did not forward it from eth2 to eth1: firewall (forward chain), rp_filter or routing",
        (0,), LEAK_EDGE1),)
    assert trace(v, REQ).sightings == (S, S, E, L, L, E, E, E, E)
    assert [s.place for s in v.observed[0].seen] == [EXPECTED, EXPECTED, LEAK, LEAK, OFF, OFF]


# ---------------------------------------------------------------------------------------------
# 6. A stale topology: a capture point on core1 the topology does not have.


def test_interface_the_topology_lacks_is_inconclusive_and_blames_no_hop():
    rows = [*request(0, range(5)), esp("core1:eth9", T(0) + 5 * HOP_NS, 101)]
    v = verdict(rows, points=[*ALL_POINTS, "core1:eth9"])
    text = "left core1 by eth9, which the topology does not have (expected: eth1)"
    assert v.status == Status.INCONCLUSIVE
    assert v.findings == (Finding(
        REQ, INCONCLUSIVE, 1, 1, f"somewhere after core1:eth9, having {text}", "core1:eth9", None, None,
        "it left by core1:eth9, which has no link in the topology: where it leads was not captured", (0,), text),)
    # No hop that forwarded the probe is blamed: not core1's expected forward edge, nor the wire after it.
    for f in v.findings:
        assert f.outcome != LOST
        assert "between eth0 and eth1" not in f.where and "core1:eth1 →" not in f.where
    t = trace(v, REQ)
    assert t.sightings == (S, S, S, S, S, E, E, E, E)
    assert (t.outcome, t.last_seen, t.first_missed) == (INCONCLUSIVE, 4, None)
    assert v.observed[0].seen[-1] == carried("core1:eth9", 5, UNMAPPED)
    assert v.observed[0].divergence == Divergence("not-in-topology", "core1:eth0", "core1:eth9", text)
    assert v.observed[0].path_text().endswith("core1:eth0 → core1:eth9 [esp, not-in-topology]")


def test_cleartext_out_of_an_interface_the_topology_lacks():
    rows = [*request(0, [0, 1]), echo("edge1:eth5", T(0) + 2 * HOP_NS, 0, ttl=63)]
    v = verdict(rows, points=[*ALL_POINTS, "edge1:eth5"])
    text = "left edge1 by eth5, which the topology does not have (expected: xfrm0)"
    assert v.status == Status.INCONCLUSIVE
    assert v.findings == (Finding(
        REQ, INCONCLUSIVE, 1, 1, f"somewhere after edge1:eth5, having {text}", "edge1:eth5", None, None,
        "it left by edge1:eth5, which has no link in the topology: where it leads was not captured", (0,), text),)
    assert trace(v, REQ).sightings == (S, S, E, E, E, E, E, E, E)


# ---------------------------------------------------------------------------------------------
# 7. NAT on the path: core1 rewrites the outer source of ESP-in-UDP (and back for the replies).


def test_nat_of_the_esp_is_noted_and_the_esp_followed():
    nat = {"src": CORE1_ETH1, "sport": 40000}
    req = [*request(0, [0, 1, 2]),
           esp("edge1:wan0", T(0) + 3 * HOP_NS, 101, sport=4500, dport=4500),
           esp("core1:eth0", T(0) + 4 * HOP_NS, 101, sport=4500, dport=4500),
           esp("core1:eth1", T(0) + 5 * HOP_NS, 101, dport=4500, **nat),
           esp("edge2:wan0", T(0) + 6 * HOP_NS, 101, dport=4500, **nat), *request(0, [7, 8])]
    tr = T(0) + REPLY_RTT
    rep = [*reply(0, [0, 1]),
           esp("edge2:wan0", tr + 2 * HOP_NS, 201, reply=True, sport=4500, dst=CORE1_ETH1, dport=40000),
           esp("core1:eth1", tr + 3 * HOP_NS, 201, reply=True, sport=4500, dst=CORE1_ETH1, dport=40000),
           esp("core1:eth0", tr + 4 * HOP_NS, 201, reply=True, sport=4500, dport=4500),
           esp("edge1:wan0", tr + 5 * HOP_NS, 201, reply=True, sport=4500, dport=4500), *reply(0, [6, 7, 8])]
    v = verdict(req + rep, encapsulation="udp")
    assert v.status == Status.DELIVERED
    assert v.diagnoses == (
        "outer source rewritten 192.0.2.1:4500 → 198.51.100.2:40000 between core1:eth0 and core1:eth1 (NAT); "
        "the ESP was followed by SPI and sequence",
        "outer destination rewritten 198.51.100.2:40000 → 192.0.2.1:4500 between core1:eth1 and core1:eth0 (NAT); "
        "the ESP was followed by SPI and sequence",
    )
    assert trace(v, REQ).sightings == (S,) * 9 and trace(v, REP).sightings == (S,) * 9
    assert trace(v, REQ).esp[3:7] == ((SPI_12, 101),) * 4
    assert trace(v, REP).esp[2:6] == ((SPI_21, 201),) * 4
    assert v.observed == ()
    assert all(f.divergence is None for f in v.findings)


# ---------------------------------------------------------------------------------------------
# 8. Selector mismatch: h3 (198.18.3.10) is outside t12's selectors, yet edge1 routes h2's LAN
# into xfrm0.

MISMATCH = ("edge1 routes 198.18.2.10 into xfrm0 (tunnel t12), but 198.18.3.10 → 198.18.2.10 is outside the "
            "tunnel's selectors (198.18.1.0/24 ↔ 198.18.2.0/24): no SA carries it (selector mismatch)")


def test_selector_mismatch_ends_the_expected_path_and_the_finding_says_so():
    rows = [echo("h3:eth0", T(0), 0, src=H3), echo("edge1:lan1", T(0) + HOP_NS, 0, src=H3),
            echo("edge1:xfrm0", T(0) + 2 * HOP_NS, 0, src=H3, ttl=63)]
    v = verdict(rows, src=H3)
    p = v.paths[REQ]
    assert [h.point for h in p.hops] == ["h3:eth0", "edge1:lan1", "edge1:xfrm0"]
    assert [e.value for e in p.edges] == ["wire", "forward"]
    assert (p.delivered, p.end_note, p.dst_node) == (False, MISMATCH, "h2")
    assert v.status == Status.LOSS
    # Seen nowhere after xfrm0 (every other edge1 point captured): lost there; the topology's
    # selector mismatch is why only as a guess.
    assert v.findings == (Finding(REQ, LOST, 1, 1, f"at edge1: {MISMATCH}", "edge1:xfrm0", None, None,
                                  f"likely: {MISMATCH}", (0,)),)
    assert f"why (request): likely: {MISMATCH}" in v.explanations()
    assert v.observed == ()


# ---------------------------------------------------------------------------------------------
# 9. Honesty: where the probe would go next was not captured, or its sniffer dropped packets —
# the observed-path verdict is inconclusive, never lost.

INCONCLUSIVE_AT_CORE1 = f"somewhere after core1:eth0, having {LEAK_EDGE1}"


@pytest.mark.parametrize(("points", "drops"), [
    ([p for p in ALL_POINTS if p != "core1:eth2"], None),  # core1's other way out not captured
    (ALL_POINTS, {"core1:eth2": 3}),  # captured, with sniffer drops
    (ALL_POINTS, {"core1:eth1": 1}),
])
def test_leak_into_a_router_with_a_blind_way_out_is_inconclusive(points: list[str], drops: dict[str, int] | None):
    blind = "core1:eth2" if "core1:eth2" not in points or drops == {"core1:eth2": 3} else "core1:eth1"
    v = verdict(leak_to_core1(), points=points, drops=drops)
    assert v.status == Status.INCONCLUSIVE
    assert v.findings == (Finding(REQ, INCONCLUSIVE, 1, 1, INCONCLUSIVE_AT_CORE1, "core1:eth0", None, None,
                                  f"{blind} not captured (or with sniffer drops)", (0,), LEAK_EDGE1),)
    went_nowhere_odd(v)


def test_detour_to_an_uncaptured_point_is_inconclusive():
    v = verdict(detour_request(to_core2=False), points=[p for p in ALL_POINTS if p != "core2:eth2"])
    assert v.status == Status.INCONCLUSIVE
    assert v.findings == (Finding(
        REQ, INCONCLUSIVE, 1, 1, "somewhere between core1:eth2 and core2:eth2, having left core1 by eth2 instead of eth1",
        "core1:eth2", "core2:eth2", None, "core2:eth2 was not captured", (0,), "left core1 by eth2 instead of eth1"),)
    assert trace(v, REQ).sightings == (S, S, S, S, S, E, E, E, E)
    assert trace(v, REQ).outcome == INCONCLUSIVE


def test_detour_to_a_point_with_sniffer_drops_is_inconclusive():
    v = verdict(detour_request(to_core2=False), drops={"core2:eth2": 12})
    assert v.status == Status.INCONCLUSIVE
    f = only(v, REQ)
    assert (f.outcome, f.where, f.last_seen, f.first_missed, f.reason) == (
        INCONCLUSIVE, "somewhere between core1:eth2 and core2:eth2, having left core1 by eth2 instead of eth1",
        "core1:eth2", "core2:eth2", "core2:eth2 had sniffer drops or a damaged capture, so its silence proves nothing")


def test_forward_into_a_point_with_sniffer_drops_is_inconclusive():
    rows = [*leak_to_core1(), echo("core1:eth2", T(0) + 5 * HOP_NS, 0, ttl=62), echo("core2:eth2", T(0) + 6 * HOP_NS, 0, ttl=62)]
    v = verdict(rows, drops={"core2:eth1": 1})
    assert v.status == Status.INCONCLUSIVE
    assert v.findings == (Finding(
        REQ, INCONCLUSIVE, 1, 1, f"somewhere between core2:eth2 and core2:eth1, having {LEAK_EDGE1}", "core2:eth2",
        "core2:eth1", None, "core2:eth1 had sniffer drops or a damaged capture, so its silence proves nothing", (0,),
        LEAK_EDGE1),)
    went_nowhere_odd(v)


def test_reply_leak_into_a_router_with_a_blind_way_out_is_inconclusive():
    rows = request(0) + reply(0, [0, 1]) + [echo("edge2:wan0", T(0) + REPLY_RTT + 2 * HOP_NS, 0, reply=True, ttl=63),
                                            echo("core1:eth1", T(0) + REPLY_RTT + 3 * HOP_NS, 0, reply=True, ttl=63)]
    v = verdict(rows, points=[p for p in ALL_POINTS if p != "core1:eth2"])
    assert v.status == Status.INCONCLUSIVE
    f = only(v, REP)
    assert (f.outcome, f.where, f.reason) == (
        INCONCLUSIVE, f"somewhere after core1:eth1, having {LEAK_EDGE2}", "core1:eth2 not captured (or with sniffer drops)")
    assert trace(v, REP).sightings == (S, S, L, L, E, E, E, E, E)


def test_seen_on_a_node_the_topology_does_not_have_is_inconclusive():
    rows = [*request(0, range(5)), esp("core3:eth0", T(0) + 5 * HOP_NS, 101)]
    v = verdict(rows, points=[*ALL_POINTS, "core3:eth0"])
    assert v.status == Status.INCONCLUSIVE
    f = only(v, REQ)
    assert (f.outcome, f.where, f.last_seen, f.first_missed) == (
        INCONCLUSIVE, "somewhere after core3:eth0, having reached core3 (core3:eth0), a node the topology does not have",
        "core3:eth0", None)
    assert trace(v, REQ).sightings == (S, S, S, S, S, E, E, E, E)
    assert v.observed[0].seen[-1] == carried("core3:eth0", 5, UNMAPPED)


def test_seen_on_a_node_the_topology_does_not_have_says_so():
    rows = [*request(0, range(5)), esp("core3:eth0", T(0) + 5 * HOP_NS, 101)]
    f = only(verdict(rows, points=[*ALL_POINTS, "core3:eth0"]), REQ)
    assert f.reason is not None and "not captured" not in f.reason
    assert "core3" in f.reason and "topology" in f.reason


# ---------------------------------------------------------------------------------------------
# More than one probe, and loops over the expected path itself.


def test_probes_with_different_fates_are_grouped_by_where_they_really_went():
    # Probes 0 and 2 leak and die in core1; probe 1 goes through the tunnel and is answered.
    leaked = [r for k in (0, 2) for r in [*request(k, [0, 1]), echo("edge1:wan0", T(k) + 3 * HOP_NS, k, ttl=63),
                                          echo("core1:eth0", T(k) + 4 * HOP_NS, k, ttl=63)]]
    v = analyze(topology(), observations(leaked + request(1) + reply(1)), spec(3))
    assert v.status == Status.LOSS
    assert v.findings == (
        Finding(REQ, LOST, 2, 3, f"inside core1 after arriving on eth0, having {LEAK_EDGE1}", "core1:eth0", None, None,
                f"{SA_UP_EDGE1}; likely: then core1 dropped it: it has no route to 198.18.2.10 (by the topology)", (0, 2),
                LEAK_EDGE1),
        Finding(REQ, DELIVERED, 1, 3, "delivered to h2", "h2:eth0", seqs=(1,)),
        Finding(REP, DELIVERED, 1, 1, "delivered to h1", "h1:eth0", seqs=(1,)),
    )
    assert [(o.seq, o.direction) for o in v.observed] == [(0, REQ), (2, REQ)]
    assert [trace(v, REQ, k).sightings for k in range(3)] == [(S, S, E, L, L, E, E, E, E), (S,) * 9,
                                                              (S, S, E, L, L, E, E, E, E)]
    assert trace(v, REQ, 1).esp[3] == (SPI_12, 102)


def test_loop_over_points_of_the_expected_path():
    # h1 and edge1 hand the request back and forth until its TTL runs out.
    rows = []
    t = T(0)
    for ttl in range(64, 0, -1):
        first, second = ("h1:eth0", "edge1:lan0") if ttl % 2 == 0 else ("edge1:lan0", "h1:eth0")
        rows += [echo(first, t, 0, ttl=ttl), echo(second, t + US, 0, ttl=ttl)]
        t += HOP_NS
    v = verdict(rows)
    text = "routing loop between h1 and edge1: seen 64 times on h1:eth0, TTL 64→1"
    assert v.status == Status.LOSS
    assert v.findings == (Finding(REQ, LOST, 1, 1, "in a routing loop between h1 and edge1", "h1:eth0", None, None,
                                  text, (0,), text),)
    (o,) = v.observed
    assert o.divergence == Divergence("loop", "h1:eth0", "h1:eth0", text)
    assert o.loop == Loop(("h1", "edge1"), "h1:eth0", 64, 64, 1)
    assert o.path_text() == "h1:eth0 → edge1:lan0 → ⟲ h1:eth0"
    assert trace(v, REQ).sightings == (S, S, E, E, E, E, E, E, E)


def test_time_exceeded_quoting_another_probe_is_not_this_ones():
    rows = [r for r in looping_request() if r["cls"] != 5] + [time_exceeded("core1:eth2", T(5), 7, CORE1_ETH2)]
    (o,) = verdict(rows).observed
    assert o.loop is not None and o.loop.expired_from is None


def test_leak_that_reaches_the_far_gateway_dies_in_it():
    # The cleartext request crosses core1 (which forwards it after all) and edge2 does not pass it
    # on to its LAN: located inside edge2, on the way the probe really went.
    leaked = [echo("edge1:wan0", T(0) + 3 * HOP_NS, 0, ttl=63), echo("core1:eth0", T(0) + 4 * HOP_NS, 0, ttl=63),
              echo("core1:eth1", T(0) + 5 * HOP_NS, 0, ttl=62), echo("edge2:wan0", T(0) + 6 * HOP_NS, 0, ttl=62)]
    v = verdict(request(0, [0, 1]) + leaked)
    f = only(v, REQ)
    assert (f.outcome, f.where, f.last_seen, f.first_missed, f.edge, f.divergence) == (
        LOST, f"inside edge2 between wan0 and lan0 (forward), having {LEAK_EDGE1}", "edge2:wan0", "edge2:lan0",
        "forward", LEAK_EDGE1)
    assert f.reason is not None and f.reason.startswith(f"{NO_IKE_SA}; ")
    assert trace(v, REQ).sightings == (S, S, E, L, L, L, L, E, E)


def test_an_icmp_error_quoting_the_probe_is_cited_as_what_the_network_said():
    # core1 answers the leaked probe with net unreachable (type 3 code 0), seen back at edge1:wan0.
    unreachable = {**time_exceeded("edge1:wan0", T(0) + 6 * HOP_NS, 0, CORE1_ETH1), "icmp_type": 3, "icmp_code": 0}
    v = verdict([*leak_to_core1(), unreachable])
    (op,) = v.observed
    assert op.quoted == ("ICMP net unreachable from 198.51.100.2 (seen at edge1:wan0)",)
    assert only(v, REQ).reason == (f"{NO_IKE_SA}; the network said: ICMP net unreachable from 198.51.100.2 "
                                   "(seen at edge1:wan0); likely: then core1 dropped it: it has no route to 198.18.2.10 "
                                   "(by the topology)")
