"""Figures checked through their matplotlib objects (names, positions, colours, arrays), not pixels.

Expected values are literals: colours as hex strings, delays worked out by hand from the capture
files' own timestamps (``tcpdump -nn -tt --nano -r captures/<run>/<point>.pcapng``), never from
the functions under test.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import imread

import tracer
import tracer.plot
from tests.synth import POINTS, REPLY_HOPS, SPI_EW, SPI_WE, Scenario, build
from tracer.cli import main
from tracer.cli.plot import plot_verdict_to
from tracer.cli.render import render_text
from tracer.errors import BadInput
from tracer.model.flowgraph import EdgeKind
from tracer.model.observed import Form, Place, Seen
from tracer.model.path import ExpectedPath, Hop
from tracer.model.verdict import Finding, Outcome, ProbeTrace, Sighting, Status, Verdict
from tracer.plot.path_diagram import seen_color
from tracer.plot.timeline import STATES

ROOT = Path(__file__).resolve().parents[2]
NODES = ["west", "west-gw", "router", "east-gw", "east"]
LOST_AFTER_LAN0 = Scenario(drop_after={("request", "west-gw:lan0"): None})

# Capture point faces: Okabe–Ito vermillion → yellow → bluish green (colour-blind safe), at 1, 3/4,
# 2/3, 1/2 and 0 of the probes seen.
ALL_SEEN, THREE_QUARTERS, TWO_THIRDS, HALF, NONE_SEEN = "#009e73", "#77c15b", "#a0cd52", "#efe442", "#d55e00"
NOT_CAPTURED, NOT_SENT = "#ffffff", "#f2f2f2"
LOST_RED, DOUBT_ORANGE = "#d55e00", "#e69f00"
# Timeline cells.
SEEN, MISSED, GAP, UNOBSERVED, EMPTY = "#009e73", "#d55e00", "#f0e442", "#d9d9d9", "#ffffff"
# The observed path (Okabe–Ito blues): a leak, a point the probes bypassed, the arrows and marks.
LEAK_BLUE, ELSEWHERE_BLUE, OBSERVED_BLUE = "#0072b2", "#56b4e9", "#0072b2"
# Figure heights (px at 100 dpi) by footer lines: 10.5 in + 0.15 in + 8 pt × 1.3 per line.
HEIGHT = {1: 1079, 2: 1093, 3: 1108, 4: 1122}
OLD_LEGEND = ["saw all probes", "saw none", "not captured", "ESP not tied to probe", "capture gap / sniffer drops",
              "probes lost here", "ESP (encrypted)"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    scenarios = {
        "delivered": Scenario(),
        "lost": LOST_AFTER_LAN0,
        "partial": Scenario(count=4, drop_after={("request", "west-gw:lan0"): {1}}),
        "reply-lost": Scenario(drop_after={("reply", "west-gw:lan0"): None}),
        "gap": Scenario(gaps={("request", "west-gw:ipsec0", 1)}),
        "unobserved": Scenario(omit={"west:eth0"}),
    }
    return {name: build(sc, base / name) for name, sc in scenarios.items()}


@pytest.fixture(scope="module")
def recorded() -> dict[str, Verdict]:
    """Real lab runs: ESP dropped by the router (no request arrives, no reply sent), and all delivered."""
    return {name: tracer.load(ROOT / "captures" / name).verdict for name in ("esp-blocked", "all-delivered")}


@pytest.fixture(scope="module")
def diverged() -> dict[str, Verdict]:
    """Real lab runs whose probes left the expected path: leaks, a return around the tunnel, a loop."""
    names = ("ike-blocked", "asymmetric-return", "asymmetric-return-routed", "routing-loop")
    return {name: tracer.load(ROOT / "captures" / name).verdict for name in names}


def verdict(runs: dict[str, Path], name: str) -> Verdict:
    return tracer.load(runs[name]).verdict


def axes():
    fig = Figure(figsize=(14, 5))
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def by_gid(ax, prefix: str) -> list:
    return [a for a in ax.findobj() if (a.get_gid() or "").startswith(prefix)]


def faces(ax, direction: str) -> list[str]:
    """The fill colour of each capture point of ``direction``, in path order."""
    (points,) = by_gid(ax, f"capture-points:{direction}")
    return [to_hex(c) for c in points.get_facecolors()]


def cells(ax) -> list[list[str]]:
    """The colour of every timeline cell as drawn: probe rows × capture point columns."""
    (im,) = ax.images
    return [[to_hex(c) for c in row] for row in im.to_rgba(im.get_array())]


def dots(ax, direction: str) -> dict[int, list[float]]:
    """Latency plot: the delays (x) of the probe dots of ``direction``, by row."""
    out = {}
    for coll in by_gid(ax, f"latency-points:{direction}"):
        xy = np.asarray(coll.get_offsets())
        out[round(float(xy[:, 1].mean()))] = sorted(float(x) for x in xy[:, 0])
    return out


def medians(ax, direction: str) -> dict[int, float]:
    """Latency plot: the median line of each box of ``direction``, by row."""
    return {round(float(np.mean(m.get_ydata()))): float(m.get_xdata()[0]) for m in by_gid(ax, f"latency-median:{direction}")}


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of a PNG written at 100 dpi."""
    h, w, _ = imread(path).shape
    return w, h


# --- path diagram -------------------------------------------------------------------------------


def test_capture_points_in_path_order(runs):
    ax = axes()
    g = tracer.plot.draw_path(ax, verdict(runs, "delivered"))
    labels = sorted(by_gid(ax, "point-label:"), key=lambda t: t.get_position()[0])
    assert [t.get_gid().removeprefix("point-label:") for t in labels] == POINTS
    assert [t.get_text() for t in labels][:3] == ["eth0", "lan0", "ipsec0"]
    nodes = sorted(by_gid(ax, "node-label:"), key=lambda t: t.get_position()[0])
    assert [t.get_text() for t in nodes] == NODES
    # Request row above the reply row; the reply hop sits under the same request point.
    pos = {(d, g.nodes[n]["point"]): xy for n, xy in g.nodes(data="pos") for d in [n[0]]}
    assert all(pos[("request", p)][1] > pos[("reply", p)][1] for p in POINTS)
    assert all(pos[("request", p)][0] == pos[("reply", p)][0] for p, _ in REPLY_HOPS)
    rows = {t.get_gid(): t.get_text() for t in by_gid(ax, "row-label:")}
    assert rows["row-label:request"].startswith("request") and rows["row-label:reply"].startswith("←  reply")
    colls = [c for c in ax.collections if c.get_label() == "capture-points"]
    assert {c.get_gid() for c in colls} == {"capture-points:request", "capture-points:reply"}
    assert all(len(c.get_offsets()) == len(POINTS) for c in colls)


def test_lost_edge_is_marked_between_the_right_points(runs):
    v = verdict(runs, "lost")
    ax = axes()
    tracer.plot.draw_path(ax, v)
    (lost,) = [line for line in ax.lines if line.get_label() == "lost-edge"]
    assert lost.get_gid() == "lost-edge:request:west-gw:lan0->west-gw:ipsec0"
    assert list(lost.get_xdata()) == [POINTS.index("west-gw:lan0"), POINTS.index("west-gw:ipsec0")]
    (note,) = by_gid(ax, "lost-note:request")
    assert "inside west-gw between lan0 and ipsec0 (forward)" in note.get_text().replace("\n", " ")
    assert note.get_text().startswith("✗ 3/3 requests lost")


def test_reply_loss_is_marked_on_the_reply_row(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "reply-lost"))
    (lost,) = [line for line in ax.lines if line.get_label() == "lost-edge"]
    assert lost.get_gid() == "lost-edge:reply:west-gw:lan0->west:eth0"
    assert set(lost.get_ydata()) == {0.0}  # the reply row


def test_no_lost_edge_when_delivered(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "delivered"))
    assert not [line for line in ax.lines if line.get_label() in ("lost-edge", "inconclusive-span")]
    assert not by_gid(ax, "lost-")


def test_points_coloured_by_fraction_seen(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "lost"))
    # Seen up to west-gw:lan0, then missed everywhere (the ESP hops too: no ESP left west-gw).
    assert faces(ax, "request") == [ALL_SEEN] * 2 + [NONE_SEEN] * 8
    assert faces(ax, "reply") == [NOT_SENT] * 10  # no request arrived, so no reply was expected


def test_recorded_loss_colours_every_capture_point(recorded):
    ax = axes()
    tracer.plot.draw_path(ax, recorded["esp-blocked"])
    # west:eth0 … router:eth0 saw 3/3, router:eth1 … east:eth0 saw 0/3; no reply was sent.
    assert faces(ax, "request") == [ALL_SEEN] * 5 + [NONE_SEEN] * 5
    assert faces(ax, "reply") == [NOT_SENT] * 10
    counts = {t.get_gid().removeprefix("count:request:"): t.get_text() for t in by_gid(ax, "count:request:")}
    assert counts == {p: "3/3" for p in POINTS[:5]} | {p: "0/3" for p in POINTS[5:]}
    assert {t.get_text() for t in by_gid(ax, "count:reply:")} == {"–"}


def test_recorded_delivery_is_green_both_ways(recorded):
    ax = axes()
    tracer.plot.draw_path(ax, recorded["all-delivered"])
    assert faces(ax, "request") == [ALL_SEEN] * 10
    assert faces(ax, "reply") == [ALL_SEEN] * 10
    assert not by_gid(ax, "lost-")


def test_partial_loss_gets_an_intermediate_colour(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "partial"))
    # 4 probes, seq 1 dropped after west-gw:lan0: 3/4 seen from west-gw:ipsec0 on.
    assert faces(ax, "request") == [ALL_SEEN] * 2 + [THREE_QUARTERS] * 8
    assert [t.get_text() for t in by_gid(ax, "count:request:west-gw:ipsec0")] == ["3/4"]


def test_recorded_lost_edge_has_its_mark(recorded):
    ax = axes()
    tracer.plot.draw_path(ax, recorded["esp-blocked"])
    (edge,) = [line for line in ax.lines if line.get_label() == "lost-edge"]
    assert edge.get_gid() == "lost-edge:request:router:eth0->router:eth1"
    assert (list(edge.get_xdata()), list(edge.get_ydata())) == ([4, 5], [1.0, 1.0])  # request row
    assert edge.get_color() == LOST_RED
    (mark,) = by_gid(ax, "lost-mark:")
    assert (mark.get_gid(), mark.get_text(), mark.get_position()) == ("lost-mark:request", "✗", (4.5, 1.0))
    assert to_hex(mark.get_color()) == LOST_RED
    (note,) = by_gid(ax, "lost-note:")
    assert note.get_text().replace("\n", " ") == "✗ 3/3 requests lost inside router between eth0 and eth1 (forward)"
    assert note.xy[0] == 4.5  # the arrow points at the ✗


def test_unobserved_point_is_hollow_and_says_so(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "unobserved"))
    assert faces(ax, "request") == [NOT_CAPTURED] + [ALL_SEEN] * 9
    (req,) = by_gid(ax, "capture-points:request")
    assert to_hex(req.get_edgecolors()[0]) == "#9e9e9e"  # a grey rim: nothing to colour inside
    assert [t.get_text() for t in by_gid(ax, "note:request:west:eth0")] == ["not captured"]


def test_capture_gap_is_drawn_distinctly(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "gap"))
    (ring,) = by_gid(ax, "gap:")
    assert ring.get_gid() == "gap:request:west-gw:ipsec0"
    assert [tuple(xy) for xy in ring.get_offsets()] == [(2.0, 1.0)]
    assert to_hex(ring.get_edgecolors()[0]) == DOUBT_ORANGE
    assert [t.get_text() for t in by_gid(ax, "note:request:west-gw:ipsec0")] == ["capture gap ×1"]
    # The point recorded 2 of the 3 probes it certainly carried: coloured for 2/3, never as a loss.
    assert faces(ax, "request") == [ALL_SEEN] * 2 + [TWO_THIRDS] + [ALL_SEEN] * 7
    assert not [line for line in ax.lines if line.get_label() == "lost-edge"]


def test_esp_band_names_the_spi(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "delivered"))
    bands = {p.get_gid(): p.get_label() for p in ax.patches if (p.get_gid() or "").startswith("esp-band:")}
    assert bands == {"esp-band:request": f"ESP SPI 0x{SPI_WE:08x}", "esp-band:reply": f"ESP SPI 0x{SPI_EW:08x}"}
    (caption,) = by_gid(ax, "esp-label:request")
    assert "tunnel west-east" in caption.get_text()


def test_recorded_esp_bands(recorded):
    ax = axes()
    tracer.plot.draw_path(ax, recorded["esp-blocked"])
    bands = {p.get_gid(): p for p in ax.patches if (p.get_gid() or "").startswith("esp-band:")}
    # The SPI the probes were tied to; the reply was never sent and the topology names no SPI.
    assert {g: p.get_label() for g, p in bands.items()} == {
        "esp-band:request": "ESP SPI 0xce20a626", "esp-band:reply": "ESP (SPI unknown)"}
    # Over west-gw:wan0 … east-gw:wan0 (x 3 … 6), 0.3 of margin either side.
    assert (bands["esp-band:request"].get_x(), bands["esp-band:request"].get_width()) == pytest.approx((2.7, 3.6))
    captions = {t.get_gid(): t.get_text() for t in by_gid(ax, "esp-label:")}
    assert captions == {"esp-label:request": "ESP SPI 0xce20a626  (UDP 4500, tunnel west-east)",
                        "esp-label:reply": "ESP (SPI unknown)  (UDP 4500, tunnel west-east)"}
    ax = axes()
    tracer.plot.draw_path(ax, recorded["all-delivered"])
    labels = {p.get_gid(): p.get_label() for p in ax.patches if (p.get_gid() or "").startswith("esp-band:")}
    assert labels == {"esp-band:request": "ESP SPI 0x6066f6e6", "esp-band:reply": "ESP SPI 0x6601f9be"}


def test_edges_labelled_by_kind_with_latency(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "delivered"))
    kinds = {t.get_gid(): t.get_text() for t in by_gid(ax, "edge-label:request:")}
    assert kinds["edge-label:request:west:eth0->west-gw:lan0"] == "wire"
    assert kinds["edge-label:request:west-gw:lan0->west-gw:ipsec0"] == "forward"
    assert kinds["edge-label:request:west-gw:ipsec0->west-gw:wan0"] == "encap"
    assert kinds["edge-label:request:east-gw:wan0->east-gw:ipsec0"] == "decap"
    delays = {t.get_gid(): t.get_text() for t in by_gid(ax, "edge-delay:request:")}
    assert delays["edge-delay:request:west:eth0->west-gw:lan0"] == "0.04 ms"  # synth: 40 µs per hop


# --- the observed path: leaks, detours, loops, the divergence ---------------------------------------


def edge_color(patch) -> str:
    return to_hex(patch.get_edgecolor())


def offsets(ax, gid: str) -> list[tuple[float, float]]:
    (coll,) = by_gid(ax, gid)
    return [tuple(float(v) for v in xy) for xy in coll.get_offsets()]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_recorded_leak_is_drawn_as_a_leak_not_a_miss(diverged):
    ax = axes()
    tracer.plot.draw_path(ax, diverged["ike-blocked"])
    # Seen at west:eth0 and west-gw:lan0; ipsec0 bypassed; wan0 and router:eth0 saw the probes in the
    # clear where ESP belongs; nothing after the router, where the probes had gone elsewhere (died).
    assert faces(ax, "request") == [ALL_SEEN] * 2 + [ELSEWHERE_BLUE] + [LEAK_BLUE] * 2 + [ELSEWHERE_BLUE] * 5
    counts = {t.get_gid().removeprefix("count:request:"): t.get_text() for t in by_gid(ax, "count:request:")}
    assert (counts["west-gw:wan0"], counts["router:eth0"], counts["west-gw:ipsec0"]) == ("3/3", "3/3", "↷")
    assert NONE_SEEN not in faces(ax, "request")
    assert legend_texts(ax) == [*OLD_LEGEND, "seen in the clear (leak)", "went elsewhere", "observed path",
                                "left the expected path"]


def test_recorded_leak_marks_divergence_and_death(diverged):
    ax = axes()
    tracer.plot.draw_path(ax, diverged["ike-blocked"])
    # The fork: a diamond on west-gw:lan0 (x 1), the last expected point, with the finding's words.
    assert offsets(ax, "divergence-mark:request") == [(1.0, 1.0)]
    (mark,) = by_gid(ax, "divergence-mark:")
    assert [to_hex(c) for c in mark.get_edgecolors()] == [OBSERVED_BLUE]
    (note,) = by_gid(ax, "divergence-note:")
    assert (note.get_gid(), note.get_label()) == ("divergence-note:request", "divergence")
    assert note.get_text().replace("\n", " ") == (
        "↱ 3/3 requests left the expected path after west-gw:lan0: left west-gw by wan0 in the clear instead of"
        " into ipsec0")
    assert all(len(line) <= 70 for line in note.get_text().splitlines()) and "…" not in note.get_text()
    assert note.xy == (1.0, 1.22)  # its arrow points at the diamond
    # It went round ipsec0: one blue arrow lan0 → wan0, over the row.
    (detour,) = by_gid(ax, "observed-edge:")
    assert detour.get_gid() == "observed-edge:request:west-gw:lan0->west-gw:wan0"
    assert (edge_color(detour), detour.get_label()) == (OBSERVED_BLUE, "observed-path")
    # It died inside the router, after router:eth0 (x 4): the ✗ just past it.
    (mark,) = by_gid(ax, "lost-mark:")
    assert (mark.get_gid(), mark.get_text(), mark.get_position()) == ("lost-mark:request", "✗", (4.25, 1.0))
    (edge,) = [line for line in ax.lines if line.get_label() == "lost-edge"]
    assert edge.get_gid() == "lost-edge:request:router:eth0->end"
    (lost,) = by_gid(ax, "lost-note:")
    assert lost.get_text().replace("\n", " ") == (
        "✗ 3/3 requests lost inside router after arriving on eth0, having left west-gw by wan0 in the clear"
        " instead of into ipsec0")
    # Loss nearest the row, the divergence above it.
    assert lost.get_position()[1] < note.get_position()[1]
    assert not by_gid(ax, "loop") and not by_gid(ax, "off-path")


def test_recorded_loop_is_a_back_and_forth_arrow(diverged):
    ax = axes()
    tracer.plot.draw_path(ax, diverged["routing-loop"])
    arrows = by_gid(ax, "loop:request")
    assert len(arrows) == 2 and {edge_color(a) for a in arrows} == {OBSERVED_BLUE}
    assert all(a.get_connectionstyle().rad == -0.5 for a in arrows)  # each way, bent to opposite sides
    (label,) = by_gid(ax, "loop-label:")
    assert (label.get_gid(), label.get_text()) == ("loop-label:request", "⟲ ×63, TTL 63→1")
    assert label.get_position() == (3.5, 0.7)  # between west-gw:wan0 (x 3) and router:eth0 (x 4), inside the rows
    # The loop's own hops are not drawn twice as detours: only the bypass of ipsec0 is.
    assert [a.get_gid() for a in by_gid(ax, "observed-edge:")] == ["observed-edge:request:west-gw:lan0->west-gw:wan0"]
    assert offsets(ax, "divergence-mark:request") == [(1.0, 1.0)]
    (mark,) = by_gid(ax, "lost-mark:")
    assert mark.get_position() == (4.25, 1.0)


def test_recorded_return_around_the_tunnel_is_a_warning(diverged):
    ax = axes()
    tracer.plot.draw_path(ax, diverged["asymmetric-return-routed"])
    assert not by_gid(ax, "lost-") and not [line for line in ax.lines if line.get_label() == "lost-edge"]
    # Reply order: east:eth0, east-gw lan0, ipsec0 (bypassed), wan0 … west-gw:wan0 in the clear, ipsec0, lan0, west.
    assert faces(ax, "reply") == [ALL_SEEN] * 2 + [ELSEWHERE_BLUE] + [LEAK_BLUE] * 4 + [ELSEWHERE_BLUE] + [ALL_SEEN] * 2
    assert faces(ax, "request") == [ALL_SEEN] * 10
    assert offsets(ax, "divergence-mark:reply") == [(8.0, 0.0)]  # east-gw:lan0, under its request column
    (mark,) = by_gid(ax, "divergence-mark:")
    assert [to_hex(c) for c in mark.get_edgecolors()] == [DOUBT_ORANGE]
    (note,) = by_gid(ax, "divergence-note:")
    assert (note.get_gid(), note.get_label(), to_hex(note.get_color())) == (
        "divergence-note:reply", "divergence-warning", DOUBT_ORANGE)
    assert note.get_text().replace("\n", " ") == (
        "⚠ warning: 3/3 replies arrived, but left the expected path after east-gw:lan0: left east-gw by wan0 in the"
        " clear instead of into ipsec0, and rejoined the expected path at west-gw:lan0")
    assert note.get_position()[1] < 0  # under the reply row
    assert sorted(a.get_gid() for a in by_gid(ax, "observed-edge:")) == [
        "observed-edge:reply:east-gw:lan0->east-gw:wan0", "observed-edge:reply:west-gw:wan0->west-gw:lan0"]
    assert "left the expected path (arrived: warning)" in legend_texts(ax)


def test_recorded_reply_leak_dies_on_the_reply_row(diverged):
    ax = axes()
    tracer.plot.draw_path(ax, diverged["asymmetric-return"])
    (mark,) = by_gid(ax, "lost-mark:")
    assert (mark.get_gid(), mark.get_position()) == ("lost-mark:reply", (4.75, 0.0))  # past router:eth1 (x 5), leftwards
    assert offsets(ax, "divergence-mark:reply") == [(8.0, 0.0)]
    assert [to_hex(c) for c in by_gid(ax, "divergence-mark:")[0].get_edgecolors()] == [OBSERVED_BLUE]


def off_path_verdict(v: Verdict) -> Verdict:
    """ike-blocked, but the requests went on past router:eth0 to a point off the path (router:eth2)
    and one the topology lacks (dmz:eth0), and died there."""
    probes = []
    for o in v.observed:
        t = o.seen[-1].time_ns
        probes.append(replace(o, seen=(*o.seen, Seen("router:eth2", t + 10_000, Form.CLEAR, Place.OFF_PATH, 62),
                                       Seen("dmz:eth0", t + 20_000, Form.CLEAR, Place.UNMAPPED, 61))))
    lost = replace(v.findings[0], last_seen="dmz:eth0", where="after dmz:eth0")
    return replace(v, observed=tuple(probes), findings=(lost,))


def test_off_path_points_sit_off_the_row(diverged, tmp_path):
    ax = axes()
    tracer.plot.draw_path(ax, off_path_verdict(diverged["ike-blocked"]))
    # router:eth2 over the router's columns (x 4, 5), dmz:eth0 one column on; above the node bands.
    assert offsets(ax, "off-path:request") == [(4.5, 2.15), (5.5, 2.15)]
    (squares,) = by_gid(ax, "off-path:")
    assert [to_hex(c) for c in squares.get_edgecolors()] == [OBSERVED_BLUE]
    labels = {t.get_gid(): t.get_text() for t in by_gid(ax, "off-path-label:")}
    assert labels == {"off-path-label:router:eth2": "router:eth2", "off-path-label:dmz:eth0": "dmz:eth0\n(not in topology)"}
    assert [t.get_text() for t in by_gid(ax, "off-path-count:")] == ["3/3", "3/3"]
    # Arrows in the order crossed: round ipsec0, out of the router, on to dmz.
    assert sorted(a.get_gid() for a in by_gid(ax, "observed-edge:")) == [
        "observed-edge:request:router:eth0->router:eth2", "observed-edge:request:router:eth2->dmz:eth0",
        "observed-edge:request:west-gw:lan0->west-gw:wan0"]
    # Died after dmz:eth0: the ✗ off the row, by that point.
    (mark,) = by_gid(ax, "lost-mark:")
    assert mark.get_position() == (5.75, 2.15)
    (edge,) = [line for line in ax.lines if line.get_label() == "lost-edge"]
    assert edge.get_gid() == "lost-edge:request:dmz:eth0->end"
    (note,) = by_gid(ax, "lost-note:")
    assert note.get_position()[1] > 2.3  # above the off-path points
    assert "off-path point" in legend_texts(ax)
    # Footer: run, diverged, why (2 lines).
    assert png_size(tracer.plot.save(off_path_verdict(diverged["ike-blocked"]), tmp_path / "off.png")) == (1400, HEIGHT[4])


def test_plain_runs_draw_no_observed_path(recorded):
    for name in ("esp-blocked", "all-delivered"):
        ax = axes()
        tracer.plot.draw_path(ax, recorded[name])
        for gid in ("divergence-", "observed-edge:", "loop", "off-path"):
            assert not by_gid(ax, gid), (name, gid)
        assert legend_texts(ax) == OLD_LEGEND


def test_timeline_of_a_recorded_leak(diverged):
    ax = axes()
    tracer.plot.draw_timeline(ax, diverged["ike-blocked"], "request")
    assert cells(ax) == [[SEEN] * 2 + [ELSEWHERE_BLUE] + [LEAK_BLUE] * 2 + [ELSEWHERE_BLUE] * 5] * 3
    assert legend_texts(ax) == ["seen", "went elsewhere", "in the clear (leak)"]
    colours = {state: colour for state, colour, _ in tracer.plot.STATES}
    assert (colours["elsewhere"], colours["leaked"]) == (ELSEWHERE_BLUE, LEAK_BLUE)


# --- timeline and latency -----------------------------------------------------------------------


def test_timeline_cells_of_a_recorded_loss(recorded):
    ax = axes()
    tracer.plot.draw_timeline(ax, recorded["esp-blocked"], "request")
    assert cells(ax) == [[SEEN] * 5 + [MISSED] * 5] * 3
    assert [t.get_text() for t in ax.get_xticklabels()] == POINTS
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seen", "missed"]
    ax = axes()
    tracer.plot.draw_timeline(ax, recorded["esp-blocked"], "reply")
    assert cells(ax) == [[EMPTY] * 10] * 3
    (empty,) = by_gid(ax, "timeline-empty:reply")
    assert empty.get_text() == "none sent:\nno request arrived"
    assert ax.get_title() == "replies: which capture point saw which probe"


def test_timeline_cells_of_a_recorded_delivery(recorded):
    for direction in ("request", "reply"):
        ax = axes()
        tracer.plot.draw_timeline(ax, recorded["all-delivered"], direction)
        assert cells(ax) == [[SEEN] * 10] * 3


def test_timeline_shows_gaps_and_unobserved(runs):
    ax = axes()
    tracer.plot.draw_timeline(ax, verdict(runs, "gap"))
    assert cells(ax) == [[SEEN] * 10, [SEEN] * 2 + [GAP] + [SEEN] * 7, [SEEN] * 10]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seen", "capture gap"]
    ax = axes()
    tracer.plot.draw_timeline(ax, verdict(runs, "unobserved"))
    assert cells(ax) == [[UNOBSERVED] + [SEEN] * 9] * 3
    m, seqs, points = tracer.plot.timeline_matrix(verdict(runs, "gap"), "request")
    assert m.shape == (3, 10) and seqs == [0, 1, 2] and points == POINTS


def test_recorded_latency_boxes(recorded):
    ax = axes()
    tracer.plot.draw_latency(ax, recorded["esp-blocked"])
    # Nothing was delivered: the probes still timed the four edges before the router dropped them.
    assert dots(ax, "request") == {
        0: pytest.approx([0.009238, 0.015395, 0.01841]),  # west:eth0 → west-gw:lan0
        1: pytest.approx([0.020498, 0.022896, 0.030443]),  # west-gw lan0 → ipsec0
        2: pytest.approx([0.239513, 0.265809, 0.369679]),  # ipsec0 → wan0 (encap, in user space)
        3: pytest.approx([0.008171, 0.022691, 0.03508]),  # west-gw:wan0 → router:eth0
    }
    assert medians(ax, "request") == pytest.approx({0: 0.015395, 1: 0.022896, 2: 0.265809, 3: 0.022691})
    assert not dots(ax, "reply")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:5] == ["west:eth0 ↔ west-gw:lan0", "west-gw: lan0 ↔ ipsec0", "west-gw: ipsec0 ↔ wan0",
                          "west-gw:wan0 ↔ router:eth0", "router: eth0 ↔ eth1"]
    assert ax.get_title() == "per-hop delay"


def test_recorded_latency_both_directions_share_a_row(recorded):
    ax = axes()
    drawn = tracer.plot.draw_latency(ax, recorded["all-delivered"])
    # Row 0 is the pair west:eth0 ↔ west-gw:lan0: the request's first edge and the reply's last.
    request, reply = dots(ax, "request"), dots(ax, "reply")
    assert sorted(request) == sorted(reply) == list(range(9))
    assert request[0] == pytest.approx([0.023583, 0.024158, 0.05033])
    assert reply[0] == pytest.approx([0.004156, 0.019153, 0.020044])
    assert medians(ax, "request")[0] == pytest.approx(0.024158)
    assert medians(ax, "reply")[0] == pytest.approx(0.019153)
    assert drawn["reply"][0] == pytest.approx([0.004156, 0.019153, 0.020044])  # the seq order, as returned
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["request", "reply"]


def test_figure_and_text_agree_on_the_first_hop(recorded):
    v = recorded["all-delivered"]
    ax = axes()
    tracer.plot.draw_path(ax, v)
    delays = {t.get_gid(): t.get_text() for t in by_gid(ax, "edge-delay:")}
    assert delays["edge-delay:request:west:eth0->west-gw:lan0"] == "0.0242 ms"
    assert delays["edge-delay:reply:west-gw:lan0->west:eth0"] == "0.0192 ms"
    line = next(x for x in render_text(v).splitlines() if x.lstrip().startswith("west-gw:lan0"))
    assert line.split()[1:3] == ["3/3", "0.024"]  # the same median, to the text's 3 decimals


def test_latency_per_hop_pair(runs):
    ax = axes()
    drawn = tracer.plot.draw_latency(ax, verdict(runs, "delivered"))
    assert set(drawn) == {"request", "reply"}
    assert len(drawn["request"]) == len(POINTS) - 1
    assert drawn["request"][0] == pytest.approx([0.04, 0.04, 0.04])
    assert ax.get_yticklabels()[0].get_text() == "west:eth0 ↔ west-gw:lan0"
    assert len(by_gid(ax, "latency-box:request")) == len(POINTS) - 1
    assert medians(ax, "request") == pytest.approx(dict.fromkeys(range(len(POINTS) - 1), 0.04))


# --- combined figure, save, CLI -----------------------------------------------------------------


def test_figure_title_is_the_summary(runs):
    v = verdict(runs, "lost")
    fig = tracer.plot.figure(v)
    assert fig._suptitle is not None
    assert v.summary in fig._suptitle.get_text().replace("\n", " ")
    assert len([a for a in fig.axes if a.get_label() != "<colorbar>"]) >= 4


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_save_png_and_svg(runs, tmp_path, suffix):
    out = tracer.plot.save(verdict(runs, "lost"), tmp_path / f"f{suffix}")
    if suffix == ".png":
        assert png_size(out) == (1400, HEIGHT[2])  # 14 × 10.5 in at 100 dpi, grown by its footer (run, why)
    else:
        svg = out.read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg[:2000]
        assert 'id="lost-edge:request:west-gw:lan0-&gt;west-gw:ipsec0"' in svg


def test_save_rejects_unknown_suffix(runs, tmp_path):
    with pytest.raises(BadInput) as e:
        tracer.plot.save(verdict(runs, "lost"), tmp_path / "f.jpeg")
    assert "\n" not in str(e.value) and ".png or .svg" in str(e.value)


def test_plot_verdict_to(runs, tmp_path):
    out = plot_verdict_to(tmp_path / "ping.png", verdict(runs, "delivered"))
    assert out == tmp_path / "ping.png"
    assert png_size(out) == (1400, HEIGHT[1])


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_cli_writes_figure(runs, tmp_path, capsys, suffix):
    out = tmp_path / f"lost{suffix}"
    assert main(["plot", str(runs["lost"]), "-o", str(out)]) == 0
    if suffix == ".png":
        assert png_size(out) == (1400, HEIGHT[2])
    else:
        assert 'id="lost-mark:request"' in out.read_text()
    assert capsys.readouterr().out.strip() == f"wrote {out}"


def test_cli_capture_files_and_topology(runs, tmp_path):
    files = sorted(str(p) for p in runs["lost"].glob("*.pcapng"))
    out = tmp_path / "files.svg"
    assert main(["plot", *files, "--topology", str(runs["lost"] / "topology.toml"), "-o", str(out)]) == 0
    # The same verdict as from the run directory: the same lost edge.
    assert 'id="lost-edge:request:west-gw:lan0-&gt;west-gw:ipsec0"' in out.read_text()


def test_cli_bad_run_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["plot", str(tmp_path / "empty"), "-o", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("tracer: ")
    assert not (tmp_path / "x.png").exists()


def test_cli_bad_suffix(runs, tmp_path, capsys):
    assert main(["plot", str(runs["lost"]), "-o", str(tmp_path / "x.pdf")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# --- hand-built verdicts: shapes the synthetic lab does not produce -----------------------------


def long_verdict(n: int) -> Verdict:
    """n capture points, an asymmetric reply (one point of its own), 4 probes lost mid-path."""
    hops = tuple(Hop(f"node-{i // 2}:if{i}", f"node-{i // 2}") for i in range(n))
    edges = tuple(EdgeKind.FORWARD if i % 2 == 0 else EdgeKind.WIRE for i in range(n - 1))
    req = ExpectedPath(IPv4Address("10.0.0.1"), IPv4Address("10.9.0.1"), hops, edges, True, "delivered")
    rhops = (*hops[::-1][:3], Hop("detour:if0", "detour"), *hops[::-1][4:])
    rep = ExpectedPath(req.dst, req.src, rhops, edges, True, "delivered")
    cut = n // 2
    probes = []
    for seq in range(8):
        lost = seq >= 4
        s = tuple(Sighting.MISSED if lost and h > cut else Sighting.SEEN for h in range(n))
        t = tuple(None if x == Sighting.MISSED else seq * 10**9 + h * 50_000 for h, x in enumerate(s))
        probes.append(ProbeTrace(seq, "request", s, t, (None,) * n, Outcome.LOST if lost else Outcome.DELIVERED,
                                 cut if lost else n - 1, cut + 1 if lost else None))
        rs = tuple(Sighting.SEEN for _ in range(n))
        probes.append(ProbeTrace(seq, "reply", rs, tuple(h * 50_000 for h in range(n)), (None,) * n,
                                 Outcome.NOT_SENT if lost else Outcome.DELIVERED, None if lost else n - 1, None))
    f = Finding("request", Outcome.LOST, 4, 8, req.describe_edge(cut), hops[cut].point, hops[cut + 1].point,
                edges[cut].value, None, (4, 5, 6, 7))
    return Verdict(1, "ping", Status.LOSS, f"4/8 echo requests lost {f.where}", {"request": req, "reply": rep},
                   (f, Finding("request", Outcome.DELIVERED, 4, 8, "delivered")), tuple(probes))


@pytest.mark.parametrize("n", [5, 30])
def test_many_points_and_asymmetric_reply(n, tmp_path):
    v = long_verdict(n)
    ax = axes()
    g = tracer.plot.draw_path(ax, v)
    labels = {t.get_gid().removeprefix("point-label:") for t in by_gid(ax, "point-label:")}
    assert labels == {h.point for p in v.paths.values() for h in p.hops}
    detour = next(n for n, p in g.nodes(data="point") if p == "detour:if0")
    assert g.nodes[detour]["pos"][1] == 0.0  # on the reply row, with an x of its own
    (lost,) = [line for line in ax.lines if line.get_label() == "lost-edge"]
    assert list(lost.get_xdata()) == [n // 2, n // 2 + 1]
    # All 8 seen up to the cut, then the 4 delivered ones; the 4 unanswered replies are not counted.
    cut = n // 2
    assert faces(ax, "request") == [ALL_SEEN] * (cut + 1) + [HALF] * (n - cut - 1)
    assert faces(ax, "reply") == [ALL_SEEN] * n
    width = {5: 1400, 30: 2400}[n]  # max(14, 0.6 in per point + 6) in at 100 dpi
    assert png_size(tracer.plot.save(v, tmp_path / "long.png")) == (width, HEIGHT[1])


def test_empty_path_does_not_crash():
    p = ExpectedPath(IPv4Address("10.0.0.1"), IPv4Address("10.9.0.1"), (), (), False, "no route")
    v = Verdict(1, "ping", Status.INCONCLUSIVE, "no probes found in the captures", {"request": p}, (), ())
    fig = tracer.plot.figure(v)
    assert fig._suptitle is not None and "no probes found" in fig._suptitle.get_text()
    path_ax, timeline_ax, latency_ax = fig.axes[:3]
    assert [t.get_text() for t in path_ax.texts] == ["no expected path (the topology has no route for these probes)"]
    assert [t.get_text() for t in timeline_ax.texts] == ["no request probes"]
    assert [t.get_text() for t in latency_ax.texts] == ["no hops to time"]


def test_seen_color_takes_whole_numbers_as_fractions():
    assert [to_hex(seen_color(f)) for f in (1, 0, 1.0, 0.0)] == [ALL_SEEN, NONE_SEEN] * 2


# --- MTU rows, footers that are never cut ---------------------------------------------------------


def test_mtu_timeline_rows_are_probe_sizes():
    # mtu-ladder-blackhole: one probe each of 1000, 1200, 1250 and 1300 IP bytes (probes.json);
    # 1250 and 1300 vanish inside router.
    v = tracer.load(ROOT / "captures" / "mtu-ladder-blackhole").verdict
    ax = axes()
    m = tracer.plot.draw_timeline(ax, v, "request")
    assert ax.get_ylabel() == "probe size (IP bytes)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1000", "1200", "1250", "1300"]
    assert [y for y in ax.get_yticks()] == [0, 1, 2, 3]
    assert len(by_gid(ax, "size-boundary:request")) == 3
    router_eth1 = 5  # request path: west:eth0, west-gw ×3, router:eth0, router:eth1, …
    assert [to_hex(STATES[c][1]) for c in m[:, router_eth1]] == [SEEN, SEEN, MISSED, MISSED]


def test_ping_timeline_rows_stay_sequence_numbers(recorded):
    ax = axes()
    v = recorded["all-delivered"]
    tracer.plot.draw_timeline(ax, v, "request")
    assert ax.get_ylabel() == "probe seq"
    seqs = sorted(t.seq for t in v.probes if t.direction == "request")
    assert len(seqs) == 3 and [t.get_text() for t in ax.get_yticklabels()] == [str(q) for q in seqs]


def test_footer_wraps_every_note_and_grows_the_figure(runs):
    notes = tuple(f"note {i}: " + " ".join(f"word{i}-{j}" for j in range(60)) for i in range(7))
    v = replace(verdict(runs, "lost"), diagnoses=notes)
    fig = tracer.plot.figure(v)
    (footer,) = [t for t in fig.texts if t.get_gid() == "footer"]
    text = footer.get_text()
    assert "…" not in text
    for note in notes:  # every word of every note, in order
        assert note in " ".join(text.split())
    fig.canvas.draw()
    box = footer.get_window_extent()
    assert box.x1 <= fig.bbox.x1 and box.y0 >= 0  # inside the figure
    lowest_axes = min(ax.get_tightbbox().y0 for ax in fig.axes)
    assert box.y1 <= lowest_axes + 1  # below every axes, not over them
    assert fig.get_figheight() > 10.5 + 7 * 2 * 8 * 1.3 / 72  # at least two lines per note
