"""A lab fault for the duration of a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def fault(lab, name: str) -> Iterator[None]:
    """Inject ``name`` into ``lab``; cleared even if the block fails."""
    lab.set_fault(name)
    try:
        yield
    finally:
        lab.clear_fault()
