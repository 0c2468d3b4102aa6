"""The benchmark, in one command: generates the data, runs tracer, tshark, dpkt and tcpdump side
by side on the same files, and prints pkt/s, ratios and peak memory, then Markdown tables (the
README's).

    python3 bench/run.py                                  # everything (~4 min; ~2.8 GB of data in TMPDIR)
    python3 bench/run.py --quick                          # a small smoke set, seconds
    python3 bench/run.py --only packets,points --keep /tmp/bench-run --json /tmp/bench.json
    python3 bench/run.py --tracer-root /work/main --skip tshark,dpkt

Sections (``--only``; each size list can be overridden):

* ``packets`` (100k, 1M, 5M): bench_replay's run directories — ``captures/all-delivered`` with
  generated background in every point — whole-process `tracer replay` against `tshark -T fields`,
  the dpkt loop (both on the first ``--slow-max`` packets of each file) and `tcpdump -r` with a filter.
* ``probes`` (100, 10k, 100k): bench_probes' N probes over the ten points of the test topology,
  analysed in-process (analyze, text verdict, JSON; a child process each, whose max RSS is shown),
  and a whole-process replay of a 10-point chain run directory (bench_points) with N probes, with
  the same contenders.
* ``points`` (10, 50, 200): bench_points' chains of routers with ``--points-probes`` probes and
  ``--points-packets`` background packets in all (the same total at every size, so the cost per
  point shows), with the same contenders (their per-file packet limit is ``--slow-max`` divided
  among the files).
* ``hosts``: the many-host SSH demo, run only if ``bench/bench_hosts.py`` exists (see the hook below).

Every replay's verdict is printed; a run directory whose verdict is not its expected one is flagged.
Generated data lives in a temporary directory unless ``--keep DIR`` (then reused when present).
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SECTIONS = ("packets", "probes", "points", "hosts")
FULL = {"packets": "100000,1000000,5000000", "probes": "100,10000,100000", "points": "10,50,200"}
QUICK = {"packets": "20000", "probes": "100,1000", "points": "10,20"}


def probes_worker(n: int) -> None:
    """The child of the probes section: bench_probes' in-process figures for n probes, as JSON.
    ``tracer`` is imported first, from PYTHONPATH (``--tracer-root``), so that bench_probes'
    own path entry does not replace it."""
    import tracer  # noqa: F401
    from tracer.topofile import load_topology

    bench_probes = importlib.import_module("bench_probes")  # after tracer: see above
    print(json.dumps(bench_probes.measure(load_topology(bench_probes.TOPOLOGY), n)))


def _replay_error(run: Path, env: dict[str, str], root: Path) -> str:
    """What `tracer replay` said on stderr when it printed no verdict."""
    p = subprocess.run([sys.executable, "-m", "tracer", "replay", str(run.resolve())], env=env, cwd=root,
                       capture_output=True, text=True)
    return f"exit {p.returncode}: " + (p.stderr.strip().splitlines() or ["(nothing)"])[-1][:200]


class Bench:
    """One benchmark run: where its data lives, what it measures with, and its results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base: Path = args.keep or Path(tempfile.mkdtemp(prefix="tracer-bench-"))
        self.root: Path = args.tracer_root.resolve()
        self.env = {**os.environ, "PYTHONPATH": str(self.root)}
        self.skip = set(filter(None, args.skip.split(",")))
        self.results: dict[str, list[dict]] = {}

    def run_dir(self, name: str, make: Callable[[Path], None]) -> Path:
        run = self.base / name
        if not run.exists():
            t0 = time.perf_counter()
            make(run)
            print(f"generated {run} in {time.perf_counter() - t0:.1f} s", flush=True)
        return run

    def replay(self, run: Path, workload: str, slow_max: int) -> dict:
        """bench_replay's contenders on one run directory, its verdict checked against the expected one."""
        from bench_replay import line, measure

        row = measure(run, self.root, self.args.repeat, slow_max, self.skip)
        row["workload"] = workload
        if row["verdict"] == "(no output)":  # no rate for a replay that failed: say why instead
            row["verdict"] = row["error"] = _replay_error(run, self.env, self.root)
            del row["tracer"]
        expected = json.loads((run / "manifest.json").read_text()).get("expected", {}).get("status")
        # tracer's first verdict line starts with the status's label (DELIVERED prints as OK)
        label = {"delivered": "OK"}.get(expected or "", (expected or "").upper())
        row["verdict_ok"] = expected is None or row["verdict"].split()[:1] == [label]
        text = line(row) if "tracer" in row else f"{row['packets']:>10,} packets: tracer replay failed: {row['error']}"
        print(text + ("" if row["verdict_ok"] else f"  ** expected {expected} **"), flush=True)
        return row

    def packets(self, sizes: list[int]) -> None:
        from bench_replay import generate_run

        rows = self.results.setdefault("packets", [])
        for n in sizes:
            run = self.run_dir(f"run-{n}", lambda out, n=n: generate_run(out, n))
            rows.append(self.replay(run, "", self.args.slow_max))

    def probes(self, sizes: list[int]) -> None:
        from bench_points import generate_points_run
        from bench_replay import timed

        rows = self.results.setdefault("probes", [])
        for n in sizes:
            dt, rss, out, _ = timed([sys.executable, str(BENCH / "run.py"), "--probes-worker", str(n)], self.env,
                                    self.root)
            r = json.loads(out) if out.strip() else {"probes": n, "summary": "(the worker failed)"}
            r.update(workload=f"{n:,} probes, 10 points", worker_s=dt, worker_rss_mb=rss / 1024)
            if "analyze_s" in r:
                print(f"{n:>10,} probes in-process: analyze {r['analyze_s'] * 1e3:,.0f} ms, text "
                      f"{r['text_s'] * 1e3:,.0f} ms, JSON {r['json_s'] * 1e3:,.0f} ms ({r['json_mb']:.1f} MB); "
                      f"worker max RSS {r['worker_rss_mb']:.0f} MiB  [{r['summary']}]", flush=True)
            run = self.run_dir(f"probes-{n}", lambda out, n=n: generate_points_run(out, 10, n))
            r["replay"] = self.replay(run, f"{n:,} probes, 10 points", self.args.slow_max)
            rows.append(r)

    def points(self, sizes: list[int]) -> None:
        from bench_points import generate_points_run

        a = self.args
        rows = self.results.setdefault("points", [])
        for k in sizes:
            run = self.run_dir(f"points-{k}-{a.points_probes}-{a.points_packets}",
                               lambda out, k=k: generate_points_run(out, k, a.points_probes, a.points_packets))
            rows.append(self.replay(run, f"{k} points, {a.points_probes:,} probes", max(1, a.slow_max * 10 // k)))

    # --- hook: the many-host SSH demo (issue 14 item 5) ---------------------------------------------------
    # bench/bench_hosts.py, when it exists, is run here. Its contract: a function
    #     section(quick: bool, keep: Path | None, tracer_root: Path) -> list[dict]
    # returning one row per measured case, each a dict of column name -> value (str or number),
    # "workload" first; run.py prints them as they come and as the section's Markdown table.
    # Live: it may need root and must take /tmp/trc-live.lock itself if it builds namespaces.
    def hosts(self) -> None:
        if not (BENCH / "bench_hosts.py").exists():
            print("hosts: bench/bench_hosts.py is not here (yet): section skipped", flush=True)
            return
        import bench_hosts

        rows = bench_hosts.section(quick=self.args.quick, keep=self.args.keep, tracer_root=self.root)
        for r in rows:
            print("  ".join(f"{k} {v}" for k, v in r.items()), flush=True)
        self.results["hosts"] = rows


def probes_table(rows: list[dict]) -> str:
    from bench_replay import rate

    out = ["| workload | analyze (in-process) | text verdict | JSON | its max RSS | `tracer replay` of the run "
           "directory (whole process) | its max RSS | tshark, dpkt, tcpdump | verdict |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rp = r["replay"]

        def ms(k: str, r: dict = r) -> str:
            return f"{r[k] * 1e3:,.0f} ms" if k in r else "—"

        replay = f"{rp['tracer_s']:.2f} s, {rp['packets']:,} packets: {rate(rp, 'tracer')}" if "tracer" in rp \
            else "failed"
        out.append(f"| {r['workload']} ({r.get('rows', 0):,} rows) | {ms('analyze_s')} | {ms('text_s')} | "
                   f"{ms('json_s')} ({r.get('json_mb', 0):.1f} MB) | {r['worker_rss_mb']:.0f} MiB | {replay} | "
                   f"{rp['rss_mb']:.0f} MiB | {', '.join(rate(rp, k) for k in ('tshark', 'dpkt', 'tcpdump'))} | "
                   f"{' '.join(rp['verdict'].split())} |")
    return "\n".join(out)


def generic_table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return "\n".join([f"| {' | '.join(keys)} |", "|" + "---|" * len(keys)]
                     + [f"| {' | '.join(str(r.get(k, '—')) for k in keys)} |" for r in rows])


def machine() -> dict:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
            "machine": platform.machine(), "commit": commit.stdout.strip()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"a small smoke set: packets {QUICK['packets']}, probes {QUICK['probes']}, points "
                         f"{QUICK['points']}, one tracer run each")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--packets", help=f"packet counts (default {FULL['packets']})")
    ap.add_argument("--probes", help=f"probe counts (default {FULL['probes']})")
    ap.add_argument("--points", help=f"capture point counts, even (default {FULL['points']})")
    ap.add_argument("--points-probes", type=int, help="probes in each points run (default 1000; --quick 100)")
    ap.add_argument("--points-packets", type=int,
                    help="background packets in each points run, over all points (default 1,000,000; --quick 20,000)")
    ap.add_argument("--keep", type=Path, help="keep the generated run directories here (reused if present)")
    ap.add_argument("--tracer-root", type=Path, default=ROOT, help="the tracer checkout to time")
    ap.add_argument("--repeat", type=int, help="tracer runs per run directory, best shown (default 3; --quick 1)")
    ap.add_argument("--slow-max", type=int,
                    help="tshark and dpkt read at most this many packets per file (default 20,000; --quick 2,000)")
    ap.add_argument("--skip", default="", help="comma-separated contenders to skip: tshark,dpkt,tcpdump")
    ap.add_argument("--json", type=Path, help="also write every figure to this file (JSON)")
    ap.add_argument("--probes-worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probes_worker is not None:
        probes_worker(args.probes_worker)
        return 0
    sizes = QUICK if args.quick else FULL
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.slow_max = args.slow_max or (2_000 if args.quick else 20_000)
    args.points_probes = args.points_probes or (100 if args.quick else 1000)
    args.points_packets = args.points_packets if args.points_packets is not None else \
        (20_000 if args.quick else 1_000_000)
    only = [s for s in args.only.split(",") if s]
    if unknown := set(only) - set(SECTIONS):
        ap.error(f"--only: unknown sections {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    if not shutil.which("tshark"):
        args.skip += ",tshark"

    def counts(name: str) -> list[int]:
        return [int(x) for x in (getattr(args, name) or sizes[name]).split(",")]

    b = Bench(args)
    t0 = time.perf_counter()
    try:
        for section in only:
            print(f"--- {section}", flush=True)
            if section == "hosts":
                b.hosts()
            else:
                getattr(b, section)(counts(section))
    finally:
        if not args.keep:
            shutil.rmtree(b.base, ignore_errors=True)
    from bench_replay import table

    info = machine()
    print(f"\n`python3 bench/run.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
          f"({time.perf_counter() - t0:.0f} s; {info['cpus']} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in info['load_average'])} at the end; tracer {info['commit']})")
    titles = {"packets": "Packets: whole-process replay of `captures/all-delivered` with background, 10 points",
              "probes": "Probes: N probes over 10 points",
              "points": f"Points: a chain of routers, {args.points_probes:,} probes and "
                        f"{args.points_packets:,} background packets in all",
              "hosts": "Hosts: capture points on many SSH hosts"}
    for section, rows in b.results.items():
        if rows:
            tab = {"probes": probes_table, "hosts": generic_table}.get(section, table)
            print(f"\n{titles[section]}\n\n{tab(rows)}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "argv": sys.argv[1:] if argv is None else argv,
                                         "results": b.results}, indent=2))
    return 0 if all(r.get("verdict_ok", True) and r.get("replay", {}).get("verdict_ok", True)
                    for rows in b.results.values() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
