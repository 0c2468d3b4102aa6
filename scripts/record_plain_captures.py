#!/usr/bin/env python3
"""Record lab faults the way a person would by hand (root; needs the lab's tools).

No tracer sniffer and no tracer probe: plain ``tcpdump -i IFACE -w FILE`` on every interface of
every lab namespace (``lo`` too), and plain iputils ``ping -c 3`` run inside the source
namespace. The files are what ``tracer replay -t TOPOLOGY FILES…`` must read with no tags and
no manifest: one classic pcap per interface, named ``node:iface.pcap``.

Usage: python3 scripts/record_plain_captures.py [--out DIR] [--lo] [FAULT|all-delivered ...]
(default: every fault into captures/plain/<fault>/ and the lab's topology into
captures/plain/topology.toml). ``--lo`` keeps the loopback captures as well.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tracer.lab import FAULTS, Lab

ROOT = Path(__file__).resolve().parents[1]
LAB = "pdrec"
# The ping a person types for each fault: the large-packet fault needs a large, unfragmentable one.
PING_ARGS: dict[str, list[str]] = {"mtu-blackhole": ["-s", "1300", "-M", "do"]}
DST = "198.51.100.10"  # east
HEADER = """\
# The built-in lab, as `tracer lab up` describes it (written by scripts/record_plain_captures.py).
# The captures beside it were taken by hand: plain tcpdump on every interface, plain ping.

name = "plain"

"""


def interfaces(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def start_tcpdump(ns: str, iface: str, path: Path) -> subprocess.Popen | None:
    """Plain tcpdump on one interface; None when tcpdump refuses it (an interface that is down)."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-n", "-U", "-i", iface, "-w", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if b"listening on" not in line:
        proc.wait()
        print(f"  {path.name}: tcpdump refused: {line.decode().strip()}", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None
    return proc


def record(lab: Lab, name: str, out: Path, keep_lo: bool) -> None:
    fault = None if name == "all-delivered" else name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if fault:
        lab.set_fault(fault)
    procs: list[subprocess.Popen] = []
    try:
        for node, ns in lab.namespaces.items():
            for iface in interfaces(ns):
                if iface == "lo" and not keep_lo:
                    continue
                p = start_tcpdump(ns, iface, out / f"{node}:{iface}.pcap")
                if p is not None:
                    procs.append(p)
        ping = ["ip", "netns", "exec", lab.namespace("west"), "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1",
                *PING_ARGS.get(name, []), DST]
        r = subprocess.run(ping, capture_output=True, text=True)
        summary = next((ln for ln in r.stdout.splitlines() if "packets transmitted" in ln), r.stderr.strip())
        # Before Ctrl-C, as a person would: a tcpdump without --immediate-mode hands packets over in
        # blocks (up to 1 s), and what is still in an unfinished block is lost when it stops.
        time.sleep(2)
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.wait(timeout=10)
        if fault:
            lab.clear_fault()
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{name}: ping: {summary}  ({len(procs)} captures, {size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "captures" / "plain")
    ap.add_argument("--lo", action="store_true", help="keep the captures of lo")
    ap.add_argument("names", nargs="*", help="faults (default: all-delivered and every fault)")
    args = ap.parse_args()
    names = args.names or ["all-delivered", *FAULTS]
    lab = Lab(LAB)
    try:
        lab.up()
        args.out.mkdir(parents=True, exist_ok=True)
        # The lab's topology, without the namespace and key-file names of a lab that will be gone
        # (replay needs none of them).
        text = lab.topology_path.read_text()
        body = text[text.index("\n[") + 1:]  # from the first table on: the lab's own name stays out too
        lines = [ln for ln in body.splitlines() if not ln.startswith(("netns", "ike_vici", "esp_keys"))]
        (args.out / "topology.toml").write_text(HEADER + "\n".join(lines) + "\n")
        for n in names:
            record(lab, n, args.out / n, args.lo)
    finally:
        lab.down()


if __name__ == "__main__":
    main()
