"""TRACER_STRICT_SKIPS=1 (set by .ci/run) turns every kind of skip into a failure that names the
reason; without it a skip stays a skip. Checked by running pytest itself, with tests/conftest.py
loaded as a plugin, on a throw-away test tree that skips in every way pytest offers."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SKIPPING = '''
import pytest


def test_passes():
    assert True


def test_skip_call():
    pytest.skip("no frobnicator here")


@pytest.mark.skipif(True, reason="marker says no")
def test_skipif():
    pass


@pytest.mark.skip(reason="plain skip marker")
def test_skip_marker():
    pass


def test_importorskip():
    pytest.importorskip("tracer_no_such_module_xyz")


@pytest.fixture
def needs_thing():
    pytest.skip("fixture cannot set up")


def test_fixture_skip(needs_thing):
    pass


@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfail():
    assert False
'''

MODULE_IMPORTORSKIP = '''
import pytest

pytest.importorskip("tracer_other_missing_module")


def test_never_runs():
    pass
'''

MODULE_SKIP = '''
import pytest

pytest.skip("whole module off", allow_module_level=True)


def test_never_runs():
    pass
'''


def run_pytest(tmp_path: Path, strict: str | None) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run pytest on the throw-away tree; return its exit code and {test or module: (outcome, message)}."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # rootdir here: the repo's setup.cfg stays out
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "test_mod_importorskip.py").write_text(MODULE_IMPORTORSKIP)
    (tmp_path / "test_mod_skip.py").write_text(MODULE_SKIP)
    env = {k: v for k, v in os.environ.items() if k != "TRACER_STRICT_SKIPS"}
    env["PYTHONPATH"] = str(ROOT)
    if strict is not None:
        env["TRACER_STRICT_SKIPS"] = strict
    xml = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q", f"--junitxml={xml}",
         "--continue-on-collection-errors",
         "test_skipping.py", "test_mod_importorskip.py", "test_mod_skip.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    results: dict[str, tuple[str, str]] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name", "")
        if not name:  # a module that failed or skipped at collection
            name = case.get("classname", "").rpartition(".")[2]
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "failed"}.get(child.tag, child.tag)
                if child.tag == "skipped" and child.get("type") == "pytest.xfail":
                    outcome = "xfailed"
                message = (child.get("message") or "") + "\n" + (child.text or "")
        results[name] = (outcome, message)
    assert proc.returncode in (0, 1, 2), proc.stdout + proc.stderr
    return proc.returncode, results


REASONS = {
    "test_skip_call": "no frobnicator here",
    "test_skipif": "marker says no",
    "test_skip_marker": "plain skip marker",
    "test_importorskip": "could not import 'tracer_no_such_module_xyz'",
    "test_fixture_skip": "fixture cannot set up",
    "test_mod_importorskip": "could not import 'tracer_other_missing_module'",
    "test_mod_skip": "whole module off",
}


@pytest.mark.parametrize("strict", [None, "0"])
def test_without_the_variable_a_skip_is_a_skip(tmp_path: Path, strict: str | None) -> None:
    code, results = run_pytest(tmp_path, strict)
    assert code == 0
    assert {name: outcome for name, (outcome, _) in results.items()} == {
        "test_passes": "passed", "test_xfail": "xfailed", **{name: "skipped" for name in REASONS}}
    for name, reason in REASONS.items():
        assert reason in results[name][1], (name, results[name])


def test_with_the_variable_every_skip_fails_with_its_reason(tmp_path: Path) -> None:
    code, results = run_pytest(tmp_path, "1")
    assert code == 1  # a module skipped at collection is a collection error (which alone stops a run: exit 2)
    assert {name: outcome for name, (outcome, _) in results.items()} == {
        "test_passes": "passed", "test_xfail": "xfailed", **{name: "failed" for name in REASONS}}
    for name, reason in REASONS.items():
        message = results[name][1]
        assert "skipped, and TRACER_STRICT_SKIPS=1 makes a skip a failure: " in message, (name, message)
        assert reason in message, (name, message)
