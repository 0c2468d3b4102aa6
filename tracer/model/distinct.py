"""Sorted distinct values of a column: ``np.unique(a)`` without its start-up cost on small inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike  # (importing numpy.typing costs a replay ~0.5 ms)

# numpy >= 2.3's plain ``np.unique(a)`` imports numpy.ma on its first call (10-20 ms, a large part
# of replaying a small run). Below this many values a sort costs microseconds; above it the import
# is amortised and np.unique's hash table beats a sort on columns with few distinct values.
SORT_BELOW = 1 << 16


def distinct(a: ArrayLike) -> np.ndarray:
    """The distinct values of ``a`` (flattened), ascending, in its dtype: ``np.unique(a)`` for
    integer and string columns (a NaN is not collapsed with another NaN, unlike np.unique)."""
    flat = np.asarray(a).ravel()
    if flat.size >= SORT_BELOW:
        return np.unique(flat)
    s = np.sort(flat)
    if s.size == 0:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]
