"""``tracer watch SRC DST``: trace continuously in windows, print a line when the loss rate or
the located hop changes, keep a loss-over-time graph (tracer/run/watch.py does the work)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tracer.errors import EXIT_INTERRUPTED, BadInput

if TYPE_CHECKING:
    from tracer.probes import ProbeType


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="trace continuously: a line when loss starts, stops or moves; a loss-over-time graph",
        description="Probe SRC → DST continuously (ping by default) with a sniffer on every capture point, "
        "in windows: each window is an ordinary traced run directory, analysed like 'tracer replay' when "
        "it closes. A line is printed when the loss rate or the located hop changes, and the graph "
        "loss-over-time.png/.svg in the watch directory (loss rate per window, loss per capture point, "
        "the located hop, events marked) is redrawn after every window. The oldest windows' captures are "
        "deleted to stay within --keep-mb; their summaries stay in windows.jsonl. Ctrl-C ends cleanly.",
        epilog="examples:\n"
        "  tracer watch west east                                  # until Ctrl-C\n"
        "  tracer watch west east --window 60s --keep-mb 200 --duration 8h\n"
        "  tracer watch west-gw east-gw --kind ike --interval 5\n"
        "  tracer plot WATCH_DIR                                   # redraw the graph afterwards\n"
        "exit status: the worst window's (0 no loss, 1 loss located, 3 inconclusive), 130 on Ctrl-C",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="source node name or address")
    p.add_argument("dst", metavar="DST", help="destination node name or address")
    p.add_argument("--kind", default="ping", help="probe kind: ping (default), ike or mtu")
    p.add_argument("--topology", "-t", type=Path,
                   help="topology TOML (default: the built-in lab's, written by 'tracer lab up')")
    p.add_argument("--lab", default=os.environ.get("TRACER_LAB", "lab"), metavar="NAME",
                   help="built-in lab whose topology to use (default: $TRACER_LAB, else lab)")
    p.add_argument("--window", type=str, default="60s", help="length of a capture window (default 60s)")
    p.add_argument("--interval", "-i", type=float, default=1.0, help="seconds between probes (default 1)")
    p.add_argument("--timeout", "-W", type=float, default=1.0,
                   help="seconds to wait for replies after a window's last probe (default 1)")
    p.add_argument("--keep-mb", type=float, default=200.0,
                   help="disk budget for the windows' captures in MB (default 200); the oldest go first")
    p.add_argument("--duration", type=str, help="stop after this long (like 1h); default: until Ctrl-C")
    p.add_argument("--windows", type=int, metavar="N", help="stop after N windows")
    p.add_argument("--change", type=float, default=10.0, metavar="PERCENT",
                   help="print a line when the loss rate moves by this much (default 10); "
                   "loss starting, stopping or moving to another hop always prints")
    p.add_argument("--source", "-I", help="source address or interface on SRC, like ping -I")
    p.add_argument("--out", "-o", type=Path, help="watch directory (default $XDG_DATA_HOME/tracer/runs/<time>-watch-<kind>, "
                   "else ~/.local/share/tracer/runs/…; written owner-only)")
    p.add_argument("--json", action="store_true",
                   help="per window, one line on stdout: a tracer-json/1 document (docs/json.md) whose "
                   "runs hold the window's verdict and whose watch object its summary")
    p.add_argument("--snaplen", type=int, default=2048, metavar="BYTES", help="bytes kept per packet (default 2048)")
    p.add_argument("--no-graph", action="store_true", help="do not redraw the graph after each window")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--esp-keys", type=Path, metavar="FILE", help="SAs to decrypt ESP (default: the topology's)")
    keys.add_argument("--no-decrypt", action="store_true", help="tie ESP to probes by (SPI, seq) only")
    p.set_defaults(func=run)


def window_args(args: argparse.Namespace, ptype: ProbeType, window_s: float) -> argparse.Namespace:
    """The per-window arguments of the probe kind: its own options at their defaults, and as many
    probes as fit the window at the interval."""
    kp = argparse.ArgumentParser(add_help=False)
    ptype.add_arguments(kp)
    wargs = argparse.Namespace(**vars(kp.parse_args([])), **{k: v for k, v in vars(args).items() if k != "func"})
    wargs.count = 1
    per = max(1, ptype.planned(wargs))  # probes one count sends (mtu: one per size)
    wargs.count = max(1, int(window_s / args.interval / per))
    return wargs


def run(args: argparse.Namespace) -> int:
    import time

    from tracer.analysis.window import summarize
    from tracer.cli.trace import esp_keys_for
    from tracer.errors import EXIT_DELIVERED
    from tracer.interrupts import deferred, sigterm_as_interrupt
    from tracer.jsondoc import document
    from tracer.lab import Lab
    from tracer.netns import ensure_root
    from tracer.probes import probe_type
    from tracer.run import watch as w

    ptype = probe_type(args.kind)
    window_s = w.parse_duration(args.window)
    duration = w.parse_duration(args.duration) if args.duration else None
    if not 1 <= window_s <= 3600:
        raise BadInput(f"--window {args.window}: expected 1 s to 1 h")
    if not 0.01 <= args.interval <= window_s:
        raise BadInput(f"--interval {args.interval}: expected 0.01 s up to the window ({window_s:g} s)")
    if not 0.05 <= args.timeout <= 60:
        raise BadInput(f"--timeout {args.timeout}: expected 0.05 to 60 seconds")
    if args.keep_mb <= 0:
        raise BadInput(f"--keep-mb {args.keep_mb}: expected a positive size")
    if args.windows is not None and args.windows < 1:
        raise BadInput(f"--windows {args.windows}: expected 1 or more")
    if not 0 < args.change <= 100:
        raise BadInput(f"--change {args.change}: expected a percentage above 0")
    if not 96 <= args.snaplen <= 262144:
        raise BadInput(f"--snaplen {args.snaplen}: expected 96 to 262144 bytes")
    wargs = window_args(args, ptype, window_s)
    ptype.check(wargs)

    from tracer.run.record import record, replay_recorded, resolve_endpoints
    from tracer.send.echo import random_run_id
    from tracer.topofile import load_topology

    tpath = args.topology or Lab(args.lab).topology_path
    if not tpath.exists():
        if args.topology is None:
            raise BadInput(f"no topology given and lab '{args.lab}' is not up: run 'tracer lab up' or pass --topology")
        raise BadInput(f"{tpath}: topology file not found")
    topo = load_topology(tpath)
    ptype.prepare(topo, wargs)
    ends = resolve_endpoints(topo, wargs.src, wargs.dst, wargs.source)
    keys = esp_keys_for(wargs, topo, tpath)
    ensure_root()
    os.umask(0o077)  # captured traffic is private, as in every run directory
    out = w.new_watch_dir(args.out, ptype.name)
    (out / w.WINDOWS).touch()  # a watch directory from the start, even before its first window
    title = f"tracer watch {ptype.name} {args.src} → {args.dst}, {window_s:g} s windows"
    (out / w.WATCH).write_text(json.dumps({
        "kind": ptype.name, "src": args.src, "dst": args.dst, "window_s": window_s, "interval_s": args.interval,
        "keep_mb": args.keep_mb, "topology": str(tpath), "title": title}, indent=2) + "\n")

    def draw(d: Path, summaries: list) -> None:
        from tracer.plot.watch import save_watch

        save_watch(summaries, d / w.GRAPH, title, args.change / 100)

    def line(s: w.WindowSummary) -> None:
        if not args.json:
            print(w.describe(s), flush=True)

    watch = w.Watch(out, int(args.keep_mb * 1e6), args.change / 100, line, None if args.no_graph else draw)

    def one_window(i: int, run_dir: Path) -> tuple[w.WindowSummary, bool]:
        run_id = int(run_dir.name.split("-")[1], 16)
        start = time.time()
        cut = record(topo, tpath, ends, ptype, run_id, run_dir, lambda: ptype.send(ends, run_id, wargs),
                     ptype.planned(wargs), args.snaplen)
        with deferred("analysing the window", raise_after=False) as got:  # Ctrl-C now: this window still counts
            verdict = replay_recorded(run_dir, keys)[0]
            s = summarize(verdict, i, start, time.time(), run_dir.name, cut)
            if args.json:  # one contract document per window, a line each (JSON lines)
                doc = document("watch", [verdict.to_dict()], verdict.exit_code, watch=s.to_dict())
                print(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), flush=True)
        return s, cut or bool(got)

    if not args.json:
        print(f"watching {ptype.name} {args.src} → {args.dst}: {ptype.planned(wargs)} "
              f"probes per {window_s:g} s window; directory {out}  (Ctrl-C to stop)", flush=True)
    until = time.monotonic() + duration if duration else None
    with sigterm_as_interrupt():  # kill or a service manager stops a watch like Ctrl-C
        finished = w.run_windows(watch, one_window, random_run_id, args.windows, until)
    with deferred(raise_after=False):
        summaries = list(watch.summaries)
        graph = f"graph {out / w.GRAPH}.png/.svg; " if (out / f"{w.GRAPH}.png").exists() else ""
        print(("\n" if not finished else "") + w.final_summary(summaries)
              + f"\nwatch directory: {out}  ({graph}{watch.deleted} old windows' captures deleted for the "
              "disk budget)", file=sys.stderr if args.json else sys.stdout, flush=True)
    if not finished:
        return EXIT_INTERRUPTED
    codes = {"delivered": 0, "loss": 1, "inconclusive": 3}
    return max((codes.get(s.status, 3) for s in summaries), default=EXIT_DELIVERED)
