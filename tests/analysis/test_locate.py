"""trace_probes and findings: hand-made sighting matrices on the minisite paths → outcomes,
and the exact words a verdict uses for where and why.

Request path (``*`` = ESP of tunnel ab, SPI 0xc0000001 towards gwb)::

    0 a:eth0  1 gwa:lan0  2 gwa:ipsec0  3 gwa:wan0*  4 r:eth0*  5 r:eth1*  6 gwb:wan0*  7 gwb:lan0  8 b:eth0
      wire      forward     encap          wire       forward     wire       decap       wire

Reply path (SPI 0xc0000002 towards gwa)::

    0 b:eth0  1 gwb:lan0  2 gwb:wan0*  3 r:eth1*  4 r:eth0*  5 gwa:wan0*  6 gwa:ipsec0  7 gwa:lan0  8 a:eth0
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.analysis.minisite import SPI_AB, path
from tracer.analysis.correlate import SightingMatrix
from tracer.analysis.locate import findings, trace_probes
from tracer.model.direction import Direction
from tracer.model.verdict import Finding, Outcome, ProbeTrace, Sighting

S, M, U, R, K, G = (Sighting.SEEN, Sighting.MISSED, Sighting.UNOBSERVED, Sighting.UNRELIABLE,
                    Sighting.UNKNOWN, Sighting.GAP)
REQ, REP = Direction.REQUEST, Direction.REPLY
LOST, DELIVERED, INCONCLUSIVE, NOT_SENT = Outcome.LOST, Outcome.DELIVERED, Outcome.INCONCLUSIVE, Outcome.NOT_SENT
T0 = 1_700_000_000_000_000_000
HOPS = ["a:eth0", "gwa:lan0", "gwa:ipsec0", "gwa:wan0", "r:eth0", "r:eth1", "gwb:wan0", "gwb:lan0", "b:eth0"]
ESP_HOPS = (3, 4, 5, 6)  # of the request path (the reply path's are 2..5)
CODE = {s: i for i, s in enumerate(Sighting)}  # the matrix holds indices into list(Sighting)


def sightings(rows: list[list[Sighting]], esp: dict[int, tuple[int, int]] | None = None,
              esp_hops: tuple[int, ...] = ESP_HOPS) -> SightingMatrix:
    """A SightingMatrix matrix: probe p seen at hop h at T0 + p ms + h·10 µs; ``esp``: probe → its
    (SPI, ESP seq), written on every ESP hop as correlate does."""
    n, m = len(rows), len(rows[0])
    codes = np.array([[CODE[c] for c in row] for row in rows], np.int8)
    times = np.full((n, m), -1, np.int64)
    keys = np.zeros((n, m), np.uint64)
    for p, row in enumerate(rows):
        for h, c in enumerate(row):
            if c == S:
                times[p, h] = T0 + p * 1_000_000 + h * 10_000
        if esp and p in esp:
            for h in esp_hops:
                keys[p, h] = (esp[p][0] << 32) | esp[p][1]
    return SightingMatrix(np.arange(n, dtype=np.uint32), codes, times, keys, [])


def lost_after(last: int, m: int = 9) -> list[Sighting]:
    return [S] * (last + 1) + [M] * (m - last - 1)


def test_delivered():
    s = sightings([[S] * 9] * 3, esp={0: (SPI_AB, 101), 1: (SPI_AB, 102), 2: (SPI_AB, 103)})
    traces = trace_probes(s, path(), REQ)
    assert traces[0] == ProbeTrace(
        seq=0, direction="request", sightings=(S, S, S, S, S, S, S, S, S),
        times_ns=(T0, T0 + 10_000, T0 + 20_000, T0 + 30_000, T0 + 40_000, T0 + 50_000, T0 + 60_000,
                  T0 + 70_000, T0 + 80_000),
        esp=(None, None, None, (0xC0000001, 101), (0xC0000001, 101), (0xC0000001, 101), (0xC0000001, 101),
             None, None),
        outcome=DELIVERED, last_seen=8, first_missed=None)
    assert [(t.seq, t.outcome, t.last_seen, t.first_missed) for t in traces] == [
        (0, DELIVERED, 8, None), (1, DELIVERED, 8, None), (2, DELIVERED, 8, None)]
    assert findings(traces, path(), REQ) == [
        Finding("request", DELIVERED, 3, 3, "delivered to b", "b:eth0", None, None, None, (0, 1, 2))]


def test_gaps_and_doubt_before_the_last_sighting_do_not_matter():
    s = sightings([[S, G, S, U, G, R, S, S, S], [S, S, S, K, S, S, S, U, S]])
    traces = trace_probes(s, path(), REQ)
    assert [(t.outcome, t.last_seen, t.first_missed) for t in traces] == [(DELIVERED, 8, None)] * 2


ESP_KEY = {0: (SPI_AB, 101), 1: (SPI_AB, 102), 2: (SPI_AB, 103)}


@pytest.mark.parametrize(
    ("last", "where", "edge", "reason"),
    [
        (0, "on the wire a:eth0 → gwa:lan0", "wire",
         "left a:eth0 but never arrived at gwa:lan0: link down, filtered, or wrong next hop"),
        (1, "inside gwa between lan0 and ipsec0 (forward)", "forward",
         "gwa did not forward it from lan0 to ipsec0: firewall (forward chain), rp_filter or routing"),
        (2, "inside gwa between ipsec0 and wan0 (encap, tunnel ab)", "encap",
         "cleartext reached gwa:ipsec0 but no ESP for it left gwa:wan0: no SA or policy for this traffic, "
         "or encapsulation failed"),
        (3, "on the wire gwa:wan0 → r:eth0", "wire",
         "ESP (SPI 0xc0000001) left gwa:wan0 but never arrived at r:eth0: filtered on the untrusted path "
         "(UDP 4500 / protocol 50)"),
        (4, "inside r between eth0 and eth1 (forward)", "forward",
         "r did not forward the ESP (SPI 0xc0000001) from eth0 to eth1: firewall (forward chain), rp_filter or routing"),
        (5, "on the wire r:eth1 → gwb:wan0", "wire",
         "ESP (SPI 0xc0000001) left r:eth1 but never arrived at gwb:wan0: filtered on the untrusted path "
         "(UDP 4500 / protocol 50)"),
        (6, "inside gwb between wan0 and lan0 (decap, tunnel ab)", "decap",
         "ESP (SPI 0xc0000001) arrived at gwb:wan0 but nothing came out of gwb:lan0: decapsulation failed "
         "(wrong or missing SA, integrity failure, replay) or a filter before the IPsec stack"),
        (7, "on the wire gwb:lan0 → b:eth0", "wire",
         "left gwb:lan0 but never arrived at b:eth0: link down, filtered, or wrong next hop"),
    ],
)
def test_lost_on_each_edge(last, where, edge, reason):
    s = sightings([lost_after(last)] * 3, esp=ESP_KEY if last >= 3 else None)
    traces = trace_probes(s, path(), REQ)
    assert [(t.outcome, t.last_seen, t.first_missed) for t in traces] == [(LOST, last, last + 1)] * 3
    assert findings(traces, path(), REQ) == [
        Finding("request", LOST, 3, 3, where, HOPS[last], HOPS[last + 1], edge, "likely: " + reason, (0, 1, 2))]


def test_esp_loss_without_the_probes_spi_says_esp():
    (f,) = findings(trace_probes(sightings([lost_after(3)]), path(), REQ), path(), REQ)
    assert f.reason == ("likely: ESP left gwa:wan0 but never arrived at r:eth0: filtered on the untrusted path "
                        "(UDP 4500 / protocol 50)")


def test_decap_loss_names_the_probes_own_spi_else_the_topologys():
    (f,) = findings(trace_probes(sightings([lost_after(6)], esp={0: (0xC0000AAA, 9)}), path(), REQ), path(), REQ)
    assert f.reason.startswith("likely: ESP (SPI 0xc0000aaa) arrived at gwb:wan0 but nothing came out of gwb:lan0")
    # Reply direction, no ESP identity: the SPI gwa receives on (spi_in in the topology).
    s = sightings([lost_after(5)], esp_hops=(2, 3, 4, 5))
    (f,) = findings(trace_probes(s, path(REP), REP), path(REP), REP)
    assert f == Finding(
        "reply", LOST, 1, 1, "inside gwa between wan0 and ipsec0 (decap, tunnel ab)", "gwa:wan0", "gwa:ipsec0",
        "decap", "likely: ESP (SPI 0xc0000002) arrived at gwa:wan0 but nothing came out of gwa:ipsec0: decapsulation failed "
        "(wrong or missing SA, integrity failure, replay) or a filter before the IPsec stack", (0,))


LEAK_REASON = "likely: gwa sent it out wan0 in the clear instead of into the tunnel: no SA or policy on gwa covers this traffic"


@pytest.mark.parametrize("last", [1, 2])  # lost before the encap edge, or on it
def test_leak_explains_a_loss_entering_the_tunnel(last):
    traces = trace_probes(sightings([lost_after(last)]), path(), REQ)
    (f,) = findings(traces, path(), REQ, leaks=["gwa:wan0", "r:eth0"])
    assert f.reason == LEAK_REASON


def test_leak_elsewhere_does_not_explain_an_encap_loss():
    traces = trace_probes(sightings([lost_after(2)]), path(), REQ)
    (f,) = findings(traces, path(), REQ, leaks=["r:eth0", "r:eth1"])
    assert f.reason.startswith("likely: cleartext reached gwa:ipsec0 but no ESP for it left gwa:wan0")


def test_lost_at_the_origin():
    traces = trace_probes(sightings([[M] * 9] * 3), path(), REQ)
    assert [(t.outcome, t.last_seen, t.first_missed) for t in traces] == [(LOST, None, 0)] * 3
    assert findings(traces, path(), REQ) == [
        Finding("request", LOST, 3, 3, "at a, before leaving a:eth0", None, "a:eth0", None,
                "likely: the probe never left a: check its routes and OUTPUT firewall", (0, 1, 2))]


def test_lost_at_the_origin_with_send_errors():
    traces = trace_probes(sightings([[M] * 9] * 3), path(), REQ)
    (f,) = findings(traces, path(), REQ, send_errors={0: "EMSGSIZE", 1: "ENETUNREACH", 2: "EMSGSIZE"})
    assert (f.where, f.reason) == ("at a, before leaving a:eth0", "sending failed on a: EMSGSIZE, ENETUNREACH")


def test_send_error_of_a_probe_that_left_is_not_cited():
    traces = trace_probes(sightings([[S] * 9, [M] * 9, [S] * 9]), path(), REQ)
    found = findings(traces, path(), REQ, send_errors={0: "ENOBUFS", 1: "EMSGSIZE"})
    assert found == [
        Finding("request", LOST, 1, 3, "at a, before leaving a:eth0", None, "a:eth0", None,
                "sending failed on a: EMSGSIZE", (1,)),
        Finding("request", DELIVERED, 2, 3, "delivered to b", "b:eth0", None, None, None, (0, 2)),
    ]


def test_reply_never_left_the_responder():
    traces = trace_probes(sightings([[M] * 9]), path(REP), REP)
    assert findings(traces, path(REP), REP) == [
        Finding("reply", LOST, 1, 1, "at b, before leaving b:eth0", None, "b:eth0", None,
                "likely: b received the request but no reply left it: check its route back, its firewall, or whether it answers",
                (0,))]


def test_partial_loss_two_of_three():
    s = sightings([lost_after(4), [S] * 9, lost_after(4)], esp=ESP_KEY)
    traces = trace_probes(s, path(), REQ)
    assert [(t.seq, t.outcome, t.last_seen, t.first_missed) for t in traces] == [
        (0, LOST, 4, 5), (1, DELIVERED, 8, None), (2, LOST, 4, 5)]
    assert findings(traces, path(), REQ) == [
        Finding("request", LOST, 2, 3, "inside r between eth0 and eth1 (forward)", "r:eth0", "r:eth1", "forward",
                "likely: r did not forward the ESP (SPI 0xc0000001) from eth0 to eth1: firewall (forward chain), "
                "rp_filter or routing", (0, 2)),
        Finding("request", DELIVERED, 1, 3, "delivered to b", "b:eth0", None, None, None, (1,)),
    ]


@pytest.mark.parametrize(
    ("row", "last", "first_missed", "where", "why"),
    [
        ([S, S, S, S, U, M, M, M, M], 3, 5, "somewhere between gwa:wan0 and r:eth1", "r:eth0 was not captured"),
        ([S, S, S, S, S, R, M, M, M], 4, 6, "somewhere between r:eth0 and gwb:wan0",
         "r:eth1 had sniffer drops or a damaged capture, so its silence proves nothing"),
        ([S, S, S, K, K, K, K, M, M], 2, 7, "somewhere between gwa:ipsec0 and gwb:lan0",
         "gwa:wan0 carried ESP that could not be tied to the probe; r:eth0 carried ESP that could not be tied to "
         "the probe; r:eth1 carried ESP that could not be tied to the probe; gwb:wan0 carried ESP that could not be "
         "tied to the probe"),
        ([S, S, S, S, S, S, S, U, R], 6, None, "somewhere between gwb:wan0 and the destination",
         "gwb:lan0 was not captured; b:eth0 had sniffer drops or a damaged capture, so its silence proves nothing"),
        ([U, M, M, M, M, M, M, M, M], None, 1, "somewhere between the source and gwa:lan0", "a:eth0 was not captured"),
    ],
)
def test_inconclusive_names_the_doubtful_hops(row, last, first_missed, where, why):
    traces = trace_probes(sightings([row, row]), path(), REQ)
    assert [(t.outcome, t.last_seen, t.first_missed) for t in traces] == [(INCONCLUSIVE, last, first_missed)] * 2
    assert findings(traces, path(), REQ) == [
        Finding("request", INCONCLUSIVE, 2, 2, where, None if last is None else HOPS[last],
                None if first_missed is None else HOPS[first_missed], None, why, (0, 1))]


def test_doubt_after_the_first_miss_does_not_matter():
    traces = trace_probes(sightings([[S, S, M, U, R, K, K, U, M]]), path(), REQ)
    assert [(t.outcome, t.last_seen, t.first_missed) for t in traces] == [(LOST, 1, 2)]


def test_replies_of_requests_that_did_not_arrive_are_not_sent():
    s = sightings([[M] * 9, [S] * 9, [M] * 9, [S, M, M, M, M, M, M, M, M], [S] * 9])
    traces = trace_probes(s, path(REP), REP, sent=[False, True, False, False, False])
    assert [(t.seq, t.outcome, t.last_seen, t.first_missed) for t in traces] == [
        (0, NOT_SENT, None, None),
        (1, DELIVERED, 8, None),
        (2, NOT_SENT, None, None),
        (3, LOST, 0, 1),  # not expected, yet it left b: its loss is real
        (4, DELIVERED, 8, None),  # not expected, yet it arrived
    ]
    # Not-sent replies are neither a finding nor counted in the totals.
    assert findings(traces, path(REP), REP) == [
        Finding("reply", LOST, 1, 3, "on the wire b:eth0 → gwb:lan0", "b:eth0", "gwb:lan0", "wire",
                "likely: left b:eth0 but never arrived at gwb:lan0: link down, filtered, or wrong next hop", (3,)),
        Finding("reply", DELIVERED, 2, 3, "delivered to a", "a:eth0", None, None, None, (1, 4)),
    ]


def test_path_that_ends_short_of_the_destination():
    # The topology itself says the packet cannot arrive: seen to the path's end (and nowhere after)
    # is a loss there; the topology's reason for it is only a guess, so it is marked likely.
    short = replace(path(), delivered=False, end_note="b has no route to 10.2.0.10")
    traces = trace_probes(sightings([[S] * 9]), short, REQ)
    assert [(t.outcome, t.last_seen, t.first_missed) for t in traces] == [(LOST, 8, None)]
    assert findings(traces, short, REQ) == [
        Finding("request", LOST, 1, 1, "at b: b has no route to 10.2.0.10", "b:eth0", None, None,
                "likely: b has no route to 10.2.0.10", (0,))]
