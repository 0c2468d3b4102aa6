"""Structure-aware fuzzing of topology files (see :mod:`tests.fuzz.mutate_topology`).

Every mutant of the topologies shipped in the repository must either load — and then be
usable: its findings (``topology check``), every expected path between its first nodes
rendered as ``topology path`` prints it, and written back to TOML it loads equal — or be
refused with a one-line :class:`tracer.errors.TracerError`. Anything else (a traceback, a
message over two lines, a case over 2 s) fails with the case number and the mutations. A
smaller set goes through the real command line (``topology check``, ``topology path``,
``replay --topology``): a documented exit code, no traceback, no internal error, no hang.

Sizes: ``TRACER_FUZZ_CASES`` (default 2000; about 10 s on a quiet 2-core machine),
``TRACER_FUZZ_CLI_CASES`` (default 30), ``TRACER_FUZZ_START``. A longer run on demand::

    TRACER_FUZZ_CASES=100000 python3 -m pytest tests/fuzz/test_fuzz_topology.py -q

Crashing inputs found are kept in ``tests/fuzz/regressions/*.toml`` and replayed by
:func:`test_regressions`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from itertools import permutations
from pathlib import Path

import pytest

from tests.fuzz.bounds import cli_problem, time_limit
from tests.fuzz.mutate_topology import mutant
from tracer.analysis.topolint import capture_points, lint
from tracer.cli.render import render_expected
from tracer.errors import TracerError
from tracer.model.topology import Topology
from tracer.topofile import dump_topology, load_topology

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = Path(__file__).with_name("regressions")
CASES = int(os.environ.get("TRACER_FUZZ_CASES", "2000"))
CLI_CASES = int(os.environ.get("TRACER_FUZZ_CLI_CASES", "30"))
START = int(os.environ.get("TRACER_FUZZ_START", "0"))
TIME_LIMIT_S = 2.0


def seeds() -> list[tuple[str, str]]:
    files = [ROOT / "tests" / "data" / "site2site.toml", ROOT / "captures" / "nat-on-path" / "topology.toml",
             ROOT / "captures" / "rewired-router" / "topology.toml"]
    out = [(str(p.relative_to(ROOT)), p.read_text()) for p in files]
    # The docs' complete example (every key of the format) is a seed too.
    doc = (ROOT / "docs" / "topology.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    out.append(("docs/topology.md example", block))
    return out


SEEDS = seeds()


def use(topo: Topology) -> None:
    """What the commands do with a topology that loaded: none of it may raise anything but a TracerError."""
    lint(topo)
    capture_points(topo)
    names = list(topo.nodes)[:4]
    for a, b in permutations(names, 2):
        try:
            node, src = topo.resolve(a)
            _, dst = topo.resolve(b)
            from tracer.model.path import expected_paths

            for direction, p in expected_paths(topo, src, dst, node).items():
                render_expected(direction, p)
        except TracerError:
            continue
    again = Topology.from_dict(tomllib.loads(dump_topology(topo)), source=topo.source)
    assert again == topo, "written back and read again, the topology changed"


def check(path: Path, text: str) -> str | None:
    """None if the text loads and is usable, or is refused in one line; else what went wrong."""
    path.write_text(text, encoding="utf-8")
    try:
        with time_limit(TIME_LIMIT_S):
            try:
                topo = load_topology(path)
            except TracerError as e:
                msg = str(e)
                return None if msg.strip() and "\n" not in msg else f"message is not one line: {msg!r}"
            try:
                use(topo)
            except TracerError as e:
                msg = str(e)
                return None if msg.strip() and "\n" not in msg else f"message is not one line: {msg!r}"
    except Exception as e:  # anything else is a crash (Hang included)
        return f"{type(e).__name__}: {e}"
    return None


def test_seeds_load():
    assert len(SEEDS) >= 4
    for name, text in SEEDS:
        topo = Topology.from_dict(tomllib.loads(text), source=name)
        use(topo)


def test_mutants_load_or_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mutant.toml"
    failures = []
    refused = 0
    for case in range(START, START + CASES):
        name, text, desc = mutant(SEEDS, case)
        problem = check(path, text)
        if problem:
            saved = tmp_path / f"case-{case}.toml"
            saved.write_text(text, encoding="utf-8")
            failures.append(f"case {case} from {name}: {'; '.join(desc)} → {problem} [{saved}]")
        else:
            try:
                load_topology(path)
            except TracerError:
                refused += 1
    assert not failures, f"{len(failures)} of {CASES} mutants failed:\n" + "\n".join(failures[:30])
    # The mutator must reach both sides: topologies that load and topologies that are refused.
    assert 0.2 * CASES < refused < 0.95 * CASES, refused


def regression_files() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.toml"))


@pytest.mark.parametrize("path", regression_files(), ids=lambda p: p.name)
def test_regressions(path: Path, tmp_path: Path) -> None:
    assert path.stat().st_size <= 8192  # regression inputs stay small
    assert check(tmp_path / path.name, path.read_text(encoding="utf-8")) is None


def test_command_line_with_mutated_topologies(tmp_path: Path) -> None:
    """Each mutant through one command: topology check, topology path, or replay of a recorded run with it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    captures = sorted((ROOT / "captures" / "all-delivered").glob("*.pcapng"))
    commands = (
        lambda f: ["topology", "check", f, "--json"],
        lambda f: ["topology", "path", f, "west", "east"],
        lambda f: ["replay", "--topology", f, *map(str, captures)],
    )
    failures = []
    jobs = []
    for k, case in enumerate(range(START, START + CLI_CASES)):
        _, text, desc = mutant(SEEDS, case)
        f = tmp_path / f"cli{case}.toml"
        f.write_text(text, encoding="utf-8")
        argv = [sys.executable, "-m", "tracer", *commands[k % len(commands)](str(f))]
        jobs.append((case, argv, desc, subprocess.Popen(argv, env=env, text=True, stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.PIPE, cwd=ROOT)))
        if len(jobs) == 2 or k == CLI_CASES - 1:  # two at a time
            for case_, argv_, desc_, proc in jobs:
                problem = cli_problem(proc)
                if problem:
                    failures.append(f"case {case_} {argv_[3:5]} ({'; '.join(desc_)}): {problem}")
            jobs = []
    assert not failures, "\n".join(failures)
