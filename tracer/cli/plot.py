"""``tracer plot``: the verdict of recorded captures as a figure (PNG or SVG)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tracer.cli.replay import add_capture_inputs, explicit_points
from tracer.errors import EXIT_DELIVERED, BadInput

if TYPE_CHECKING:
    from tracer.model.verdict import Verdict


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw where along the path probes disappeared (PNG or SVG)",
        description="Replay captures like 'tracer replay' and draw the verdict: the path diagram "
        "(each capture point coloured by the fraction of probes it saw, the lost hop marked), "
        "a probe × capture point timeline and per-hop delays.",
        epilog="examples:\n"
        "  tracer plot captures/gw-forward-drop -o drop.png\n"
        "  tracer plot --topology lab.toml west.pcapng east.pcapng -o run.svg\n"
        "  tracer plot WATCH_DIR       # a 'tracer watch' directory: its loss-over-time graph (.png and .svg)\n"
        "exit status: 0 when the figure was written, whatever the verdict (use 'tracer replay' for that)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_capture_inputs(p)
    p.add_argument("--output", "-o", type=Path, metavar="FILE.png|FILE.svg",
                   help="figure file; the format follows the suffix (required, except for a watch directory: "
                   "its graph is redrawn in place unless -o is given)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tracer.plot.figure import check_output  # matplotlib loads only when a figure is wanted
    from tracer.run.replay import load_run, replay_run
    from tracer.run.watch import is_watch_dir

    if len(args.inputs) == 1 and is_watch_dir(args.inputs[0]):
        return plot_watch(args.inputs[0], args.output)
    if args.output is None:
        raise BadInput("--output FILE.png|FILE.svg is required (except for a 'tracer watch' directory)")
    check_output(args.output)  # before the (possibly slow) replay
    verdicts = replay_run(load_run(args.inputs, args.topology, explicit_points(args)), args.run, esp_keys=args.esp_keys,
                           flow=args.flow)
    if len(verdicts) > 1 and args.run is None:
        # One figure is one verdict; say which one and how to get the others.
        others = ", ".join(f"{v.run:#010x}" for v in verdicts[1:])
        print(f"tracer: captures hold {len(verdicts)} runs; plotting {verdicts[0].run:#010x} "
              f"(pick another with --run: {others})", file=sys.stderr)
    path = plot_verdict_to(args.output, verdicts[0])
    print(f"wrote {path}")
    return EXIT_DELIVERED


def plot_watch(watch_dir: Path, output: Path | None) -> int:
    """Redraw a watch directory's loss-over-time graph from its windows.jsonl."""
    import json

    from tracer.plot.figure import check_output
    from tracer.plot.watch import save_watch
    from tracer.run.watch import GRAPH, WATCH, read_summaries

    if output is not None:
        check_output(output)
    try:
        meta = json.loads((watch_dir / WATCH).read_text())
    except (OSError, ValueError):
        meta = {}
    summaries = read_summaries(watch_dir)
    if output is None:
        paths = save_watch(summaries, watch_dir / GRAPH, meta.get("title", ""))
    else:
        from tracer.plot.watch import watch_figure

        fig = watch_figure(summaries, meta.get("title", ""))
        try:
            fig.savefig(output, format=output.suffix.lower()[1:], dpi=100)
        except OSError as e:
            raise BadInput(f"{output}: cannot write the figure ({e.strerror or e})") from None
        paths = [output]
    for p in paths:
        print(f"wrote {p}")
    return EXIT_DELIVERED


def plot_verdict_to(path: str | Path, verdict: Verdict) -> Path:
    """Write ``verdict``'s figure to ``path`` (.png or .svg); errors are BadInput with one line.

    Used by ``tracer plot`` and ``tracer ping --plot FILE``.
    """
    from tracer.plot import save

    return save(verdict, path)
