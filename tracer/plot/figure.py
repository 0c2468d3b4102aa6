"""One figure per verdict: the path diagram on top, timelines and per-hop delay below.

Figures are built on the Agg canvas directly (never pyplot): no global state,
no GUI backend, safe in servers, tests and notebooks alike.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tracer.errors import BadInput
from tracer.model.direction import Direction
from tracer.model.verdict import Status, Verdict
from tracer.plot.latency import draw_latency
from tracer.plot.palette import DOUBT_COLOR, LOST_COLOR, OK_COLOR
from tracer.plot.path_diagram import draw_path
from tracer.plot.timeline import draw_timeline

FORMATS = {".png": "png", ".svg": "svg"}
STATUS_COLOR = {Status.DELIVERED: OK_COLOR, Status.LOSS: LOST_COLOR, Status.INCONCLUSIVE: DOUBT_COLOR}


def title(verdict: Verdict) -> str:
    return f"{verdict.status.word}  {verdict.summary}"


FOOTER_PT = 8  # footer font size
LINE_IN = FOOTER_PT * 1.3 / 72  # one footer line, inches


def footer_lines(verdict: Verdict, width_in: float) -> list[str]:
    """The run id, then every explanation wrapped to the figure's width: never cut."""
    chars = int(width_in * 72 / (FOOTER_PT * 0.6))  # a DejaVu Sans character is ~0.55 em wide on average
    lines = [f"run {verdict.run:#010x} ({verdict.kind})"]
    for note in verdict.explanations():
        lines += textwrap.wrap(note, chars, subsequent_indent="    ", break_on_hyphens=False) or [""]
    return lines


def figure(verdict: Verdict) -> Figure:
    """The combined figure for ``verdict``; its title is the verdict's summary. The figure grows
    by the footer's height, so however many explanations there are, none is cut."""
    columns = max((len(p.hops) for p in verdict.paths.values()), default=1)
    width = max(14.0, 0.6 * columns + 6.0)  # ~0.6 in per capture point keeps 30 points legible
    lines = footer_lines(verdict, width)
    footer_in = LINE_IN * len(lines) + 0.15
    height = 10.5 + footer_in
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, height_ratios=(1.25, 1.0), width_ratios=(1.0, 1.0, 1.15))
    draw_path(fig.add_subplot(grid[0, :]), verdict)
    draw_timeline(fig.add_subplot(grid[1, 0]), verdict, Direction.REQUEST)
    if Direction.REPLY in verdict.paths:
        draw_timeline(fig.add_subplot(grid[1, 1]), verdict, Direction.REPLY)
    draw_latency(fig.add_subplot(grid[1, 2]), verdict)
    head = "\n".join(textwrap.wrap(title(verdict), int(width * 9)))
    fig.suptitle(head, fontsize=13, fontweight="bold", color=STATUS_COLOR[verdict.status])
    fig.text(0.005, 0.05 / height, "\n".join(lines), ha="left", va="bottom", fontsize=FOOTER_PT, color="#444444",
             gid="footer", linespacing=1.15)
    bottom = (footer_in + 0.05) / height  # the axes stay above the footer
    fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))  # type: ignore[union-attr]
    return fig


def check_output(path: str | Path) -> Path:
    """The figure file name, if it can be written (known suffix, existing directory)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise BadInput(f"{path}: cannot write '{path.suffix or 'no suffix'}' figures; use a .png or .svg file name")
    if not path.parent.is_dir():
        raise BadInput(f"{path}: directory {path.parent} does not exist")
    return path


def save(verdict: Verdict, path: str | Path) -> Path:
    """Write the figure as PNG or SVG, by the file's suffix."""
    path = check_output(path)
    fig = figure(verdict)
    try:
        fig.savefig(path, format=FORMATS[path.suffix.lower()], dpi=100)
    except OSError as e:
        raise BadInput(f"{path}: cannot write the figure ({e.strerror or e})") from None
    return path
