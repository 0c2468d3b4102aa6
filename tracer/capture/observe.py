"""Capture files → columnar :class:`Observations` (read, extract, name the capture points).

Capture point names: an explicit ``point`` wins (every interface of the file
becomes that point). Otherwise each pcapng interface is its own point, named
by its ``if_name`` (tracer's sniffers write ``node:iface``); a classic pcap —
or a pcapng whose only interface has no name — is named after the file stem;
further unnamed interfaces get ``stem#k``. (Replay maps files to topology points by more
rules, in :mod:`tracer.run.capturemap`: it observes each file with one name per interface
and then :func:`relabel` s them.)

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


def observe_capture(cap: CaptureIndex, point: str | None = None, names: list[str] | None = None,
                    out: dict[str, np.ndarray] | None = None) -> FileObservations:
    """Observations of an already indexed capture (``file`` index 0, ``sources=[cap.path]``);
    ``names``: the point of each interface, instead of :func:`point_names`; ``out``: zeroed
    columns to build them in (see :meth:`Merger.slot`)."""
    cols = extract(cap.buf, cap.data_off, cap.caplen, cap.linktypes(), ts_ns=cap.ts_ns, wire_len=cap.wire_len, out=out)
    names = names if names is not None else point_names(cap, point)
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
    acc = _Accounts()
    caps.reverse()  # pop from the end, in the original order: each index is freed once used
    while caps:
        cap, pt = caps.pop()
        part = observe_capture(cap, pt, out=merged.slot(len(cap)))
        cap.drop_pages()
        del cap
        acc.add(part)
        merged.add(part.obs)
    return acc.result(merged.result())


def relabel(part: FileObservations, names: list[str | None]) -> FileObservations:
    """Rename the points of one file's observations (``names[k]``: new name of point ``k``; several
    may share one); a None drops that point's packets, its drops and its damage."""
    index: dict[str, int] = {}
    pmap = np.array([index.setdefault(n, len(index)) if n is not None else -1 for n in names] or [-1], np.int32)
    new = pmap[part.obs["point"]] if len(part.obs) else np.zeros(0, np.int32)
    keep = new >= 0
    obs = part.obs.select(keep)
    obs.cols["point"] = new[keep].astype(np.int16)
    obs.points = list(index)
    drops: Drops = {}
    damaged: dict[str, str] = {}
    for old, n in zip(part.obs.points, names, strict=True):
        if n is None:
            continue
        if old in part.drops:
            drops[n] = _add(drops.get(n), part.drops[old]) if n in drops else part.drops[old]
        if old in part.damaged:
            damaged[n] = part.damaged[old]
    return FileObservations(obs, drops, list(part.warnings), damaged)


def merge_observations(parts: list[FileObservations]) -> FileObservations:
    """Merge several files' observations; drops of a point seen in several files add up."""
    acc = _Accounts()
    for part in parts:
        acc.add(part)
    return acc.result(Observations.concat([p.obs for p in parts]) if parts else Observations.empty())


class _Accounts:
    """Drops, warnings and damage of several files' observations, added up per point."""

    def __init__(self) -> None:
        self.drops: Drops = {}
        self.warnings: list[str] = []
        self.damaged: dict[str, str] = {}

    def add(self, part: FileObservations) -> None:
        for k, v in part.drops.items():
            self.drops[k] = _add(self.drops.get(k), v) if k in self.drops else v
        self.warnings += part.warnings
        self.damaged |= part.damaged

    def result(self, obs: Observations) -> FileObservations:
        return FileObservations(obs, self.drops, self.warnings, self.damaged)


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b
