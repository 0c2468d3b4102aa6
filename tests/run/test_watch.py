"""``tracer watch`` bookkeeping without a lab: window summaries from real recorded verdicts, the
disk budget on real directories, the change lines, interrupted windows, the summaries file."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

import tracer
from tracer.analysis.window import HopLoss, WindowSummary, changed, downsample, merge, summarize
from tracer.cli import main
from tracer.errors import BadInput, EnvironmentProblem
from tracer.interrupts import sigterm_as_interrupt
from tracer.run import watch as w

ROOT = Path(__file__).resolve().parents[2]


def summary(i: int, lost: int, located: str | None = None, sent: int = 60, status: str | None = None) -> WindowSummary:
    status = status or ("loss" if lost else "delivered")
    hops = (HopLoss("request", "west:eth0", 0.0), HopLoss("request", "west-gw:lan0", lost / sent))
    return WindowSummary(i, 1000.0 + 70 * i, 1060.0 + 70 * i, f"{i:08x}", status, sent, lost, located,
                         "request" if located else None, None, hops)


def make_window(base: Path, name: str, size: int) -> Path:
    d = base / name
    d.mkdir()
    (d / "a.pcapng").write_bytes(b"x" * size)
    return d


def test_parse_duration() -> None:
    assert [w.parse_duration(t) for t in ("90", "90s", "1.5m", "1h", "250ms")] == [90, 90, 90, 3600, 0.25]
    for bad in ("", "1d", "-5s", "five"):
        with pytest.raises(BadInput):
            w.parse_duration(bad)


def test_to_delete_plain_windows_go_first_oldest_first() -> None:
    kept = [w.Kept("w1", 10, True), w.Kept("w2", 10, False), w.Kept("w3", 10, False), w.Kept("w4", 10, True)]
    assert w.to_delete(kept, 40) == []
    assert w.to_delete(kept, 35) == ["w2"]
    assert w.to_delete(kept, 20) == ["w2", "w3"]
    assert w.to_delete(kept, 15) == ["w2", "w3", "w1"]  # then the oldest event window
    assert w.to_delete(kept, 0) == ["w2", "w3", "w1", "w4"]
    # The newest window (what is happening now) stays while anything else can go.
    now = [w.Kept("w1", 10, True), w.Kept("w2", 10, False), w.Kept("w3", 10, False)]
    assert w.to_delete(now, 15) == ["w2", "w1"]
    assert w.to_delete([w.Kept("w1", 10, False)], 5) == ["w1"]  # alone over the budget: it goes too
    assert w.to_delete([], 0) == []


def test_summarize_recorded_fault() -> None:
    v = tracer.load(ROOT / "captures" / "gw-forward-drop").verdict
    s = summarize(v, 3, 10.0, 20.0, "w000004-x")
    assert (s.status, s.sent, s.lost) == ("loss", 3, 3)
    assert s.located == "west-gw:lan0 → west-gw:ipsec0" and s.direction == "request"
    loss = {(h.direction, h.point): h.loss for h in s.hops}
    assert loss[("request", "west-gw:lan0")] == 0.0 and loss[("request", "west-gw:ipsec0")] == 1.0
    assert loss[("request", "east:eth0")] == 1.0
    assert all(h.loss is None for h in s.hops if h.direction == "reply")  # no reply was ever sent
    assert WindowSummary.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_summarize_delivered() -> None:
    s = summarize(tracer.load(ROOT / "captures" / "all-delivered").verdict, 0, 0.0, 1.0)
    assert (s.status, s.lost, s.located, s.loss) == ("delivered", 0, None, 0.0)
    assert s.sent == 3 and {h.loss for h in s.hops} == {0.0}


def test_changed() -> None:
    a, b = summary(0, 0), summary(1, 60, "x → y")
    assert changed(None, a)
    assert changed(a, b) and changed(b, a)  # loss starts, stops
    assert not changed(a, summary(2, 0)) and not changed(b, summary(2, 60, "x → y"))
    assert changed(b, summary(2, 60, "y → z"))  # the hop moved
    assert changed(summary(0, 30, "x → y"), summary(1, 36, "x → y"), 0.1)  # 50 % → 60 %
    assert not changed(summary(0, 30, "x → y"), summary(1, 33, "x → y"), 0.1)


def test_watch_budget_lines_and_file(tmp_path: Path) -> None:
    lines: list[WindowSummary] = []
    drawn: list[int] = []
    watch = w.Watch(tmp_path, budget=2500, on_change=lines.append, draw=lambda d, s: drawn.append(len(s)))
    states = [0, 0, 60, 60, 0, 0]
    for i, lost in enumerate(states):
        d = make_window(tmp_path, w.window_dir_name(i, i), 1000)
        watch.close_window(summary(i, lost, "a → b" if lost else None), d)
    assert [s.window for s in lines] == [0, 2, 4]  # first, loss on, loss off
    assert drawn == [1, 2, 3, 4, 5, 6]
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    # Two windows of 1000 bytes fit: the newest, and the loss-off event before it (plain ones go first).
    assert left == [w.window_dir_name(4, 4), w.window_dir_name(5, 5)]
    assert watch.deleted == 4
    assert sum(w.dir_size(tmp_path / n) for n in left) <= 2500
    assert [s.window for s in w.read_summaries(tmp_path)] == list(range(6))


def test_summaries_bounded_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(w, "MAX_SUMMARIES", 3)
    watch = w.Watch(tmp_path, budget=10**9, on_change=lambda s: None)
    for i in range(10):
        watch.close_window(summary(i, 0), None)
    assert [s.window for s in watch.summaries] == [7, 8, 9]
    assert len(w.read_summaries(tmp_path)) == 10 and len(w.read_summaries(tmp_path, 4)) == 4


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    watch = w.Watch(tmp_path, budget=10**9, on_change=lambda s: None)
    watch.close_window(summary(0, 0), None)
    with (tmp_path / w.WINDOWS).open("a") as f:
        f.write('{"window": 1, "start"')  # killed mid-write
    assert [s.window for s in w.read_summaries(tmp_path)] == [0]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_before_the_first_probe_removes_the_window(tmp_path: Path, how: str) -> None:
    watch = w.Watch(tmp_path, budget=10**9, on_change=lambda s: None)
    runs = iter(range(1, 100))

    def one_window(i: int, run_dir: Path) -> tuple[WindowSummary, bool]:
        (run_dir / "manifest.json").write_text("{}")
        if i == 2:  # record() raises KeyboardInterrupt when no probe had left yet
            if how == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        return summary(i, 0), False

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        assert w.run_windows(watch, one_window, lambda: next(runs), None, None) is False
    assert signal.getsignal(signal.SIGTERM) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [w.window_dir_name(0, 1), w.window_dir_name(1, 2)]
    assert len(w.read_summaries(tmp_path)) == 2


def test_window_cut_short_counts_and_ends_the_watch(tmp_path: Path) -> None:
    lines: list[WindowSummary] = []
    watch = w.Watch(tmp_path, budget=10**9, on_change=lines.append)
    runs = iter(range(1, 100))

    def one_window(i: int, run_dir: Path) -> tuple[WindowSummary, bool]:
        (run_dir / "manifest.json").write_text("{}")
        if i == 1:  # Ctrl-C while probing: record() returns with the probes sent so far
            return replace(summary(i, 4, "a → b", sent=20), interrupted=True), True
        return summary(i, 0), False

    assert w.run_windows(watch, one_window, lambda: next(runs), None, None) is False
    assert [(s.window, s.sent, s.interrupted) for s in w.read_summaries(tmp_path)] == [(0, 60, False), (1, 20, True)]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2  # the cut window is kept: it is valid
    assert w.describe(lines[-1]).endswith("[window 2, run 00000001, cut short]")


def test_an_error_keeps_the_window_directory(tmp_path: Path) -> None:
    watch = w.Watch(tmp_path, budget=10**9, on_change=lambda s: None)

    def one_window(i: int, run_dir: Path) -> tuple[WindowSummary, bool]:
        (run_dir / "manifest.json").write_text("{}")
        raise EnvironmentProblem("sniffer on west:eth0 did not start")

    with pytest.raises(EnvironmentProblem):
        w.run_windows(watch, one_window, lambda: 7, None, None)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [w.window_dir_name(0, 7)]


def test_windows_limit(tmp_path: Path) -> None:
    watch = w.Watch(tmp_path, budget=10**9, on_change=lambda s: None)
    runs = iter(range(1, 100))
    assert w.run_windows(watch, lambda i, d: (summary(i, 0), False), lambda: next(runs), 3, None) is True
    assert len(watch.summaries) == 3


def test_final_summary() -> None:
    text = w.final_summary([summary(0, 0), summary(1, 60, "a → b"), summary(2, 30, "a → b")])
    assert text.splitlines() == ["3 windows over 3.3 min: 180 probes, 90 lost (50.0%)", "  loss at a → b in 2 windows"]
    assert w.final_summary([]) == "no window completed"


@pytest.mark.parametrize("argv", [["--window", "0.5s"], ["--window", "2h"], ["--interval", "100"], ["--keep-mb", "0"],
                                  ["--windows", "0"], ["--kind", "nope"], ["--window", "soon"]])
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "west", "east", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tracer: ") and len(err.strip().splitlines()) == 1


def test_plot_watch_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    watch = w.Watch(tmp_path, budget=10**9, on_change=lambda s: None)
    for i, lost in enumerate([0, 60, 0]):
        watch.close_window(summary(i, lost, "a → b" if lost else None), None)
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "loss-over-time.png").stat().st_size > 0
    assert (tmp_path / "loss-over-time.svg").read_text().startswith("<?xml")
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "other.svg")]) == 0
    assert (tmp_path / "other.svg").exists()


def test_merge_and_downsample() -> None:
    group = [summary(0, 0), summary(1, 60, "a → b"), summary(2, 30, "a → b"), summary(3, 6, "c → d")]
    m = merge(group)
    assert (m.window, m.start, m.end, m.sent, m.lost, m.status) == (0, 1000.0, 1270.0, 240, 96, "loss")
    assert (m.located, m.direction) == ("a → b", "request")  # named by two windows of the three with loss
    assert {h.point: h.loss for h in m.hops} == {"west:eth0": 0.0, "west-gw:lan0": 0.4}  # 96 of 240
    assert merge([summary(0, 0), summary(1, 0)]).status == "delivered"
    many = [summary(i, 60 if 100 <= i < 200 else 0, "a → b" if 100 <= i < 200 else None) for i in range(1000)]
    few = downsample(many, 300)
    assert len(few) == 250 and all(s.sent == 240 for s in few)  # 4 windows a column
    assert sum(s.lost for s in few) == sum(s.lost for s in many) == 6000
    assert [s.window for s in few if s.lost] == list(range(100, 200, 4))
    assert downsample(many[:10], 300) == many[:10]
