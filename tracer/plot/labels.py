"""Label text for the figures: short enough that 30 capture points still fit side by side.

The numbers behind the labels come from :mod:`tracer.analysis.hopstats`.
"""

from __future__ import annotations

from tracer.model.point import CapturePoint


def short(text: str, width: int = 12) -> str:
    """Abbreviate a label, marking the cut with '…'."""
    return text if len(text) <= width else text[: width - 1] + "…"


def short_point(point: str, width: int = 16) -> str:
    """Abbreviate ``node:iface`` from the node's end: the interface is what tells columns apart."""
    if len(point) <= width:
        return point
    node, iface = CapturePoint.parse(point)
    keep = max(2, width - len(iface) - 2)
    return short(f"{node[:keep]}…:{iface}", width)


def fmt_ms(ms: float) -> str:
    """Three significant digits: 0.04 ms and 123 ms read equally well."""
    return f"{ms:.3g} ms"
