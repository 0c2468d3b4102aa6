"""Colours every figure shares, safe for colour-blind readers.

Categorical colours are Okabe & Ito's (2008), which stay distinguishable under protanopia,
deuteranopia and tritanopia; no figure tells two states apart by red versus green alone. The
timeline's states keep a CIE76 ΔE of at least 13 from each other under each simulated deficiency
(Machado et al. 2009, full severity; tests/plot/test_palette.py checks it). The loss-over-time
graph uses magma, a perceptually uniform map whose lightness alone carries the value.

The observed-path blues: a leak (seen, but in the clear where ESP belongs) is the strong blue;
a point the probes bypassed (they went elsewhere: neither seen nor missed) the light one. They
keep a CIE76 ΔE of at least 13 from the other states under simulated protanopia, deuteranopia
and tritanopia (Machado et al. 2009, full severity).
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Colormap, LinearSegmentedColormap, ListedColormap

PALETTE = {
    "black": "#000000",
    "orange": "#e69f00",
    "sky": "#56b4e9",
    "green": "#009e73",  # bluish green
    "yellow": "#f0e442",
    "blue": "#0072b2",
    "vermillion": "#d55e00",
    "purple": "#cc79a7",  # reddish purple
    "grey": "#999999",
}

OK_COLOR = PALETTE["green"]  # delivered
LOST_COLOR = PALETTE["vermillion"]  # lost: the located hop
DOUBT_COLOR = PALETTE["orange"]  # inconclusive
LEAK_COLOR = PALETTE["blue"]  # seen in the clear where ESP belongs
ELSEWHERE_COLOR = PALETTE["sky"]  # not here: the probes had left the expected path before
OBSERVED_COLOR = LEAK_COLOR  # arrows and marks of the observed path: where the probes really went

ESP_COLOR = PALETTE["purple"]  # ESP bands and encap/decap edges
UNKNOWN_COLOR = "#c5b0d5"  # ESP seen but not tied to a probe: neither seen nor missed (a pale lavender)
UNOBSERVED_COLOR = "#9e9e9e"  # outline of a point with no capture
NOT_SENT_COLOR = "#f2f2f2"
GAP_COLOR = PALETTE["yellow"]  # missed here but seen further on: capture noise
DROPS_COLOR = DOUBT_COLOR  # the sniffer dropped packets: absence proves nothing
NO_CAPTURE_CELL = "#d9d9d9"
REQUEST_COLOR, REPLY_COLOR = PALETTE["blue"], PALETTE["orange"]

# 0 → 1 of the probes seen: vermillion → yellow → bluish green. Its ends differ in hue along the
# blue–yellow axis every colour vision keeps (CIE76 ΔE ≥ 36 between them under simulated
# protanopia, deuteranopia and tritanopia), unlike red → green (ΔE 7 under deuteranopia).
SEEN_CMAP: Colormap = LinearSegmentedColormap.from_list("seen", [LOST_COLOR, PALETTE["yellow"], OK_COLOR])
# Loss over time: none is pale (most of a long watch), all is dark; magma's light end to its dark
# red, not its black, so a white mark on it stays visible.
LOSS_CMAP: Colormap = ListedColormap(mpl.colormaps["magma_r"](np.linspace(0.0, 0.8, 256)), name="loss")
NO_DATA_COLOR = "#d9d9d9"  # nothing to show: not captured, or no probe expected there
