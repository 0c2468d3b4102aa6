"""Per-hop statistics, fed with verdicts built here; every expected number is worked out by hand.

The request path (5 capture points, ESP between the gateways)::

    a:eth0 ─wire─ gw:lan0 ─encap─ gw:wan0 ─wire─ peer:wan0 ─decap─ peer:lan0
                                  [ESP, topology SPI 0xc0000001]

Request probes (times in µs after T0; · = not seen):

    seq 0  delivered      seen everywhere        0   40  100  300  350   ESP seq 1
    seq 1  delivered      gap at gw:lan0         0    ·  120  320  400   ESP seq 2
    seq 2  lost gw:lan0 → gw:wan0                0   50    ·    ·    ·
    seq 3  inconclusive   ESP not tied          10   70    ·    ·    ·

The reply comes back the same way; only seqs 0 and 1 were answered (2 and 3 are not-sent).
"""

from __future__ import annotations

from ipaddress import IPv4Address

import numpy as np
import pytest

from tracer.analysis.hopstats import (
    PointStats,
    all_path_stats,
    arrival_ns,
    is_sent,
    median,
    path_stats,
)
from tracer.model.direction import Direction
from tracer.model.flowgraph import EdgeKind
from tracer.model.path import Esp, ExpectedPath, Hop
from tracer.model.verdict import Outcome, ProbeTrace, Sighting, Status, Verdict

T0 = 1_700_000_000_000_000_000  # a realistic epoch in ns: differences must stay exact
US = 1_000
A, B = IPv4Address("10.1.0.1"), IPv4Address("10.2.0.1")
GW, PEER = IPv4Address("198.18.1.1"), IPv4Address("198.18.2.1")
SPI_AB, SPI_BA = 0xC0000001, 0xC0000002
CODE = {"S": Sighting.SEEN, "M": Sighting.MISSED, "G": Sighting.GAP, "U": Sighting.UNOBSERVED,
        "R": Sighting.UNRELIABLE, "K": Sighting.UNKNOWN}


def esp(src: IPv4Address, dst: IPv4Address, spi: int | None) -> Esp:
    return Esp("a-b", src, dst, spi, udp=True)


REQUEST = ExpectedPath(
    A, B,
    (Hop("a:eth0", "a"), Hop("gw:lan0", "gw"), Hop("gw:wan0", "gw", esp(GW, PEER, SPI_AB)),
     Hop("peer:wan0", "peer", esp(GW, PEER, SPI_AB)), Hop("peer:lan0", "peer")),
    (EdgeKind.WIRE, EdgeKind.ENCAP, EdgeKind.WIRE, EdgeKind.DECAP), True, "delivered to peer",
)
REPLY = ExpectedPath(
    B, A,
    (Hop("peer:lan0", "peer"), Hop("peer:wan0", "peer", esp(PEER, GW, SPI_BA)),
     Hop("gw:wan0", "gw", esp(PEER, GW, SPI_BA)), Hop("gw:lan0", "gw"), Hop("a:eth0", "a")),
    (EdgeKind.ENCAP, EdgeKind.WIRE, EdgeKind.DECAP, EdgeKind.WIRE), True, "delivered to a",
)


def trace(seq: int, direction: str, sightings: str, times_us: list[int | None], outcome: Outcome,
          last: int | None, first_missed: int | None, esp_ids: dict[int, tuple[int, int]] | None = None) -> ProbeTrace:
    n = len(sightings)
    return ProbeTrace(
        seq, direction, tuple(CODE[c] for c in sightings),
        tuple(None if t is None else T0 + t * US for t in times_us),
        tuple((esp_ids or {}).get(h) for h in range(n)), outcome, last, first_missed,
    )


PROBES = (
    trace(0, "request", "SSSSS", [0, 40, 100, 300, 350], Outcome.DELIVERED, 4, None,
          {2: (SPI_AB, 1), 3: (SPI_AB, 1)}),
    trace(0, "reply", "SSSSS", [1000, 1030, 1200, 1260, 1300], Outcome.DELIVERED, 4, None,
          {1: (SPI_BA, 1), 2: (SPI_BA, 1)}),
    trace(1, "request", "SGSSS", [0, None, 120, 320, 400], Outcome.DELIVERED, 4, None,
          {2: (SPI_AB, 2), 3: (SPI_AB, 2)}),
    trace(1, "reply", "SSSSS", [2000, 2050, 2150, 2210, 2260], Outcome.DELIVERED, 4, None,
          {1: (SPI_BA, 2), 2: (SPI_BA, 2)}),
    trace(2, "request", "SSMMM", [0, 50, None, None, None], Outcome.LOST, 1, 2),
    trace(2, "reply", "MMMMM", [None] * 5, Outcome.NOT_SENT, None, None),
    trace(3, "request", "SSKKM", [10, 70, None, None, None], Outcome.INCONCLUSIVE, 1, 4),
    trace(3, "reply", "MMMMM", [None] * 5, Outcome.NOT_SENT, None, None),
)


def verdict(probes: tuple[ProbeTrace, ...] = PROBES, paths: dict[str, ExpectedPath] | None = None) -> Verdict:
    return Verdict(7, "ping", Status.LOSS, "hand-built", paths or {"request": REQUEST, "reply": REPLY}, (), probes)


def stats(direction: str, v: Verdict | None = None):
    s = path_stats(v or verdict(), direction)
    assert s is not None
    return s


# --- which probes count, and a probe's time at a hop --------------------------------------------


def test_not_sent_replies_do_not_count():
    assert [is_sent(t) for t in PROBES] == [True, True, True, True, True, False, True, False]
    reply = stats("reply")
    assert [t.seq for t in reply.probes] == [0, 1]
    assert reply.sent == 2
    assert {p.sent for p in reply.points} == {2}
    assert reply.direction is Direction.REPLY


def test_arrival_is_the_first_time_seen_or_none():
    assert arrival_ns(PROBES[0], 3) == 1_700_000_000_000_300_000
    assert arrival_ns(PROBES[2], 1) is None  # the capture gap


def test_missing_direction_has_no_stats():
    v = verdict(tuple(t for t in PROBES if t.direction == "request"), {"request": REQUEST})
    assert path_stats(v, "reply") is None
    assert list(all_path_stats(v)) == ["request"]
    assert list(all_path_stats(verdict())) == [Direction.REQUEST, Direction.REPLY]


def test_reply_with_no_probe_sent():
    v = verdict(tuple(t for t in PROBES if t.seq >= 2))
    reply = stats("reply", v)
    assert reply.sent == 0 and reply.probes == ()
    assert reply.points[0] == PointStats("peer:lan0", 0, 0, 0, 0, 0, 0, 0)
    assert not reply.points[0].captured and reply.points[0].fraction is None
    assert reply.elapsed_ms() == [[], [], [], [], []]
    assert reply.edge_delays_ms() == [[], [], [], []]


# --- per-point counts and SPIs ------------------------------------------------------------------


def test_request_point_counts():
    #                       point        sent seen missed gap unobs unrel unknown spis
    assert stats("request").points == (
        PointStats("a:eth0", 4, 4, 0, 0, 0, 0, 0),
        PointStats("gw:lan0", 4, 3, 0, 1, 0, 0, 0),
        PointStats("gw:wan0", 4, 2, 1, 0, 0, 0, 1, (SPI_AB,)),
        PointStats("peer:wan0", 4, 2, 1, 0, 0, 0, 1, (SPI_AB,)),
        PointStats("peer:lan0", 4, 2, 2, 0, 0, 0, 0),
    )


def test_reply_point_counts_and_spis():
    points = stats("reply").points
    assert [(p.point, p.seen, p.sent) for p in points] == [
        ("peer:lan0", 2, 2), ("peer:wan0", 2, 2), ("gw:wan0", 2, 2), ("gw:lan0", 2, 2), ("a:eth0", 2, 2)]
    assert [p.spis for p in points] == [(), (SPI_BA,), (SPI_BA,), (), ()]


def test_fraction_leaves_out_what_cannot_be_known():
    gw_wan0 = stats("request").points[2]  # 2 seen, 1 missed, 1 ESP not tied
    assert gw_wan0.captured
    assert gw_wan0.decided == 3
    assert gw_wan0.fraction == pytest.approx(2 / 3)
    nothing_known = PointStats("x:y", 3, 0, 0, 0, 1, 0, 2)
    assert nothing_known.captured and nothing_known.decided == 0 and nothing_known.fraction is None
    no_file = PointStats("x:y", 3, 0, 0, 0, 3, 0, 0)
    assert not no_file.captured


def test_unobserved_and_unreliable_points():
    probes = (
        trace(0, "request", "USSRM", [None, 40, 100, None, None], Outcome.INCONCLUSIVE, 2, 4, {2: (SPI_AB, 1)}),
        trace(1, "request", "USSSS", [None, 45, 110, 310, 360], Outcome.DELIVERED, 4, None,
              {2: (SPI_AB, 2), 3: (SPI_AB, 2)}),
    )
    s = stats("request", verdict(probes, {"request": REQUEST}))
    assert s.points[0] == PointStats("a:eth0", 2, 0, 0, 0, 2, 0, 0)
    assert s.points[3] == PointStats("peer:wan0", 2, 1, 0, 0, 0, 1, 0, (SPI_AB,))
    assert s.points[4] == PointStats("peer:lan0", 2, 1, 1, 0, 0, 0, 0)
    # No time at the first hop: nothing to measure "since the first hop" from, but edges still time.
    assert s.elapsed_ms() == [[], [], [], [], []]
    assert s.edge_delays_ms() == [[], pytest.approx([0.06, 0.065]), [0.2], [0.05]]


def test_spi_falls_back_to_the_topology_then_to_none():
    hops = (Hop("gw:lan0", "gw"), Hop("gw:wan0", "gw", esp(GW, PEER, 0x1234)),
            Hop("r:eth0", "r", esp(GW, PEER, None)), Hop("r:eth1", "r", esp(GW, PEER, 0)))
    path = ExpectedPath(A, B, hops, (EdgeKind.ENCAP, EdgeKind.WIRE, EdgeKind.FORWARD), False, "cut short")
    lost = trace(0, "request", "SMMM", [0, None, None, None], Outcome.LOST, 0, 1)
    s = stats("request", verdict((lost,), {"request": path}))
    # Nothing tied: the topology's SPI, else unknown; SPI 0 is reserved, so it means unknown too.
    assert [p.spis for p in s.points] == [(), (0x1234,), (), ()]


def test_tied_spis_win_over_the_topology_and_all_are_kept():
    # A rekey between two probes: both SPIs, in order, whatever the topology file says.
    probes = (
        trace(0, "request", "SSSSS", [0, 40, 100, 300, 350], Outcome.DELIVERED, 4, None,
              {2: (0xC0000009, 1), 3: (0xC0000009, 1)}),
        trace(1, "request", "SSSSS", [0, 40, 100, 300, 350], Outcome.DELIVERED, 4, None,
              {2: (0xC0000003, 7), 3: (0xC0000003, 7)}),
    )
    s = stats("request", verdict(probes, {"request": REQUEST}))
    assert s.points[2].spis == (0xC0000003, 0xC0000009)
    assert s.points[3].spis == (0xC0000003, 0xC0000009)


# --- losses per edge ----------------------------------------------------------------------------


def test_lost_counts_only_probes_lost_on_that_edge():
    # seq 2 died between gw:lan0 and gw:wan0; seq 3 is inconclusive, not a loss anywhere.
    assert stats("request").lost == (0, 1, 0, 0)
    assert stats("reply").lost == (0, 0, 0, 0)


# --- timings ------------------------------------------------------------------------------------


def test_elapsed_since_the_first_hop():
    elapsed = stats("request").elapsed_ms()
    assert elapsed == [
        [0.0, 0.0, 0.0, 0.0],
        pytest.approx([0.04, 0.05, 0.06]),  # seq 1 has a gap here
        pytest.approx([0.1, 0.12]),
        pytest.approx([0.3, 0.32]),
        pytest.approx([0.35, 0.4]),
    ]
    assert [median(e) for e in elapsed] == [0.0, pytest.approx(0.05), pytest.approx(0.11), pytest.approx(0.31),
                                            pytest.approx(0.375)]


def test_edge_delays_between_consecutive_points():
    assert stats("request").edge_delays_ms() == [
        pytest.approx([0.04, 0.05, 0.06]),  # seq 1 not timed at gw:lan0 (gap)
        pytest.approx([0.06]),  # only seq 0 was timed at both gw:lan0 and gw:wan0
        pytest.approx([0.2, 0.2]),
        pytest.approx([0.05, 0.08]),
    ]


def test_delivered_only_drops_the_lost_and_inconclusive_probes():
    s = stats("request")
    assert s.edge_delays_ms(delivered_only=True)[0] == pytest.approx([0.04])
    assert s.elapsed_ms(delivered_only=True)[1] == pytest.approx([0.04])
    assert s.elapsed_ms(delivered_only=True)[4] == pytest.approx([0.35, 0.4])


def test_reply_delays_are_timed_in_reply_order():
    reply = stats("reply")
    assert reply.edge_delays_ms() == [
        pytest.approx([0.03, 0.05]), pytest.approx([0.17, 0.1]), pytest.approx([0.06, 0.06]), pytest.approx([0.04, 0.05])]
    assert reply.elapsed_ms()[4] == pytest.approx([0.3, 0.26])


def test_median():
    assert median([]) is None
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0]) == 2.5


def test_median_is_np_median_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for n in [*range(1, 30), 1000, 1001]:
        v = (rng.integers(0, 10**9, n) - rng.integers(0, 10**9, n)) / 1e6
        assert median(v) == float(np.median(v)) and median(v.tolist()) == float(np.median(v))
    assert median([]) is None
    assert np.isnan(median([1.0, float("nan")]))
