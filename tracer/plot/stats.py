"""Per-hop numbers the figures draw: who saw how many probes, how long each hop took.

Pure functions over a Verdict, shared by the plot modules so the path diagram,
the timeline and the latency plot never disagree about what a probe did.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from tracer.model.verdict import Outcome, ProbeTrace, Sighting, Verdict

DIRECTIONS = ("request", "reply")


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


def sent_traces(v: Verdict, direction: str) -> list[ProbeTrace]:
    """Probes actually expected on ``direction``'s path (a reply whose request died is not)."""
    return [t for t in v.probes if t.direction == direction and t.outcome != Outcome.NOT_SENT]


def point_stats(v: Verdict, direction: str) -> list[PointStats]:
    path = v.paths.get(direction)
    if path is None:
        return []
    traces = sent_traces(v, direction)
    out = []
    for h, hop in enumerate(path.hops):
        col = [t.sightings[h] for t in traces]
        out.append(PointStats(
            hop.point, len(traces),
            seen=col.count(Sighting.SEEN), missed=col.count(Sighting.MISSED), gap=col.count(Sighting.GAP),
            unobserved=col.count(Sighting.UNOBSERVED), unreliable=col.count(Sighting.UNRELIABLE),
            unknown=col.count(Sighting.UNKNOWN),
        ))
    return out


def hop_delays_ms(v: Verdict, direction: str, delivered_only: bool = False) -> list[list[float]]:
    """One-way delay of each edge (hop i → i+1) in ms, one value per probe seen at both ends."""
    path = v.paths.get(direction)
    if path is None:
        return []
    traces = [t for t in sent_traces(v, direction) if not delivered_only or t.outcome == Outcome.DELIVERED]
    out: list[list[float]] = []
    for h in range(len(path.hops) - 1):
        pairs = ((t.times_ns[h], t.times_ns[h + 1]) for t in traces)
        out.append([(b - a) / 1e6 for a, b in pairs if a is not None and b is not None])
    return out


def median_ms(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_ms(ms: float) -> str:
    """Three significant digits: 0.04 ms and 123 ms read equally well."""
    return f"{ms:.3g} ms"


def esp_spis(v: Verdict, direction: str) -> list[int | None]:
    """Per hop: the SPI the probes were tied to there, else what the topology says, else None."""
    path = v.paths.get(direction)
    if path is None:
        return []
    traces = sent_traces(v, direction)
    out: list[int | None] = []
    for h, hop in enumerate(path.hops):
        seen = sorted({t.esp[h][0] for t in traces if t.esp[h] is not None})
        if seen:
            out.append(seen[0])
        elif hop.esp is not None:
            out.append(hop.esp.spi)
        else:
            out.append(None)
    return out


def short(text: str, width: int = 12) -> str:
    """Abbreviate a label so 30 capture points still fit side by side."""
    return text if len(text) <= width else text[: width - 1] + "…"


def short_point(point: str, width: int = 16) -> str:
    """Abbreviate ``node:iface`` from the node's end: the interface is what tells columns apart."""
    if len(point) <= width:
        return point
    node, _, iface = point.rpartition(":")
    keep = max(2, width - len(iface) - 2)
    return short(f"{node[:keep]}…:{iface}", width)
