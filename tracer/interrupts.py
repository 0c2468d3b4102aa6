"""Ctrl-C and SIGTERM: one meaning (stop, keep what was recorded), and never twice at once.

A live trace is interrupted by raising :class:`KeyboardInterrupt` in the main thread, for
SIGINT as Python does and for SIGTERM as well (:func:`sigterm_as_interrupt`): a service
manager or ``kill`` stops a trace exactly like Ctrl-C does. Cleanup (stopping sniffers,
writing the manifest) runs under :func:`deferred`: a second Ctrl-C or SIGTERM there is
noted, not raised, so the manifest is always written and the captures are complete; the
noted signal is raised once cleanup is over. SIGKILL cannot be caught: what it leaves is
for :mod:`tracer.subprocs` (the sniffers die with tracer; ``tracer lab down`` reaps them).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_CAUGHT = (signal.SIGINT, signal.SIGTERM)
_held = 0  # signals held by deferred() so far: a long wait within cleanup can notice a new one


def held_count() -> int:
    """How many Ctrl-C/SIGTERM :func:`deferred` has held so far (a wait compares two readings)."""
    return _held


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM stops this process the way Ctrl-C does (main thread only); the
    previous handler is back afterwards (a test runner calling the CLI in-process keeps its own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


def starting(what: str) -> str:
    """The note for a Ctrl-C while a helper starts (under :func:`deferred`): nothing is being
    stopped or written yet; the helper is let start so that it can then be stopped cleanly."""
    return f"letting {what} finish starting; then everything started is stopped"


@contextmanager
def deferred(note: str = "stopping the sniffers and writing the run directory first",
             raise_after: bool = True) -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM for the block. Yields the list of the signals that came; after
    the block, with ``raise_after``, one that came raises KeyboardInterrupt (unless an exception
    is already on its way out). Outside the main thread it does nothing (signals go there)."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        global _held
        _held += 1
        if not got:
            print(f"tracer: {signal.Signals(signum).name} received: {note}", file=sys.stderr)
        got.append(signum)

    old = {s: signal.signal(s, hold) for s in _CAUGHT}
    ok = False
    try:
        yield got
        ok = True
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
    if ok and got and raise_after:
        raise KeyboardInterrupt
