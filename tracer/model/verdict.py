"""Verdicts: per-probe traces along the expected path, aggregated findings, overall status.

:meth:`Verdict.to_dict` is one run of the JSON contract (docs/json.md, the schema in
tracer/tracer.schema.json): run ids as hex strings, times as integer µs since the epoch
(exact in every JSON reader, below 2^53), capture points by name."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from tracer.errors import EXIT_DELIVERED, EXIT_INCONCLUSIVE, EXIT_LOSS
from tracer.model.direction import DIRECTIONS, Direction
from tracer.model.observed import ObservedProbe
from tracer.model.path import ExpectedPath
from tracer.model.probe import SentProbe

if TYPE_CHECKING:
    from tracer.model.mtu import MtuReport  # built only for MTU runs (tracer.analysis.mtu)
    from tracer.model.rtt import RttStats


class Sighting(StrEnum):
    SEEN = "seen"
    MISSED = "missed"  # captured there, and the probe was not in the capture
    UNOBSERVED = "unobserved"  # no capture for that point
    UNRELIABLE = "unreliable"  # captured, but the sniffer dropped packets: absence proves nothing
    UNKNOWN = "unknown"  # ESP hop whose (SPI, seq) could not be associated with the probe
    GAP = "gap"  # missed here but seen further down the path: capture noise, not loss
    ELSEWHERE = "elsewhere"  # not here: it left the expected path before (seen off it, or leaking)
    LEAKED = "leaked"  # here, but in the clear where it should have been ESP


class Outcome(StrEnum):
    DELIVERED = "delivered"
    LOST = "lost"
    INCONCLUSIVE = "inconclusive"
    NOT_SENT = "not-sent"  # reply of a request that never arrived


class Status(StrEnum):
    DELIVERED = "delivered"
    LOSS = "loss"
    INCONCLUSIVE = "inconclusive"

    @property
    def exit_code(self) -> int:
        return {Status.DELIVERED: EXIT_DELIVERED, Status.LOSS: EXIT_LOSS, Status.INCONCLUSIVE: EXIT_INCONCLUSIVE}[self]

    @property
    def word(self) -> str:
        """The word a person scans for at the head of a verdict."""
        return {Status.DELIVERED: "OK", Status.LOSS: "LOSS", Status.INCONCLUSIVE: "INCONCLUSIVE"}[self]


@dataclass(frozen=True)
class ProbeTrace:
    """One probe in one direction along its expected path."""

    seq: int
    direction: Direction
    sightings: tuple[Sighting, ...]  # one per hop of the direction's path
    times_ns: tuple[int | None, ...]  # first time seen per hop
    esp: tuple[tuple[int, int] | None, ...]  # (SPI, ESP seq) per ESP hop when associated
    outcome: Outcome
    last_seen: int | None  # hop index
    first_missed: int | None  # hop index


SIGHTINGS = tuple(Sighting)  # ProbeTraces.codes index this
OUTCOMES = tuple(Outcome)  # ProbeTraces.outcomes index this


@dataclass(frozen=True, eq=False)
class ProbeTraces(Sequence[ProbeTrace]):
    """Per-probe traces as columns, one row per probe and direction, in verdict order.

    A run can hold 100k probes: outcomes, counts, findings and the JSON are computed from the
    arrays, and a :class:`ProbeTrace` is only built for the rows someone reads as objects.
    Rows of one direction share its path; ``hops`` says how many columns of a row are real."""

    directions: np.ndarray  # int8 [n]: index into DIRECTIONS
    seqs: np.ndarray  # int64 [n]
    codes: np.ndarray  # int8 [n, width]: index into SIGHTINGS (-1 past the row's path)
    times: np.ndarray  # int64 [n, width]: first time seen (ns), -1 where not seen
    esp: np.ndarray  # uint64 [n, width]: SPI << 32 | ESP seq where associated, else 0
    outcomes: np.ndarray  # int8 [n]: index into OUTCOMES
    last_seen: np.ndarray  # int32 [n]: hop index, -1 for none
    first_missed: np.ndarray  # int32 [n]: hop index, -1 for none
    hops: np.ndarray  # int32 [n]: hops on the row's path

    @classmethod
    def empty(cls) -> ProbeTraces:
        return cls.direction_rows(Direction.REQUEST, np.zeros(0, np.int64), np.zeros((0, 0), np.int8),
                                  np.zeros((0, 0), np.int64), np.zeros((0, 0), np.uint64), np.zeros(0, np.int8),
                                  np.zeros(0, np.int32), np.zeros(0, np.int32))

    @classmethod
    def direction_rows(cls, direction: Direction, seqs: np.ndarray, codes: np.ndarray, times: np.ndarray,
                       esp: np.ndarray, outcomes: np.ndarray, last_seen: np.ndarray,
                       first_missed: np.ndarray) -> ProbeTraces:
        """The traces of one direction along one path (every row as wide as the path)."""
        n, m = codes.shape
        return cls(np.full(n, DIRECTIONS.index(direction), np.int8), seqs.astype(np.int64), codes.astype(np.int8),
                   times.astype(np.int64), esp.astype(np.uint64), outcomes.astype(np.int8),
                   last_seen.astype(np.int32), first_missed.astype(np.int32), np.full(n, m, np.int32))

    @classmethod
    def of(cls, traces: Iterable[ProbeTrace]) -> ProbeTraces:
        """Columns of trace objects (hand-built verdicts)."""
        if isinstance(traces, ProbeTraces):
            return traces
        ts = list(traces)
        if not ts:
            return cls.empty()
        width = max(len(t.sightings) for t in ts)

        def pad(row: Sequence[int], fill: int) -> list[int]:
            return [*row, *[fill] * (width - len(row))]

        # (a StrEnum member and its text are one dict key)
        code, outcome, direction = ({x: i for i, x in enumerate(xs)} for xs in (SIGHTINGS, OUTCOMES, DIRECTIONS))
        return cls(
            np.array([direction[t.direction] for t in ts], np.int8),
            np.array([t.seq for t in ts], np.int64),
            np.array([pad([code[x] for x in t.sightings], -1) for t in ts], np.int8),
            np.array([pad([-1 if x is None else x for x in t.times_ns], -1) for t in ts], np.int64),
            np.array([pad([0 if e is None else e[0] << 32 | e[1] for e in t.esp], 0) for t in ts], np.uint64),
            np.array([outcome[t.outcome] for t in ts], np.int8),
            np.array([-1 if t.last_seen is None else t.last_seen for t in ts], np.int32),
            np.array([-1 if t.first_missed is None else t.first_missed for t in ts], np.int32),
            np.array([len(t.sightings) for t in ts], np.int32),
        )

    @classmethod
    def concat(cls, parts: Sequence[ProbeTraces]) -> ProbeTraces:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        width = max(p.codes.shape[1] for p in parts)

        def wide(a: np.ndarray, fill: int) -> np.ndarray:
            return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)

        return cls(*(np.concatenate([p.directions for p in parts]), np.concatenate([p.seqs for p in parts]),
                     np.concatenate([wide(p.codes, -1) for p in parts]), np.concatenate([wide(p.times, -1) for p in parts]),
                     np.concatenate([wide(p.esp, 0) for p in parts]), np.concatenate([p.outcomes for p in parts]),
                     np.concatenate([p.last_seen for p in parts]), np.concatenate([p.first_missed for p in parts]),
                     np.concatenate([p.hops for p in parts])))

    def take(self, rows: np.ndarray) -> ProbeTraces:
        """The rows ``rows`` (indices or a mask), in that order."""
        return ProbeTraces(self.directions[rows], self.seqs[rows], self.codes[rows], self.times[rows], self.esp[rows],
                           self.outcomes[rows], self.last_seen[rows], self.first_missed[rows], self.hops[rows])

    def in_direction(self, direction: Direction | str) -> ProbeTraces:
        """The rows of one direction, as wide as its path."""
        d = DIRECTIONS.index(Direction(direction))
        part = self.take(self.directions == d)
        width = int(part.hops.max()) if len(part) else 0
        if width == part.codes.shape[1]:
            return part
        return replace(part, codes=part.codes[:, :width], times=part.times[:, :width], esp=part.esp[:, :width])

    def trace(self, direction: Direction | str, seq: int) -> ProbeTrace | None:
        """The trace of probe ``seq`` going ``direction`` (None: no such row)."""
        hit = np.flatnonzero((self.directions == DIRECTIONS.index(Direction(direction))) & (self.seqs == seq))
        return self[int(hit[0])] if len(hit) else None

    def outcome_is(self, *outcomes: Outcome) -> np.ndarray:
        """Mask of the rows with one of ``outcomes``."""
        return np.isin(self.outcomes, [OUTCOMES.index(o) for o in outcomes])

    def sent(self) -> np.ndarray:
        """Mask of the rows expected on their path at all (not the reply of a request that died)."""
        return self.outcomes != OUTCOMES.index(Outcome.NOT_SENT)

    def __len__(self) -> int:
        return len(self.seqs)

    @overload
    def __getitem__(self, i: int) -> ProbeTrace: ...

    @overload
    def __getitem__(self, i: slice) -> ProbeTraces: ...

    def __getitem__(self, i: int | slice) -> ProbeTrace | ProbeTraces:
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.objects(np.array([i % len(self)]))[0]

    def __iter__(self) -> Iterator[ProbeTrace]:
        return iter(self._all)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # (mutable arrays inside)

    def __repr__(self) -> str:
        return f"ProbeTraces({len(self)} rows)"

    @cached_property
    def _all(self) -> list[ProbeTrace]:
        return self.objects(np.arange(len(self)))

    def objects(self, rows: np.ndarray) -> list[ProbeTrace]:
        """Trace objects of ``rows``, from whole-column conversions (the loop only packs tuples)."""
        with _gc_paused():
            return self._objects(rows)

    def _objects(self, rows: np.ndarray) -> list[ProbeTrace]:
        codes, times, esp = self.codes[rows], self.times[rows], self.esp[rows]
        t_obj = times.astype(object)
        t_obj[times < 0] = None
        keyed = esp != 0
        e_obj = np.full(esp.shape, None, object)
        k = esp[keyed]
        e_obj[keyed] = np.fromiter(zip((k >> np.uint64(32)).tolist(), (k & np.uint64(0xFFFFFFFF)).tolist(), strict=True),
                                   dtype=object, count=len(k))
        shared: dict[bytes, tuple[Sighting, ...]] = {}  # few distinct rows: share their tuples
        out = []
        for p, (d, seq, o, last, fm, m, t_row, e_row) in enumerate(zip(
                self.directions[rows].tolist(), self.seqs[rows].tolist(), self.outcomes[rows].tolist(),
                self.last_seen[rows].tolist(), self.first_missed[rows].tolist(), self.hops[rows].tolist(),
                t_obj.tolist(), e_obj.tolist(), strict=True)):
            raw = codes[p, :m].tobytes()
            sightings = shared.get(raw) or shared.setdefault(raw, tuple(SIGHTINGS[c] for c in codes[p, :m].tolist()))
            out.append(ProbeTrace(seq, DIRECTIONS[d], sightings, tuple(t_row[:m]), tuple(e_row[:m]), OUTCOMES[o],
                                  None if last < 0 else last, None if fm < 0 else fm))
        return out


@dataclass(frozen=True)
class Finding:
    """Probes of one direction that share a fate."""

    direction: Direction
    outcome: Outcome
    count: int
    total: int
    where: str  # human phrase: "inside west-gw between lan0 and ipsec0 (forward)"
    last_seen: str | None = None  # capture point
    first_missed: str | None = None
    edge: str | None = None  # edge kind between them
    reason: str | None = None  # why, when the evidence says
    seqs: tuple[int, ...] = ()
    divergence: str | None = None  # how these probes left the expected path, when they did
    evidence: tuple[str, ...] = ()  # what the network said at the located hop ("router: nft rule ... +3 packets")


@dataclass(frozen=True)
class Verdict:
    """One probe run's verdict: status, expected paths, findings and per-probe traces."""

    run: int
    kind: str
    status: Status
    summary: str
    paths: dict[Direction, ExpectedPath]
    findings: tuple[Finding, ...]
    probes: ProbeTraces  # (trace objects given here are turned into columns)
    unobserved: tuple[str, ...] = ()
    drops: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # point → why its capture file cannot prove absence
    diagnoses: tuple[str, ...] = ()  # what the network said or did: ICMP errors, NAT, the IKE answer, MTU
    warnings: tuple[str, ...] = ()  # why parts of the verdict may be weaker: capture gaps, topology drift
    mtu: MtuReport | None = None
    observed: tuple[ObservedProbe, ...] = ()  # probes whose sightings left the expected path (or looped)
    flow: str | None = None  # untagged traffic: the flow traced (its run id is synthetic)
    notes: tuple[str, ...] = ()  # about tracer's own work (what ESP decryption found), not the network
    sent: tuple[SentProbe, ...] = ()  # the prober's record, when the run has one

    def __post_init__(self) -> None:
        if not isinstance(self.probes, ProbeTraces):
            object.__setattr__(self, "probes", ProbeTraces.of(self.probes))

    @property
    def rtt(self) -> RttStats | None:
        """The prober's round-trip times (None: no report, or nothing answered)."""
        from tracer.model.rtt import rtt_stats  # (the JSON document's: a text replay never loads it)

        return rtt_stats(s.rtt_ms for s in self.sent)

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def explanations(self) -> list[str]:
        """The lines under a verdict: why each loss happened, then notes, then warnings."""
        lines = [f"diverged ({f.direction}): {f.divergence}" for f in self.findings if f.divergence]
        for f in self.findings:
            if f.outcome == Outcome.DELIVERED:
                continue
            if f.reason:
                lines.append(f"why ({f.direction}): {f.reason}")
            lines += [f"  evidence: {e}" for e in f.evidence]
        notes = [f"note: {d}" for d in (*self.diagnoses, *self.notes)]
        return lines + notes + [f"warning: {w}" for w in self.warnings]

    def to_dict(self) -> dict[str, Any]:
        """One run of the JSON contract (docs/json.md)."""
        rtt = self.rtt
        with _gc_paused():
            probes = _trace_dicts(self.probes, self.paths)
        return {
            "run": run_hex(self.run),
            "kind": self.kind,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "paths": {str(k): p.to_dict() for k, p in self.paths.items()},
            "findings": [_finding_dict(f) for f in self.findings],
            "probes": probes,
            "sent": [_sent_dict(x) for x in self.sent],
            "rtt": None if rtt is None else {"count": rtt.count, "min_ms": rtt.min_ms, "avg_ms": rtt.avg_ms,
                                             "max_ms": rtt.max_ms, "mdev_ms": rtt.mdev_ms},
            "unobserved": list(self.unobserved),
            "drops": dict(self.drops),
            "damaged": dict(self.damaged),
            "diagnoses": list(self.diagnoses),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "ike": _ike_dict(self.sent) if self.kind == "ike" else None,
            "mtu": None if self.mtu is None else self.mtu.to_dict(),
            "observed": [_observed_dict(o) for o in self.observed],
            "flow": self.flow,  # untagged traffic: which flow (null: tagged probes)
        }


def run_hex(run: int) -> str:
    """A run id as text and ``--run`` write it: ``0x`` and eight hex digits."""
    return f"{run:#010x}"


def us(ns: int | None) -> int | None:
    """Nanoseconds since the epoch → integer µs (exact in JSON readers that use doubles)."""
    return None if ns is None else ns // 1000


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "direction": str(f.direction), "outcome": f.outcome.value, "count": f.count, "total": f.total,
        "where": f.where, "last_seen": f.last_seen, "first_missed": f.first_missed, "edge": f.edge,
        "reason": f.reason, "seqs": list(f.seqs), "divergence": f.divergence, "evidence": list(f.evidence),
    }


def _trace_dicts(t: ProbeTraces, paths: Mapping[Direction, ExpectedPath]) -> list[dict[str, Any]]:
    """The ``probes`` of the JSON, from the columns: whole-array conversions, then one dict per row."""
    points = [[h.point for h in paths[d].hops] if d in paths else [] for d in DIRECTIONS]
    t_obj = (t.times // 1000).astype(object)
    t_obj[t.times < 0] = None
    keyed = t.esp != 0
    e_obj = np.full(t.esp.shape, None, object)
    k = t.esp[keyed]
    e_obj[keyed] = [{"spi": spi, "seq": q} for spi, q in zip((k >> np.uint64(32)).tolist(),
                                                                (k & np.uint64(0xFFFFFFFF)).tolist(), strict=True)]
    kinds, row_kind = _distinct_rows(t.codes)
    sightings = [[SIGHTINGS[c].value for c in row if c >= 0] for row in kinds.tolist()]
    direction, outcome = [x.value for x in DIRECTIONS], [x.value for x in OUTCOMES]
    width = t.codes.shape[1]
    out: list[dict[str, Any]] = []
    for d, seq, o, last, fm, m, k, t_row, e_row in zip(
            t.directions.tolist(), t.seqs.tolist(), t.outcomes.tolist(), t.last_seen.tolist(), t.first_missed.tolist(),
            t.hops.tolist(), row_kind.tolist(), t_obj.tolist(), e_obj.tolist(), strict=True):
        out.append({
            "seq": seq, "direction": direction[d], "outcome": outcome[o],
            "last_seen": None if last < 0 else points[d][last], "first_missed": None if fm < 0 else points[d][fm],
            "sightings": sightings[k].copy(), "times_us": t_row if m == width else t_row[:m],
            "esp": e_row if m == width else e_row[:m],
        })
    return out


def _distinct_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D array and, per row, which of them it is (few in a probe run)."""
    if a.size == 0:  # no rows, or rows of no columns (all alike)
        return a[:1], np.zeros(len(a), np.int64)
    packed = np.ascontiguousarray(a).view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
    return a[first], inverse.ravel()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Without the cyclic collector while many acyclic containers are made at once: at 100k
    probes its passes, which find nothing, take half of the time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _sent_dict(x: SentProbe) -> dict[str, Any]:
    return {"seq": x.seq, "sent_us": us(x.sent_ns), "size": x.size, "rtt_ms": x.rtt_ms, "error": x.error,
            "answer": x.answer}


def _ike_dict(sent: tuple[SentProbe, ...]) -> dict[str, Any]:
    """What the IKE responder answered, grouped by answer: the structured form of the note."""
    groups: dict[str, dict[str, Any]] = {}
    for x in sent:
        if x.answer is None:
            continue
        g = groups.setdefault(x.answer, {
            "answer": x.answer, "seqs": [],
            "notifies": [str(n) for n in x.details.get("notifies") or []],
            # Recorded by newer probers only: None when the run does not say.
            "errors": _strs(x.details.get("errors")), "chosen": _strs(x.details.get("chosen")),
            "nat": x.details.get("nat"), "peer_nat": x.details.get("peer_nat"),
            "responder_spis": []})
        g["seqs"].append(x.seq)
        if x.details.get("responder_spi"):
            g["responder_spis"].append(str(x.details["responder_spi"]))
    return {"sent": len(sent), "answered": sum(len(g["seqs"]) for g in groups.values()),
            "answers": list(groups.values())}


def _strs(v: Any) -> list[str] | None:
    return [str(x) for x in v] if isinstance(v, list) else None


def _observed_dict(o: ObservedProbe) -> dict[str, Any]:
    d, lp = o.divergence, o.loop
    return {
        "seq": o.seq, "direction": str(o.direction),
        "seen": [{"point": s.point, "time_us": us(s.time_ns), "form": s.form.value, "place": s.place.value,
                  "ttl": s.ttl, "esp": None if s.esp is None else {"spi": s.esp[0], "seq": s.esp[1]},
                  "outer": None if s.outer is None else _outer(s.outer)} for s in o.seen],
        "divergence": None if d is None else {"kind": d.kind, "after": d.after, "at": d.at, "text": d.text,
                                              "rejoined": d.rejoined},
        "loop": None if lp is None else {"nodes": list(lp.nodes), "point": lp.point, "count": lp.count,
                                         "ttl_first": lp.ttl_first, "ttl_last": lp.ttl_last,
                                         "expired_from": lp.expired_from},
        "quoted": list(o.quoted),
    }


def _outer(o: tuple[int, int, int, int]) -> dict[str, Any]:
    src, sport, dst, dport = o
    return {"src": str(IPv4Address(src)), "sport": sport, "dst": str(IPv4Address(dst)), "dport": dport}
