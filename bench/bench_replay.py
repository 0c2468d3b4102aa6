"""Benchmark: whole-process `tracer replay` of large run directories, side by side with
`tshark -T fields`, a dpkt loop and `tcpdump -r` with a filter, on the same files in one run.

    python bench/bench_replay.py                                # 100k and 1M packets
    python bench/bench_replay.py --packets 100000,1000000,5000000 --slow-max 200000
    python bench/bench_replay.py --keep /tmp/runs               # keep (and reuse) the run directories
    python bench/bench_replay.py --tracer-root /work/main       # time another checkout's tracer
    python bench/bench_replay.py --startup 20                   # a small run's replay (start-up), median ms
    python bench/bench_replay.py --phases --packets 5000000 --keep /tmp/runs   # reading and analysis apart

Each run directory is a recorded scenario (``captures/all-delivered``: ten capture points,
its manifest, topology and probes) with generated background traffic merged into every
point's pcapng in time order (bench_extract's mix of tagged echoes of another run, plain
pings, ESP, ESP in UDP, IKE, DNS/NTP/TCP between other hosts and gateways than the
scenario's; IP only on the tunnel interfaces), so the verdict
is the scenario's own (the benchmark prints its line) and the reader, extraction and analysis see all the rows. Every
contender is a whole process started from the shell's point of view (interpreter start,
imports, reading, output); peak memory is the child's max RSS. Generated data is never
committed; timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_extract import TSHARK_FIELDS, generate  # noqa: E402

from tracer.capture.pcapfile import read_capture  # noqa: E402

SCENARIO = ROOT / "captures" / "all-delivered"
# The background is other flows than the scenario's: its tunnels run between other gateways
# and its pings between other hosts. (Cleartext of the scenario's SA without the ESP that
# would carry it is impossible, and the keyless ESP association rightly calls it ambiguous.)
OTHER_GATEWAYS = ("198.19.1.1", "198.19.2.1")
OTHER_HOSTS = ("203.0.113.10", "203.0.113.20")
TCPDUMP_FILTER = "icmp or esp or udp port 500 or udp port 4500"


# --- generation -----------------------------------------------------------------------------------


def _epbs(ts_ns: np.ndarray, buf: np.ndarray, off: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Enhanced packet blocks (interface 0, ns timestamps) of the frames ``buf[off:off+length]``, in order."""
    padded = (length + 3) & ~3
    blen = 32 + padded
    start = np.concatenate([[0], np.cumsum(blen)[:-1]]).astype(np.int64)
    out = np.zeros(int(blen.sum()), np.uint8)
    hdr = np.empty((len(ts_ns), 7), "<u4")
    hdr[:, 0], hdr[:, 1], hdr[:, 2] = 6, blen, 0
    hdr[:, 3], hdr[:, 4] = ts_ns >> 32, ts_ns & 0xFFFFFFFF
    hdr[:, 5] = hdr[:, 6] = length
    out[start[:, None] + np.arange(28)] = hdr.view(np.uint8).reshape(-1, 28)
    out.view("<u4")[(start + blen) // 4 - 1] = blen
    for n in np.unique(length).tolist():  # frames of one length at a time: a 2-D gather and scatter
        rows = np.flatnonzero(length == n)
        out[start[rows, None] + 28 + np.arange(n)] = buf[off[rows, None] + np.arange(n)]
    return out


def _head(path: Path) -> bytes:
    """The section header and interface description blocks that open a tracer pcapng."""
    data = path.read_bytes()
    w = np.frombuffer(data[: len(data) // 4 * 4], "<u4")
    i = 0
    while w[i] in (0x0A0D0D0A, 1):
        i += int(w[i + 1]) // 4
    return data[: i * 4]


def _isb(drops: int) -> bytes:
    body = np.array([0, 0, 0], "<u4").tobytes() + (5).to_bytes(2, "little") + (8).to_bytes(2, "little") + \
        drops.to_bytes(8, "little") + bytes(4)
    n = 12 + len(body)
    return np.array([5, n], "<u4").tobytes() + body + np.array([n], "<u4").tobytes()


def generate_run(out: Path, packets: int, seed: int = 1) -> None:
    """A copy of the scenario whose capture points each carry ``packets / points`` more packets."""
    out.mkdir(parents=True)
    files = sorted(SCENARIO.glob("*.pcapng"))
    for f in SCENARIO.iterdir():
        if f.suffix != ".pcapng":
            shutil.copy(f, out / f.name)
    for k, f in enumerate(files):
        add_background(f, out / f.name, packets // len(files), seed + k)


def add_background(src: Path, dst: Path, packets: int, seed: int) -> None:
    """Write ``dst``: the single-interface pcapng ``src`` with ``packets`` generated background
    packets merged in time order, spread over its time span and a second either side."""
    own = read_capture(src)
    bg_path = dst.with_name(dst.name + ".bg.pcap")
    generate(bg_path, packets, seed=seed, gateways=OTHER_GATEWAYS, hosts=OTHER_HOSTS)
    bg = read_capture(bg_path)
    bg_off, bg_len = bg.data_off, bg.caplen.astype(np.int64)
    if own.interfaces[0].linktype == 101:  # a TUN point: IP without the Ethernet (or VLAN) header
        vlan = (bg.buf[bg_off + 12] == 0x81) & (bg.buf[bg_off + 13] == 0x00)
        skip = np.where(vlan, 18, 14)
        bg_off, bg_len = bg_off + skip, bg_len - skip
    lo, hi = int(own.ts_ns.min()) - 500_000_000, int(own.ts_ns.max()) + 500_000_000
    bg_ts = np.sort(np.random.default_rng(seed).integers(lo, hi, len(bg_off)))
    # own frames first in one buffer, background after: one index space for the merge
    buf = np.concatenate([own.buf, bg.buf])
    ts = np.concatenate([own.ts_ns, bg_ts])
    off = np.concatenate([own.data_off, bg_off + len(own.buf)])
    length = np.concatenate([own.caplen.astype(np.int64), bg_len])
    order = np.argsort(ts, kind="stable")
    with open(dst, "wb") as w:
        w.write(_head(src))
        w.write(_epbs(ts[order], buf, off[order], length[order]).tobytes())
        w.write(_isb(0))
    bg_path.unlink()


# --- contenders ------------------------------------------------------------------------------------


# Linux carries a process's peak RSS over execve (the high-water mark of the address space it
# replaces), and a child started from here begins as this process's address space: its max RSS
# would never be below this process's peak, which generating a 5M-packet run takes to GBs. So
# every timed command is forked afresh by a small launcher, which reports its wall and CPU time
# and max RSS (floor: the launcher's ~10 MiB) on the pipe named by $BENCH_FD.
_LAUNCH = """import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, _, ru = os.wait4(pid, 0)
os.write(int(os.environ["BENCH_FD"]), f"{time.perf_counter() - t} {ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}".encode())
"""


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, int, bytes, float]:
    """Wall seconds, max RSS (KiB), stdout and CPU seconds (user + system) of one whole process.
    CPU time is the steadier figure on a shared machine; wall time is what a user waits."""
    rd, wr = os.pipe()
    try:
        p = subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           env={**(env or os.environ), "BENCH_FD": str(wr)}, cwd=cwd, pass_fds=(wr,))
    finally:
        os.close(wr)
    with os.fdopen(rd, "rb") as f:
        wall, rss, cpu = f.read().split()
    return float(wall), int(rss), p.stdout, float(cpu)


def count_lines(cmd: list[str]) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    n = 0
    assert p.stdout is not None
    for chunk in iter(lambda: p.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
        n += chunk.count(b"\n")
    _, _, ru = os.wait4(p.pid, 0)
    return time.perf_counter() - t0, ru.ru_maxrss, n


def startup(runs: int, root: Path, env: dict[str, str]) -> None:
    """Median wall ms of `tracer replay captures/all-delivered` (a small run: start-up dominates),
    beside the bare interpreter and `import numpy`, each a whole process run `runs` times."""
    run = str((ROOT / "captures" / "all-delivered").resolve())
    for label, cmd in (("python3 -c pass", [sys.executable, "-c", "pass"]),
                       ("python3 -c 'import numpy'", [sys.executable, "-c", "import numpy"]),
                       ("tracer replay captures/all-delivered", [sys.executable, "-m", "tracer", "replay", run])):
        ms = sorted(timed(cmd, env, root)[0] * 1e3 for _ in range(max(1, runs)))
        print(f"{label:40s} median {ms[len(ms) // 2]:6.0f} ms  (min {ms[0]:.0f}, {len(ms)} runs)", flush=True)


def measure(run: Path, tracer_root: Path, repeat: int, slow_max: int, skip: set[str]) -> dict:
    """Every contender on the capture files of one run directory: a row of rates (pkt/s), tracer's
    best wall time, its CPU time and max RSS, and the first line of its verdict."""
    env = {**os.environ, "PYTHONPATH": str(tracer_root)}
    files = sorted(str(f) for f in run.glob("*.pcapng"))
    size = sum(os.path.getsize(f) for f in files)
    total = sum(len(read_capture(f)) for f in files)
    best = None
    for _ in range(max(1, repeat)):
        dt, rss, out, cpu = timed([sys.executable, "-m", "tracer", "replay", str(run.resolve())], env, tracer_root)
        best = min(best or (dt, rss, cpu), (dt, rss, cpu))
    lines = out.decode(errors="replace").strip().splitlines()
    verdict = lines[1][:70] if len(lines) > 1 else "(no output)"
    row = {"packets": total, "MB": size / 1e6, "tracer": total / best[0], "tracer_s": best[0],
           "cpu_s": best[2], "rss_mb": best[1] / 1024, "verdict": verdict}
    if "tcpdump" not in skip:
        dt = sum(timed(["tcpdump", "-n", "-r", f, "-w", "/dev/null", TCPDUMP_FILTER])[0] for f in files)
        row["tcpdump"] = total / dt
    if "tshark" not in skip:
        cmd = ["tshark", "-n", "-T", "fields", "-c", str(slow_max)] + [a for f in TSHARK_FIELDS for a in ("-e", f)]
        res = [count_lines([*cmd[:1], "-r", f, *cmd[1:]]) for f in files]
        row["tshark"] = sum(r[2] for r in res) / sum(r[0] for r in res)
    if "dpkt" not in skip:
        dt, _, out, _ = timed([sys.executable, str(ROOT / "bench" / "dpkt_fields.py"), str(slow_max), *files])
        row["dpkt"] = int(out) / dt
    return row


def line(row: dict) -> str:
    """One run's figures on one line, as they come."""
    return (f"{row['packets']:>10,} packets {row['MB']:7.0f} MB  tracer {row['tracer'] / 1e6:5.2f} M pkt/s "
            f"({row['tracer_s']:.2f} s, CPU {row['cpu_s']:.2f} s, max RSS {row['rss_mb']:.0f} MiB = "
            f"{row['rss_mb'] * 2**20 / (row['MB'] * 1e6):.2f}x the capture)  "
            + "  ".join(f"{k} {row[k] / 1e3:,.0f} k pkt/s" for k in ("tshark", "dpkt", "tcpdump") if k in row)
            + f"  [{row['verdict']}]")


def rate(r: dict, k: str) -> str:
    return f"{r[k] / 1e6:.2f} M pkt/s" if k in r and r[k] >= 1e6 else f"{r[k] / 1e3:,.0f} k pkt/s" if k in r else "—"


def table(rows: list[dict]) -> str:
    """The Markdown table of :func:`measure` rows; a row's ``workload`` names it if set."""
    out = ["| workload | tracer replay | max RSS (× capture size) | tshark -T fields | dpkt loop "
           "| tcpdump -r with a filter | tracer ÷ tshark, dpkt, tcpdump |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = ", ".join(f"{r['tracer'] / r[k]:.{0 if r['tracer'] > 10 * r[k] else 2}f}" if k in r and "tracer" in r
                          else "—" for k in ("tshark", "dpkt", "tcpdump"))
        workload = r.get("workload") or f"{r['packets']:,} packets, {r['MB']:.0f} MB"
        tracer = f"{rate(r, 'tracer')} ({r['tracer_s']:.2f} s; CPU {r['cpu_s']:.2f} s)" if "tracer" in r else \
            f"failed: {r.get('error', '?')}"  # a row without a tracer rate: the replay printed no verdict
        out.append(f"| {workload} | {tracer} | "
                   f"{r['rss_mb']:.0f} MiB ({r['rss_mb'] * 2**20 / (r['MB'] * 1e6):.2f}×) | {rate(r, 'tshark')} | "
                   f"{rate(r, 'dpkt')} | {rate(r, 'tcpdump')} | {ratio} |")
    return "\n".join(out)


PHASES = """
import sys, time
from pathlib import Path
from tracer.run.replay import load_run, replay_run
t = time.perf_counter(); loaded = load_run([Path(sys.argv[1])], verdicts_only=True); t1 = time.perf_counter()
replay_run(loaded); t2 = time.perf_counter()
print(f"{t1 - t:.3f} {t2 - t1:.3f} {len(loaded.observations)}")
"""


def phases(run: Path, tracer_root: Path, repeat: int) -> None:
    """In a fresh process each time (the tree at ``tracer_root``), as `tracer replay` does: reading
    (the forked workers) and the analysis after it, medians over ``repeat`` runs."""
    env = {**os.environ, "PYTHONPATH": str(tracer_root)}
    # cwd: `python3 -c` puts the working directory first on sys.path, before PYTHONPATH.
    got = [subprocess.run([sys.executable, "-c", PHASES, str(run.resolve())], env=env, check=True, capture_output=True,
                          text=True, cwd=tracer_root).stdout.split() for _ in range(max(1, repeat))]
    load, analyse = (sorted(float(g[i]) for g in got)[len(got) // 2] for i in (0, 1))
    print(f"{run.name}: reading {load:.3f} s, analysis {analyse:.3f} s ({int(got[0][2]):,} rows kept; "
          f"medians of {len(got)})", flush=True)


def tree_memory(run: Path, tracer_root: Path) -> None:
    """Peak summed PSS of `tracer replay`'s whole process tree (the replay and its forked readers),
    sampled every 30 ms from /proc: shared pages counted once, split among their users."""
    env = {**os.environ, "PYTHONPATH": str(tracer_root)}
    p = subprocess.Popen([sys.executable, "-m", "tracer", "replay", str(run.resolve())], env=env, cwd=tracer_root,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = samples = most = 0
    while p.poll() is None:
        tree = _tree(p.pid)
        peak, most, samples = max(peak, sum(_pss_kib(pid) for pid in tree)), max(most, len(tree)), samples + 1
        time.sleep(0.03)
    size = sum(f.stat().st_size for f in run.glob("*.pcapng"))
    print(f"{run.name}: process tree peak PSS {peak / 1024:.0f} MiB ({peak * 1024 / size:.2f}x the capture; "
          f"{samples} samples, up to {most} processes)", flush=True)


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass  # ended meanwhile
    return out


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", default="100000,1000000", help="comma-separated packet counts (whole run)")
    ap.add_argument("--keep", type=Path, help="keep the run directories here (reused if present)")
    ap.add_argument("--tracer-root", type=Path, default=ROOT, help="the tracer checkout to time")
    ap.add_argument("--repeat", type=int, default=3, help="tracer runs per size (best is shown)")
    ap.add_argument("--slow-max", type=int, default=100_000,
                    help="tshark and dpkt read at most this many packets per file (they run at ~10-100k pkt/s)")
    ap.add_argument("--skip", default="", help="comma-separated contenders to skip: tshark,dpkt,tcpdump")
    ap.add_argument("--startup", type=int, metavar="N",
                    help="only time a small run's replay (captures/all-delivered) N times, with the bare "
                         "interpreter and `import numpy` for scale, and print the medians")
    ap.add_argument("--phases", action="store_true",
                    help="only time reading and analysis apart (a fresh process each, --repeat times) for each size")
    ap.add_argument("--tree-memory", action="store_true",
                    help="only sample the peak summed PSS of the replay's whole process tree (its forked readers "
                         "included) for each size")
    args = ap.parse_args(argv)
    if args.startup:
        startup(args.startup, args.tracer_root, {**os.environ, "PYTHONPATH": str(args.tracer_root)})
        return 0
    skip = set(filter(None, args.skip.split(",")))
    base = args.keep or Path(tempfile.mkdtemp(prefix="tracer-bench-replay-"))
    rows = []
    try:
        for n in (int(x) for x in args.packets.split(",")):
            run = base / f"run-{n}"
            if not run.exists():
                t0 = time.perf_counter()
                generate_run(run, n)
                print(f"generated {run} in {time.perf_counter() - t0:.1f} s", flush=True)
            if args.phases:
                phases(run, args.tracer_root, args.repeat)
                continue
            if args.tree_memory:
                tree_memory(run, args.tracer_root)
                continue
            rows.append(measure(run, args.tracer_root, args.repeat, args.slow_max, skip))
            print(line(rows[-1]), flush=True)
        if rows:
            print()
            print(table(rows))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
