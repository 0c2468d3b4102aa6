"""Capture points whose file reads, but whose header fields cannot be right: a wrong link type (no
packet of it decodes as IP) or a wrong timestamp resolution or offset (its packets lie far from
every other point's). Their silence proves nothing, like a file cut short (issue 13, deliver 2):
without this, such a file reads as a capture that saw nothing and moves the blame."""

from __future__ import annotations

import numpy as np

from tracer.model.observations import Observations

DAY_NS = 24 * 3600 * 10**9
FAR_NS = DAY_NS  # further from the run than any clock error tracer corrects; a resolution error is decades
MIN_PACKETS = 3  # fewer: too little to call a link type wrong (a lone ARP or LLDP frame is normal)


def implausible(obs: Observations, remote: set[str] = frozenset(), started_ns: int | None = None) -> dict[str, str]:
    """Point → why its file's header fields cannot describe its packets. ``remote``: points stamped
    by another host's clock (their offset is estimated later, not judged here); ``started_ns``: when
    the run started (its manifest), else the points are judged against each other (three or more)."""
    out: dict[str, str] = {}
    medians: dict[str, int] = {}
    for k, name in enumerate(obs.points):
        c = obs.point_counts(k)  # all it captured, also where rows were left out while reading
        if c.packets == 0:
            continue
        if c.packets >= MIN_PACKETS and not c.ip:
            out[name] = f"none of its {c.packets} packets decodes as IP: its link type does not fit its content"
        elif name not in remote and c.ip_median_ns is not None:
            medians[name] = c.ip_median_ns
    if started_ns is not None or len(medians) >= 3:
        centre = started_ns if started_ns is not None else int(np.median(list(medians.values())))
        for name, m in medians.items():
            if abs(m - centre) > FAR_NS:
                days = abs(m - centre) / DAY_NS
                out[name] = (f"its packets are stamped {days:,.0f} days from the run's time (its start, or the "
                             "other capture points'): its timestamp resolution or offset is wrong")
    return out
