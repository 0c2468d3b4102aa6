"""Shared fixtures. ``lab``: the real built-in lab for one test module, named by the module's
``LAB`` (so modules never share namespaces; ``LAB_SSH = True`` adds the SSH mode), cleaned up
before (leftovers of a run killed half-way) and after, even when a test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
