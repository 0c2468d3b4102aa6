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

Where the probes really went (``verdict.observed``) is drawn over the expected
path: a point that saw them in the clear where ESP belongs is a leak (dark
blue), a point they bypassed went elsewhere (light blue, neither seen nor
missed); capture points off the expected path that saw them are squares off
the row (``off-path:<dir>``, ``off-path-label:<point>``), joined in the order
the probes crossed them by blue arrows (``observed-edge:<dir>:<a>-><b>``, label
``observed-path``); a loop is a pair of curved arrows (``loop:<dir>``) with
``loop-label:<dir>`` ("⟲ ×63, TTL 63→1"); the last expected point before the
probes left the path has a diamond (``divergence-mark:<dir>``) and the finding's
divergence in ``divergence-note:<dir>`` (label ``divergence``, or
``divergence-warning`` when the probes arrived all the same).
"""

from __future__ import annotations

import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_hex
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

from tracer.analysis.hopstats import PathStats, PointStats, median, path_stats
from tracer.analysis.observed import observed_graph
from tracer.model.direction import DIRECTIONS, Direction
from tracer.model.flowgraph import EdgeKind
from tracer.model.observed import Form, Loop, ObservedProbe
from tracer.model.path import ExpectedPath
from tracer.model.point import CapturePoint
from tracer.model.verdict import Finding, Outcome, Verdict
from tracer.plot.labels import fmt_ms, short, short_point
from tracer.plot.palette import (
    DOUBT_COLOR,
    ELSEWHERE_COLOR,
    ESP_COLOR,
    LEAK_COLOR,
    LOST_COLOR,
    NOT_SENT_COLOR,
    OBSERVED_COLOR,
    SEEN_CMAP,
    UNKNOWN_COLOR,
    UNOBSERVED_COLOR,
)

CMAP = SEEN_CMAP  # 0 seen → vermillion, all seen → bluish green (colour-blind safe: tracer/plot/palette.py)
ROW_Y = {Direction.REQUEST: 1.0, Direction.REPLY: 0.0}
NODE_SIZE = 620
NODE_PT = 13.0  # a capture point's radius in points: arrows stop at its rim
EXTRA_Y = {Direction.REQUEST: 2.15, Direction.REPLY: -1.0}  # off-path points: outside the node bands
EXTRA_ROOM = 0.6  # how much further out the notes go when a row has off-path points
NOTE_LINE = 0.14  # height of one more line of a note (data units)
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


@dataclass
class ObservedLayer:
    """Where one direction's probes really went, placed on the diagram."""

    direction: Direction
    graph: nx.DiGraph  # union of the probes' observed graphs: points, edges in the order crossed
    at: dict[str, tuple[float, float]]  # every point drawn: its row position, or its place off the row
    extra: list[str] = field(default_factory=list)  # points off the row, in the order first seen
    loops: list[tuple[tuple[str, ...], Loop, int]] = field(default_factory=list)  # points, longest loop, probes
    step: float = 1.0  # which way the row runs


def observed_layer(v: Verdict, direction: Direction, g: nx.DiGraph, pos: dict) -> ObservedLayer:
    """The observed paths of ``direction``'s probes, with a position for every point they crossed."""
    row: dict[str, tuple[float, float]] = {}
    for n in sorted((n for n in g.nodes if n[0] == direction), key=lambda n: n[1]):
        row.setdefault(g.nodes[n]["point"], pos[n])
    xs = [pos[(direction, h)][0] for h in range(2) if (direction, h) in pos]
    step = xs[1] - xs[0] if len(xs) == 2 else 1.0
    union = nx.DiGraph()
    loops: dict[tuple[str, ...], tuple[Loop, int]] = {}
    for op in (o for o in v.observed if o.direction == direction):
        og = observed_graph(op)
        for p, data in og.nodes(data=True):
            if p not in union:
                union.add_node(p, **data, probes=0)
            union.nodes[p]["probes"] += 1
            union.nodes[p]["first_ns"] = min(union.nodes[p]["first_ns"], data["first_ns"])
        for a, b in og.edges:
            if not union.has_edge(a, b):
                union.add_edge(a, b, probes=0)
            union.edges[a, b]["probes"] += 1
        if op.loop is not None:
            key = loop_points(op)
            best, k = loops.get(key, (op.loop, 0))
            loops[key] = (best if best.count >= op.loop.count else op.loop, k + 1)
    layer = ObservedLayer(direction, union, dict(row), step=step,
                          loops=[(pts, lp, k) for pts, (lp, k) in loops.items()])
    taken: list[float] = []
    for p in sorted((p for p in union if p not in row), key=lambda p: union.nodes[p]["first_ns"]):
        node = CapturePoint.parse(p).node
        mine = [xy[0] for q, xy in row.items() if CapturePoint.parse(q).node == node]
        before = [layer.at[a][0] for a in union.predecessors(p) if a in layer.at]
        x = float(np.mean(mine)) if mine else (before[0] + step if before else min(x for x, _ in row.values()))
        while any(abs(x - t) < 0.9 for t in taken):  # room for the point's name under it
            x += step
        taken.append(x)
        layer.at[p] = (x, EXTRA_Y[direction])
        layer.extra.append(p)
    return layer


def loop_points(op: ObservedProbe) -> tuple[str, ...]:
    """The points that saw ``op`` come round again (in the clear, with more than one TTL), in the order first seen."""
    ttls: dict[str, set[int]] = defaultdict(set)
    for s in op.seen:
        if s.form == Form.CLEAR:
            ttls[s.point].add(s.ttl)
    return tuple(p for p in ttls if len(ttls[p]) > 1)


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
    layers = {s.direction: observed_layer(verdict, s.direction, g, pos) for s in paths if s.path.hops}

    _node_bands(ax, g, pos, two_rows)
    for stats in paths:
        _esp_band(ax, stats, pos)
    for stats in paths:
        if not stats.path.hops:
            continue
        _edges(ax, stats, g, pos)
        _nodes(ax, stats, verdict.drops, g, pos)
        _row_label(ax, stats, x_min)
        _observed(ax, stats, layers[stats.direction])
    _point_labels(ax, g, pos, two_rows)
    # Losses get the annotation nearest their row, then divergences; losses are drawn last so
    # their ✗ sits on top of an inconclusive span (or a divergence mark) over the same points.
    marked = [f for f in verdict.findings if f.outcome in (Outcome.LOST, Outcome.INCONCLUSIVE)
              and f.direction in ROW_Y]
    marked.sort(key=lambda f: f.outcome != Outcome.LOST)
    notes: list[tuple[str, Finding]] = [("mark", f) for f in marked]
    notes += [("divergence", f) for f in verdict.findings if f.divergence and f.direction in layers]
    texts = [_finding_text(f) if kind == "mark" else _divergence_text(verdict, f) for kind, f in notes]
    lines = [len(wrap(t)) for t in texts]
    room = {d: 0.0 for d in DIRECTIONS}  # height of the notes stacked so far, per row
    centers = []
    for (_, f), n in zip(notes, lines, strict=True):
        d = Direction(f.direction)
        h = 0.3 + NOTE_LINE * (n - 1)
        base = (1.95 - 0.15 if d == Direction.REQUEST else -0.85 + 0.15) + _extra_room(layers, d)
        sign = 1 if d == Direction.REQUEST else -1
        centers.append(base + sign * (room[d] + h / 2))
        room[d] += h
    for (kind, f), text, ty in reversed(list(zip(notes, texts, centers, strict=True))):
        layer = layers.get(Direction(f.direction))
        at = layer.at if layer else {}
        if kind == "mark":
            _mark_finding(ax, verdict, f, pos, at, (x_min, x_max), text, ty)
        else:
            _mark_divergence(ax, verdict, f, at, (x_min, x_max), text, ty)

    ax.set_xlim(min([x_min] + [x for ly in layers.values() for x, _ in ly.at.values()]) - 1.5,
                max([x_max] + [x for ly in layers.values() for x, _ in ly.at.values()]) + 0.9)
    up, down = room[Direction.REQUEST], room[Direction.REPLY]
    top = 1.8 + (0.25 + up if up else 0) + _extra_room(layers, Direction.REQUEST)
    bottom = (-0.6 - (0.3 + down if down else 0)) if two_rows else 0.35
    bottom -= _extra_room(layers, Direction.REPLY)
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
        handles = _legend_handles(ax, paths)
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                  ncol=7 if len(handles) <= 7 else (len(handles) + 1) // 2,
                  fontsize=8, frameon=False, handlelength=1.6, columnspacing=1.4)
    return g


def _extra_room(layers: dict[Direction, ObservedLayer], d: Direction) -> float:
    layer = layers.get(d)
    return EXTRA_ROOM if layer is not None and layer.extra else 0.0


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
        face, edge, style = _face(s)
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
                color=("white" if s.leaked else "#222222") if s.captured else UNOBSERVED_COLOR)
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


def _face(s: PointStats) -> tuple[Any, str, Any]:
    """(face, rim, rim style) of a capture point: by the fraction of probes it saw, unless
    they leaked through it (seen in the clear) or went elsewhere (it never had the chance)."""
    if s.sent == 0:
        return NOT_SENT_COLOR, "#bbbbbb", "solid"
    if not s.captured:
        return "white", UNOBSERVED_COLOR, (0, (2, 2))
    if s.leaked:
        return LEAK_COLOR, "#333333", "solid"
    stayed = s.decided - s.elsewhere  # probes still on the expected path when they got here
    if s.elsewhere and stayed <= 0:
        return ELSEWHERE_COLOR, "#333333", (0, (2, 1.5))
    if s.elsewhere:
        return seen_color(s.seen / stayed), "#333333", "solid"
    f = s.fraction
    return (UNKNOWN_COLOR if f is None else seen_color(f)), "#333333", "solid"


def _count(s: PointStats) -> str:
    if s.sent == 0 or not s.captured:
        return "–"
    if s.leaked:
        return f"{s.seen + s.leaked}/{s.sent}"  # it was here, only not encrypted
    if s.elsewhere and s.decided <= s.elsewhere:
        return "↷"
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


def _observed(ax: Axes, stats: PathStats, layer: ObservedLayer) -> None:
    """Where this row's probes really went: off-path points, detours and loops, in blue."""
    d, path, og = stats.direction, stats.path, layer.graph
    looped = {p for pts, _, _ in layer.loops for p in pts}
    for a, b in og.edges:
        ia, ib = path.index(a), path.index(b)
        if ia >= 0 and ib == ia + 1:
            continue  # the row draws this edge already
        if a in looped and b in looped:
            continue  # the loop's own arrows
        on_row = ia >= 0 and ib >= 0  # a detour around expected points: bend away from the other row
        ax.add_patch(FancyArrowPatch(
            layer.at[a], layer.at[b], arrowstyle="-|>", mutation_scale=13, color=OBSERVED_COLOR, lw=1.8,
            connectionstyle=f"arc3,rad={-0.45 if on_row else -0.15}", shrinkA=NODE_PT, shrinkB=NODE_PT, zorder=2.7,
            gid=f"observed-edge:{d}:{a}->{b}", label="observed-path"))
    if layer.extra:
        xy = np.array([layer.at[p] for p in layer.extra])
        unmapped = [og.nodes[p]["place"] == "not-in-topology" for p in layer.extra]
        coll = ax.scatter(xy[:, 0], xy[:, 1], s=NODE_SIZE, marker="s", facecolors="white", edgecolors=OBSERVED_COLOR,
                          linewidths=2.0, zorder=3, gid=f"off-path:{d}", label="off-path-points")
        coll.set_linestyle([(0, (2, 2)) if u else "solid" for u in unmapped])
        out, va = (-0.2, "top") if d == Direction.REQUEST else (0.2, "bottom")  # between it and its row
        for p, (x, y), u in zip(layer.extra, xy.tolist(), unmapped, strict=True):
            ax.text(x, y, f"{og.nodes[p]['probes']}/{stats.sent}", ha="center", va="center", fontsize=7, zorder=4,
                    color="#222222", gid=f"off-path-count:{d}:{p}")
            ax.text(x, y + out, short_point(p, 18) + ("\n(not in topology)" if u else ""), ha="center", va=va,
                    fontsize=8, color=OBSERVED_COLOR, zorder=4, gid=f"off-path-label:{p}")
    for pts, loop, k in layer.loops:
        xy_ = [layer.at[p] for p in pts if p in layer.at]
        if not xy_:
            continue
        if len(xy_) == 1:  # one point saw it come round: a ring beside it
            (x0, y0), = xy_
            arcs = [((x0 + 0.12, y0 + 0.1), (x0 - 0.12, y0 + 0.1), 1.6)]
            shrink = 0.0
        else:  # back and forth: one arrow each way, bending to opposite sides
            arcs = [(xy_[i], xy_[(i + 1) % len(xy_)], -0.5) for i in range(len(xy_))]
            shrink = NODE_PT
        for a_xy, b_xy, rad in arcs:
            ax.add_patch(FancyArrowPatch(
                a_xy, b_xy, arrowstyle="-|>", mutation_scale=14, color=OBSERVED_COLOR, lw=2.2,
                connectionstyle=f"arc3,rad={rad}", shrinkA=shrink, shrinkB=shrink, zorder=2.8, gid=f"loop:{d}",
                label="loop"))
        text = f"⟲ ×{loop.count}, TTL {loop.ttl_first}→{loop.ttl_last}"
        if k > 1:
            text += f" ({k} probes)"
        if loop.expired_from:
            text += f"\ntime exceeded from {loop.expired_from}"
        cx, cy = float(np.mean([x for x, _ in xy_])), float(np.mean([y for _, y in xy_]))
        inward = -0.3 if d == Direction.REQUEST else 0.3  # towards the other row, past the lower arc
        ax.text(cx, cy + inward, text, ha="center", va="center", fontsize=8, fontweight="bold", color=OBSERVED_COLOR,
                zorder=5, gid=f"loop-label:{d}",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": OBSERVED_COLOR, "lw": 0.8})


def _finding_text(f: Finding) -> str:
    d = Direction(f.direction)
    if f.outcome == Outcome.LOST:
        return f"✗ {f.count}/{f.total} {d.plural} lost {f.where}"
    return f"? {f.count}/{f.total} {d.plural} inconclusive: {f.where}"


def diverged(v: Verdict, f: Finding) -> tuple[str | None, str | None]:
    """(last expected point, first point off it) where most of ``f``'s probes left the expected path."""
    divs = [o.divergence for o in v.observed if o.direction == f.direction and o.seq in f.seqs and o.divergence]
    if not divs:
        return None, None
    return Counter((dv.after, dv.at) for dv in divs).most_common(1)[0][0]


def _divergence_text(v: Verdict, f: Finding) -> str:
    d = Direction(f.direction)
    after, _ = diverged(v, f)
    where = f" after {after}" if after else ""
    if f.outcome == Outcome.DELIVERED:
        return f"⚠ warning: {f.count}/{f.total} {d.plural} arrived, but left the expected path{where}: {f.divergence}"
    return f"↱ {f.count}/{f.total} {d.plural} left the expected path{where}: {f.divergence}"


def wrap(text: str, width: int = 70) -> list[str]:
    """Lines of a note: broken at spaces only, so "east-gw:lan0" stays whole (and nothing is cut)."""
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def _note(ax: Axes, text: str, xy: tuple[float, float], ty: float, x_span: tuple[float, float], color: str,
          gid: str, **kw: Any) -> None:
    """A boxed note at height ``ty`` with an arrow to ``xy``, wrapped (never cut) to 70 characters a line."""
    lo, hi = x_span
    third = (hi - lo) / 3 or 1
    x = xy[0]
    ha = "left" if x < lo + third else ("right" if x > hi - third else "center")
    ax.annotate(
        "\n".join(wrap(text)), xy=xy, xytext=(x, ty),
        ha=ha, va="center", fontsize=9, fontweight="bold", color=color, zorder=6, gid=gid,
        arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.6, "shrinkA": 2, "shrinkB": 2},
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color, "lw": 1.2}, **kw,
    )


def _where(path: ExpectedPath, point: str | None, pos: dict, at: dict[str, tuple[float, float]],
           d: Direction) -> tuple[float, float] | None:
    """Where ``point`` is drawn: on the row, else off it (an observed point), else nowhere."""
    if point is None:
        return None
    h = path.index(point)
    return pos[(d, h)] if h >= 0 else at.get(point)


def _mark_finding(ax: Axes, v: Verdict, f: Finding, pos: dict, at: dict[str, tuple[float, float]],
                  x_span: tuple[float, float], text: str, ty: float) -> None:
    path = v.paths.get(f.direction)
    if path is None or not path.hops:
        return
    d = Direction(f.direction)
    n = len(path.hops)

    def x(h: int) -> float:
        return pos[(d, h)][0]

    step = (x(1) - x(0)) if n > 1 else 1.0  # which way this row runs
    y = ROW_Y[d]
    last = _where(path, f.last_seen, pos, at, d)
    missed = _where(path, f.first_missed, pos, at, d)
    if last is None:  # never left the source
        (xa, ya), (xb, yb) = (x(0) - 0.5 * step, y), (x(0), y)  # a stub inside the source node
    elif missed is None:  # seen last here, then nowhere: it died in the node (or the path ends short)
        (xa, ya), (xb, yb) = last, (last[0] + 0.5 * step, last[1])
    else:
        (xa, ya), (xb, yb) = last, missed
    a_pt = f.last_seen or "source"
    b_pt = f.first_missed or "end"
    mid, ym = (xa + xb) / 2, (ya + yb) / 2
    if f.outcome == Outcome.LOST:
        color, mark, kind = LOST_COLOR, "✗", "lost"
        (line,) = ax.plot([xa, xb], [ya, yb], color=LOST_COLOR, lw=6, alpha=0.85, solid_capstyle="round",
                          zorder=2.5, label="lost-edge")
        line.set_gid(f"lost-edge:{d}:{a_pt}->{b_pt}")
    else:
        color, mark, kind = DOUBT_COLOR, "?", "inconclusive"
        (line,) = ax.plot([xa, xb], [ya, yb], color=DOUBT_COLOR, lw=5, alpha=0.7, ls=(0, (2, 1.2)), zorder=2.5,
                          label="inconclusive-span")
        line.set_gid(f"inconclusive:{d}:{a_pt}->{b_pt}")
        if abs(xb - xa) > 1.5:
            mid, ym = xa + (xb - xa) / 4, ya + (yb - ya) / 4  # off the middle, where a ✗ of the same edges would sit
    ax.text(mid, ym, mark, ha="center", va="center", fontsize=14, fontweight="bold", color=color, zorder=5,
            gid=f"{kind}-mark:{d}", bbox={"boxstyle": "circle,pad=0.05", "fc": "white", "ec": color, "lw": 1.5})
    _note(ax, text, (mid, ym + (0.16 if d == Direction.REQUEST else -0.16)), ty, x_span, color, f"{kind}-note:{d}")


def _mark_divergence(ax: Axes, v: Verdict, f: Finding, at: dict[str, tuple[float, float]],
                     x_span: tuple[float, float], text: str, ty: float) -> None:
    """A diamond on the last expected point before the probes left the path, with the finding's words."""
    path = v.paths[f.direction]
    d = Direction(f.direction)
    after, first_off = diverged(v, f)
    xy = at.get(after) if after else None
    if xy is None:
        xy = at.get(first_off) if first_off else None
    if xy is None:  # no observed path to say where: the source
        xy = at.get(path.hops[0].point, (0.0, ROW_Y[d]))
    warning = f.outcome == Outcome.DELIVERED
    color = DOUBT_COLOR if warning else OBSERVED_COLOR
    ax.scatter([xy[0]], [xy[1]], s=NODE_SIZE * 2.3, marker="D", facecolors="none", edgecolors=color, linewidths=2.0,
               zorder=2.95, gid=f"divergence-mark:{d}", label="divergence")
    out = 0.22 if d == Direction.REQUEST else -0.22
    _note(ax, text, (xy[0], xy[1] + out), ty, x_span, color, f"divergence-note:{d}",
          label="divergence-warning" if warning else "divergence")


def _legend_handles(ax: Axes, paths: list[PathStats]) -> list[Any]:
    handles: list[Any] = [
        Line2D([], [], ls="", marker="o", ms=9, mfc=seen_color(1.0), mec="#333333", label="saw all probes"),
        Line2D([], [], ls="", marker="o", ms=9, mfc=seen_color(0.0), mec="#333333", label="saw none"),
        Line2D([], [], ls="", marker="o", ms=9, mfc="white", mec=UNOBSERVED_COLOR, label="not captured"),
        Line2D([], [], ls="", marker="o", ms=9, mfc=UNKNOWN_COLOR, mec="#333333", label="ESP not tied to probe"),
        Line2D([], [], ls="", marker="o", ms=12, mfc="none", mec=DOUBT_COLOR, mew=1.6,
               label="capture gap / sniffer drops"),
        Line2D([], [], color=LOST_COLOR, lw=5, marker="$✗$", ms=9, mec=LOST_COLOR, label="probes lost here"),
        Patch(fc=ESP_COLOR, alpha=0.3, ec=ESP_COLOR, ls="--", label="ESP (encrypted)"),
    ]
    # The observed path's entries only when the diagram has them: a plain run keeps its legend.
    drawn = {(a.get_gid() or "").split(":", 1)[0] for a in ax.get_children()}
    if any(s.leaked for st in paths for s in st.points):
        handles.append(Line2D([], [], ls="", marker="o", ms=9, mfc=LEAK_COLOR, mec="#333333",
                              label="seen in the clear (leak)"))
    if any(s.elsewhere for st in paths for s in st.points):
        handles.append(Line2D([], [], ls="", marker="o", ms=9, mfc=ELSEWHERE_COLOR, mec="#333333",
                              label="went elsewhere"))
    if "off-path" in drawn:
        handles.append(Line2D([], [], ls="", marker="s", ms=9, mfc="white", mec=OBSERVED_COLOR, mew=2,
                              label="off-path point"))
    if drawn & {"observed-edge", "loop"}:
        handles.append(Line2D([], [], color=OBSERVED_COLOR, lw=1.8, marker=">", ms=5, label="observed path"))
    marks = [a for a in ax.collections if (a.get_gid() or "").startswith("divergence-mark:")]
    if marks:  # blue when the probes were lost, orange (a warning) when they arrived all the same
        colors = sorted({to_hex(c) for m in marks for c in m.get_edgecolors()}, key=lambda c: c != OBSERVED_COLOR)
        handles += [Line2D([], [], ls="", marker="D", ms=10, mfc="none", mec=c, mew=2,
                           label="left the expected path" + (" (arrived: warning)" if c == DOUBT_COLOR else ""))
                    for c in colors]
    return handles
