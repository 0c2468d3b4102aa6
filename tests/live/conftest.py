"""The running lab for live tests: one per test module, named by the module's ``LAB``
(so modules never share namespaces), always torn down, even when a test fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[object]:
    from tracer.lab import Lab

    lab = Lab(request.module.LAB)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@contextlib.contextmanager
def fault(lab, name: str) -> Iterator[None]:
    """A fault for the duration of a block, cleared even if the block fails."""
    lab.set_fault(name)
    try:
        yield
    finally:
        lab.clear_fault()
