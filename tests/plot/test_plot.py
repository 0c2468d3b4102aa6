"""Figures checked through their matplotlib objects (names, positions, colours, arrays), not pixels."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import tracer
import tracer.plot
from tests.synth import POINTS, REPLY_HOPS, SPI_EW, SPI_WE, Scenario, build
from tracer.cli import main
from tracer.cli.plot import plot_verdict_to
from tracer.errors import BadInput
from tracer.model.flowgraph import EdgeKind
from tracer.model.path import ExpectedPath, Hop
from tracer.model.verdict import Finding, Outcome, ProbeTrace, Sighting, Status, Verdict
from tracer.plot.path_diagram import seen_color
from tracer.analysis.hopstats import path_stats
from tracer.plot.timeline import CODE

NODES = ["west", "west-gw", "router", "east-gw", "east"]
LOST_AFTER_LAN0 = Scenario(drop_after={("request", "west-gw:lan0"): None})


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


def verdict(runs: dict[str, Path], name: str) -> Verdict:
    return tracer.load(runs[name]).verdict


def axes():
    fig = Figure(figsize=(14, 5))
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def by_gid(ax, prefix: str) -> list:
    return [a for a in ax.findobj() if (a.get_gid() or "").startswith(prefix)]


def rgb(c) -> tuple[float, float, float]:
    return tuple(float(x) for x in np.asarray(c)[:3])


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
    v = verdict(runs, "lost")
    tracer.plot.draw_path(ax, v)
    (req,) = by_gid(ax, "capture-points:request")
    faces = [rgb(c) for c in req.get_facecolors()]
    for i in (0, 1):  # before the loss: green
        r, g, _ = faces[i]
        assert g > r + 0.3, POINTS[i]
    for i in (2, 7, 8, 9):  # after it (cleartext points): red
        r, g, _ = faces[i]
        assert r > g + 0.3, POINTS[i]
    # The colour is a function of the fraction, for every point the verdict has an opinion on.
    for i, s in enumerate(path_stats(v, "request").points):
        if s.fraction is not None:
            assert faces[i] == pytest.approx(rgb(seen_color(s.fraction)))


def test_partial_loss_gets_an_intermediate_colour(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "partial"))
    (req,) = by_gid(ax, "capture-points:request")
    ipsec0 = rgb(req.get_facecolors()[POINTS.index("west-gw:ipsec0")])
    assert ipsec0 == pytest.approx(rgb(seen_color(0.75)))
    assert [t.get_text() for t in by_gid(ax, "count:request:west-gw:ipsec0")] == ["3/4"]


def test_unobserved_point_is_hollow_and_says_so(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "unobserved"))
    (req,) = by_gid(ax, "capture-points:request")
    assert rgb(req.get_facecolors()[0]) == (1.0, 1.0, 1.0)
    assert [t.get_text() for t in by_gid(ax, "note:request:west:eth0")] == ["not captured"]


def test_capture_gap_is_drawn_distinctly(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "gap"))
    assert by_gid(ax, "gap:request:west-gw:ipsec0")
    assert not [line for line in ax.lines if line.get_label() == "lost-edge"]


def test_esp_band_names_the_spi(runs):
    ax = axes()
    tracer.plot.draw_path(ax, verdict(runs, "delivered"))
    bands = {p.get_gid(): p.get_label() for p in ax.patches if (p.get_gid() or "").startswith("esp-band:")}
    assert bands == {"esp-band:request": f"ESP SPI 0x{SPI_WE:08x}", "esp-band:reply": f"ESP SPI 0x{SPI_EW:08x}"}
    (caption,) = by_gid(ax, "esp-label:request")
    assert "tunnel west-east" in caption.get_text()


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


# --- timeline and latency -----------------------------------------------------------------------


def test_timeline_matrix_values(runs):
    ax = axes()
    m = tracer.plot.draw_timeline(ax, verdict(runs, "lost"), "request")
    (im,) = ax.images
    assert np.array_equal(im.get_array(), m)
    assert m.shape == (3, len(POINTS))
    assert (m[:, :2] == CODE["seen"]).all() and (m[:, 2] == CODE["missed"]).all()
    assert [t.get_text() for t in ax.get_xticklabels()] == POINTS
    ax = axes()
    reply = tracer.plot.draw_timeline(ax, verdict(runs, "lost"), "reply")
    assert (reply == CODE["not-sent"]).all()


def test_timeline_shows_gaps_and_unobserved(runs):
    m, seqs, points = tracer.plot.timeline_matrix(verdict(runs, "gap"), "request")
    assert seqs == [0, 1, 2] and points == POINTS
    assert m[1, POINTS.index("west-gw:ipsec0")] == CODE["gap"]
    m, _, _ = tracer.plot.timeline_matrix(verdict(runs, "unobserved"), "request")
    assert (m[:, 0] == CODE["unobserved"]).all()
    ax = axes()
    tracer.plot.draw_timeline(ax, verdict(runs, "gap"))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["seen", "capture gap"]


def test_latency_per_hop_pair(runs):
    ax = axes()
    drawn = tracer.plot.draw_latency(ax, verdict(runs, "delivered"))
    assert set(drawn) == {"request", "reply"}
    assert len(drawn["request"]) == len(POINTS) - 1
    assert drawn["request"][0] == pytest.approx([0.04, 0.04, 0.04])
    assert ax.get_yticklabels()[0].get_text() == "west:eth0 ↔ west-gw:lan0"
    assert by_gid(ax, "latency-box:request")


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
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:2000]


def test_save_rejects_unknown_suffix(runs, tmp_path):
    with pytest.raises(BadInput) as e:
        tracer.plot.save(verdict(runs, "lost"), tmp_path / "f.jpeg")
    assert "\n" not in str(e.value) and ".png or .svg" in str(e.value)


def test_plot_verdict_to(runs, tmp_path):
    assert plot_verdict_to(tmp_path / "ping.png", verdict(runs, "delivered")).stat().st_size > 10_000


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_cli_writes_figure(runs, tmp_path, capsys, suffix):
    out = tmp_path / f"lost{suffix}"
    assert main(["plot", str(runs["lost"]), "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert capsys.readouterr().out.strip() == f"wrote {out}"


def test_cli_capture_files_and_topology(runs, tmp_path):
    files = sorted(str(p) for p in runs["lost"].glob("*.pcapng"))
    out = tmp_path / "files.png"
    assert main(["plot", *files, "--topology", str(runs["lost"] / "topology.toml"), "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000


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
    (req,) = by_gid(ax, "capture-points:request")
    faces = [rgb(c) for c in req.get_facecolors()]
    assert faces[0] == pytest.approx(rgb(seen_color(1.0)))
    assert faces[n - 1] == pytest.approx(rgb(seen_color(0.5)))  # after the loss: half the probes
    assert tracer.plot.save(v, tmp_path / "long.png").stat().st_size > 10_000


def test_empty_path_does_not_crash():
    p = ExpectedPath(IPv4Address("10.0.0.1"), IPv4Address("10.9.0.1"), (), (), False, "no route")
    v = Verdict(1, "ping", Status.INCONCLUSIVE, "no probes found in the captures", {"request": p}, (), ())
    fig = tracer.plot.figure(v)
    assert fig._suptitle is not None and "no probes found" in fig._suptitle.get_text()
