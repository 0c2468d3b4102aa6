"""The loss-over-time graph of ``tracer watch``, checked through its matplotlib objects. Windows
are summaries of real recorded verdicts (captures/all-delivered, captures/gw-forward-drop)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from matplotlib.dates import num2date

import tracer
from tracer.analysis.window import summarize
from tracer.plot.watch import events, watch_figure

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.fixture(scope="module")
def windows():
    """Six one-minute windows, 5 s apart: OK, OK, loss (gw-forward-drop) ×2, OK, OK."""
    ok = tracer.load(ROOT / "captures" / "all-delivered").verdict
    drop = tracer.load(ROOT / "captures" / "gw-forward-drop").verdict
    plan = [ok, ok, drop, drop, ok, ok]
    return [summarize(v, i, T0 + 65 * i, T0 + 65 * i + 60) for i, v in enumerate(plan)]


def by_gid(fig, prefix):
    return [a for ax in fig.axes for a in [*ax.lines, *ax.collections, *ax.texts] if (a.get_gid() or "").startswith(prefix)]


def when(x: float) -> float:
    return num2date(x).timestamp()


def test_loss_line_per_window(windows):
    fig = watch_figure(windows, "t")
    (line,) = by_gid(fig, "watch-loss")
    ys = line.get_ydata()
    xs = [when(x) if np.isfinite(x) else None for x in line.get_xdata()]
    # Each window a flat segment over [start, end]; a break (NaN) in the 5 s between windows.
    assert xs[:5] == [T0, T0 + 60, None, T0 + 65, T0 + 125]
    finite = [y for y in ys if np.isfinite(y)]
    assert finite == [0, 0, 0, 0, 100, 100, 100, 100, 0, 0, 0, 0]


def test_events_mark_loss_on_and_off(windows):
    assert [(e.summary.window, e.label, e.state) for e in events(windows)] == [
        (2, "loss on: west-gw:lan0 → west-gw:ipsec0", True), (4, "loss off", True)]
    fig = watch_figure(windows, "t")
    lines = sorted(by_gid(fig, "watch-event:"), key=lambda a: a.get_gid())
    assert [when(ln.get_xdata()[0]) for ln in lines] == [T0 + 130, T0 + 260]
    labels = sorted(by_gid(fig, "watch-event-label:"), key=lambda a: a.get_gid())
    assert [t.get_text() for t in labels] == ["loss on: west-gw:lan0 → west-gw:ipsec0", "loss off"]


def test_hops_mesh_and_located_hop(windows):
    fig = watch_figure(windows, "t")
    (mesh,) = by_gid(fig, "watch-hops")
    hops_ax = mesh.axes
    rows = [t.get_text() for t in hops_ax.get_yticklabels()]
    assert rows[:4] == ["→ west:eth0", "→ west-gw:lan0", "→ west-gw:ipsec0", "→ west-gw:wan0"]
    assert rows[10] == "← east:eth0" and len(rows) == 20
    a = mesh.get_array()
    assert a.shape == (20, 11)  # 6 windows and the 5 gaps between them
    cols = [0, 2, 4, 6, 8, 10]
    # west-gw:lan0 saw everything; from west-gw:ipsec0 on, nothing in the fault's windows.
    assert [float(a[1, c]) for c in cols] == [0.0] * 6
    assert [float(a[2, c]) for c in cols] == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert [float(a[9, c]) for c in cols] == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    # No reply was sent in the fault's windows: nothing to colour (masked), not "0 % lost".
    assert bool(a.mask[10, 4]) and bool(a.mask[10, 6]) and not a.mask[10, 2]
    assert all(bool(a.mask[r, c]) for r in range(20) for c in (1, 3, 5, 7, 9))  # the gaps
    (located,) = by_gid(fig, "watch-located")
    xy = located.get_offsets()
    assert [(when(x), y) for x, y in xy] == [(T0 + 160, 2), (T0 + 225, 2)]  # mid-window, row west-gw:ipsec0


def test_title_and_no_cut_text(windows):
    fig = watch_figure(windows, "tracer watch ping west → east, 60 s windows")
    head = fig._suptitle.get_text()
    start = datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert head == f"tracer watch ping west → east, 60 s windows  {start} – 08:06:25 UTC, 6 windows"
    assert not any("…" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_moved_hop_is_an_event(windows):
    moved = replace(windows[3], located="router:eth0 → router:eth1")
    seq = [*windows[:3], moved, *windows[4:]]
    assert [e.label for e in events(seq)] == ["loss on: west-gw:lan0 → west-gw:ipsec0",
                                                   "moved: router:eth0 → router:eth1", "loss off"]


def test_rate_change_is_a_faint_unlabelled_line(windows):
    half = replace(windows[3], lost=1, hops=windows[3].hops)  # 1 of 3 lost: 100 % → 33 %, same hop
    seq = [*windows[:3], half, *windows[4:]]
    assert [(e.label, e.state) for e in events(seq)] == [
        ("loss on: west-gw:lan0 → west-gw:ipsec0", True), ("33% loss", False), ("loss off", True)]
    fig = watch_figure(seq, "t")
    lines = sorted(by_gid(fig, "watch-event:"), key=lambda a: a.get_gid())
    assert [ln.get_linestyle() for ln in lines] == ["--", ":", "--"]
    labels = sorted(by_gid(fig, "watch-event-label:"), key=lambda a: a.get_gid())
    assert [t.get_gid() for t in labels] == ["watch-event-label:0", "watch-event-label:2"]


def test_long_watch_is_drawn_at_a_bounded_width(windows):
    # 3000 windows (two days of minutes): merged 5 to a column, the mesh at most 2 × 600 wide.
    base = windows[0]
    many = [replace(windows[2] if 1000 <= i < 1500 else base, window=i, start=T0 + 60 * i, end=T0 + 60 * i + 60)
            for i in range(3000)]
    fig = watch_figure(many, "t")
    (mesh,) = by_gid(fig, "watch-hops")
    assert mesh.get_array().shape == (20, 600)  # back to back: no gap columns
    assert mesh.get_rasterized()
    assert fig._suptitle.get_text().endswith("3000 windows (drawn 5 to a column)")
    assert [e.label for e in events(many)] == ["loss on: west-gw:lan0 → west-gw:ipsec0", "loss off"]
