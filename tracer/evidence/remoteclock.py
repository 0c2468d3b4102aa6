"""A remote (SSH) host's clock against this one: ``date +%s.%N`` over SSH, compared with the
midpoint of the local clock around the call (the round trip bounds the error)."""

from __future__ import annotations

import time

from tracer.evidence import nodecmd
from tracer.model.checkstate import ClockOffset, Unavailable
from tracer.model.topology import Node


def read(node: Node, topo_source: str = "") -> ClockOffset | Unavailable:
    before = time.time()
    try:
        out = nodecmd.output(node, ["date", "+%s.%N"], topo_source)
    except nodecmd.Unavailable as e:
        return Unavailable(str(e))
    after = time.time()
    try:
        remote = float(out.stdout.strip())
    except ValueError:
        return Unavailable(f"'date +%s.%N' printed {out.stdout.strip()[:40]!r}, not seconds")
    return ClockOffset(remote - (before + after) / 2, after - before)
