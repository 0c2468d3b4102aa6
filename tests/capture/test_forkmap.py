"""Workers: items worked on in forked children come back in order, each written where the
parent placed it in shared columns; an error is raised at its item's turn (earlier items still
delivered); a child's exception that does not pickle still says what it was. A child killed
(the OOM killer) or out of memory is a one-line environment problem naming its item and the
cause, never a broken pipe or a bug; no child outlives an error, a Ctrl-C or the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tracer.capture.forkmap import Workers, can_fork, shared_zeros
from tracer.errors import EXIT_ENVIRONMENT, CaptureError, EnvironmentProblem
from tracer.subprocs import stat_fields

pytestmark = pytest.mark.skipif(not can_fork(), reason="needs fork")


def _rows(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * 7 + n


def _work(into: np.ndarray) -> Callable[[int], tuple[tuple[int, int, int], Callable[[int], None]]]:
    def work(n: int) -> tuple[tuple[int, int, int], Callable[[int], None]]:
        if n == 3:
            raise CaptureError(f"file {n}: broken")
        if n == 4:
            raise _Unpicklable(lambda: 0)
        rows = _rows(n)

        def write(at: int) -> None:
            into[at : at + n] = rows
        return (n, os.getpid(), len(rows)), write
    return work


class _Unpicklable(Exception):
    pass


def _run(items: list[int], jobs: int) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    into = shared_zeros(sum(items), np.dtype(np.int64))
    at = [0]

    def place(head: tuple[int, int, int]) -> int:
        where = at[0]
        at[0] += head[2]
        return where

    workers = Workers(_work(into), place, items, jobs)
    heads = list(workers.heads())
    workers.wait()
    return heads, into


@pytest.mark.parametrize("jobs", [2, 3])
def test_results_come_back_in_order_written_in_place(jobs: int) -> None:
    items = [5, 0, 100_000, 1, 7]
    heads, into = _run(items, jobs)
    assert [h[0] for h in heads] == items
    assert os.getpid() not in {h[1] for h in heads} and len({h[1] for h in heads}) == jobs
    assert np.array_equal(into, np.concatenate([_rows(n) for n in items]))


def test_an_error_is_raised_at_its_turn() -> None:
    seen = []
    into = shared_zeros(100, np.dtype(np.int64))
    workers = Workers(_work(into), lambda h: 0, [2, 5, 3, 6, 7], 2)
    with pytest.raises(CaptureError, match="file 3: broken"):
        for head in workers.heads():
            seen.append(head[0])
    assert seen == [2, 5] and not workers.children


def test_an_exception_that_does_not_pickle_is_told() -> None:
    workers = Workers(_work(shared_zeros(10, np.dtype(np.int64))), lambda h: 0, [4], 2)
    with pytest.raises(RuntimeError, match="_Unpicklable"):
        list(workers.heads())


def _no_child_left() -> None:
    with pytest.raises(ChildProcessError):  # none running, none unreaped
        os.waitpid(-1, os.WNOHANG)


def test_a_worker_killed_while_waiting_its_turn_is_told_not_a_broken_pipe() -> None:
    """Killed (SIGKILL, as by the OOM killer) after sending its head: the parent's answer hits
    a closed socket. A BrokenPipeError would pass for tracer's stdout closed: exit 0, no verdict."""
    def place(head: tuple[int, int, int]) -> int:
        os.kill(head[1], signal.SIGKILL)
        time.sleep(0.2)
        return 0

    workers = Workers(_work(shared_zeros(100, np.dtype(np.int64))), place, [5, 6], 2, lambda n: f"the worker for file {n}")
    with pytest.raises(EnvironmentProblem) as e:
        list(workers.heads())
    assert str(e.value) == "the worker for file 5 was killed by SIGKILL (out of memory?)"
    assert e.value.exit_code == EXIT_ENVIRONMENT and not workers.children
    _no_child_left()


def _dies(n: int) -> tuple[tuple[int, int, int], Callable[[int], None]]:
    if n == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if n == 3:
        np.ones(1 << 50, dtype=np.int8)  # a petabyte: numpy's own MemoryError
    return (n, os.getpid(), 0), lambda at: None


@pytest.mark.parametrize(("items", "said"), [
    ([1, 2], r"the worker for 2 was killed by SIGKILL \(out of memory\?\)"),
    ([1, 3], r"the worker for 3 ran out of memory \(MemoryError: Unable to allocate 1.00 PiB .*\)")])
def test_a_worker_dead_or_out_of_memory_mid_item_is_told(items: list[int], said: str) -> None:
    workers = Workers(_dies, lambda h: 0, items, 2)
    with pytest.raises(EnvironmentProblem, match=f"^{said}$"):
        list(workers.heads())
    _no_child_left()


def test_a_consumer_error_or_ctrl_c_leaves_no_worker() -> None:
    for stop in (KeyboardInterrupt, CaptureError):
        workers = Workers(_work(shared_zeros(100, np.dtype(np.int64))), lambda h: 0, [1, 2, 5, 6], 2)
        with pytest.raises(stop):
            for _ in workers.heads():
                raise stop()
        _no_child_left()


_SLEEPERS = textwrap.dedent("""
    import os, sys, time
    from tracer.capture.forkmap import Workers
    def work(n):
        os.write(1, b"%d\\n" % os.getpid())  # one write: the two children share the pipe
        time.sleep(60)
    try:
        list(Workers(work, lambda h: 0, [1, 2], 2).heads())
    except KeyboardInterrupt:
        sys.exit(130)
""")


@pytest.mark.parametrize("how", ["ctrl-c", "parent killed"])
def test_workers_die_with_a_ctrl_c_or_their_parent(how: str) -> None:
    """Ctrl-C at a terminal reaches the whole process group; SIGKILL only the parent, whose
    children the kernel then kills (PDEATHSIG), mid-item too."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPERS], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)}, start_new_session=True)
    assert proc.stdout is not None
    try:
        pids = [int(proc.stdout.readline()) for _ in range(2)]
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(10) == 130
    finally:
        proc.kill()
        proc.wait(10)

    def alive() -> list[int]:  # a zombie has ended: whoever adopted it reaps it
        return [pid for pid in pids if (stat_fields(pid) or ["Z"])[0] != "Z"]
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive()
