"""Observations.point_rows: each point's rows, indexed once (a slice when contiguous)."""

from __future__ import annotations

import numpy as np

from tracer.model.observations import Observations


def _obs(points: list[int], n_points: int) -> Observations:
    obs = Observations.empty(len(points), [f"p{k}" for k in range(n_points)])
    obs.cols["point"][:] = points
    return obs


def test_contiguous_points_are_slices() -> None:
    obs = _obs([0, 0, 2, 2, 2], 3)
    assert obs.point_rows(0) == slice(0, 2) and obs.point_rows(2) == slice(2, 5)
    assert obs.point_rows(1) == slice(0, 0) and obs.point_rows(-1) == slice(0, 0)  # no rows / not covered


def test_interleaved_points_are_row_numbers_in_order() -> None:
    cols = [1, 0, 1, 1, 0, 2]
    obs = _obs(cols, 3)
    for p in range(3):
        assert np.asarray(obs.point_rows(p)).tolist() == [i for i, c in enumerate(cols) if c == p]


def test_index_follows_a_new_point_column() -> None:
    obs = _obs([0, 0, 1], 2)
    assert obs.point_rows(1) == slice(2, 3)
    obs.cols["point"] = np.array([1, 0, 0], np.int16)  # a new column, not an edit in place
    assert obs.point_rows(1) == slice(0, 1)
