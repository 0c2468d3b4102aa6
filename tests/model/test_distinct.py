"""distinct() gives np.unique's values and dtype on both sides of its size switch."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.model.distinct import SORT_BELOW, distinct


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, SORT_BELOW - 1, SORT_BELOW, 3 * SORT_BELOW])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.int64, np.uint64])
def test_distinct_is_np_unique(n: int, dtype: type) -> None:
    a = np.random.default_rng(n).integers(0, min(np.iinfo(dtype).max, 5000), n).astype(dtype)
    got = distinct(a)
    assert got.dtype == a.dtype and np.array_equal(got, np.unique(a))


def test_distinct_flattens_and_takes_lists() -> None:
    assert distinct([[3, 1], [3, 2]]).tolist() == [1, 2, 3]
    assert distinct(np.array(["b", "a", "b"])).tolist() == ["a", "b"]
