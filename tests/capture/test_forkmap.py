"""fork_map: work done in forked children comes back in order, arrays intact, errors raised at
their item's turn (earlier results still delivered), the same as in this process."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tracer.capture.forkmap import can_fork, fork_map
from tracer.errors import CaptureError

pytestmark = pytest.mark.skipif(not can_fork(), reason="needs fork and memfd")


def _work(n: int) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
    if n == 3:
        raise CaptureError(f"file {n}: broken")
    arrays = {"ts": np.arange(n, dtype=np.int64) * 7, "flag": np.arange(n) % 2 == 1,
              "word": np.full(n, n % 65536, ">u2"), "empty": np.zeros(0, np.uint8)}
    return (n, os.getpid()), arrays


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_results_come_back_in_order_and_intact(jobs: int) -> None:
    items = [5, 0, 100_000, 1, 7]
    got = list(fork_map(_work, items, jobs))
    assert [head[0] for head, _ in got] == items
    pids = {head[1] for head, _ in got}
    assert (pids == {os.getpid()}) == (jobs == 1)  # forked workers, or this process
    for (_, arrays), n in zip(got, items, strict=True):
        _, want = _work(n)
        assert arrays.keys() == want.keys()
        for k, v in want.items():
            assert arrays[k].dtype == v.dtype and np.array_equal(arrays[k], v), k


def test_an_error_is_raised_at_its_turn() -> None:
    seen = []
    with pytest.raises(CaptureError, match="file 3: broken"):
        for head, _ in fork_map(_work, [2, 4, 3, 5, 6], 2):
            seen.append(head[0])
    assert seen == [2, 4]
