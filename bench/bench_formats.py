#!/usr/bin/env python3
"""Observation columns on disk: tracer's own columns file against Arrow IPC and Parquet, and
merging a run's points with DuckDB against numpy (issue 14 asked for Arrow/Parquet/DuckDB).

    python3 bench/bench_formats.py                         # generates a 1M-packet run directory
    python3 bench/bench_formats.py --keep /tmp/bdata       # reuse bench_replay's run-1000000 there
    python3 bench/bench_formats.py --arrow-python /tmp/pa/bin/python

The kept rows of every capture file of the run (what a remote host would send: the rows a tagged
run's analysis reads) are counted, the columns zero in all of them named, and they are written
and read back with tracer.columns at zlib levels 1 (what tracer uses) and 6. With
``--arrow-python`` (an interpreter that has pyarrow, duckdb and numpy, e.g. a separate
virtualenv: tracer does not depend on them), the same columns are written and read as Arrow IPC
(uncompressed, lz4, zstd) and Parquet (zstd, snappy) there, their import times are timed, and
DuckDB merges the run's Parquet files in time order, beside numpy's concatenate and
sort. Bytes per row and seconds are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_replay import generate_run  # noqa: E402

from tracer.analysis.relevant import relevant_rows  # noqa: E402
from tracer.capture.observe import observe_capture  # noqa: E402
from tracer.capture.pcapfile import read_capture  # noqa: E402
from tracer.columns import read_columns, write_columns  # noqa: E402
from tracer.topofile import load_topology  # noqa: E402

# Run in the --arrow-python interpreter: argv[1] is the folder of .npz files (one per point).
ARROW = r'''
import glob, os, subprocess, sys, time
import numpy as np
d = sys.argv[1]
t = time.perf_counter(); import pyarrow as pa, pyarrow.ipc as ipc, pyarrow.parquet as pq
print(f"import pyarrow + parquet: {time.perf_counter() - t:.3f} s (in this process; fresh: see below)")
tables = []
for f in sorted(glob.glob(os.path.join(d, "*.npz"))):
    z = np.load(f)
    tables.append(pa.table({k[2:]: z[k] for k in z.files}))
rows = sum(t.num_rows for t in tables)
def bench(name, write, read, ext):
    tw = tr = size = 0
    for i, tab in enumerate(tables):
        p = os.path.join(d, f"{i}.{ext}")
        s = time.perf_counter(); write(tab, p); tw += time.perf_counter() - s
        size += os.path.getsize(p)
        s = time.perf_counter(); back = read(p); tr += time.perf_counter() - s
        assert back.num_rows == tab.num_rows
    print(f"{name:22s} {size / 1e6:7.1f} MB {size / rows:6.1f} B/row  write {tw:6.3f} s  read {tr:6.3f} s")
def ipc_w(codec):
    def w(t, p):
        with ipc.new_file(p, t.schema, options=ipc.IpcWriteOptions(compression=codec)) as wr:
            wr.write_table(t)
    return w
ipc_r = lambda p: ipc.open_file(p).read_all()
bench("Arrow IPC", ipc_w(None), ipc_r, "arrow")
bench("Arrow IPC lz4", ipc_w("lz4"), ipc_r, "arrow-lz4")
bench("Arrow IPC zstd", ipc_w("zstd"), ipc_r, "arrow-zstd")
bench("Parquet snappy", lambda t, p: pq.write_table(t, p, compression="snappy"), pq.read_table, "snappy.parquet")
bench("Parquet zstd", lambda t, p: pq.write_table(t, p, compression="zstd"), pq.read_table, "zstd.parquet")
for mod in ("pyarrow, pyarrow.parquet", "duckdb"):
    s = time.perf_counter(); subprocess.run([sys.executable, "-c", f"import {mod}"], check=True)
    print(f"fresh process importing {mod}: {time.perf_counter() - s:.3f} s (bare interpreter included)")
s = time.perf_counter(); subprocess.run([sys.executable, "-c", "pass"], check=True)
print(f"fresh bare interpreter: {time.perf_counter() - s:.3f} s")
import duckdb
s = time.perf_counter()
cols = duckdb.connect().execute(f"select * from read_parquet('{d}/*.zstd.parquet') order by ts_ns").fetchnumpy()
print(f"DuckDB: {rows:,} rows of the Parquet files merged in time order into numpy: {time.perf_counter() - s:.3f} s")
s = time.perf_counter()
allc = {k: np.concatenate([t.column(k).to_numpy() for t in tables]) for k in tables[0].column_names}
order = np.argsort(allc["ts_ns"], kind="stable")
merged = {k: v[order] for k, v in allc.items()}
print(f"numpy: the same tables concatenated and sorted by time: {time.perf_counter() - s:.3f} s")
'''


def kept_columns(run: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per capture file of ``run``: the rows a tagged run's analysis reads, as columns."""
    keep = relevant_rows(load_topology(run / "topology.toml"))
    out = {}
    for f in sorted(run.glob("*.pcapng")):
        cap = read_capture(f, check_linktypes=False)
        part = observe_capture(cap, names=[f.stem] * len(cap.interfaces), keep=keep)
        out[f.stem] = {k: np.ascontiguousarray(v) for k, v in part.obs.cols.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="folder of bench_replay's run directories (run-1000000 made if missing)")
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets of the generated run (default 1,000,000)")
    ap.add_argument("--arrow-python", help="an interpreter with pyarrow, duckdb and numpy (e.g. a virtualenv's)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        run = base / f"run-{args.packets}"
        if not (run / "manifest.json").exists():
            print(f"generating {run} ...", flush=True)
            generate_run(run, args.packets)
        per_file = kept_columns(run)
        rows = sum(len(c["ts_ns"]) for c in per_file.values())
        first = next(iter(per_file.values()))
        width = sum(v.dtype.itemsize for v in first.values())
        print(f"{run}: {len(per_file)} capture files, {rows:,} kept rows ({width} bytes each in memory)")
        # point and file are numbered per file here (all 0); merging gives each file its own
        zero = [k for k in first if k not in ("point", "file") and not any(c[k].any() for c in per_file.values())]
        print(f"columns zero in every kept row: {', '.join(zero) or 'none'} "
              f"({sum(first[k].dtype.itemsize for k in zero)} of the {width} bytes)")
        for level in (1, 6):
            tw = tr = size = 0.0
            for name, cols in per_file.items():
                buf = io.BytesIO()
                t = time.perf_counter()
                size += write_columns(buf, cols, name, level=level)
                tw += time.perf_counter() - t
                path = Path(tmp) / f"{name}.cols"
                path.write_bytes(buf.getvalue())
                t = time.perf_counter()
                read_columns(path)
                tr += time.perf_counter() - t
            print(f"{f'tracer columns zlib {level}':22s} {size / 1e6:7.1f} MB {size / rows:6.1f} B/row  "
                  f"write {tw:6.3f} s  read {tr:6.3f} s", flush=True)
        if not args.arrow_python:
            print("(Arrow IPC, Parquet and DuckDB: pass --arrow-python with an interpreter that has them)")
            return
        npz = Path(tmp) / "npz"
        npz.mkdir()
        for name, cols in per_file.items():
            np.savez(npz / f"{name}.npz", **{f"c_{k}": v for k, v in cols.items()})  # "file" is savez's own
        subprocess.run([args.arrow_python, "-c", ARROW, str(npz)], check=True)


if __name__ == "__main__":
    main()
