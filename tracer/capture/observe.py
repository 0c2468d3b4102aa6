"""Capture files → columnar :class:`Observations` (read, extract, name the capture points).

Capture point names: an explicit ``point`` wins (every interface of the file
becomes that point). Otherwise each pcapng interface is its own point, named
by its ``if_name`` (tracer's sniffers write ``node:iface``); a classic pcap —
or a pcapng whose only interface has no name — is named after the file stem;
further unnamed interfaces get ``stem#k``.

Besides the observations, every call returns per-point kernel drop counts
(from pcapng statistics blocks; None when the file does not say) and the
reader's warnings (truncated tails and the like), because both change how far
a verdict may go.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tracer.analysis.extract import extract
from tracer.capture.pcapfile import CaptureIndex, read_capture
from tracer.model.observations import Merger, Observations

Drops = dict[str, int | None]


@dataclass
class FileObservations:
    obs: Observations
    drops: Drops = field(default_factory=dict)  # capture point → kernel drops (None: unknown)
    warnings: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # capture point → why its file cannot prove absence


def point_names(cap: CaptureIndex, point: str | None = None) -> list[str]:
    """The capture point of each interface of ``cap``."""
    if point is not None:
        return [point] * len(cap.interfaces)
    stem = Path(cap.path).stem
    names = [i.name for i in cap.interfaces]
    if sum(n is None for n in names) == 1 and len(names) == 1:
        return [stem]
    return [n if n else f"{stem}#{k}" for k, n in enumerate(names)]


def observe_capture(cap: CaptureIndex, point: str | None = None, out: dict[str, np.ndarray] | None = None) -> FileObservations:
    """Observations of an already indexed capture (``file`` index 0, ``sources=[cap.path]``);
    ``out``: zeroed columns to build them in (see :meth:`Merger.slot`)."""
    cols = extract(cap.buf, cap.data_off, cap.caplen, cap.linktypes(), ts_ns=cap.ts_ns, wire_len=cap.wire_len, out=out)
    names = point_names(cap, point)
    index: dict[str, int] = {}  # point name → number, in order of first appearance (a dict: files may name many)
    pmap = np.array([index.setdefault(n, len(index)) for n in names] or [0], np.int16)
    points = list(index)
    cols["point"] = pmap[cap.iface] if len(cap) else np.zeros(0, np.int16)
    cols["file"] = np.zeros(len(cap), np.int16)
    drops: Drops = {}
    for n, info in zip(names, cap.interfaces, strict=True):
        drops[n] = _add(drops.get(n), info.drops)
    damaged = {n: cap.damage[0] for n in names} if cap.damage else {}
    return FileObservations(Observations(cols, points, [cap.path]), drops, list(cap.warnings), damaged)


def observe_file(path: str | os.PathLike[str], point: str | None = None) -> FileObservations:
    """Read and extract one pcap/pcapng file. Raises :class:`tracer.errors.CaptureError` on bad input."""
    return observe_capture(read_capture(path), point)


def observe_files(items: Iterable[tuple[str | os.PathLike[str], str | None]]) -> FileObservations:
    """Observe several ``(path, point or None)`` files and merge them; drops of a point seen in several files add up."""
    # Index every file first (a few bytes a packet; the pages read are handed back), so the
    # merged columns are allocated once and each file is extracted straight into its rows.
    caps = []
    for p, pt in items:
        caps.append((read_capture(p), pt))
        caps[-1][0].drop_pages()
    merged = Merger(sum(len(cap) for cap, _ in caps))
    drops: Drops = {}
    warnings: list[str] = []
    damaged: dict[str, str] = {}
    caps.reverse()  # pop from the end, in the original order: each index is freed once used
    while caps:
        cap, pt = caps.pop()
        part = observe_capture(cap, pt, merged.slot(len(cap)))
        cap.drop_pages()
        del cap
        for k, v in part.drops.items():
            drops[k] = _add(drops.get(k), v) if k in drops else v
        warnings += part.warnings
        damaged |= part.damaged
        merged.add(part.obs)
    return FileObservations(merged.result(), drops, warnings, damaged)


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b
