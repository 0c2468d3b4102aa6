"""The benchmark's one command still runs: `bench/run.py --quick` generates its small data set
(packets, probes, points), replays every run directory with the verdict it expects and prints
its tables. Nothing here times anything (tshark and dpkt are skipped: they only add minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_smoke_run_prints_its_tables() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "packets,probes,points",
                        "--skip", "tshark,dpkt"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr  # 1: a verdict other than the run directory's expected one
    out = p.stdout
    for title in ("Packets: whole-process replay", "Probes: N probes over 10 points", "Points: a chain of routers"):
        assert title in out, out
    assert "| 20 points, 100 probes |" in out and "| 1,000 probes, 10 points (20,000 rows) |" in out, out
    assert out.count("OK    100/100 echo requests delivered") >= 3, out  # the probes' replay and both chains
