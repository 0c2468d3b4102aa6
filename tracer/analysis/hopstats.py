"""Per-hop statistics of a verdict: what each capture point saw of the probes, and when.

The one place that decides, for the text verdict and every figure alike:

* which probes count on a path: those sent that way (a reply whose request
  never arrived was not expected anywhere, so it is neither seen nor missed);
* a probe's time at a hop: the first time it was seen there, on the run's
  common clock (None where it was not seen);
* the SPI at an ESP hop: what the probes were tied to there, else what the
  topology says.

Elapsed times (since the path's first hop) and per-edge delays are both
differences of that one arrival time, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tracer.model.direction import Direction
from tracer.model.distinct import distinct
from tracer.model.path import ExpectedPath
from tracer.model.verdict import SIGHTINGS, Outcome, ProbeTrace, ProbeTraces, Sighting, Verdict


def is_sent(t: ProbeTrace) -> bool:
    """Whether ``t`` was expected on its path at all (not the reply of a request that died)."""
    return t.outcome != Outcome.NOT_SENT


def arrival_ns(t: ProbeTrace, hop: int) -> int | None:
    """The probe's time at ``hop``: first seen there, on the common clock; None if not seen."""
    return t.times_ns[hop]


def median(values: Sequence[float] | np.ndarray) -> float | None:
    """``np.median``, same value bit for bit: the mean of the middle one or two. On floats
    np.median's NaN check imports numpy.ma (10-20 ms, first call of a small replay); the
    intervals here hold no NaN, and one that does still goes to np.median."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if not n:
        return None
    if np.isnan(v).any():
        return float(np.median(v))
    k = n // 2
    middle = slice(k, k + 1) if n % 2 else slice(k - 1, k + 1)
    return float(np.mean(np.partition(v, [middle.start, middle.stop - 1])[middle]))


@dataclass(frozen=True)
class PointStats:
    """What one capture point of one direction saw of the probes sent that way."""

    point: str
    sent: int  # probes expected on this path (not-sent replies excluded)
    seen: int
    missed: int
    gap: int
    unobserved: int
    unreliable: int
    unknown: int
    spis: tuple[int, ...] = ()  # ESP hop: SPIs the probes were tied to, else the topology's; () in the clear
    elsewhere: int = 0  # probes that had left the expected path before this point
    leaked: int = 0  # probes seen here in the clear where ESP belongs

    @property
    def captured(self) -> bool:
        """False when no capture file exists for the point (nothing to colour)."""
        return self.sent > 0 and self.unobserved < self.sent

    @property
    def decided(self) -> int:
        """Probes whose presence here is known either way (not unobserved, not untied ESP)."""
        return self.sent - self.unobserved - self.unknown

    @property
    def fraction(self) -> float | None:
        """Fraction of the decidable probes this point saw; None when nothing is known."""
        return self.seen / self.decided if self.decided > 0 else None


@dataclass(frozen=True)
class PathStats:
    """One direction's path: per-hop counts, per-edge losses, and timings of the probes sent that way."""

    direction: Direction
    path: ExpectedPath
    probes: ProbeTraces  # the probes that count: sent this way, in verdict order
    points: tuple[PointStats, ...]  # one per hop
    lost: tuple[int, ...]  # one per edge (hop i → i+1): probes lost exactly there

    @property
    def sent(self) -> int:
        return len(self.probes)

    def elapsed_ms(self, delivered_only: bool = False) -> list[list[float]]:
        """Per hop: time since the path's first hop (ms), one value per probe timed at both."""
        return [self._between(0, h, delivered_only).tolist() for h in range(len(self.path.hops))]

    def elapsed_medians_ms(self) -> list[float | None]:
        """Per hop: the median of :meth:`elapsed_ms` (None: no probe timed at both)."""
        return [median(self._between(0, h, False)) for h in range(len(self.path.hops))]

    def edge_delays_ms(self, delivered_only: bool = False) -> list[list[float]]:
        """Per edge (hop i → i+1): one-way delay (ms), one value per probe timed at both ends."""
        return [self._between(h, h + 1, delivered_only).tolist() for h in range(len(self.path.hops) - 1)]

    @cached_property
    def _arrivals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`arrival_ns` of every probe at every hop, once: (ns with 0 where unseen, seen
        mask, delivered mask per probe), so each hop's or edge's figures are array operations."""
        t = self.probes.times[:, :len(self.path.hops)]
        seen = t >= 0
        return np.where(seen, t, 0), seen, self.probes.outcome_is(Outcome.DELIVERED)

    def _between(self, a: int, b: int, delivered_only: bool) -> np.ndarray:
        t, seen, delivered = self._arrivals
        ok = seen[:, a] & seen[:, b]
        if delivered_only:
            ok &= delivered
        return (t[ok, b] - t[ok, a]) / 1e6


def path_stats(v: Verdict, direction: str) -> PathStats | None:
    """Statistics of ``direction``'s path in ``v``; None when the verdict has no such path."""
    path = v.paths.get(direction)
    if path is None:
        return None
    probes = v.probes.in_direction(direction)
    probes = probes.take(probes.sent())
    points = tuple(_point(path, h, probes) for h in range(len(path.hops)))
    # lost exactly on edge h: last seen at hop h, first missed at h + 1
    on_edge = probes.outcome_is(Outcome.LOST) & (probes.last_seen >= 0) & (probes.first_missed == probes.last_seen + 1)
    lost_at = np.bincount(probes.last_seen[on_edge], minlength=len(path.edges))
    lost = tuple(int(lost_at[h]) for h in range(len(path.edges)))
    return PathStats(Direction(direction), path, probes, points, lost)


def all_path_stats(v: Verdict) -> dict[Direction, PathStats]:
    """Statistics of every path of ``v``, in the verdict's order."""
    return {s.direction: s for s in (path_stats(v, d) for d in v.paths) if s is not None}


def _point(path: ExpectedPath, h: int, probes: ProbeTraces) -> PointStats:
    hop = path.hops[h]
    n = np.bincount(probes.codes[:, h].astype(np.int64), minlength=len(SIGHTINGS)).tolist() if len(probes) else \
        [0] * len(SIGHTINGS)
    count = dict(zip(SIGHTINGS, n, strict=True))
    return PointStats(
        hop.point, len(probes),
        seen=count[Sighting.SEEN], missed=count[Sighting.MISSED], gap=count[Sighting.GAP],
        unobserved=count[Sighting.UNOBSERVED], unreliable=count[Sighting.UNRELIABLE],
        unknown=count[Sighting.UNKNOWN], elsewhere=count[Sighting.ELSEWHERE],
        leaked=count[Sighting.LEAKED], spis=_spis(path, h, probes),
    )


def _spis(path: ExpectedPath, h: int, probes: ProbeTraces) -> tuple[int, ...]:
    esp = path.hops[h].esp
    if esp is None:
        return ()
    keys = probes.esp[:, h]
    tied = distinct(keys[keys != 0] >> np.uint64(32)).tolist()
    # SPI 0 is reserved (RFC 4303 §2.1): never on the wire, so a 0 in the topology means unknown.
    return tuple(tied) or ((esp.spi,) if esp.spi else ())
