"""The run's merged capture: every capture point's packets in one time-ordered ``run.pcapng``,
one interface per point (named ``node:iface``, its sniffer's drop count in a statistics
block), each probe packet commented with what the verdict says about it — the file to open
in Wireshark when the text verdict is not enough. Points extracted on their SSH host (columns
files, tracer.columns) have no packets here: their captures stayed on the host."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tracer.analysis.comments import packet_comments
from tracer.capture.pcapfile import read_capture
from tracer.capture.pcapng_writer import Interface, Record, write_pcapng_interfaces
from tracer.columns import is_columns
from tracer.errors import CaptureError
from tracer.model.observations import Observations
from tracer.model.verdict import Verdict

LINKTYPE_ETHERNET = 1


def write_run_pcapng(path: str | os.PathLike[str], obs: Observations, verdicts: list[Verdict],
                     drops: dict[str, int] | None = None) -> int:
    """Write the merged capture of ``obs`` (read back from its source files) to ``path``;
    return the packet count."""
    drops = drops or {}
    caps = [None if is_columns(s) else read_capture(s, check_linktypes=False) for s in obs.sources]
    for f, cap in enumerate(caps):  # rows name their records (unused captures' rows are gone)
        if cap is not None and (obs["rec"][obs["file"] == f] >= len(cap)).any():
            raise CaptureError(f"{cap.path}: capture file changed since it was read")
    interfaces: list[Interface] = []
    named: set[str] = set()  # points given an interface (the first carries the point's drop count)
    numbers: dict[tuple[str, int], int] = {}  # (point, link type) → interface number
    iface_of: list[np.ndarray] = []  # per file: its interface → output interface
    for f, cap in enumerate(caps):
        if cap is None:
            iface_of.append(np.zeros(1, np.int32))
            continue
        rows = np.flatnonzero(obs["file"] == f)
        pairs = set(zip(cap.iface[obs["rec"][rows]].tolist(), obs["point"][rows].tolist(), strict=True))
        table = np.zeros(max(len(cap.interfaces), 1), np.int32)
        for ci, p in sorted(pairs):
            info = cap.interfaces[ci]
            key = (obs.points[p], info.linktype)
            if key not in numbers:
                numbers[key] = len(interfaces)
                interfaces.append(Interface(key[0], info.linktype, info.snaplen or 262_144,
                                            drops.get(key[0]) if key[0] not in named else None))
                named.add(key[0])
            table[ci] = numbers[key]
        iface_of.append(table)
    # Points whose captures held no packet still get an interface: their drop count, and
    # their silence, are part of the story.
    remote = {obs.points[p] for p in np.unique(obs["point"][np.isin(obs["file"], [f for f, c in enumerate(caps)
                                                                                   if c is None])]).tolist()}
    interfaces += [Interface(p, LINKTYPE_ETHERNET, drops=drops.get(p),
                             description="extracted on its host: the capture stayed there" if p in remote
                             else "no packets captured")
                   for p in obs.points if p not in named]
    comments = packet_comments(obs, verdicts)

    def records() -> Iterator[Record]:
        for i in np.argsort(obs["ts_ns"], kind="stable").tolist():
            f = int(obs["file"][i])
            cap = caps[f]
            if cap is None:
                continue
            r = int(obs["rec"][i])
            yield (int(iface_of[f][cap.iface[r]]), int(cap.ts_ns[r]), cap.frame(r), int(cap.wire_len[r]),
                   comments.get(i))

    runs = ", ".join(f"tracer {v.kind} run 0x{v.run:08x}: {v.summary}" for v in verdicts)
    # Written beside and renamed over: a reader of the old file (or a failed write) never sees half a file.
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    try:
        n = write_pcapng_interfaces(tmp, interfaces, records(), comment=runs or None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n
