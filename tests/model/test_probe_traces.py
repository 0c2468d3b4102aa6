"""ProbeTraces: a verdict's per-probe traces as columns. Trace objects go in and come out
unchanged (hand-built verdicts, readers that iterate), rows of directions with paths of other
lengths live side by side, and the JSON rows are what each trace object says."""

from __future__ import annotations

from ipaddress import IPv4Address

import numpy as np
import pytest

from tracer.model.direction import Direction
from tracer.model.flowgraph import EdgeKind
from tracer.model.path import ExpectedPath, Hop
from tracer.model.verdict import Outcome, ProbeTrace, ProbeTraces, Sighting, Status, Verdict

S, M, G, K, E = Sighting.SEEN, Sighting.MISSED, Sighting.GAP, Sighting.UNKNOWN, Sighting.ELSEWHERE
REQ, REP = Direction.REQUEST, Direction.REPLY

TRACES = (
    ProbeTrace(0, REQ, (S, S, S), (10, 20, 30), (None, (0xC0000001, 1), None), Outcome.DELIVERED, 2, None),
    ProbeTrace(0, REP, (S, S), (40, 50), (None, None), Outcome.DELIVERED, 1, None),
    ProbeTrace(1, REQ, (S, G, K), (11, None, None), (None, None, None), Outcome.INCONCLUSIVE, 0, 2),
    ProbeTrace(1, REP, (M, M), (None, None), (None, None), Outcome.NOT_SENT, None, None),
    ProbeTrace(7, REQ, (S, M, E), (12, None, None), (None, (0xC0000001, 2**32 - 1), None), Outcome.LOST, 0, 1),
)


def test_trace_objects_round_trip_in_order() -> None:
    t = ProbeTraces.of(TRACES)
    assert len(t) == 5 and list(t) == list(TRACES) and t == TRACES
    assert t[3] == TRACES[3] and t[-1] == TRACES[-1]
    assert list(t[1:3]) == list(TRACES[1:3])
    assert t != TRACES[:4] and t != ()
    with pytest.raises(IndexError):
        t[5]


def test_one_direction_is_as_wide_as_its_path() -> None:
    t = ProbeTraces.of(TRACES)
    reply = t.in_direction("reply")
    assert reply.codes.shape == (2, 2) and list(reply) == [TRACES[1], TRACES[3]]
    assert t.in_direction(REQ).seqs.tolist() == [0, 1, 7]
    assert t.sent().tolist() == [True, True, True, False, True]
    assert t.outcome_is(Outcome.LOST, Outcome.INCONCLUSIVE).tolist() == [False, False, True, False, True]
    assert t.trace(REP, 1) == TRACES[3] and t.trace(REP, 7) is None


def test_concat_pads_to_the_widest_path() -> None:
    a, b = ProbeTraces.of(TRACES[:1]), ProbeTraces.of(TRACES[1:2])
    assert list(ProbeTraces.concat([a, ProbeTraces.empty(), b])) == list(TRACES[:2])
    assert list(ProbeTraces.concat([b, a])) == [TRACES[1], TRACES[0]]
    assert ProbeTraces.concat([b, a]).codes.shape == (2, 3)


def test_direction_rows_from_arrays() -> None:
    codes = np.array([[0, 0], [0, 1]], np.int8)
    t = ProbeTraces.direction_rows(REP, np.array([3, 4]), codes, np.array([[5, 6], [7, -1]]),
                                   np.zeros((2, 2), np.uint64), np.array([0, 1]), np.array([1, 0]), np.array([-1, 1]))
    assert t[1] == ProbeTrace(4, REP, (S, M), (7, None), (None, None), Outcome.LOST, 0, 1)


def test_json_rows_say_what_each_trace_says() -> None:
    a, b = IPv4Address("192.0.2.1"), IPv4Address("198.51.100.1")
    req = ExpectedPath(a, b, (Hop("a:eth0", "a"), Hop("r:eth0", "r"), Hop("b:eth0", "b")),
                       (EdgeKind.WIRE, EdgeKind.FORWARD), True, "delivered to b", "b")
    rep = ExpectedPath(b, a, (Hop("b:eth0", "b"), Hop("a:eth0", "a")), (EdgeKind.WIRE,), True, "delivered to a", "a")
    v = Verdict(1, "ping", Status.LOSS, "hand-built", {REQ: req, REP: rep}, (), TRACES)
    rows = v.to_dict()["probes"]
    assert [(r["seq"], r["direction"], r["outcome"]) for r in rows] == [
        (t.seq, t.direction.value, t.outcome.value) for t in TRACES]
    assert rows[1] == {"seq": 0, "direction": "reply", "outcome": "delivered", "last_seen": "a:eth0",
                       "first_missed": None, "sightings": ["seen", "seen"], "times_us": [0, 0], "esp": [None, None]}
    assert rows[4] == {"seq": 7, "direction": "request", "outcome": "lost", "last_seen": "a:eth0",
                       "first_missed": "r:eth0", "sightings": ["seen", "missed", "elsewhere"],
                       "times_us": [0, None, None], "esp": [None, {"spi": 0xC0000001, "seq": 2**32 - 1}, None]}
