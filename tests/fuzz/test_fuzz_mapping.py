"""Fuzzing how ``tracer replay`` maps loose capture files to capture points (see
:mod:`tests.fuzz.mutate_mapping`): multi-interface pcapng split, file names, pcapng interface
names, ``--point`` and ``--points`` mapping files, faithful and hostile.

Each case runs the command line in-process (``tracer.cli.main``, the same code as ``python -m
tracer``; its catch-all turns a crash into exit 70 and "internal error") and must end within
20 s with a documented exit code (0-4), no traceback, and — when it is an error — a one-line
message. A *faithful* case (every point's packets placed so that a rule maps them right) must
give exactly the verdict of the scenario's files under their own names. A few cases also go
through a real ``python -m tracer`` process.

Sizes: ``TRACER_FUZZ_MAPPING_CASES`` (default 300: a case replays a whole scenario),
``TRACER_FUZZ_CLI_CASES`` (default 6), ``TRACER_FUZZ_START``::

    TRACER_FUZZ_MAPPING_CASES=5000 python3 -m pytest tests/fuzz/test_fuzz_mapping.py -q
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.bounds import EXIT_CODES, time_limit
from tests.fuzz.mutate_mapping import Seed, build, load_seed
from tracer.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("all-delivered", "gw-forward-drop")  # one delivered, one loss: a misplaced capture shows
CASES = int(os.environ.get("TRACER_FUZZ_MAPPING_CASES", "300"))  # not TRACER_FUZZ_CASES: ~0.1 s a case
CLI_CASES = int(os.environ.get("TRACER_FUZZ_CLI_CASES", "6"))
START = int(os.environ.get("TRACER_FUZZ_START", "0"))
TIME_LIMIT_S = 20.0
IGNORED = ("warnings", "capture_map")  # the only keys a faithful mapping may change


@pytest.fixture(scope="module")
def seeds() -> list[Seed]:
    return [load_seed(ROOT / "captures" / s) for s in SCENARIOS]


def tracer(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), time_limit(TIME_LIMIT_S):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own refusals (exit 2, one line)
            rc = e.code if isinstance(e.code, int) else 70
    return rc, out.getvalue(), err.getvalue()


def verdict(stdout: str) -> list[dict]:
    """Each run's verdict (the JSON contract's ``runs``) without what a faithful mapping may change."""
    doc = json.loads(stdout)
    runs = doc["runs"] if isinstance(doc, dict) and "runs" in doc else doc if isinstance(doc, list) else [doc]
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in runs]


@pytest.fixture(scope="module")
def expected(seeds: list[Seed]) -> dict[str, tuple[int, list[dict]]]:
    """Each scenario's verdict from its own files, named as tracer names them."""
    out = {}
    for s in seeds:
        files = sorted(str(p) for p in s.topology.parent.glob("*.pcapng"))
        rc, stdout, err = tracer(["replay", "-t", str(s.topology), "--json", *files])
        assert rc in (0, 1), err
        out[s.name] = (rc, verdict(stdout))
    assert {rc for rc, _ in out.values()} == {0, 1}
    return out


def problem(rc: int, stdout: str, err: str, faithful: bool, want: tuple[int, list[dict]]) -> str | None:
    if rc not in EXIT_CODES or "Traceback" in err or "internal error" in err:
        return f"exit {rc}: {err[-600:]}"
    if rc == 2:
        lines = err.strip().splitlines()
        if not lines or not lines[-1].startswith("tracer") or any(not line.strip() for line in lines):
            return f"error is not one clean line: {err[-600:]!r}"
        if not lines[-1].removeprefix("tracer").strip():
            return "empty error message"
    if faithful:
        if rc != want[0]:
            return f"faithful mapping changed the exit code {want[0]} → {rc}: {err[-600:]}"
        got = verdict(stdout)
        if got != want[1]:
            diff = sorted(k for g, w in zip(got, want[1], strict=False) for k in set(g) | set(w) if g.get(k) != w.get(k))
            return f"faithful mapping changed the verdict in {diff or 'the number of runs'}"
    return None


def test_mapping_cases(seeds: list[Seed], expected: dict[str, tuple[int, list[dict]]], tmp_path: Path) -> None:
    failures = []
    faithful_n = refused = 0
    for case in range(START, START + CASES):
        folder = tmp_path / f"case{case}"
        argv, desc, faithful = build(case, seeds, folder)
        try:
            rc, stdout, err = tracer(argv)
        except Exception as e:  # main() catches everything: only the time limit lands here
            rc, stdout, err = 70, "", f"internal error {type(e).__name__}: {e}"
        what = problem(rc, stdout, err, faithful, expected[desc[0]])
        if what:
            failures.append(f"case {case} ({'; '.join(desc)}): {what}")
        else:
            shutil.rmtree(folder)  # keep only what failed (the large points files add up)
        faithful_n += faithful
        refused += rc == 2
    assert not failures, f"{len(failures)} of {CASES} cases failed:\n" + "\n".join(failures[:30])
    # Both sides reached: faithful mappings, and hostile ones refused.
    assert faithful_n > 0.3 * CASES and refused > 0.1 * CASES, (faithful_n, refused)


def test_command_line_mapping_cases(seeds: list[Seed], expected: dict[str, tuple[int, list[dict]]], tmp_path: Path) -> None:
    """A few cases through a real process: the same checks, and the exit code the shell sees."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    failures = []
    for case in range(START, START + CLI_CASES):
        argv, desc, faithful = build(case, seeds, tmp_path / f"cli{case}")
        proc = subprocess.Popen([sys.executable, "-m", "tracer", *argv], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            stdout, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            failures.append(f"case {case}: no exit within 60 s")
            continue
        what = problem(proc.returncode, stdout, err, faithful, expected[desc[0]])
        if what:
            failures.append(f"case {case} ({'; '.join(desc)}): {what}")
    assert not failures, "\n".join(failures)

