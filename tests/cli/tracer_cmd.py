"""Run the real command line: ``python -m tracer ARGS`` in a subprocess, on this tree."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"
TOPOLOGY = ROOT / "tests" / "data" / "site2site.toml"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def tracer(*args: str | Path, timeout: float = 60) -> Result:
    """``python -m tracer ARGS`` with the repository root first on the path and as cwd."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-m", "tracer", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_bad_input(r: Result, line: str) -> None:
    """Exit 2, nothing on stdout, and exactly ``line`` (one line, no traceback) on stderr."""
    assert (r.code, r.out, r.err) == (2, "", line + "\n"), r
