"""The figures' colours stay apart for colour-blind readers: every pair of timeline states, and
the ends of the seen/lost scale, keep a CIE76 ΔE of at least 13 under simulated protanopia,
deuteranopia and tritanopia (Machado, Oliveira & Fernandes 2009, severity 1.0, applied in
linear sRGB) as well as with normal vision. Red versus green (the old scale) fails this."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgb

from tracer.plot.palette import LOSS_CMAP, LOST_COLOR, OK_COLOR, SEEN_CMAP
from tracer.plot.timeline import STATES

MACHADO = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
D65 = np.array([0.95047, 1.0, 1.08883])
MIN_DELTA_E = 13.0


def lab(color: str, vision: str) -> np.ndarray:
    c = np.asarray(to_rgb(color))
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = SRGB_TO_XYZ @ np.clip(MACHADO[vision] @ linear, 0, 1) / D65
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a: str, b: str) -> float:
    """The smallest difference between ``a`` and ``b`` over the four kinds of vision."""
    return min(float(np.linalg.norm(lab(a, v) - lab(b, v))) for v in MACHADO)


def test_red_green_would_fail():
    # The old timeline's seen and missed (matplotlib's tab: green and red) under deuteranopia.
    assert delta_e("#2ca02c", "#d62728") < 8


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(STATES, 2)), ids=lambda s: s[0])
def test_timeline_states_stay_apart(a, b):
    assert delta_e(a[1], b[1]) >= MIN_DELTA_E, f"{a[2]} vs {b[2]}"


def test_seen_scale_ends_are_lost_and_ok():
    assert (to_hex(SEEN_CMAP(0.0)), to_hex(SEEN_CMAP(1.0))) == (LOST_COLOR, OK_COLOR) == ("#d55e00", "#009e73")
    assert delta_e(LOST_COLOR, OK_COLOR) > 35


def test_loss_scale_lightness_is_monotonic():
    # More loss is darker, for every reader: lightness (CIELAB L*) falls along the map.
    light = [lab(to_hex(LOSS_CMAP(x)), "deuteranopia")[0] for x in np.linspace(0, 1, 11)]
    assert all(a > b for a, b in itertools.pairwise(light))
