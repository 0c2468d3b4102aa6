"""Shared fixtures and hooks.

``lab``: the real built-in lab for one test module, named by the module's ``LAB`` (so modules
never share namespaces; ``LAB_SSH = True`` adds the SSH mode), cleaned up before (leftovers of a
run killed half-way) and after, even when a test fails.

Strict skips: with ``TRACER_STRICT_SKIPS=1`` in the environment (``.ci/run`` sets it) a skipped
test is a failure that carries the skip's reason, whatever skipped it: ``pytest.skip`` in a test
or fixture, a ``skip``/``skipif`` marker, ``pytest.importorskip`` in a test or at module level
(which skips the whole module at collection). CI runs as root with every tool installed, so
anything that skips there is a test that silently stopped testing. ``xfail`` is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

STRICT_SKIPS = "TRACER_STRICT_SKIPS"


def strict_skips() -> bool:
    return os.environ.get(STRICT_SKIPS, "") not in ("", "0")


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (file, line, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, line, reason = longrepr
        return f"{str(reason).removeprefix('Skipped: ')} ({path}:{line})"
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    report.outcome = "failed"
    report.longrepr = f"skipped, and {STRICT_SKIPS}=1 makes a skip a failure: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if strict_skips() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, object, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()  # type: ignore[attr-defined]
    if strict_skips() and report.skipped:
        _fail_skip(report)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (CI runs as root)")
    from tracer.lab import Lab

    lab = Lab(request.module.LAB)
    lab.down()
    try:
        lab.up(ssh=getattr(request.module, "LAB_SSH", False))
        yield lab
    finally:
        lab.down()
