"""The loss timeline: probe sequence × capture point, one coloured cell per sighting.

A column that turns vermillion from some probe on is a hop that started dropping; a
lone yellow cell in a green column is a capture gap, not loss. Dark blue is a
probe seen in the clear where ESP belongs (a leak), light blue a point it never
reached because it had left the expected path before (it went elsewhere).
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch

from tracer.analysis.hopstats import is_sent
from tracer.model.direction import Direction
from tracer.model.verdict import Sighting, Verdict
from tracer.plot.labels import short_point
from tracer.plot.palette import (
    DROPS_COLOR,
    ELSEWHERE_COLOR,
    GAP_COLOR,
    LEAK_COLOR,
    LOST_COLOR,
    NO_CAPTURE_CELL,
    OK_COLOR,
    UNKNOWN_COLOR,
)

NOT_SENT = "not-sent"
# Cell value → (state, colour, legend text). The value is what the image array holds.
STATES: tuple[tuple[str, str, str], ...] = (
    (Sighting.SEEN.value, OK_COLOR, "seen"),
    (Sighting.MISSED.value, LOST_COLOR, "missed"),
    (Sighting.GAP.value, GAP_COLOR, "capture gap"),
    (Sighting.UNOBSERVED.value, NO_CAPTURE_CELL, "not captured"),
    (Sighting.UNRELIABLE.value, DROPS_COLOR, "sniffer drops"),
    (Sighting.UNKNOWN.value, UNKNOWN_COLOR, "ESP not tied"),
    (Sighting.ELSEWHERE.value, ELSEWHERE_COLOR, "went elsewhere"),
    (Sighting.LEAKED.value, LEAK_COLOR, "in the clear (leak)"),
    (NOT_SENT, "#ffffff", "not sent"),
)
CODE = {state: i for i, (state, _, _) in enumerate(STATES)}


def timeline_matrix(verdict: Verdict, direction: str = Direction.REQUEST) -> tuple[np.ndarray, list[int], list[str]]:
    """(codes[probe, hop], probe seqs, capture points) for ``direction``; codes index :data:`STATES`."""
    path = verdict.paths.get(direction)
    points = [h.point for h in path.hops] if path else []
    size = probe_sizes(verdict)
    # MTU probes in size order (a column that turns from seen to missed at one size is the MTU).
    traces = sorted((t for t in verdict.probes if t.direction == direction), key=lambda t: (size.get(t.seq, 0), t.seq))
    m = np.full((len(traces), len(points)), CODE[NOT_SENT], dtype=np.int8)
    for i, t in enumerate(traces):
        if is_sent(t):
            m[i] = [CODE[s.value] for s in t.sightings]
    return m, [t.seq for t in traces], points


def probe_sizes(verdict: Verdict) -> dict[int, int]:
    """seq → IP packet bytes of MTU probes; empty for other kinds."""
    return {q: r.size for r in verdict.mtu.sizes for q in r.seqs} if verdict.mtu else {}


def draw_timeline(ax: Axes, verdict: Verdict, direction: str = Direction.REQUEST, legend: bool = True) -> np.ndarray:
    """Draw the sighting matrix of ``direction`` onto ``ax``; return the matrix drawn."""
    m, seqs, points = timeline_matrix(verdict, direction)
    ax.set_title(f"{Direction(direction).plural}: which capture point saw which probe", fontsize=10)
    if m.size == 0:
        ax.text(0.5, 0.5, f"no {direction} probes", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return m
    cmap = ListedColormap([c for _, c, _ in STATES])
    norm = BoundaryNorm(np.arange(len(STATES) + 1) - 0.5, len(STATES))
    im = ax.imshow(m, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest",
                   extent=(-0.5, len(points) - 0.5, len(seqs) - 0.5, -0.5))
    im.set_gid(f"timeline:{direction}")
    im.set_label(f"timeline-{direction}")
    if (m == CODE[NOT_SENT]).all():
        ax.text(0.5, 0.5, "none sent:\nno request arrived", ha="center", va="center", transform=ax.transAxes,
                fontsize=10, color="#888888", gid=f"timeline-empty:{direction}")
    # Thin white grid so single cells stay countable.
    ax.set_xticks(np.arange(len(points) + 1) - 0.5, minor=True)
    if len(seqs) <= 60:
        ax.set_yticks(np.arange(len(seqs) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels([short_point(p, 18) for p in points], rotation=55, ha="right", rotation_mode="anchor", fontsize=7)
    size = probe_sizes(verdict)
    if size:
        # One label per size, on its first row; a line between sizes.
        firsts = [i for i, q in enumerate(seqs) if i == 0 or size.get(q) != size.get(seqs[i - 1])]
        step = max(1, len(firsts) // 20)
        ax.set_yticks(firsts[::step])
        ax.set_yticklabels([f"{size[seqs[i]]}" if seqs[i] in size else "?" for i in firsts[::step]], fontsize=7)
        for i in firsts[1:]:
            ax.axhline(i - 0.5, color="black", lw=0.8, gid=f"size-boundary:{direction}")
        ax.set_ylabel("probe size (IP bytes)")
    else:
        step = max(1, len(seqs) // 20)  # ≤ ~20 tick labels, however many probes
        ax.set_yticks(range(0, len(seqs), step))
        ax.set_yticklabels([str(seqs[i]) for i in range(0, len(seqs), step)], fontsize=7)
        ax.set_ylabel("probe seq")
    ax.set_xlabel(f"capture point ({direction} path order)", fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if legend:
        used = sorted(set(np.unique(m).tolist()))
        ax.legend(handles=[Patch(fc=STATES[i][1], ec="#999999", label=STATES[i][2]) for i in used],
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, handlelength=1.2)
    return m
