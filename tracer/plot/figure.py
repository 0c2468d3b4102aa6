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
from tracer.plot.path_diagram import DOUBT_COLOR, LOST_COLOR, draw_path
from tracer.plot.timeline import draw_timeline

FORMATS = {".png": "png", ".svg": "svg"}
STATUS_COLOR = {Status.DELIVERED: "#2ca02c", Status.LOSS: LOST_COLOR, Status.INCONCLUSIVE: DOUBT_COLOR}
def title(verdict: Verdict) -> str:
    return f"{verdict.status.word}  {verdict.summary}"


def figure(verdict: Verdict) -> Figure:
    """The combined figure for ``verdict``; its title is the verdict's summary."""
    columns = max((len(p.hops) for p in verdict.paths.values()), default=1)
    width = max(14.0, 0.6 * columns + 6.0)  # ~0.6 in per capture point keeps 30 points legible
    fig = Figure(figsize=(width, 10.5), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, height_ratios=(1.25, 1.0), width_ratios=(1.0, 1.0, 1.15))
    draw_path(fig.add_subplot(grid[0, :]), verdict)
    draw_timeline(fig.add_subplot(grid[1, 0]), verdict, Direction.REQUEST)
    if Direction.REPLY in verdict.paths:
        draw_timeline(fig.add_subplot(grid[1, 1]), verdict, Direction.REPLY)
    draw_latency(fig.add_subplot(grid[1, 2]), verdict)
    head = "\n".join(textwrap.wrap(title(verdict), int(width * 9)))
    fig.suptitle(head, fontsize=13, fontweight="bold", color=STATUS_COLOR[verdict.status])
    notes = verdict.explanations()
    footer = f"run {verdict.run:#010x} ({verdict.kind})"
    if notes:
        footer += "\n" + "\n".join(textwrap.shorten(n, int(width * 13), placeholder=" …") for n in notes[:5])
    fig.text(0.005, 0.002, footer, ha="left", va="bottom", fontsize=8, color="#444444", gid="footer")
    bottom = 0.02 + 0.018 * min(len(notes), 5)  # room for the footer lines
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
