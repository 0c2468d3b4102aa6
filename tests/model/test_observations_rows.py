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


def _esp_obs(points: list[int], cls: list[int], spi: list[int], seq: list[int]) -> Observations:
    obs = _obs(points, max(points) + 1)
    obs.cols["cls"][:], obs.cols["spi"][:], obs.cols["esp_seq"][:] = cls, spi, seq
    return obs


def test_esp_rows_are_the_esp_packets_with_their_keys_per_point() -> None:
    from tracer.model.observations import PacketClass

    esp, echo = int(PacketClass.ESP), int(PacketClass.ECHO_REQUEST)
    obs = _esp_obs([0, 0, 0, 1, 1], [esp, echo, esp, esp, echo], [7, 0, 0xFFFFFFFF, 9, 0], [1, 0, 0xFFFFFFFF, 3, 0])
    rows, keys = obs.esp_rows()
    assert rows.tolist() == [0, 2, 3]
    assert keys.tolist() == [7 << 32 | 1, 0xFFFFFFFF << 32 | 0xFFFFFFFF, 9 << 32 | 3]
    assert [r.tolist() for r in obs.esp_rows(obs.point_rows(0))] == [[0, 2], [7 << 32 | 1, (1 << 64) - 1]]
    assert obs.esp_rows(obs.point_rows(1))[0].tolist() == [3]
    assert obs.esp_rows(slice(0, 0))[0].tolist() == []
    assert obs.esp_rows(np.array([1, 3, 4]))[0].tolist() == [3]  # row numbers (interleaved points)


def test_esp_index_follows_new_columns() -> None:
    from tracer.model.observations import PacketClass

    esp = int(PacketClass.ESP)
    obs = _esp_obs([0, 0], [esp, 0], [5, 0], [6, 0])
    assert obs.esp_rows()[0].tolist() == [0]
    obs.cols["cls"] = np.array([0, esp], np.uint8)
    obs.cols["spi"] = np.array([0, 8], np.uint32)
    assert obs.esp_rows()[0].tolist() == [1] and obs.esp_rows()[1].tolist() == [8 << 32]
