#!/usr/bin/env python3
"""Live timings on the built-in lab (root): lab up/down, time to verdict, sniffer drops under load.

    python3 bench/bench_live.py [--runs 5] [--load-seconds 3] [--trace-args="--drop-reasons-wait 0.1"]

Prints medians over --runs: `tracer lab up` and `down` wall time, and the time
from the start of `tracer ping west east --count 3` (as a fresh process, like a
user runs it) to its printed verdict. Then it floods the tunnel with UDP from
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--load-seconds", type=float, default=3.0)
    ap.add_argument("--rates", default="max", help="comma-separated flood rates in pkt/s ('max': unthrottled)")
    ap.add_argument("--snaplen", type=int, default=2048, help="sniffer snaplen for the runs under load")
    ap.add_argument("--skip-timing", action="store_true", help="only the load test")
    ap.add_argument("--trace-args", default="", help="extra arguments for the timed traces (split on spaces)")
    ap.add_argument("--lab", default="bench", help="name of the lab to build (namespaces trc-NAME-*; default bench)")
    args = ap.parse_args()
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
            for rate_text in args.rates.split(","):
                rate = None if rate_text == "max" else float(rate_text)
                load_run(lab, tmp, args, rate)
    finally:
        lab.down()


if __name__ == "__main__":
    main()
