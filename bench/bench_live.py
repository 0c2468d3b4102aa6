#!/usr/bin/env python3
"""Live timings on the built-in lab (root): lab up/down, time to verdict, sniffer drops under load.

    python3 bench/bench_live.py [--runs 5] [--load-seconds 3] [--trace-args="--drop-reasons-wait 0.1"]
    python3 bench/bench_live.py --bpftrace-attach 5      # bpftrace's attach alone, standalone

Prints medians over --runs: `tracer lab up` and `down` wall time, and the time
from the start of `tracer ping west east --count 3` (as a fresh process, like a
user runs it) to its printed verdict, and where that time went (medians of the run
directories' timings and the probes' spacing). Then it floods the tunnel with UDP from
west to east at the highest rate this machine sustains (measured: packets that
reached east per second) while a traced ping runs, and reports the sniffers'
kernel drop counters and whether every probe was seen.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tracer.lab import Lab
from tracer.netns import netns_socket


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def flood(ns: str, dst: str, seconds: float, counter: mp.Value, rate: float | None = None) -> None:
    """UDP to dst:9 as fast as possible, or paced to ``rate`` packets/s (in bursts of 64)."""
    sock = netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
    payload = bytes(64)
    n = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        if rate and n >= rate * (now - start):
            time.sleep(0.0005)
            continue
        for _ in range(64):
            try:
                sock.sendto(payload, (dst, 9))
                n += 1
            except OSError:
                pass
    counter.value = n


def received(ns: str, seconds: float, counter: mp.Value) -> None:
    sock = netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 9))
    sock.settimeout(0.2)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.recv(2048)
            n += 1
        except TimeoutError:
            pass
    counter.value = n


def load_run(lab: Lab, tmp: str, args: argparse.Namespace, rate: float | None) -> None:
    """A traced ping while UDP floods west → east through the tunnel; report rates and drops."""
    sent, got = mp.Value("q", 0), mp.Value("q", 0)
    rx = mp.Process(target=received, args=(lab.namespace("east"), args.load_seconds + 1.0, got))
    tx = mp.Process(target=flood, args=(lab.namespace("west"), "198.51.100.10", args.load_seconds, sent, rate))
    rx.start()
    tx.start()
    time.sleep(0.5)
    out = Path(tmp) / f"load-{rate or 'max'}-{time.monotonic_ns()}"
    proc = subprocess.run([sys.executable, "-m", "tracer", "ping", "-t", str(lab.topology_path), "west", "east",
                           "--count", "5", "--snaplen", str(args.snaplen), "--out", str(out), "--json"],
                          capture_output=True, text=True)
    tx.join()
    rx.join()
    doc = json.loads(proc.stdout)["runs"][0]  # docs/json.md
    manifest = json.loads((out / "manifest.json").read_text())
    drops = {c["point"]: c["drops"] for c in manifest["captures"]}
    print(f"background UDP west→east through the tunnel ({'unthrottled' if rate is None else f'paced at {rate:,.0f}/s'}, "
          f"snaplen {args.snaplen}): sent {sent.value / args.load_seconds:,.0f} pkt/s, "
          f"delivered {got.value / args.load_seconds:,.0f} pkt/s")
    print(f"  traced ping during the flood: {doc['status']}: {doc['summary']}")
    print(f"  sniffer kernel drops: {sum(d or 0 for d in drops.values())} "
          f"(per point: {', '.join(f'{k}={v}' for k, v in drops.items())})")


def breakdown(tmp: Path, runs: int, walls: list[float]) -> None:
    """Medians of where the timed traces' time went, from their run directories: the manifest's
    timings (run/record.py) and the probes' spacing (probes.json)."""
    man = [json.loads((tmp / f"r{i}" / "manifest.json").read_text()) for i in range(runs)]
    probes = [json.loads((tmp / f"r{i}" / "probes.json").read_text()) for i in range(runs)]
    extra = man  # the manifest keeps its timings at the top level (Manifest.extra)

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} s" if values else "-"

    spacing = sorted({p.get("options", {}).get("interval") for p in probes}, key=str)
    print(f"  recording (sniffers, evidence, probes, stop, writing) {med([e['record_s'] for e in extra])}; "
          f"outside it (start-up, analysis, output) {med([w - e['record_s'] for w, e in zip(walls, extra, strict=True)])}")
    print(f"  sniffers listening {med([e['sniffers_ready_s'] for e in extra if 'sniffers_ready_s' in e])} and bpftrace "
          f"ready {med([e['events_ready_s'] for e in extra if 'events_ready_s' in e])} after the sniffers' start; "
          f"bpftrace attached {med([e['dropreasons_startup_s'] for e in extra if 'dropreasons_startup_s' in e])} after "
          f"its own start; evidence after {med([e['evidence_after_s'] for e in extra if 'evidence_after_s' in e])}; "
          f"probes {', '.join(str(x) for x in spacing)} s apart")


def bpftrace_attach(runs: int) -> None:
    """Standalone, as root: seconds from spawning bpftrace to its probe attached, for a one-line
    skb:kfree_skb script and for tracer's drop-reason session (dropreasons.attach, as a trace
    starts it): most of a live trace's wait."""
    import os
    import signal

    from tracer.evidence import dropreasons
    from tracer.model.evidence import ProbeMatch

    env = {**os.environ, dropreasons._READY_ENV: "1"}  # bpftrace's own start barrier (see dropreasons)
    one_line, ours = [], []
    for _ in range(runs):
        t = time.monotonic()
        proc = subprocess.Popen(["bpftrace", "-B", "line", "-e", "tracepoint:skb:kfree_skb { @[args->reason] = count(); }"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, bufsize=0)
        assert proc.stdout is not None
        seen = b""
        while dropreasons._READY_ENV.encode() not in seen and (chunk := os.read(proc.stdout.fileno(), 4096)):
            seen += chunk
        one_line.append(time.monotonic() - t)
        proc.send_signal(signal.SIGINT)
        proc.communicate()
        session = dropreasons.attach(ProbeMatch(1, None))
        if session.startup_s is None:
            raise SystemExit(f"bpftrace did not attach: {session.unavailable}")
        ours.append(session.startup_s)
        session.stop()
    for name, times in (("one-line tracepoint script", one_line), ("tracer's drop-reason script", ours)):
        print(f"bpftrace attach, {name}: median {statistics.median(times):.3f} s  (runs: "
              f"{', '.join(f'{x:.3f}' for x in times)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--load-seconds", type=float, default=3.0)
    ap.add_argument("--rates", default="max", help="comma-separated flood rates in pkt/s ('max': unthrottled)")
    ap.add_argument("--snaplen", type=int, default=2048, help="sniffer snaplen for the runs under load")
    ap.add_argument("--skip-timing", action="store_true", help="only the load test")
    ap.add_argument("--trace-args", default="", help="extra arguments for the timed traces (split on spaces)")
    ap.add_argument("--lab", default="bench", help="name of the lab to build (namespaces trc-NAME-*; default bench)")
    ap.add_argument("--bpftrace-attach", type=int, metavar="N", default=0,
                    help="only time bpftrace's attach N times, standalone: a one-line script and tracer's")
    args = ap.parse_args()
    if args.bpftrace_attach:
        bpftrace_attach(args.bpftrace_attach)
        return
    lab = Lab(args.lab)
    ups, downs, verdicts = [], [], []
    try:
        for _ in range(0 if args.skip_timing else args.runs):
            ups.append(timed(lab.up))
            downs.append(timed(lab.down))
        lab.up()
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(0 if args.skip_timing else args.runs):
                cmd = [sys.executable, "-m", "tracer", "ping", "-t", str(lab.topology_path), "west", "east",
                       "--count", "3", "--out", f"{tmp}/r{i}", *args.trace_args.split()]
                verdicts.append(timed(lambda c=cmd: subprocess.run(c, check=True, capture_output=True)))
            if not args.skip_timing:
                points = len(json.loads((Path(tmp) / "r0" / "manifest.json").read_text())["captures"])
                print(f"lab up:   median {statistics.median(ups):.2f} s  (runs: {', '.join(f'{x:.2f}' for x in ups)})")
                print(f"lab down: median {statistics.median(downs):.2f} s")
                extra = f"{args.trace_args} " if args.trace_args else ""
                print(f"tracer ping west east --count 3 {extra}({points} capture points), start to verdict: "
                      f"median {statistics.median(verdicts):.2f} s  (runs: {', '.join(f'{x:.2f}' for x in verdicts)})")
                breakdown(Path(tmp), args.runs, verdicts)
            for rate_text in args.rates.split(","):
                rate = None if rate_text == "max" else float(rate_text)
                load_run(lab, tmp, args, rate)
    finally:
        lab.down()


if __name__ == "__main__":
    main()
