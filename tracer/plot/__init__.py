"""Plots of a verdict: where along the path the probes disappeared, at a glance.

Each ``draw_*`` function draws onto a matplotlib Axes you pass in (so it
composes with your own figures); :func:`figure` combines them and :func:`save`
writes PNG or SVG. Nothing here calls pyplot or picks a GUI backend::

    import tracer, tracer.plot
    v = tracer.load("captures/gw-forward-drop").verdict
    tracer.plot.save(v, "gw-forward-drop.png")
"""

from __future__ import annotations

from tracer.plot.figure import figure, save, title
from tracer.plot.latency import draw_latency
from tracer.plot.path_diagram import draw_path, flow_graph
from tracer.plot.timeline import STATES, draw_timeline, timeline_matrix

__all__ = ["STATES", "draw_latency", "draw_path", "draw_timeline", "figure", "flow_graph", "save", "timeline_matrix",
           "title"]
