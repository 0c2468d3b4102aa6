"""The loss-over-time graph of a ``tracer watch``: the figure people put in incident reports.

Top: the loss rate of each window (probes whose request or reply was lost), with the events —
loss starts, stops or moves to another hop — marked by vertical lines and labelled. Below: one
row per capture point (request path, then reply path), each window coloured by the fraction
of the probes that point did not see, and the located hop (the first point that missed them)
marked in each window with loss. Gaps between windows (sniffers restarting) stay blank.

Artists carry ``gid``s for tests: ``watch-loss`` (the loss line), ``watch-hops`` (the
mesh; its array is hops × windows), ``watch-located`` (markers), ``watch-event:<n>``
(the event lines, with ``watch-event-label:<n>`` on those where loss started, stopped or moved).
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from tracer.analysis.window import WindowSummary, changed, downsample
from tracer.plot.labels import short_point
from tracer.plot.palette import LOSS_CMAP, LOST_COLOR, NO_DATA_COLOR, OK_COLOR, PALETTE

MAX_COLUMNS = 720  # windows drawn side by side: 12 h of one-minute windows, then merged


def hop_rows(summaries: list[WindowSummary]) -> list[tuple[str, str]]:
    """(direction, point) in the order the windows list them, request path first."""
    rows: dict[tuple[str, str], None] = {}
    for s in summaries:
        for h in s.hops:
            rows.setdefault((h.direction, h.point), None)
    return sorted(rows, key=lambda r: r[0] != "request")


def loss_matrix(summaries: list[WindowSummary]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """loss[row, window] (NaN: unknown at that point in that window), and the rows."""
    rows = hop_rows(summaries)
    index = {r: i for i, r in enumerate(rows)}
    m = np.full((len(rows), len(summaries)), np.nan)
    for w, s in enumerate(summaries):
        for h in s.hops:
            if h.loss is not None:
                m[index[(h.direction, h.point)], w] = h.loss
    return m, rows


class Event(NamedTuple):
    summary: WindowSummary  # the first window of the new state
    label: str
    state: bool  # loss started, stopped or moved (labelled); False: only its rate moved (a thin line)


def events(summaries: list[WindowSummary], step: float = 0.1) -> list[Event]:
    """The windows where loss started, stopped, moved, or its rate moved by ``step`` or more."""
    out = []
    for prev, cur in pairwise(summaries):
        if not changed(prev, cur, step):
            continue
        if prev.lost == 0 and cur.lost:
            out.append(Event(cur, f"loss on: {cur.located or cur.status}", True))
        elif prev.lost and cur.lost == 0:
            out.append(Event(cur, "loss off", True))
        elif prev.located != cur.located:
            out.append(Event(cur, f"moved: {cur.located or cur.status}", True))
        else:
            out.append(Event(cur, f"{100 * cur.loss:.0f}% loss", False))
    return out


def _t(x: float) -> float:
    return float(date2num(datetime.fromtimestamp(x, UTC)))


def draw_loss(ax: Axes, summaries: list[WindowSummary], step: float = 0.1) -> None:
    """Loss rate per window as a flat segment over the window; a gap where no window ran."""
    xs: list[float] = []
    ys: list[float] = []
    for s in summaries:
        if xs and _t(s.start) > xs[-1]:
            xs.append(np.nan)
            ys.append(np.nan)
        xs += [_t(s.start), _t(s.end)]
        ys += [100 * s.loss] * 2
    ax.plot(xs, ys, color=PALETTE["blue"], lw=1.8, gid="watch-loss", label="loss rate per window")
    ax.fill_between(xs, ys, color=PALETTE["blue"], alpha=0.15, lw=0)
    ax.set_ylim(-3, 135)
    ax.set_yticks(range(0, 101, 25))
    ax.set_ylabel("probes lost (%)", fontsize=9)
    labelled = 0
    for n, e in enumerate(events(summaries, step)):
        x = _t(e.summary.start)
        color = LOST_COLOR if e.summary.lost else OK_COLOR
        if not e.state:  # the rate moved, the state did not: a faint line, no words over the graph
            ax.axvline(x, color=color, lw=0.8, ls=":", alpha=0.7, gid=f"watch-event:{n}")
            continue
        ax.axvline(x, color=color, lw=1.2, ls="--", gid=f"watch-event:{n}")
        # Three heights in turn: events close together keep their labels apart; in the right
        # third of the time axis the label reads leftwards, so it never runs off the figure.
        left = (x - xs[0]) / max(xs[-1] - xs[0], 1e-9) > 0.67
        ax.annotate(e.label, (x, (131, 121, 111)[labelled % 3]), xytext=(-3 if left else 3, 0),
                    textcoords="offset points", ha="right" if left else "left", fontsize=7, va="top", color=color,
                    gid=f"watch-event-label:{n}")
        labelled += 1
    ax.grid(color="#dddddd", lw=0.6)
    ax.tick_params(labelsize=8)


def draw_hops(ax: Axes, summaries: list[WindowSummary]) -> None:
    m, rows = loss_matrix(summaries)
    if not rows:
        ax.text(0.5, 0.5, "no capture points", ha="center", va="center", transform=ax.transAxes)
        return
    # x edges: each window's start and end; a gap column (NaN) between windows leaves it blank.
    edges: list[float] = []
    cols: list[int | None] = []
    for w, s in enumerate(summaries):
        if edges and _t(s.start) > edges[-1]:
            edges.append(_t(s.start))
            cols.append(None)
        elif not edges:
            edges.append(_t(s.start))
        edges.append(max(_t(s.end), edges[-1]))
        cols.append(w)
    c = np.full((len(rows), len(cols)), np.nan)
    for j, w in enumerate(cols):
        if w is not None:
            c[:, j] = m[:, w]
    mesh = ax.pcolormesh(edges, np.arange(len(rows) + 1) - 0.5, np.ma.masked_invalid(c), cmap=LOSS_CMAP,
                         vmin=0, vmax=1, shading="flat")
    mesh.set_gid("watch-hops")
    mesh.set_rasterized(True)  # one image in the SVG, not a path per cell
    index = {r: i for i, r in enumerate(rows)}
    lx, ly = [], []
    for s in summaries:
        if s.located and s.direction:
            first_missed = s.located.split(" → ")[-1]
            if (s.direction, first_missed) in index:
                lx.append((_t(s.start) + _t(s.end)) / 2)
                ly.append(index[(s.direction, first_missed)])
    ax.scatter(lx, ly, marker="x", s=22, color="white", linewidths=1.4, zorder=3,
               gid="watch-located", label="located hop (first point that missed the probes)")
    ax.set_facecolor(NO_DATA_COLOR)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{'→' if d == 'request' else '←'} {short_point(p, 22)}" for d, p in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=8)
    cb = ax.figure.colorbar(mesh, ax=ax, pad=0.01, fraction=0.03)
    cb.set_label("fraction not seen", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if lx:
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=7, facecolor="#555555", labelcolor="white",
                  frameon=True)


def watch_figure(summaries: list[WindowSummary], title: str = "", step: float = 0.1) -> Figure:
    """The whole watch; beyond :data:`MAX_COLUMNS` windows, consecutive ones are merged, so the
    figure's size and drawing time stay bounded however long the watch ran."""
    total = len(summaries)
    summaries = downsample(summaries, MAX_COLUMNS)
    rows = len(hop_rows(summaries))
    fig = Figure(figsize=(13, 4.0 + 0.22 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1.0, max(1.2, 0.12 * rows)))
    draw_loss(top, summaries, step)
    draw_hops(bottom, summaries)
    locator = AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    bottom.set_xlabel("time (UTC)    grey: nothing captured (between windows) or no probe expected there "
                      "(replies of lost requests)", fontsize=8)
    if summaries:
        t0 = datetime.fromtimestamp(summaries[0].start, UTC).strftime("%Y-%m-%d %H:%M:%S")
        t1 = datetime.fromtimestamp(summaries[-1].end, UTC).strftime("%H:%M:%S")
        merged = f" (drawn {-(-total // len(summaries))} to a column)" if len(summaries) < total else ""
        head = f"{title}  {t0} – {t1} UTC, {total} windows{merged}".strip()
    else:
        head = title or "no window completed"
    fig.suptitle("\n".join(textwrap.wrap(head, 140)), fontsize=11, fontweight="bold")
    return fig


def save_watch(summaries: list[WindowSummary], stem: Path, title: str = "", step: float = 0.1) -> list[Path]:
    """Write ``stem``.png and ``stem``.svg, each replaced atomically (a reader never sees half a file)."""
    fig = watch_figure(summaries, title, step)
    out = []
    for fmt in ("png", "svg"):
        path = stem.with_suffix(f".{fmt}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=90)
        tmp.replace(path)
        out.append(path)
    return out
