#!/usr/bin/env python3
"""Record lab faults the way a person would by hand (root; needs the lab's tools).

No tracer sniffer and no tracer probe: plain ``tcpdump -i IFACE -w FILE`` on every interface of
every lab namespace (``lo`` too), and plain iputils ``ping -c 3`` run inside the source
namespace. The files are what ``tracer replay -t TOPOLOGY FILES…`` must read with no tags and
no manifest: one classic pcap per interface, named ``node_iface.pcap`` as people name them (``lo``
included: replay lists it as unused).

Besides the faults: a UDP and a TCP exchange (a small echo server on east, its client on west)
and a source NAT on east-gw (see EXTRA).

Usage: python3 scripts/record_plain_captures.py [--out DIR] [FAULT|all-delivered|EXTRA ...]
(default: every fault and EXTRA into captures/plain/<name>/ and the lab's topology into
captures/plain/topology.toml).
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


# Beyond the faults: other traffic, and a NAT. name → (lab fault or None, traffic: "ping", "udp" or "tcp",
# nft script for east-gw or None).
EXTRA: dict[str, tuple[str | None, str, str | None]] = {
    # east-gw rewrites the source of what it forwards out of lan0 to its own address (conntrack
    # undoes it for the replies): the flow is 192.0.2.10 → east before, 198.51.100.1 → east after.
    "snat-east-gw": (None, "ping", "table ip trc_plain_nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
                                   '  oifname "lan0" ip saddr 192.0.2.0/24 snat to 198.51.100.1\n }\n}\n'),
    "udp-gw-forward-drop": ("gw-forward-drop", "udp", None),
    "tcp-all-delivered": (None, "tcp", None),
}
# A UDP or TCP echo server on east, and its client on west: three messages, each answered.
SERVER = {
    "udp": "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('{dst}',5353))\n"
           "while True:\n d,a=s.recvfrom(2048);s.sendto(b'answer '+d,a)",
    "tcp": "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{dst}',8080))\n"
           "s.listen()\nwhile True:\n c,_=s.accept()\n while (d:=c.recv(2048)):\n  c.sendall(b'answer '+d)\n c.close()",
}
CLIENT = {
    "udp": "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(0.3)\n"
           "for i in range(3):\n s.sendto(b'query %d' % i,('{dst}',5353))\n try: s.recv(2048)\n except OSError: pass\n"
           " time.sleep(0.2)",
    "tcp": "import socket,time\nc=socket.create_connection(('{dst}',8080),timeout=2)\n"
           "for i in range(3):\n c.sendall(b'query %d' % i);c.recv(2048);time.sleep(0.2)\nc.close()",
}


def record(lab: Lab, name: str, out: Path) -> None:
    fault, traffic, nft = EXTRA.get(name, (None if name == "all-delivered" else name, "ping", None))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if fault:
        lab.set_fault(fault)
    if nft:
        subprocess.run(["ip", "netns", "exec", lab.namespace("east-gw"), "nft", "-f", "-"], input=nft, text=True,
                       check=True)
    procs: list[subprocess.Popen] = []
    server = None
    if traffic != "ping":
        server = subprocess.Popen(["ip", "netns", "exec", lab.namespace("east"), sys.executable, "-c",
                                   SERVER[traffic].format(dst=DST)])
        time.sleep(0.5)
    try:
        for node, ns in lab.namespaces.items():
            for iface in interfaces(ns):
                p = start_tcpdump(ns, iface, out / f"{node}_{iface}.pcap")
                if p is not None:
                    procs.append(p)
        if traffic == "ping":
            ping = ["ip", "netns", "exec", lab.namespace("west"), "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1",
                    *PING_ARGS.get(name, []), DST]
            r = subprocess.run(ping, capture_output=True, text=True)
            summary = next((ln for ln in r.stdout.splitlines() if "packets transmitted" in ln), r.stderr.strip())
        else:
            r = subprocess.run(["ip", "netns", "exec", lab.namespace("west"), sys.executable, "-c",
                                CLIENT[traffic].format(dst=DST)], capture_output=True, text=True)
            summary = f"{traffic} client exit {r.returncode} {r.stderr.strip()[-80:]}"
        # Before Ctrl-C, as a person would: a tcpdump without --immediate-mode hands packets over in
        # blocks (up to 1 s), and what is still in an unfinished block is lost when it stops.
        time.sleep(2)
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.wait(timeout=10)
        if server is not None:
            server.kill()  # our own server, by its process
            server.wait()
        if nft:
            subprocess.run(["ip", "netns", "exec", lab.namespace("east-gw"), "nft", "delete table ip trc_plain_nat"],
                           check=True)
        if fault:
            lab.clear_fault()
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{name}: ping: {summary}  ({len(procs)} captures, {size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "captures" / "plain")
    ap.add_argument("names", nargs="*", help="faults or other recordings (default: all-delivered, every fault, "
                    f"{', '.join(EXTRA)})")
    args = ap.parse_args()
    names = args.names or ["all-delivered", *FAULTS, *EXTRA]
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
            record(lab, n, args.out / n)
    finally:
        lab.down()


if __name__ == "__main__":
    main()
