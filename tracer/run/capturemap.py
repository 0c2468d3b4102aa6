"""Capture files → capture points, whatever the files are called.

A capture point is a topology interface (``node:iface``). Each interface of each
file (a classic pcap has one; a pcapng made with ``dumpcap -i a -i b`` or
``mergecap`` has several and is split) is mapped by the first rule that decides:

1. ``option``: ``--point node:iface=FILE`` / ``--points MAPFILE`` (or the run
   directory's manifest, ``manifest``): the whole file is that point;
2. ``pcapng name`` / ``pcapng description``: the interface's ``if_name`` or
   ``if_description`` read as a point name (rule 3's forms), or as a bare
   interface name that is unique in the topology — or unique on the node the file
   name names (``west-gw.pcapng`` holding ``lan0`` and ``wan0``);
3. ``file name`` (single-interface files): the stem of ``node:iface``,
   ``node__iface``, ``node_iface`` or ``node-iface`` (``.pcap``, ``.pcapng``,
   ``.cap``), split at every separator and kept where the split names a topology
   interface; names may contain ``_`` and ``-`` themselves, so two fitting splits
   are an error that lists them;
4. ``content``: the IPv4 addresses the interface's packets carry, matched against
   the topology's subnets; only a single fitting interface decides. Both ends of a
   link share a subnet, so this decides only for a link whose other end is outside
   the topology (the topology has no MAC addresses to tell the ends apart); otherwise
   the capture is unused and the candidates are listed, with a warning.

A capture that names a topology node but an interface the topology lacks (``west_lo``), a
pcapng interface named ``node:iface`` for a node the topology does not have, or a capture no
rule places, is *unused*: listed with the reason, not fatal (unless no capture at all is of
the topology: then there is nothing to replay). Explicit points (option, manifest) on a known
node keep such an interface as a witness.
"""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import numpy as np

from tracer.analysis.extract import LINKTYPES
from tracer.capture.observe import (
    FileObservations,
    FileReader,
    Keep,
    drop_duplicates,
    merge_observed,
    observe_columns,
    place,
    relabel,
)
from tracer.capture.pcapfile import CaptureHead, refuse_linktypes
from tracer.columns import is_columns, read_columns
from tracer.errors import BadInput, CaptureError
from tracer.model.distinct import distinct
from tracer.model.observations import Observations
from tracer.model.point import CapturePoint
from tracer.model.topology import IFACE_RE, NAME_RE, Topology
from tracer.run.manifest import RUN_PCAPNG
from tracer.textfile import read_text

SEPARATORS = (":", "__", "_", "-")  # the ways people join node and interface in a file name
SUFFIXES = (".pcapng", ".pcap", ".cap")
OPTION, MANIFEST_RULE, PCAPNG_NAME, PCAPNG_DESCR, FILE_NAME, CONTENT, UNUSED = (
    "option", "manifest", "pcapng name", "pcapng description", "file name", "content", "unused")


@dataclass(frozen=True)
class Source:
    """A file to read, and its point when the user or the manifest said it (None: find out)."""

    path: Path
    point: str | None = None
    how: str = OPTION  # which of OPTION / MANIFEST_RULE fixed ``point``


@dataclass(frozen=True)
class Mapped:
    """Where one interface of one file went, and why."""

    file: str
    iface: int  # interface number inside the file (0 for classic pcap)
    iface_name: str | None  # pcapng if_name, if any
    point: str | None  # None: unused
    how: str  # OPTION, MANIFEST_RULE, PCAPNG_NAME, PCAPNG_DESCR, FILE_NAME, CONTENT or UNUSED
    why: str = ""  # what decided it, or why it is unused
    candidates: tuple[str, ...] = ()  # unused because the content fits all these points
    of: int = 1  # interfaces in the file

    @property
    def label(self) -> str:
        """The file, and the interface inside it when the file has several (``all.pcapng#2 (eth0)``)."""
        if self.of == 1:
            return self.file
        return f"{self.file}#{self.iface}" + (f" ({self.iface_name})" if self.iface_name else "")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "interface": self.iface, "interface_name": self.iface_name,
                "point": self.point, "how": self.how, "why": self.why, "candidates": list(self.candidates)}


@dataclass
class MappedRun:
    """Capture files read and mapped to capture points."""

    seen: FileObservations
    mapping: list[Mapped]
    kept_at: dict[str, str] = field(default_factory=dict)  # columns file → host:path its capture stayed at

    @property
    def unused(self) -> list[Mapped]:
        return [m for m in self.mapping if m.point is None]


def stem(path: str | os.PathLike[str]) -> str:
    """The file name without its capture suffix (``west-gw_lan0.pcapng`` → ``west-gw_lan0``)."""
    name = Path(path).name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def split_name(text: str, topo: Topology) -> tuple[list[str], list[str]]:
    """Every way ``text`` splits into ``node SEP iface``: (topology interfaces; if none, points
    on a topology node whose interface the topology lacks, likeliest first)."""
    hits: dict[str, None] = {}
    foreign: dict[str, None] = {}
    for sep in SEPARATORS:
        start = text.find(sep)
        while start > 0:
            node, iface = text[:start], text[start + len(sep):]
            if node in topo.nodes and iface:
                point = str(CapturePoint(node, iface))
                (hits if iface in topo.nodes[node].interfaces else foreign)[point] = None
            start = text.find(sep, start + 1)
    if hits:
        return list(hits), []
    # No interface fits: the longest node name is the likeliest reading ("west-gw_lo": west-gw, lo).
    return [], sorted(foreign, key=lambda p: -len(CapturePoint.parse(p).node))


def resolve_name(text: str, topo: Topology, what: str) -> str | None:
    """A point name in any of the separator forms → the topology point; None if none fits.
    Raises BadInput when several do (``what`` names where the text came from)."""
    hits, _ = split_name(text, topo)
    if len(hits) > 1:
        raise BadInput(f"{what} '{text}' is ambiguous: it names {' and '.join(hits)} (map it with --point POINT=FILE)")
    return hits[0] if hits else None


def _file_node(path: str, topo: Topology) -> str | None:
    """The node a file is named after (``west-gw.pcapng``, ``west-gw-all.pcap``): the longest that fits."""
    s = stem(path)
    if s in topo.nodes:
        return s
    nodes = [n for n in topo.nodes if any(s.startswith(n + sep) for sep in SEPARATORS)]
    return max(nodes, key=len) if nodes else None  # west-gw_all: west-gw, not west


class _Mapper:
    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.by_iface: dict[str, list[str]] = {}
        for point in topo.points():
            self.by_iface.setdefault(CapturePoint.parse(point).iface, []).append(point)

    def explicit(self, src: Source) -> tuple[str, str]:
        """An option or manifest point: a topology point (in any separator form), or a witness on a known node."""
        assert src.point is not None
        point = resolve_name(src.point, self.topo, "point") or src.point
        parsed = CapturePoint.parse(point)
        if parsed.node not in self.topo.nodes:
            hint = "name captures node:iface, or map them in a manifest" if src.how == MANIFEST_RULE else \
                f"its nodes: {', '.join(self.topo.nodes)}"
            raise BadInput(f"capture point '{src.point}' is not an interface of topology {self.topo.source} ({hint})")
        if not IFACE_RE.fullmatch(parsed.iface):  # a witness is named like any interface
            raise BadInput(f"capture point '{src.point}': '{parsed.iface}' is not an interface name "
                           "(letters, digits, '_.@-', at most 15)")
        return point, "" if self.topo.interface(point) else "not in the topology: used as a witness only"

    def by_name(self, cap: CaptureHead, k: int) -> tuple[str | None, str, str, list[str]]:
        """Rules 2 and 3 for interface ``k``: (point or None, how, why, candidates or unused reasons)."""
        info = cap.interfaces[k]
        near: list[str] = []  # what the names said when they did not decide
        for how, text in ((PCAPNG_NAME, info.name), (PCAPNG_DESCR, info.description)):
            if not text:
                continue
            found = self._by_form(text, f"{cap.path}: pcapng interface {how.split()[1]}")
            if found:
                return (found[0], how, f"'{text}'", []) if found[0] else (None, UNUSED, f"{how} '{text}': {found[1]}", [])
            node_part, colon, _ = text.rpartition(":")
            if colon and NAME_RE.fullmatch(node_part) and node_part not in self.topo.nodes:  # tracer's own form
                return None, UNUSED, f"{how} '{text}': the topology has no node {node_part}", []
            cands = self.by_iface.get(text, [])
            node = _file_node(cap.path, self.topo)
            if node and IFACE_RE.fullmatch(text) and text not in self.topo.nodes[node].interfaces:
                return None, UNUSED, f"{how} '{text}' in a file of node {node}: {node}:{text} is not an interface " \
                    "of the topology", []
            if node and len(cands) > 1:
                cands = [p for p in cands if CapturePoint.parse(p).node == node]
            if len(cands) == 1:
                return cands[0], how, f"'{text}'" + (f" on node {node} (file name)" if node else ""), []
            near += cands
        if len(cap.interfaces) == 1:
            s = stem(cap.path)
            found = self._by_form(s, f"{cap.path}: file name")
            if found:
                return (found[0], FILE_NAME, f"'{s}'", []) if found[0] else (None, UNUSED, f"file name: {found[1]}", [])
        return None, "", "", near

    def _by_form(self, text: str, what: str) -> tuple[str | None, str] | None:
        """``text`` read in the file-name forms: (its point, "") or (None, why it is unused);
        None when it names no topology node at all."""
        point = resolve_name(text, self.topo, what)
        if point:
            return point, ""
        _, foreign = split_name(text, self.topo)
        return (None, f"{foreign[0]} is not an interface of the topology") if foreign else None

    def by_content(self, obs: Observations, k: int, near: list[str]) -> tuple[str | None, str, tuple[str, ...]]:
        """Rule 4: the one topology interface whose subnets hold the sources of packets seen at point
        number ``k`` on their first hop (TTL as sent). A packet that crossed a router says nothing of
        where it was captured: its addresses are its ends', not this link's (a transit capture would
        be placed on an end's link). Other files' points are not ruled out: two files of one point
        are allowed, and a guess by elimination would let a stray capture (``lo``) take the place of
        a missing one."""
        at = obs.point_rows(k)  # one file's interface: its rows are contiguous, a slice
        rows = obs["ipver"][at] == 4
        if not rows.any():
            return None, "no packets" if not len(obs["ipver"][at]) else "no IPv4 packets", ()
        ttls = _hops_in_one(obs, at)
        if ttls:  # mapping it to any one point would be wrong: say why, and what to give instead
            return None, (f"it holds the same packets at several hops (TTL {ttls[-1]} and {ttls[0]}): several "
                          "interfaces' traffic in one interface (mergecap of pcap files, tcpdump -i any) cannot be "
                          "split into capture points: give tracer one capture file per interface"), ()
        sent_here = rows & np.isin(obs["ttl"][at], SENT_TTLS)
        addrs = [IPv4Address(int(a)) for a in distinct(obs["src"][at][sent_here]).tolist() if a]
        if not addrs:
            return None, ("every IPv4 packet in it had crossed a router (TTL below 64, 128 or 255), so its "
                          "addresses are not this link's: map it with --point POINT=FILE"), ()
        fits: dict[str, IPv4Address] = {}
        for node in self.topo.nodes.values():
            for iface in node.interfaces.values():
                hit = next((a for a in addrs for net in iface.addresses if a in net.network), None)
                if hit is not None:
                    fits[iface.point] = hit
        if near:  # the pcapng name said which interface name: only those
            fits = {p: a for p, a in fits.items() if p in near} or fits
        if len(fits) == 1:
            (point, addr), = fits.items()
            return point, f"address {addr} is on {point}'s subnet, and on no other interface's", ()
        if not fits:
            shown = ", ".join(str(a) for a in addrs[:3]) + (", …" if len(addrs) > 3 else "")
            return None, f"no topology subnet holds its addresses ({shown})", ()
        cands = tuple(sorted(fits))
        return None, f"its addresses fit several capture points ({', '.join(cands)}): map it with --point POINT=FILE", cands


# TTLs packets are sent with (Linux and most Unix 64, Windows 128, routers' own traffic 255): a packet
# still carrying one has not crossed a router since its source.
SENT_TTLS = (64, 128, 255)


def _hops_in_one(obs: Observations, at: slice | np.ndarray) -> list[int]:
    """The TTLs of one IPv4 packet (same addresses, protocol, IP ID, length and layer-4 contents)
    seen with different TTLs within one capture interface, ascending; [] when none is. A router
    decrements the TTL, so such a capture holds the packet before and after a hop: the traffic of
    several interfaces (merged, or ``any``), which no single capture point stands for."""
    v4 = obs["ipver"][at] == 4
    cols = [obs[c][at][v4].astype(np.int64) for c in ("src", "dst", "proto", "ipid", "ip_len", "l4_hash", "ttl")]
    if not len(cols[0]):
        return []
    rows = np.unique(np.stack(cols, axis=1), axis=0)  # one row per (packet, TTL)
    keys, counts = np.unique(rows[:, :-1], axis=0, return_counts=True)
    if not (counts > 1).any():
        return []
    first = keys[np.argmax(counts > 1)]
    return sorted(int(t) for t in rows[(rows[:, :-1] == first).all(axis=1), -1].tolist())


def map_captures(sources: Iterable[Source], topo: Topology, keep: Keep | None = None) -> MappedRun:
    """Read every file, map each of its interfaces to a point (or unused), and merge the observations.

    ``keep``: the rows worth keeping (:mod:`tracer.analysis.relevant`); applied only where every
    file is a point of its own fixed in advance (option or manifest: no content rule reads the
    rows, and each point's counts are its file's), else every row is kept.

    Large runs are read and extracted by forked workers, one per core, each writing its (kept)
    rows straight into the merged columns (:class:`tracer.capture.observe.FileReader`); small
    ones are indexed first and extracted into them here. The content rule then reads the merged
    rows, and the points are renamed in place."""
    sources = list(sources)
    mapper = _Mapper(topo)
    keep = keep if _fixed_ahead(mapper, sources) else None
    # Columns files (extracted on SSH hosts) have their points from the manifest; they join the
    # captures' observations after these are read, as the last files.
    columns = [src for src in sources if is_columns(src.path)]
    sources = [src for src in sources if not is_columns(src.path)]
    reader = FileReader([src.path for src in sources], keep)
    heads: list[CaptureHead] = []
    decided: list[list[Mapped | None]] = []
    near: dict[tuple[int, int], list[str]] = {}
    try:  # an error before every row is merged leaves no worker waiting (nor a zombie)
        for f, (src, cap) in enumerate(zip(sources, reader.heads(), strict=True)):
            row: list[Mapped | None] = []
            n = len(cap.interfaces)
            fixed = mapper.explicit(src) if src.point is not None else None
            for k, info in enumerate(cap.interfaces):
                if fixed is not None:  # the whole file is that point
                    row.append(Mapped(cap.path, k, info.name, fixed[0], src.how, fixed[1], of=n))
                    continue
                point, how, why, cands = mapper.by_name(cap, k)
                if not how and info.linktype not in LINKTYPES:  # nothing to read its content by
                    how, why = UNUSED, f"link type {info.linktype}, which tracer does not read"
                row.append(Mapped(cap.path, k, info.name, point, how, why, of=n) if how else None)
                near[(f, k)] = cands
            decided.append(row)
            # Link types are checked per interface once mapped: an unreadable one that maps nowhere
            # (a USB or Bluetooth interface in a dumpcap of several) is only unused.
            refuse_linktypes(cap, [k for k, m in enumerate(row) if k in cap.busy and m is not None and m.point is not None])
            heads.append(cap)
        _set_aside_merged(decided)
        # Each interface is first named by its place (file, interface), then renamed to its point.
        keys = [[place(f, k) for k in range(len(cap.interfaces))] for f, cap in enumerate(heads)]
        seen = reader.merged()
    finally:
        reader.close()
    kept_at: dict[str, str] = {}
    if columns:
        parts = []
        for src in columns:
            m = _columns_point(mapper, src)
            cf = read_columns(src.path)
            if (resolve_name(cf.point, mapper.topo, "point") or cf.point) != m.point:
                # Renamed or swapped: its rows would be counted as another point's.
                said = "the manifest" if src.how == MANIFEST_RULE else "--point"
                raise CaptureError(f"{src.path}: columns of point {cf.point!r}, but {said} says {m.point!r}")
            if cf.capture:
                kept_at[cf.path] = cf.capture
            decided.append([m])
            keys.append([place(len(keys), 0)])
            parts.append(observe_columns(cf, keys[-1][0], keep))
        seen = merge_observed([seen, *parts])
    for f, row in enumerate(decided):  # rule 4
        for k, m in enumerate(row):
            if m is None:
                ifnames = [i.name for i in heads[f].interfaces]
                point, why, cands = mapper.by_content(seen.obs, seen.obs.point_index(keys[f][k]), near[(f, k)])
                row[k] = Mapped(heads[f].path, k, ifnames[k], point, CONTENT if point else UNUSED, why, cands,
                                len(ifnames))
    mapping = [m for row in decided for m in row if m is not None]
    if mapping and all(m.point is None for m in mapping):
        first = mapping[0]
        more = f" (and {len(mapping) - 1} more)" if len(mapping) > 1 else ""
        raise BadInput(f"no capture is of an interface of topology {topo.source}: {first.label}: {first.why}{more}")
    point_of = {keys[f][k]: m.point for f, row in enumerate(decided) for k, m in enumerate(row) if m is not None}
    counts = seen.counts
    seen = relabel(seen, [point_of[key] for key in seen.obs.points])
    if keep is not None:  # one file a point: its counts are the point's
        seen.obs.counts = {row[0].point: c for c, row in zip(counts, decided, strict=True)
                           if row and row[0].point is not None and c is not None}
    fed = Counter(m.point for m in mapping if m.point is not None)
    return MappedRun(drop_duplicates(seen, [p for p, n in fed.items() if n > 1]), mapping, kept_at)


def _columns_point(mapper: _Mapper, src: Source) -> Mapped:
    """A columns file is one point, the one its run directory's manifest (or --point) gives."""
    if src.point is None:
        raise BadInput(f"{src.path}: observation columns extracted on a remote host: replay the run directory "
                       "they belong to (its manifest says which point they are), or give --point POINT=FILE")
    point, why = mapper.explicit(src)
    return Mapped(str(src.path), 0, point, point, src.how, why)


def _fixed_ahead(mapper: _Mapper, sources: list[Source]) -> bool:
    """Each file is a point of its own, fixed in advance (option, manifest). (Whatever is wrong
    with a point is said later, in file order, as it always is.)"""
    points = []
    for src in sources:
        if src.point is None:
            return False
        try:
            points.append(mapper.explicit(src)[0])
        except BadInput:
            return False
    return len(set(points)) == len(points)


def _set_aside_merged(decided: list[list[Mapped | None]]) -> None:
    """Tracer's own merged capture (``run.pcapng``) given together with the captures it was
    made of (``RUN/*.pcapng``): unused, or every packet would be read twice. Kept when one of
    its points has no other file."""
    others = {m.point for row in decided for m in row if m is not None and m.point and Path(m.file).name != RUN_PCAPNG}
    for row in decided:
        if not row or any(m is None for m in row) or Path(row[0].file).name != RUN_PCAPNG:  # type: ignore[union-attr]
            continue
        points = {m.point for m in row if m is not None and m.point}
        if points and points <= others:
            row[:] = [replace(m, point=None, how=UNUSED, why="tracer's merged capture of the other files given")
                      for m in row if m is not None]



def parse_point_option(text: str) -> tuple[str, Path]:
    """``node:iface=FILE`` → (point, file)."""
    point, eq, file = text.partition("=")
    if not eq or not point or not file:
        raise BadInput(f"--point '{text}': expected POINT=FILE, like west-gw:lan0=gw-lan.pcap")
    return point.strip(), Path(file)


def read_points_file(path: Path) -> list[tuple[str, Path]]:
    """A mapping file: TOML, ``"node:iface" = "file"`` (or a list of files) per line; relative
    paths are relative to the mapping file."""
    try:
        data = tomllib.loads(read_text(path, "points file"))
    except FileNotFoundError:
        raise BadInput(f"{path}: points file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path}: not valid TOML (expected lines like \"west:eth0\" = \"west.pcap\"): {e}") from None
    except RecursionError:  # tomllib recurses into nested arrays
        raise BadInput(f"{path}: not a points file (arrays or tables nested too deep)") from None
    out: list[tuple[str, Path]] = []
    for point, files in data.items():
        files = [files] if isinstance(files, str) else files
        if not isinstance(files, list) or not files or not all(isinstance(x, str) and x for x in files):
            raise BadInput(f"{path}: '{point}' must be a file name or a list of file names")
        out += [(point, path.parent / x) for x in files]
    return out


__all__ = ["Mapped", "MappedRun", "Source", "map_captures", "parse_point_option", "read_points_file",
           "resolve_name", "split_name", "stem"]
