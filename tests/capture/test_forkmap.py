"""Workers: items worked on in forked children come back in order, each written where the
parent placed it in shared columns; an error is raised at its item's turn (earlier items still
delivered); a child's exception that does not pickle still says what it was."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest

from tracer.capture.forkmap import Workers, can_fork, shared_zeros
from tracer.errors import CaptureError

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
