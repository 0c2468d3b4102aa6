"""Golden check: every recorded scenario replays to exactly the verdict (JSON and text) it gave
before a refactor. The files in tests/golden/ were written by the command line itself:

    for d in captures/*/; do n=$(basename $d)
      tracer replay $d --json > tests/golden/$n.json; tracer replay $d > tests/golden/$n.txt; done

A change that moves a verdict on purpose regenerates them and says why in its commit.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from tracer.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
SCENARIOS = sorted(p.stem for p in GOLDEN.glob("*.json"))


def _replay(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["replay", *args])
    return code, out.getvalue()


def test_every_scenario_has_a_golden_verdict():
    recorded = {p.name for p in (ROOT / "captures").iterdir() if (p / "manifest.json").exists()}
    assert recorded == set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_json_verdict_is_unchanged(name):
    code, out = _replay(str(ROOT / "captures" / name), "--json")
    assert out == (GOLDEN / f"{name}.json").read_text()
    assert code in (0, 1)


@pytest.mark.parametrize("name", SCENARIOS)
def test_text_verdict_is_unchanged(name):
    _, out = _replay(str(ROOT / "captures" / name))
    assert out == (GOLDEN / f"{name}.txt").read_text()
