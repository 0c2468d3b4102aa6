"""Per-hop one-way delay: a box per pair of consecutive capture points.

Request and reply share a row when they cross the same pair (in opposite
directions), so a slow link shows as one row with two boxes. Delays between
capture points on different hosts include the clock offset estimate's error.
Every probe sent that way counts, as in the path diagram's edge labels and the
text verdict (see :mod:`tracer.analysis.hopstats`); ``delivered_only`` narrows
the boxes to the probes that arrived. Artists carry ``gid``s for tests:
``latency-box:<dir>``, ``latency-median:<dir>``, ``latency-points:<dir>`` (one per row).
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from tracer.analysis.hopstats import path_stats
from tracer.model.direction import DIRECTIONS, Direction
from tracer.model.point import CapturePoint
from tracer.model.verdict import Verdict
from tracer.plot.labels import short_point
from tracer.plot.palette import REPLY_COLOR, REQUEST_COLOR

# matplotlib 3.10 renamed vert=False to orientation= (and deprecated the old spelling).
_HORIZONTAL: dict[str, Any] = (
    {"orientation": "horizontal"} if tuple(int(p) for p in mpl.__version__.split(".")[:2]) >= (3, 10) else {"vert": False}
)
COLORS = {Direction.REQUEST: REQUEST_COLOR, Direction.REPLY: REPLY_COLOR}


def hop_pairs(verdict: Verdict) -> list[tuple[str, str, str]]:
    """Row labels in request order: (a, b, label) with a → b as the request crosses it."""
    rows: list[tuple[str, str, str]] = []
    for direction in DIRECTIONS:
        path = verdict.paths.get(direction)
        if path is None:
            continue
        for h in range(len(path.hops) - 1):
            a, b = path.hops[h].point, path.hops[h + 1].point
            if any({a, b} == {r[0], r[1]} for r in rows):
                continue
            rows.append((a, b, _pair_label(a, b)))
    return rows


def _pair_label(a: str, b: str) -> str:
    na, ia = CapturePoint.parse(a)
    nb, ib = CapturePoint.parse(b)
    return f"{na}: {ia} ↔ {ib}" if na == nb else f"{short_point(a, 18)} ↔ {short_point(b, 18)}"


def draw_latency(ax: Axes, verdict: Verdict, delivered_only: bool = False) -> dict[str, list[list[float]]]:
    """Box plot of per-hop delay (ms) onto ``ax``; return {direction: delays per row of :func:`hop_pairs`}."""
    rows = hop_pairs(verdict)
    if not rows:
        ax.text(0.5, 0.5, "no hops to time", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return {}
    index = {frozenset((a, b)): i for i, (a, b, _) in enumerate(rows)}
    drawn: dict[str, list[list[float]]] = {}
    note = ""
    stats = [s for s in (path_stats(verdict, d) for d in DIRECTIONS) if s is not None]
    delays_by_dir = {s.direction: s.edge_delays_ms(delivered_only) for s in stats}
    if delivered_only and not any(x for ds in delays_by_dir.values() for x in ds):
        # Nothing arrived: the hops before the loss still have timings worth seeing.
        delays_by_dir = {s.direction: s.edge_delays_ms() for s in stats}
        note = " (no probe delivered: all probes)"
    offsets = {Direction.REQUEST: -0.19, Direction.REPLY: 0.19} if len(delays_by_dir) > 1 else {Direction.REQUEST: 0.0}
    for direction, delays in delays_by_dir.items():
        path = verdict.paths[direction]
        per_row: list[list[float]] = [[] for _ in rows]
        for h, d in enumerate(delays):
            per_row[index[frozenset((path.hops[h].point, path.hops[h + 1].point))]] = d
        drawn[direction] = per_row
        data = [(i, d) for i, d in enumerate(per_row) if d]
        if not data:
            continue
        bp = ax.boxplot([d for _, d in data], positions=[i + offsets[direction] for i, _ in data],
                        **_HORIZONTAL, widths=0.32, patch_artist=True, showfliers=False,
                        medianprops={"color": "black"}, flierprops={"markersize": 3})
        for box, med in zip(bp["boxes"], bp["medians"], strict=True):
            box.set_facecolor(COLORS[direction])
            box.set_alpha(0.55)
            box.set_gid(f"latency-box:{direction}")
            med.set_gid(f"latency-median:{direction}")
        # The probes themselves, jittered: with a handful of probes a box alone hides how few there are.
        rng = np.random.default_rng(0)
        for i, d in data:
            ys = i + offsets[direction] + rng.uniform(-0.1, 0.1, len(d))
            ax.scatter(d, ys, s=9, color=COLORS[direction], edgecolors="black", linewidths=0.3, zorder=3,
                       gid=f"latency-points:{direction}")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[2] for r in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first hop on top, like the path reads
    ax.set_xlabel("one-way delay between consecutive capture points (ms)", fontsize=8)
    ax.set_title(f"per-hop delay{note}", fontsize=10)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.tick_params(axis="x", labelsize=7)
    timed = [d for d, rows_ in drawn.items() if any(rows_)]
    if timed:
        ax.legend(handles=[Patch(fc=COLORS[d], alpha=0.75, label=d) for d in timed], fontsize=7, loc="lower right")
    return drawn
