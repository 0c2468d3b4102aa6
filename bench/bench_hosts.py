#!/usr/bin/env python3
"""Traces across many SSH hosts (root): sniffer start time and bytes moved, 50 real sshds.

    flock /tmp/trc-live.lock python3 bench/bench_hosts.py [--hosts 50] [--count 3] [--size 56] [--interval 0.2]
                                                          [--skip-serial] [--json FILE]

Builds a hosts lab (tracer.lab.sshhosts): a chain ``a ── r01 ── … ── rNN ── b`` of network
namespaces, every router running its own OpenSSH sshd on a management bridge and captured over
SSH from a management namespace (3 capture points a host: eth0, eth1 and its mgmt0 as a
witness). Nothing touches the root namespace; addresses are in 198.18.0.0/15. Then:

1. Sniffer start: all 3×N remote sniffers started and confirmed listening (the trace's start
   barrier), three ways: one after another with a connection each (serial), all at once with a
   connection each (parallel), and all at once over one master connection per host opened in
   parallel first (multiplexed; the time includes opening the masters).
2. A traced ping from a to b (a fresh ``tracer ping`` process, as a user runs it) with whole
   captures streamed back (the hosts without tracer), first with a connection per session
   (``TRACER_SSH_MASTERS=0``) then over masters, then with tracer on the hosts
   (extraction there, columns back): bytes on the management link both ways (the client
   namespace's interface counters: everything SSH moved, handshakes and state reads too), the
   run directory's bytes for the remote points, wall time, verdict; then both run directories
   replayed, and the verdicts compared.

Prints a table; ``--json FILE`` writes the figures. The lab is removed at the end, also on
failure (and a leftover of the same name before starting). Run under the live-lab lock so no
other lab runs meanwhile.
"""

from __future__ import annotations

import argparse
import faulthandler
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracer import ssh_mux  # noqa: E402
from tracer.lab.sshhosts import HostsLab, router  # noqa: E402
from tracer.run.record import make_sniffers, ssh_connections  # noqa: E402
from tracer.sniff import stop_all, wait_all  # noqa: E402
from tracer.topofile import load_topology  # noqa: E402

IFACES = ("eth0", "eth1", "mgmt0")
LOCK = "/tmp/trc-live.lock"  # one lab at a time on this machine (the tests take it too)


def link_bytes(ns: str) -> tuple[int, int]:
    """(received, sent) bytes of the management namespace's interface."""
    out = subprocess.run(["ip", "-n", ns, "-j", "-s", "link", "show", "eth0"], capture_output=True, text=True,
                         check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return stats["rx"]["bytes"], stats["tx"]["bytes"]


def start_time(lab: HostsLab, mode: str, work: Path) -> float:
    """Seconds from the first spawn until every remote sniffer listens (then all are stopped)."""
    topo = load_topology(lab.topology_path)
    points = [f"{router(k)}:{i}" for k in range(1, lab.n + 1) for i in IFACES]
    d = work / f"start-{mode}"
    d.mkdir()
    masters = ssh_mux.Masters()
    t = time.perf_counter()
    try:
        if mode == "multiplexed":
            masters.open(ssh_connections(topo, [router(k) for k in range(1, lab.n + 1)]))
        sniffers = make_sniffers(topo, points, d)
        if mode == "serial":
            for s in sniffers:
                s.start()
                s.wait_ready(time.monotonic() + 30)
        else:
            for s in sniffers:
                s.start()
            wait_all(sniffers, time.monotonic() + 60)
        took = time.perf_counter() - t
        stop_all(sniffers)
    finally:
        masters.close()
    return took


def trace(lab: HostsLab, extract: bool, work: Path, count: int, size: int, interval: float,
          masters: bool = True, root: Path = ROOT) -> dict:
    lab.set_remote_tracer(extract)
    out = work / ("run-extract" if extract else "run-whole" if masters else "run-whole-nomux")
    env = {**os.environ, "PYTHONPATH": str(root), ssh_mux.OFF: "1" if masters else "0"}
    before = link_bytes(lab.mgmt_netns)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "tracer", "ping", "--topology", str(lab.topology_path), "a", "b",
                        "--count", str(count), "--size", str(size), "--interval", str(interval), "--out", str(out), "--json"],
                       capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    after = link_bytes(lab.mgmt_netns)
    if p.returncode not in (0, 1, 3):
        raise SystemExit(f"tracer ping failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    remote = [c for c in manifest["captures"] if c.get("remote")]
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "tracer", "replay", str(out), "--json"], capture_output=True, text=True,
                       env=env, check=False)
    replay_s = time.perf_counter() - t
    run = json.loads(r.stdout)["runs"][0]
    return {
        "mode": "remote extraction" if extract else "whole captures" + ("" if masters else ", no masters"),
        "exit": p.returncode, "wall_s": round(wall, 2), "record_s": manifest.get("record_s"),
        "masters_s": (manifest.get("ssh_masters") or {}).get("s"),
        "sniffers_ready_s": manifest.get("sniffers_ready_s"),
        "extracting_hosts": (manifest.get("ssh_masters") or {}).get("extracting"),
        "bytes_in": after[0] - before[0], "bytes_out": after[1] - before[1],
        "remote_points": len(remote), "remote_files_bytes": sum((out / c["file"]).stat().st_size for c in remote),
        "replay_s": round(replay_s, 2), "replay_exit": r.returncode,
        "verdict": run["summary"], "status": run["status"],
        "_compare": {k: run[k] for k in ("status", "exit_code", "summary", "paths", "findings", "unobserved")}
        | {"probes": [(x["direction"], x["seq"], x["outcome"], x["sightings"]) for x in run["probes"]]},
        "_run": manifest.get("run"),
        "_dir": out.name,
    }


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def measure(hosts: int, count: int, size: int, interval: float, name: str, skip_serial: bool,
            root: Path = ROOT) -> dict:
    """Build the hosts lab, time the sniffer starts and the three traces, remove the lab (also on failure)."""
    lab = HostsLab(name, hosts, Path(f"/run/tracer/hosts-{name}"))
    work = Path(tempfile.mkdtemp(prefix="trc-sh-bench-"))
    figures: dict = {"hosts": hosts, "sniffers": 3 * hosts, "count": count, "size": size}
    traces: list[dict] = []
    try:
        t = time.perf_counter()
        lab.up(remote_tracer=False)
        figures["lab_up_s"] = round(time.perf_counter() - t, 2)
        modes = ["parallel", "multiplexed"] if skip_serial else ["serial", "parallel", "multiplexed"]
        figures["start_s"] = {m: round(start_time(lab, m, work), 2) for m in modes}
        traces = [trace(lab, False, work, count, size, interval, masters=False, root=root),
                  *(trace(lab, extract, work, count, size, interval, root=root) for extract in (False, True))]
        figures["same_verdict"] = all(tr["_compare"] == traces[0]["_compare"] for tr in traces)
        figures["traces"] = [{k: v for k, v in tr.items() if not k.startswith("_")} for tr in traces]
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    return figures


def section(quick: bool, keep: Path | None, tracer_root: Path) -> list[dict]:
    """bench/run.py's hosts section: 5 hosts (--quick) or 50, one row per trace mode. Takes the
    live-lab lock itself; ``keep`` is unused (the lab and its captures are removed)."""
    del keep
    if os.geteuid() != 0:
        return [{"workload": "hosts", "error": "needs root (network namespaces, sshd)"}]
    n = 5 if quick else 50
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        f = measure(n, 3, 56, 0.2, "shr", skip_serial=True, root=tracer_root)
    start = ", ".join(f"{m} {s} s" for m, s in f["start_s"].items())
    return [{"workload": f"{n} hosts, {3 * n} points: {tr['mode']}", "sniffer start": start,
             "wall s": tr["wall_s"], "sniffers ready s": tr["sniffers_ready_s"],
             "bytes to tracer": f"{tr['bytes_in']:,}", "bytes from tracer": f"{tr['bytes_out']:,}",
             "remote points' files": f"{tr['remote_files_bytes']:,}", "verdict": tr["verdict"],
             "same verdict": f["same_verdict"]} for tr in f["traces"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--count", type=int, default=3, help="probes per trace (default 3)")
    ap.add_argument("--size", type=int, default=56, help="ICMP payload bytes (default 56)")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between probes (default 0.2)")
    ap.add_argument("--name", default="shb", help="lab name: namespaces trc-NAME-* (default shb)")
    ap.add_argument("--skip-serial", action="store_true", help="skip the serial start (3×N handshakes in a row)")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    ap.add_argument("--stuck-after", type=float, default=900, help="print every thread's stack after this long")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_hosts.py needs root (network namespaces, sshd)")
    # SIGTERM (a runner's timeout) unwinds like Ctrl-C, so the lab is removed all the same.
    signal.signal(signal.SIGTERM, _interrupt)
    faulthandler.dump_traceback_later(args.stuck_after, exit=False)  # where it hangs, if it does
    figures = measure(args.hosts, args.count, args.size, args.interval, args.name, args.skip_serial)
    print(f"{args.hosts} SSH hosts (real sshd each), {3 * args.hosts} remote capture points, "
          f"ping a → b --count {args.count} --size {args.size}; lab up {figures['lab_up_s']} s")
    print("\nsniffer start (spawn → all listening)")
    for m, s in figures["start_s"].items():
        print(f"  {m:<12} {s:8.2f} s")
    print("\ntraced ping                  whole, no masters   whole captures   remote extraction")
    rows = [("exit code", "exit"), ("wall time, s", "wall_s"), ("masters opened in, s", "masters_s"),
            ("sniffers ready in, s", "sniffers_ready_s"), ("hosts extracting", "extracting_hosts"),
            ("bytes in (to tracer)", "bytes_in"), ("bytes out (from tracer)", "bytes_out"),
            ("remote points' files, bytes", "remote_files_bytes"), ("replay, s", "replay_s")]
    for label, key in rows:
        a, b, c = (tr[key] for tr in figures["traces"])
        print(f"  {label:<27} {a!s:>17}   {b!s:>14}   {c!s:>17}")
    print(f"  verdicts: {' | '.join(tr['verdict'] for tr in figures['traces'])}")
    print(f"  same verdict (status, findings, every probe's sightings): {figures['same_verdict']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["same_verdict"] else 1


if __name__ == "__main__":
    sys.exit(main())
