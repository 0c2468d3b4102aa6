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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tracer.analysis.extract import extract
from tracer.capture.pcapfile import CaptureHead, CaptureIndex, keep_pages_below, read_capture
from tracer.columns import ColumnsFile
from tracer.model.observations import COLUMNS, Merger, Observations, PointCounts, check_numbers

if TYPE_CHECKING:
    from tracer.capture.forkmap import Workers

Drops = dict[str, int | None]
Keep = Callable[[dict[str, np.ndarray]], np.ndarray]  # observation columns → rows to keep


@dataclass
class FileObservations:
    """The observations read from capture files, with their drops and warnings."""

    obs: Observations
    drops: Drops = field(default_factory=dict)  # capture point → kernel drops (None: unknown)
    warnings: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # capture point → why its file cannot prove absence
    # Per file, where rows were left out while reading (``keep``): what it held in all; else None.
    counts: list[PointCounts | None] = field(default_factory=list)


def point_names(cap: CaptureIndex, point: str | None = None) -> list[str]:
    """The capture point of each interface of ``cap``."""
    if point is not None:
        return [point] * len(cap.interfaces)
    stem = Path(cap.path).stem
    names = [i.name for i in cap.interfaces]
    if names == [None]:  # one interface, unnamed: the file's name
        return [stem]
    return [n if n else f"{stem}#{k}" for k, n in enumerate(names)]


def observe_capture(cap: CaptureIndex, point: str | None = None, names: list[str] | None = None,
                    out: dict[str, np.ndarray] | None = None, keep: Keep | None = None) -> FileObservations:
    """Observations of an already indexed capture (``file`` index 0, ``sources=[cap.path]``);
    ``names``: the point of each interface, instead of :func:`point_names`; ``out``: zeroed
    columns to build them in (see :meth:`Merger.slot`). ``keep``: only the rows it selects
    stay, at the head of the columns (their ``rec`` still names their records), and ``counts``
    has what the file held in all.

    Extracted :data:`SEGMENT` records at a time, the file's pages handed back after each: of a
    memory-mapped file, only a segment is ever resident (not the whole file), except in a worker
    reading a file smaller than :data:`KEEP_PAGES_BELOW`."""
    n = len(cap)
    names = names if names is not None else point_names(cap, point)
    index: dict[str, int] = {}  # point name → number, in order of first appearance (a dict: files may name many)
    pmap = np.array([index.setdefault(nm, len(index)) for nm in names] or [0], np.int16)
    if out is not None:
        cols = out
    else:  # kept rows are all written: no need for zeros
        cols = {k: (np.zeros if keep is None else np.empty)(n, dt) for k, dt in COLUMNS.items()}
    lts = cap.linktypes()
    per_record = np.ndim(lts) > 0
    scratch = {k: np.zeros(min(SEGMENT, n), COLUMNS[k]) for k in COLUMNS} if keep is not None else {}
    kept, ip_ts = 0, []
    for a in range(0, n, SEGMENT):
        b = min(n, a + SEGMENT)
        if keep is None:
            seg = {k: v[a:b] for k, v in cols.items()}
        else:  # extracted into scratch columns, the kept rows then moved into ``cols``
            seg = {k: v[: b - a] for k, v in scratch.items()}
            if a:
                for v in seg.values():
                    v[:] = 0
        extract(cap.buf, cap.data_off[a:b], cap.caplen[a:b], lts[a:b] if per_record else lts,
                ts_ns=cap.ts_ns[a:b], wire_len=cap.wire_len[a:b], out=seg)
        np.take(pmap, cap.iface[a:b], out=seg["point"])
        seg["rec"][:] = np.arange(a, b, dtype=np.uint32)
        cap.drop_pages()
        if keep is not None:
            ip_ts.append(seg["ts_ns"][seg["ipver"] > 0])
            rows = np.flatnonzero(keep(seg))
            for k, v in seg.items():
                np.take(v, rows, out=cols[k][kept : kept + len(rows)])
            kept += len(rows)
    counts: list[PointCounts | None] = [None]
    if keep is not None:
        cols = {k: v[:kept] for k, v in cols.items()}
        counts = [PointCounts.of(n, np.concatenate(ip_ts) if ip_ts else np.zeros(0, np.int64))]
    drops: Drops = {}
    for nm, info in zip(names, cap.interfaces, strict=True):
        drops[nm] = _add(drops.get(nm), info.drops)
    damaged = {nm: cap.damage[0] for nm in names} if cap.damage else {}
    return FileObservations(Observations(cols, list(index), [cap.path]), drops, list(cap.warnings), damaged, counts)


SEGMENT = 1 << 15  # records extracted at a time (~9 MB of file at 280 bytes a packet; 1 << 17 measured slower)
# A worker reads one file at a time: a file smaller than this keeps its pages mapped while it is
# read (mapping every page twice, for the walk and then for extraction, cost more than the memory).
KEEP_PAGES_BELOW = 64 << 20


def observe_file(path: str | os.PathLike[str], point: str | None = None) -> FileObservations:
    """Read and extract one pcap/pcapng file. Raises :class:`tracer.errors.CaptureError` on bad input."""
    return observe_capture(read_capture(path), point)


def observe_files(items: Iterable[tuple[str | os.PathLike[str], str | None]]) -> FileObservations:
    """Observe several ``(path, point or None)`` files and merge them; drops of a point seen in several files add up."""
    caps, names = [], []
    for p, pt in items:
        caps.append(read_capture(p))
        caps[-1].drop_pages()
        names.append(point_names(caps[-1], pt))
    return observe_indexed(caps, names)


def observe_indexed(caps: list[CaptureIndex], names: list[list[str]], keep: Keep | None = None) -> FileObservations:
    """Observations of already indexed captures (``names[f]``: the point of each interface of
    file ``f``), merged. With every file indexed first (a few bytes a packet; pages handed
    back) the merged columns are allocated once and each file is extracted straight into its
    rows; each index is freed once used (``caps`` is emptied). ``keep``: see :func:`observe_capture`."""
    merged = Merger(sum(len(cap) for cap in caps))
    acc = _Accounts()
    caps.reverse()  # pop from the end, in the original order
    for file_names in names:
        cap = caps.pop()
        part = observe_capture(cap, names=file_names, out=merged.slot(len(cap)), keep=keep)
        del cap
        acc.add(part)
        merged.add(part.obs)
    return acc.result(merged.result())


def observe_columns(cf: ColumnsFile, name: str, keep: Keep | None = None) -> FileObservations:
    """Observations of a columns file (extracted on the capture's SSH host, tracer.columns) as
    :func:`observe_capture` gives them for the capture itself: one point, ``name``; ``keep``
    and the counts it leaves alike."""
    cols = dict(cf.cols)
    counts: list[PointCounts | None] = [None]
    if keep is not None:
        counts = [PointCounts.of(len(cf), cols["ts_ns"][cols["ipver"] > 0])]
        rows = np.flatnonzero(keep(cols))
        cols = {k: v[rows] for k, v in cols.items()}
    cols["point"] = np.zeros(len(cols["ts_ns"]), np.int16)
    cols["file"] = np.zeros(len(cols["ts_ns"]), np.int16)
    damaged = {name: cf.damaged} if cf.damaged else {}
    return FileObservations(Observations(cols, [name], [cf.path]), {name: None}, list(cf.warnings), damaged, counts)


def merge_observed(parts: list[FileObservations]) -> FileObservations:
    """Several files' observations as one (their rows in order; drops, damage and counts kept)."""
    merged = Merger(sum(len(p.obs) for p in parts))
    acc = _Accounts()
    for part in parts:
        acc.add(part)
        merged.add(part.obs)
    return acc.result(merged.result())


class FileReader:
    """Capture files read in order (link types not checked), each file's head handed out as soon
    as it is read, then merged into one set of observations whose interfaces are named by their
    place (:func:`place`). ``keep``: see :func:`observe_capture`.

    With ``jobs`` > 1, forked workers read and extract the files and write their (kept) rows
    straight into merged columns in shared memory, at the rows the parent hands out in file
    order (:mod:`tracer.capture.forkmap`): each row is copied once, by a worker. Else every file
    is indexed here first (a few bytes a packet) and extracted straight into the merged columns."""

    def __init__(self, paths: list[Path], keep: Keep | None = None, jobs: int | None = None) -> None:
        """``jobs``: workers to fork (None: one per core, from :data:`PARALLEL_FROM` bytes of files)."""
        self.size = sum(_size(p) for p in paths)
        if jobs is None:
            jobs = 1
            if self.size >= PARALLEL_FROM:  # forkmap (signal, …) is imported only where workers may be forked
                from tracer.capture.forkmap import cores

                jobs = min(cores(), len(paths))
        self.paths, self.keep, self.jobs = paths, keep, jobs
        self._caps: list[CaptureIndex] = []
        self._workers: Workers | None = None
        self._shared: dict[str, np.ndarray] = {}
        self._parts: list[FileObservations] = []  # from workers: everything but the rows
        self._rows = 0

    def heads(self) -> Iterator[CaptureHead]:
        if self.jobs > 1:
            from tracer.capture.forkmap import Workers, can_fork, shared_zeros

            if can_fork():
                # Room for every record the files could hold (a record takes at least 16 bytes):
                # address space only, the rows written are all that is ever backed by memory.
                bound = self.size // 16 + len(self.paths)
                try:
                    self._shared = {k: shared_zeros(bound, dt) for k, dt in COLUMNS.items()}
                except OSError:  # no address space for it (a strict overcommit policy): read here
                    self._shared = {}
            if self._shared:
                work = partial(_observe_in_worker, keep=self.keep, into=self._shared)
                self._workers = Workers(work, self._place, list(enumerate(self.paths)), self.jobs,
                                        lambda item: f"the worker reading {item[1]}")
                for head, part, _ in self._workers.heads():
                    self._parts.append(part)
                    yield head
                return
        for path in self.paths:
            cap = read_capture(path, check_linktypes=False)
            cap.drop_pages()
            self._caps.append(cap)
            yield cap.head

    def _place(self, head: tuple[CaptureHead, FileObservations, int]) -> tuple[int, int]:
        """Where the next file's rows go: (first row, number of its first point)."""
        rows = head[2]
        where = self._rows, sum(len(p.obs.points) for p in self._parts)
        self._rows += rows
        return where

    def merged(self) -> FileObservations:
        """Every file's observations (call once all heads are read)."""
        if self._workers is None:
            names = [[place(f, k) for k in range(len(cap.interfaces))] for f, cap in enumerate(self._caps)]
            return observe_indexed(self._caps, names, self.keep)
        self._workers.wait()
        points = [p for part in self._parts for p in part.obs.points]
        sources = [s for part in self._parts for s in part.obs.sources]
        check_numbers(points, sources)
        acc = _Accounts()
        for part in self._parts:
            acc.add(part)
        cols = {k: v[: self._rows] for k, v in self._shared.items()}
        return acc.result(Observations(cols, points, sources))

    def close(self) -> None:
        """Workers still running stopped and reaped (after an error, or heads left unread):
        they would wait for their turn forever, holding memory. Idempotent."""
        if self._workers is not None:
            self._workers.close()


PARALLEL_FROM = 32 << 20  # bytes of captures from which workers pay (below, reading takes tens of ms)


def place(f: int, k: int) -> str:
    """The name interface ``k`` of file number ``f`` is observed under, until mapped to its point."""
    return f"{f}#{k}"


def _observe_in_worker(item: tuple[int, Path], keep: Keep | None, into: dict[str, np.ndarray]
                       ) -> tuple[tuple[CaptureHead, FileObservations, int], Callable[[tuple[int, int]], None]]:
    """File number ``f`` read and observed in a worker: its head, everything but its rows and how
    many rows it keeps; and how to write them into the merged columns ``into``, once placed."""
    f, path = item
    keep_pages_below(KEEP_PAGES_BELOW)  # this process reads one file at a time
    cap = read_capture(path, check_linktypes=False)
    cap.drop_pages()  # a file of KEEP_PAGES_BELOW or more: extraction takes its pages a segment at a time
    part = observe_capture(cap, names=[place(f, k) for k in range(len(cap.interfaces))], keep=keep)
    head = cap.head
    del cap
    cols, part.obs.cols = part.obs.cols, {}
    n = len(cols["ts_ns"])

    def write(where: tuple[int, int]) -> None:
        from tracer.capture.forkmap import populate

        at, first_point = where
        for k, v in cols.items():
            dst = into[k][at : at + n]
            populate(dst)
            dst[:] = v
            if k == "point":
                dst += first_point
            elif k == "file":
                dst[:] = f
    return (head, part, n), write


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # said when it is read


def relabel(part: FileObservations, names: list[str | None]) -> FileObservations:
    """Rename the points of ``part`` in place (``names[k]``: new name of point ``k``; several may
    share one); a None drops that point's packets, its drops and its damage. Dropped rows are
    squeezed out column by column inside the same arrays, so no second copy of the rows exists."""
    index: dict[str, int] = {}
    pmap = np.array([index.setdefault(n, len(index)) if n is not None else -1 for n in names] or [-1], np.int32)
    obs = part.obs
    new = pmap[obs.cols["point"]] if len(obs) else np.zeros(0, np.int32)
    obs.cols["point"] = new.astype(np.int16)  # a new array: point_rows' cache goes with the old one
    del new
    if (obs.cols["point"] < 0).any():
        _squeeze(obs, np.flatnonzero(obs.cols["point"] >= 0))
    drops: Drops = {}
    damaged: dict[str, str] = {}
    for old, n in zip(obs.points, names, strict=True):
        if n is None:
            continue
        if old in part.drops:
            drops[n] = _add(drops.get(n), part.drops[old]) if n in drops else part.drops[old]
        if old in part.damaged:
            damaged[n] = part.damaged[old]
    obs.points = list(index)
    return FileObservations(obs, drops, list(part.warnings), damaged)


def drop_duplicates(part: FileObservations, points: Iterable[str]) -> FileObservations:
    """Drop rows that repeat another row of the same point exactly (same time to the
    nanosecond, same length, same header fields): the same packet read twice, as when a file
    is given twice or tracer's merged ``run.pcapng`` is given with the captures it holds.
    Only ``points`` (those more than one file fed) are looked at; rows keep their order."""
    obs = part.obs
    numbers = [obs.point_index(p) for p in points]
    rows = np.flatnonzero(np.isin(obs.cols["point"], numbers)) if numbers else np.zeros(0, np.int64)
    if len(rows) < 2:
        return part
    fields = [k for k in obs.cols if k not in ("file", "rec", "l3_off")]  # where the bytes were, not what
    rows = rows[np.lexsort([obs.cols[k][rows] for k in reversed(fields)])]
    same = np.ones(len(rows) - 1, bool)
    for k in fields:
        v = obs.cols[k][rows]
        same &= v[1:] == v[:-1]
    if same.any():
        keep = np.ones(len(obs), bool)
        keep[rows[1:][same]] = False
        _squeeze(obs, np.flatnonzero(keep))
        part.warnings.append(f"{int(same.sum())} packets were read twice at one capture point (a file given "
                             "twice, or run.pcapng with its captures): counted once")
    return part


def _squeeze(obs: Observations, keep: np.ndarray) -> None:
    """Keep rows ``keep`` (ascending) of ``obs``, moved towards the head of the same arrays,
    column by column: no second copy of the rows."""
    for k, v in list(obs.cols.items()):
        v[: len(keep)] = v[keep]
        obs.cols[k] = v[: len(keep)]


class _Accounts:
    """Drops, warnings and damage of several files' observations, added up per point."""

    def __init__(self) -> None:
        self.drops: Drops = {}
        self.warnings: list[str] = []
        self.damaged: dict[str, str] = {}
        self.counts: list[PointCounts | None] = []

    def add(self, part: FileObservations) -> None:
        for k, v in part.drops.items():
            self.drops[k] = _add(self.drops.get(k), v) if k in self.drops else v
        self.warnings += part.warnings
        self.damaged |= part.damaged
        self.counts += part.counts

    def result(self, obs: Observations) -> FileObservations:
        return FileObservations(obs, self.drops, self.warnings, self.damaged, self.counts)


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b
