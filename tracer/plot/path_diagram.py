"""The path diagram: every capture point of the expected path, and where the probes stopped.

Request row above, reply row below, capture points left to right in request
order (a reply hop sits under the same point of the request row, so a
symmetric path reads as two rows of one line). Each point is coloured by the
fraction of probes it saw; the edge where they disappeared is a thick red
line with a ✗ and the verdict's own phrase for it.

Artists carry ``gid``/``label`` so tests (and curious users) can find them:
``capture-points:<direction>`` (node collections, label ``capture-points``),
``point-label:<point>``, ``node-band:<node>``, ``edge-label:<dir>:<a>-><b>``,
``esp-band:<direction>`` (label ``ESP SPI 0x…``), ``lost-edge:<dir>:<a>-><b>``
(label ``lost-edge``), ``inconclusive:<dir>:<a>-><b>`` (label ``inconclusive-span``).
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from typing import Any

import matplotlib as mpl
import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Patch

from tracer.analysis.hopstats import PathStats, PointStats, median, path_stats
from tracer.model.direction import DIRECTIONS, Direction
from tracer.model.flowgraph import EdgeKind
from tracer.model.path import ExpectedPath
from tracer.model.verdict import Finding, Outcome, Verdict
from tracer.plot.labels import fmt_ms, short

# 0 seen → red, all seen → green; the colormap's darkest ends are cut so counts stay legible.
CMAP = ListedColormap(mpl.colormaps["RdYlGn"](np.linspace(0.08, 0.92, 256)), name="seen")
ROW_Y = {Direction.REQUEST: 1.0, Direction.REPLY: 0.0}
LOST_COLOR = "#d62728"
DOUBT_COLOR = "#ff7f0e"
ESP_COLOR = "#9467bd"
UNOBSERVED_COLOR = "#9e9e9e"
UNKNOWN_COLOR = "#c5b0d5"  # ESP seen but not tied to a probe: neither seen nor missed
NOT_SENT_COLOR = "#f2f2f2"
NODE_SIZE = 620
EDGE_COLOR = {EdgeKind.WIRE: "#444444", EdgeKind.FORWARD: "#444444", EdgeKind.ENCAP: ESP_COLOR, EdgeKind.DECAP: ESP_COLOR}


def seen_color(fraction: float) -> tuple[float, float, float, float]:
    """Marker colour for a point that saw ``fraction`` of the probes."""
    return CMAP(float(fraction))  # a colormap reads an int as a table index: seen_color(1) would be red


def flow_graph(v: Verdict) -> nx.DiGraph:
    """Capture points of both directions with positions: path order on x, direction on y."""
    g = nx.DiGraph()
    req = v.paths.get(Direction.REQUEST)
    x_of: dict[str, float] = {}
    for h, hop in enumerate(req.hops if req else ()):
        x_of.setdefault(hop.point, float(h))
    for direction in DIRECTIONS:
        path = v.paths.get(direction)
        if path is None:
            continue
        xs = [float(h) for h in range(len(path.hops))] if direction == Direction.REQUEST else _place(path, x_of)
        for h, hop in enumerate(path.hops):
            g.add_node((direction, h), point=hop.point, node=hop.node, iface=hop.iface, direction=direction,
                       pos=(xs[h], ROW_Y[direction]), esp=hop.esp)
        for h, kind in enumerate(path.edges):
            g.add_edge((direction, h), (direction, h + 1), kind=kind)
    return g


def _place(path: ExpectedPath, known: dict[str, float]) -> list[float]:
    """x of each reply hop: under the same request point, else interpolated between known neighbours."""
    n = len(path.hops)
    anchors = [i for i, hop in enumerate(path.hops) if hop.point in known]
    if not anchors:
        return [float(n - 1 - i) for i in range(n)]  # nothing shared: still read right to left
    ax_ = [known[path.hops[i].point] for i in anchors]
    out = []
    for i, hop in enumerate(path.hops):
        if hop.point in known:
            out.append(known[hop.point])
        elif i < anchors[0]:
            out.append(ax_[0] + (anchors[0] - i))  # replies run right to left
        elif i > anchors[-1]:
            out.append(ax_[-1] - (i - anchors[-1]))
        else:
            out.append(float(np.interp(i, anchors, ax_)))
    return out


def draw_path(ax: Axes, verdict: Verdict, colorbar: bool = True, legend: bool = True) -> nx.DiGraph:
    """Draw the path diagram of ``verdict`` onto ``ax``; return the graph drawn (with ``pos``)."""
    g = flow_graph(verdict)
    if g.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "no expected path (the topology has no route for these probes)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return g
    pos: dict[Any, tuple[float, float]] = nx.get_node_attributes(g, "pos")
    xs = [p[0] for p in pos.values()]
    x_min, x_max = min(xs), max(xs)
    reply = verdict.paths.get(Direction.REPLY)
    two_rows = reply is not None and bool(reply.hops)
    paths = [s for s in (path_stats(verdict, d) for d in DIRECTIONS) if s is not None]

    _node_bands(ax, g, pos, two_rows)
    for stats in paths:
        _esp_band(ax, stats, pos)
    for stats in paths:
        if not stats.path.hops:
            continue
        _edges(ax, stats, g, pos)
        _nodes(ax, stats, verdict.drops, g, pos)
        _row_label(ax, stats, x_min)
    _point_labels(ax, g, pos, two_rows)
    # Losses get the annotation nearest their row, and are drawn last so their ✗ sits on
    # top of an inconclusive span over the same edges.
    marked = [f for f in verdict.findings if f.outcome in (Outcome.LOST, Outcome.INCONCLUSIVE)
              and f.direction in ROW_Y]
    marked.sort(key=lambda f: f.outcome != Outcome.LOST)
    level = dict.fromkeys(DIRECTIONS, 0)
    levels = []
    for f in marked:
        levels.append(level[f.direction])
        level[f.direction] += 1
    for f, lv in reversed(list(zip(marked, levels, strict=True))):
        _mark_finding(ax, verdict, f, pos, (x_min, x_max), lv)

    ax.set_xlim(x_min - 1.5, x_max + 0.9)
    up, down = level[Direction.REQUEST], level[Direction.REPLY]
    top = 1.8 + (0.25 + 0.3 * up if up else 0)
    bottom = (-0.6 - (0.3 + 0.3 * down if down else 0)) if two_rows else 0.35
    ax.set_ylim(bottom, top)
    ax.set_frame_on(False)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        cax = ax.inset_axes((1.005, 0.3, 0.012, 0.55))
        cb = ax.figure.colorbar(ScalarMappable(Normalize(0, 1), CMAP), cax=cax)
        cb.set_label("fraction of probes seen", fontsize=8)
        cb.ax.tick_params(labelsize=7)
        cax.set_gid("seen-colorbar")
    if legend:
        ax.legend(handles=_legend_handles(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=7,
                  fontsize=8, frameon=False, handlelength=1.6, columnspacing=1.4)
    return g


def _node_bands(ax: Axes, g: nx.DiGraph, pos: dict, two_rows: bool) -> None:
    """A light band per node, so 'inside west-gw' is a place you can see."""
    xs_by_node: dict[str, set[float]] = defaultdict(set)
    for n, data in g.nodes(data=True):
        xs_by_node[data["node"]].add(pos[n][0])
    clusters: list[tuple[float, float, str]] = []
    for node, xs in xs_by_node.items():
        run: list[float] = []
        for x in sorted(xs):
            if run and x - run[-1] > 1.01:
                clusters.append((run[0], run[-1], node))
                run = []
            run.append(x)
        clusters.append((run[0], run[-1], node))
    y0 = -0.42 if two_rows else 0.6
    for i, (a, b, node) in enumerate(sorted(clusters)):
        band = FancyBboxPatch((a - 0.4, y0), b - a + 0.8, 1.72 - y0, boxstyle="round,pad=0,rounding_size=0.12",
                              fc="#eef2f7" if i % 2 == 0 else "#f7f3ea", ec="#c9ced6", lw=0.8, zorder=0,
                              gid=f"node-band:{node}")
        ax.add_patch(band)
        ax.text((a + b) / 2, 1.64, short(node, 10 + int(8 * (b - a))), ha="center", va="top", fontsize=9,
                fontweight="bold", color="#333333", zorder=1, gid=f"node-label:{node}")


def _esp_band(ax: Axes, stats: PathStats, pos: dict) -> None:
    path, direction = stats.path, stats.direction
    runs: list[list[int]] = []
    for h, hop in enumerate(path.hops):
        if hop.esp is None:
            continue
        if runs and runs[-1][-1] == h - 1:
            runs[-1].append(h)
        else:
            runs.append([h])
    y = ROW_Y[direction]
    faded = not stats.sent
    for run in runs:
        xs = [pos[(direction, h)][0] for h in run]
        a, b = min(xs), max(xs)
        spis = sorted({spi for h in run for spi in stats.points[h].spis})
        esp = path.hops[run[0]].esp
        assert esp is not None
        text = "ESP " + ", ".join(f"SPI 0x{spi:08x}" for spi in spis) if spis else "ESP (SPI unknown)"
        band = FancyBboxPatch((a - 0.3, y - 0.3), b - a + 0.6, 0.6, boxstyle="round,pad=0,rounding_size=0.08",
                              fc=ESP_COLOR, alpha=0.06 if faded else 0.16, ec=ESP_COLOR, lw=1.2, ls="--",
                              zorder=0.5, gid=f"esp-band:{direction}", label=text)
        ax.add_patch(band)
        detail = f"{text}  ({'UDP 4500' if esp.udp else 'proto 50'}, tunnel {esp.tunnel})"
        ty, va = (y + 0.31, "bottom") if direction == Direction.REQUEST else (y - 0.31, "top")
        ax.text((a + b) / 2, ty, detail, ha="center", va=va, fontsize=7.5, color=ESP_COLOR, fontweight="bold",
                zorder=2, gid=f"esp-label:{direction}", alpha=0.45 if faded else 1.0)


def _edges(ax: Axes, stats: PathStats, g: nx.DiGraph, pos: dict) -> None:
    direction = stats.direction
    edges = [(u, w) for u, w in g.edges if u[0] == direction]
    if not edges:
        return
    kinds = [g.edges[e]["kind"] for e in edges]
    faded = not stats.sent
    arrows = nx.draw_networkx_edges(
        g, pos, edgelist=edges, ax=ax, node_size=NODE_SIZE, arrows=True, arrowstyle="-|>", arrowsize=12,
        width=1.4, edge_color=["#cccccc" if faded else EDGE_COLOR[k] for k in kinds],
        style=["-" if k == EdgeKind.WIRE else (0, (3, 2)) for k in kinds],
    )
    for (u, w), a in zip(edges, arrows or [], strict=False):
        a.set_gid(f"edge:{direction}:{g.nodes[u]['point']}->{g.nodes[w]['point']}")
    # Kind above the line, median delay below it: the line itself stays free for the ✗.
    delays = stats.edge_delays_ms()
    y = ROW_Y[direction]
    for (u, w), kind, d in zip(edges, kinds, delays, strict=True):
        xm = (pos[u][0] + pos[w][0]) / 2
        ident = f"{direction}:{g.nodes[u]['point']}->{g.nodes[w]['point']}"
        ax.text(xm, y + 0.09, kind.value, ha="center", va="bottom", fontsize=6.5, zorder=2,
                color="#bbbbbb" if faded else EDGE_COLOR[kind], gid=f"edge-label:{ident}")
        med = median(d)
        if med is not None:
            ax.text(xm, y - 0.09, fmt_ms(med), ha="center", va="top", fontsize=6, color="#666666", zorder=2,
                    gid=f"edge-delay:{ident}")


def _nodes(ax: Axes, stats: PathStats, drops: dict[str, int], g: nx.DiGraph, pos: dict) -> None:
    direction = stats.direction
    nodelist = [(direction, h) for h in range(len(stats.points))]
    faces, edges, styles = [], [], []
    for s in stats.points:
        f = s.fraction
        if s.sent == 0:
            face, edge, style = NOT_SENT_COLOR, "#bbbbbb", "solid"
        elif not s.captured:
            face, edge, style = "white", UNOBSERVED_COLOR, (0, (2, 2))
        elif f is None:
            face, edge, style = UNKNOWN_COLOR, "#333333", "solid"
        else:
            face, edge, style = seen_color(f), "#333333", "solid"
        faces.append(face)
        edges.append(edge)
        styles.append(style)
    coll = nx.draw_networkx_nodes(g, pos, nodelist=nodelist, ax=ax, node_size=NODE_SIZE, node_color=faces,
                                  edgecolors=edges, linewidths=1.3, label="capture-points")
    coll.set_linestyle(styles)
    coll.set_gid(f"capture-points:{direction}")
    coll.set_zorder(3)
    y = ROW_Y[direction]
    out = 0.3 if direction == Direction.REQUEST else -0.3  # outside the row, away from the other one
    for h, s in enumerate(stats.points):
        x = pos[(direction, h)][0]
        ax.text(x, y, _count(s), ha="center", va="center", fontsize=7, zorder=4, gid=f"count:{direction}:{s.point}",
                color="#222222" if s.captured else UNOBSERVED_COLOR)
        if s.sent == 0:
            continue
        notes = []
        if not s.captured:
            notes.append("not captured")
        if s.gap:
            ax.scatter([x], [y], s=NODE_SIZE * 1.9, facecolors="none", edgecolors=DOUBT_COLOR, linewidths=1.6,
                       linestyle=(0, (2, 1.5)), zorder=2.9, gid=f"gap:{direction}:{s.point}", label="capture-gap")
            notes.append(f"capture gap ×{s.gap}")
        if s.unreliable or drops.get(s.point):
            ax.scatter([x], [y], s=NODE_SIZE * 1.9, marker="s", facecolors="none", edgecolors=DOUBT_COLOR,
                       linewidths=1.6, zorder=2.9, gid=f"sniffer-drops:{direction}:{s.point}", label="sniffer-drops")
            notes.append(f"sniffer dropped {drops.get(s.point, '?')}")
        if notes and stats.path.hops[h].esp is None:  # ESP hops: the band's caption is there
            ax.text(x, y + out, "\n".join(notes), ha="center", va="bottom" if out > 0 else "top", fontsize=6.5,
                    style="italic", color=UNOBSERVED_COLOR if not s.captured else DOUBT_COLOR, zorder=4,
                    gid=f"note:{direction}:{s.point}")


def _count(s: PointStats) -> str:
    if s.sent == 0 or not s.captured:
        return "–"
    if s.decided == 0:
        return "?"
    return f"{s.seen}/{s.sent}" + ("?" if s.unknown else "")


def _row_label(ax: Axes, stats: PathStats, x_min: float) -> None:
    path, direction = stats.path, stats.direction
    arrow = "request  →" if direction == Direction.REQUEST else "←  reply"
    text = f"{arrow}\n{path.src} → {path.dst}"
    faded = not stats.sent
    if faded:
        text += "\n(none sent: no request arrived)"
    ax.text(x_min - 0.55, ROW_Y[direction], text, ha="right", va="center", fontsize=8.5, fontweight="bold",
            color="#aaaaaa" if faded else "#222222", gid=f"row-label:{direction}")


def _point_labels(ax: Axes, g: nx.DiGraph, pos: dict, two_rows: bool) -> None:
    """Interface names once per column, between the rows (a symmetric reply shares the columns)."""
    done: set[tuple[float, str]] = set()
    for n in sorted(g.nodes, key=lambda k: (k[0] != Direction.REQUEST, k[1])):
        data = g.nodes[n]
        key = (round(pos[n][0], 3), data["point"])
        if key in done:
            continue
        done.add(key)
        # Reply-only points (asymmetric routing) get their label under the reply row.
        y = (0.5 if n[0] == Direction.REQUEST else -0.62) if two_rows else 0.62
        ax.text(pos[n][0], y, short(data["iface"], 9), ha="center", va="center", fontsize=8, color="#333333",
                zorder=2, gid=f"point-label:{data['point']}", rotation=0 if len(data["iface"]) <= 6 else 30)


def _mark_finding(ax: Axes, v: Verdict, f: Finding, pos: dict, x_span: tuple[float, float], level: int) -> None:
    path = v.paths.get(f.direction)
    if path is None or not path.hops:
        return
    d = Direction(f.direction)
    n = len(path.hops)
    last = path.index(f.last_seen) if f.last_seen else None
    missed = path.index(f.first_missed) if f.first_missed else None
    y = ROW_Y[d]

    def x(h: int) -> float:
        return pos[(d, h)][0]

    step = (x(1) - x(0)) if n > 1 else 1.0  # which way this row runs
    if last is None:  # never left the source
        xa, xb = x(0) - 0.5 * step, x(0)  # a stub inside the source node
    elif missed is None:  # seen at the last hop, yet lost: the path itself ends short
        xa, xb = x(last), x(last) + 0.5 * step
    else:
        xa, xb = x(last), x(missed)
    a_pt = f.last_seen or "source"
    b_pt = f.first_missed or "end"
    mid = (xa + xb) / 2
    if f.outcome == Outcome.LOST:
        color, mark, kind = LOST_COLOR, "✗", "lost"
        (line,) = ax.plot([xa, xb], [y, y], color=LOST_COLOR, lw=6, alpha=0.85, solid_capstyle="round",
                          zorder=2.5, label="lost-edge")
        line.set_gid(f"lost-edge:{d}:{a_pt}->{b_pt}")
        text = f"✗ {f.count}/{f.total} {d.plural} lost {f.where}"
    else:
        color, mark, kind = DOUBT_COLOR, "?", "inconclusive"
        (line,) = ax.plot([xa, xb], [y, y], color=DOUBT_COLOR, lw=5, alpha=0.7, ls=(0, (2, 1.2)), zorder=2.5,
                          label="inconclusive-span")
        line.set_gid(f"inconclusive:{d}:{a_pt}->{b_pt}")
        text = f"? {f.count}/{f.total} {d.plural} inconclusive: {f.where}"
        if abs(xb - xa) > 1.5:
            mid = xa + (xb - xa) / 4  # off the middle, where a ✗ of the same edges would sit
    ax.text(mid, y, mark, ha="center", va="center", fontsize=14, fontweight="bold", color=color, zorder=5,
            gid=f"{kind}-mark:{d}", bbox={"boxstyle": "circle,pad=0.05", "fc": "white", "ec": color, "lw": 1.5})
    lo, hi = x_span
    third = (hi - lo) / 3 or 1
    ha = "left" if mid < lo + third else ("right" if mid > hi - third else "center")
    ty = 1.95 + 0.3 * level if d == Direction.REQUEST else -0.85 - 0.3 * level
    ax.annotate(
        "\n".join(textwrap.wrap(text, 70)), xy=(mid, y + (0.16 if d == Direction.REQUEST else -0.16)), xytext=(mid, ty),
        ha=ha, va="center", fontsize=9, fontweight="bold", color=color, zorder=6, gid=f"{kind}-note:{d}",
        arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.6, "shrinkA": 2, "shrinkB": 2},
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color, "lw": 1.2},
    )


def _legend_handles() -> list[Any]:
    return [
        Line2D([], [], ls="", marker="o", ms=9, mfc=seen_color(1.0), mec="#333333", label="saw all probes"),
        Line2D([], [], ls="", marker="o", ms=9, mfc=seen_color(0.0), mec="#333333", label="saw none"),
        Line2D([], [], ls="", marker="o", ms=9, mfc="white", mec=UNOBSERVED_COLOR, label="not captured"),
        Line2D([], [], ls="", marker="o", ms=9, mfc=UNKNOWN_COLOR, mec="#333333", label="ESP not tied to probe"),
        Line2D([], [], ls="", marker="o", ms=12, mfc="none", mec=DOUBT_COLOR, mew=1.6,
               label="capture gap / sniffer drops"),
        Line2D([], [], color=LOST_COLOR, lw=5, marker="$✗$", ms=9, mec=LOST_COLOR, label="probes lost here"),
        Patch(fc=ESP_COLOR, alpha=0.3, ec=ESP_COLOR, ls="--", label="ESP (encrypted)"),
    ]
