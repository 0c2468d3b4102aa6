"""Bounds shared by the fuzz tests: a case that takes too long is a hang (signal alarm, main thread only);
a command-line case must end in time with a documented exit code and no traceback."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


EXIT_CODES = {0, 1, 2, 3, 4, 5}  # what a hostile input may give (5: nothing to trace); 70 (internal error) is a bug


def cli_problem(proc: subprocess.Popen[str], timeout: float = 60.0) -> str | None:
    """Wait for a ``python -m tracer`` case (stderr piped): None if it exited with a documented code
    and no traceback or internal error; else what went wrong, with the end of its stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return f"no exit within {timeout:.0f} s"
    if proc.returncode not in EXIT_CODES or "Traceback" in err or "internal error" in err:
        return f"exit {proc.returncode}\n{err[-2000:]}"
    return None
