"""Round-trip time statistics, as ping prints them (``rtt min/avg/max/mdev``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RttStats:
    """Round-trip times of the answered probes, as ping prints them."""

    count: int  # answered probes the figures are made of
    min_ms: float
    avg_ms: float
    max_ms: float
    mdev_ms: float  # ping's mdev: sqrt(mean(rtt²) − mean(rtt)²)

    def text(self) -> str:
        return f"rtt min/avg/max/mdev = {self.min_ms:.3f}/{self.avg_ms:.3f}/{self.max_ms:.3f}/{self.mdev_ms:.3f} ms"


def rtt_stats(rtts: Iterable[float | None]) -> RttStats | None:
    """None when no probe was answered."""
    xs = [x for x in rtts if x is not None]
    if not xs:
        return None
    avg = sum(xs) / len(xs)
    var = max(0.0, sum(x * x for x in xs) / len(xs) - avg * avg)
    return RttStats(len(xs), min(xs), avg, max(xs), math.sqrt(var))
