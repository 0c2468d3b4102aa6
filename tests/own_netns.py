"""Network namespaces of a test's own (``trc-<short>-*``): skipped without root, removed before
(leftovers of a run killed half-way) and after, even when the test fails."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest

from tracer import netns


@contextmanager
def own_namespaces(names: Iterable[str], why: str = "namespaces need root (CI runs as root)") -> Iterator[None]:
    names = list(names)
    if os.geteuid() != 0:
        pytest.skip(why)

    def remove() -> None:
        for ns in names:  # only the namespaces this test creates
            netns.delete(ns)

    remove()
    try:
        for ns in names:
            netns.add(ns)
        yield
    finally:
        remove()
