"""Fixtures for the lab tests: one real lab per module, always torn down."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tracer.lab import Lab

LAB_NAME = "t1"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so the marker works before/without setup.cfg's list.
    config.addinivalue_line("markers", "lab: needs root, network namespaces and strongSwan (the built-in lab)")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (CI runs as root)")
    # The default state dir (/run/tracer), so a run killed half-way is found
    # and cleaned (its charon PIDs included) by the next run's down().
    lab = Lab(LAB_NAME)
    lab.down()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
