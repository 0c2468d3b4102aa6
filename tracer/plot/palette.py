"""Colours the figures share for where the probes really went (the observed path).

Okabe–Ito blues: besides the older states' green, red, oranges, greys and lavender they keep
a CIE76 ΔE of at least 13 under simulated protanopia, deuteranopia and tritanopia (Machado et al.
2009, full severity); the earlier pink and pale cyan fell to 7–8 against the lavender of untied
ESP. A leak (seen, but in the clear where ESP belongs) is the strong blue; a point the probes
bypassed (they went elsewhere: neither seen nor missed) the light one.
"""

from __future__ import annotations

LEAK_COLOR = "#0072b2"  # seen in the clear where ESP belongs
ELSEWHERE_COLOR = "#56b4e9"  # not here: the probes had left the expected path before
OBSERVED_COLOR = LEAK_COLOR  # arrows and marks of the observed path: where the probes really went
