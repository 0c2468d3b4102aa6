"""The run's merged capture: every capture point's packets in one time-ordered ``run.pcapng``,
one interface per point (named ``node:iface``, its sniffer's drop count in a statistics
block), each probe packet commented with what the verdict says about it — the file to open
in Wireshark when the text verdict is not enough."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tracer.analysis.comments import packet_comments
from tracer.capture.pcapfile import read_capture
from tracer.capture.pcapng_writer import Interface, Record, write_pcapng_interfaces
from tracer.errors import CaptureError
from tracer.model.observations import Observations
from tracer.model.verdict import Verdict
from tracer.run.dissect import first_rows

LINKTYPE_ETHERNET = 1


def write_run_pcapng(path: str | os.PathLike[str], obs: Observations, verdicts: list[Verdict],
                     drops: dict[str, int] | None = None) -> int:
    """Write the merged capture of ``obs`` (read back from its source files) to ``path``;
    return the packet count."""
    drops = drops or {}
    caps = [read_capture(s, check_linktypes=False) for s in obs.sources]
    if sum(len(c) for c in caps) != len(obs):
        raise CaptureError(f"{Path(obs.sources[0]).parent}: capture files changed since they were read")
    interfaces: list[Interface] = []
    numbers: dict[tuple[str, int], int] = {}  # (point, link type) → interface number
    iface_of: list[np.ndarray] = []  # per file: its interface → output interface
    for f, cap in enumerate(caps):
        rows = np.flatnonzero(obs["file"] == f)
        pairs = {(int(cap.iface[r - rows[0]]), int(obs["point"][r])) for r in rows} if len(rows) else set()
        table = np.zeros(max(len(cap.interfaces), 1), np.int32)
        for ci, p in sorted(pairs):
            info = cap.interfaces[ci]
            key = (obs.points[p], info.linktype)
            if key not in numbers:
                numbers[key] = len(interfaces)
                interfaces.append(Interface(key[0], info.linktype, info.snaplen or 262_144,
                                            drops.get(key[0]) if key[0] not in {i.name for i in interfaces} else None))
            table[ci] = numbers[key]
        iface_of.append(table)
    # Points whose captures held no packet still get an interface: their drop count, and
    # their silence, are part of the story.
    named = {i.name for i in interfaces}
    interfaces += [Interface(p, LINKTYPE_ETHERNET, drops=drops.get(p), description="no packets captured")
                   for p in obs.points if p not in named]
    comments = packet_comments(obs, verdicts)
    start = first_rows(obs)

    def records() -> Iterator[Record]:
        for i in np.argsort(obs["ts_ns"], kind="stable").tolist():
            f = int(obs["file"][i])
            cap = caps[f]
            r = i - start[f]
            yield (int(iface_of[f][cap.iface[r]]), int(cap.ts_ns[r]), cap.frame(r), int(cap.wire_len[r]),
                   comments.get(i))

    runs = ", ".join(f"tracer {v.kind} run 0x{v.run:08x}: {v.summary}" for v in verdicts)
    return write_pcapng_interfaces(path, interfaces, records(), comment=runs or None)
