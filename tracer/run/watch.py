"""``tracer watch``: trace continuously, one run directory per window, within a disk budget.

Each window is an ordinary live trace (:func:`tracer.run.record.record`, then the same replay
as ``tracer replay``) of ``window / interval`` probes; when it closes, its verdict becomes one
line of ``windows.jsonl`` (:mod:`tracer.analysis.window`), the loss-over-time graph is redrawn
and, while the windows' captures exceed the budget, the oldest are deleted (their summaries
stay). Memory holds the summaries only (a bounded deque); the captures of one window at a time.

Layout of a watch directory::

    windows.jsonl              one summary per closed window (append-only)
    watch.json                 what was watched (kind, endpoints, window, interval, budget)
    loss-over-time.png / .svg  the graph, replaced atomically after each window
    w000001-<run>/             a window's run directory (tracer replay can read it)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tracer.analysis.window import WindowSummary, changed
from tracer.errors import BadInput
from tracer.interrupts import deferred
from tracer.run.record import default_runs_dir, dir_stamp, empty_dir

WINDOWS = "windows.jsonl"
WATCH = "watch.json"
GRAPH = "loss-over-time"  # .png and .svg
MAX_SUMMARIES = 100_000  # in memory for the graph: ~70 days of one-minute windows
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``1.5m``, ``1h`` → seconds."""
    m = _DURATION.match(text)
    if not m:
        raise BadInput(f"{text!r}: expected a duration like 60, 60s, 5m or 1h")
    return float(m.group(1)) * _UNIT[m.group(2)]


def is_watch_dir(path: Path) -> bool:
    return path.is_dir() and (path / WINDOWS).is_file()


def window_dir_name(index: int, run: int) -> str:
    return f"w{index + 1:06d}-{run:08x}"


def dir_size(path: Path) -> int:
    """Bytes of the files under ``path`` (what the window costs on disk)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass  # deleted meanwhile
    return total


@dataclass(frozen=True)
class Kept:
    """A window's run directory still on disk."""

    name: str
    size: int  # bytes
    event: bool  # the window where loss started, stopped or moved: kept longer


def to_delete(kept: Iterable[Kept], budget: int) -> list[str]:
    """Which window directories (oldest first in ``kept``) to delete so the rest fit ``budget``
    bytes: plain windows go first, oldest first; then the windows where something changed (the
    evidence an incident report wants); the newest window (what is happening now) last."""
    kept = list(kept)
    total = sum(k.size for k in kept)
    older, newest = kept[:-1], kept[-1:]
    out: list[str] = []
    for k in [k for k in older if not k.event] + [k for k in older if k.event] + newest:
        if total <= budget:
            break
        out.append(k.name)
        total -= k.size
    return out


def read_summaries(watch_dir: Path, limit: int = MAX_SUMMARIES) -> list[WindowSummary]:
    """The summaries of a watch directory (the newest ``limit``); a torn last line (the watch was
    killed mid-write) is skipped."""
    out: deque[WindowSummary] = deque(maxlen=limit)
    try:
        with (watch_dir / WINDOWS).open() as f:
            for line in f:
                try:
                    out.append(WindowSummary.from_dict(json.loads(line)))
                except (ValueError, TypeError):
                    continue
    except OSError as e:
        raise BadInput(f"{watch_dir}: not a watch directory ({e.strerror})") from None
    return list(out)


def describe(s: WindowSummary) -> str:
    """The change line: time, loss rate, where."""
    when = datetime.fromtimestamp(s.end, UTC).strftime("%H:%M:%S")
    rate = f"{100 * s.loss:.0f}% loss ({s.lost}/{s.sent})"
    if s.status == "delivered":
        what = f"OK    {rate}"
    elif s.status == "loss":
        what = f"LOSS  {rate} at {s.located} ({s.direction})" + (f": {s.reason}" if s.reason else "")
    else:
        what = f"INCONCLUSIVE  {rate}" + (f" at {s.located}" if s.located else "")
    cut = ", cut short" if s.interrupted else ""
    return f"{when}Z  {what}  [window {s.window + 1}, run {s.run}{cut}]"


def final_summary(summaries: list[WindowSummary]) -> str:
    if not summaries:
        return "no window completed"
    sent = sum(s.sent for s in summaries)
    lost = sum(s.lost for s in summaries)
    span = summaries[-1].end - summaries[0].start
    where: dict[str, int] = {}
    for s in summaries:
        if s.located:
            where[s.located] = where.get(s.located, 0) + 1
    lines = [f"{len(summaries)} windows over {span / 60:.1f} min: {sent} probes, {lost} lost "
             f"({100 * lost / sent if sent else 0:.1f}%)"]
    lines += [f"  loss at {w} in {n} window{'s' if n > 1 else ''}" for w, n in sorted(where.items(), key=lambda x: -x[1])]
    return "\n".join(lines)


@dataclass
class Watch:
    """The bookkeeping of one watch directory: summaries, kept windows and the disk budget."""

    out: Path
    budget: int  # bytes the windows' run directories may use
    step: float = 0.1  # loss-rate change that prints a line
    on_change: Callable[[WindowSummary], None] = print
    draw: Callable[[Path, list[WindowSummary]], None] | None = None

    def __post_init__(self) -> None:
        self.summaries: deque[WindowSummary] = deque(maxlen=MAX_SUMMARIES)
        self.kept: list[Kept] = []
        self.deleted = 0

    def close_window(self, s: WindowSummary, run_dir: Path | None) -> None:
        """A window's verdict is in: record it, print it if it changed, redraw, apply the budget."""
        prev = self.summaries[-1] if self.summaries else None
        is_change = changed(prev, s, self.step)
        self.summaries.append(s)
        with (self.out / WINDOWS).open("a") as f:
            f.write(json.dumps(s.to_dict(), separators=(",", ":")) + "\n")
        if is_change:
            self.on_change(s)
        if run_dir is not None:
            self.kept.append(Kept(run_dir.name, dir_size(run_dir), is_change))
        self.enforce_budget()
        self.redraw()

    def enforce_budget(self) -> None:
        doomed = set(to_delete(self.kept, self.budget))
        for k in self.kept:
            if k.name in doomed:
                shutil.rmtree(self.out / k.name, ignore_errors=True)
                self.deleted += 1
        self.kept = [k for k in self.kept if k.name not in doomed]

    def redraw(self) -> None:
        if self.draw is not None and self.summaries:
            self.draw(self.out, list(self.summaries))


def new_watch_dir(base: Path | None, kind: str) -> Path:
    """``base``, else ``<user's runs directory>/<time>-watch-<kind>`` (as traces: never the cwd)."""
    return empty_dir(base or default_runs_dir() / f"{dir_stamp()}-watch-{kind}", "watch directory")


def run_windows(watch: Watch, one_window: Callable[[int, Path], tuple[WindowSummary, bool]],
                new_run: Callable[[], int], windows: int | None, until: float | None) -> bool:
    """Run windows until ``windows`` are done or ``until`` (monotonic) has passed; False when
    interrupted (Ctrl-C, or SIGTERM within :func:`tracer.interrupts.sigterm_as_interrupt`).

    ``one_window`` returns the window's summary and whether it was cut short: an interrupt
    while probing closes the window with the probes sent (the run directory says so, and its
    verdict counts only those), and the watch stops after it. An interrupt before the window's
    first probe removes that window: it has nothing to say. Closing a window (the summary line,
    the graph, the budget) finishes before an interrupt that came meanwhile is acted on."""
    i = 0
    try:
        while (windows is None or i < windows) and (until is None or time.monotonic() < until):
            run_dir = watch.out / window_dir_name(i, new_run())
            run_dir.mkdir()
            try:
                s, cut = one_window(i, run_dir)
            except KeyboardInterrupt:  # before its first probe (an error keeps the directory, to look into)
                with deferred(raise_after=False):
                    shutil.rmtree(run_dir, ignore_errors=True)
                raise
            with deferred("closing the window"):
                watch.close_window(s, run_dir)
            if cut:
                return False
            i += 1
        return True
    except KeyboardInterrupt:
        return False
