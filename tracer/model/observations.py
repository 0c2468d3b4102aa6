"""Observations: what every capture point saw, as columns (one numpy array per field).

One row per captured packet. Rows are never Python objects: a million
packets are a few dozen arrays. ``points`` names the capture points
(``"node:iface"``); the ``point`` column indexes into it.

Field meanings (0 where the field does not apply):

=============  =======  ====================================================
column         dtype    meaning
=============  =======  ====================================================
ts_ns          int64    capture timestamp, ns since the epoch
point          int16    index into ``points``
file           int16    index into ``sources`` (which capture file)
l3_off         int64    byte offset of the IP header inside that file
wire_len       uint32   original frame length on the wire
ipver          uint8    4 or 6 (0: not IP)
src, dst       uint32   IPv4 addresses (host order ints)
proto          uint8    IP protocol
ip_len         uint16   IP total length
ipid           uint16   IP identification
ttl            uint8    IP time to live (falls hop by hop: a probe seen again lower is looping)
df             bool     Don't Fragment set
frag           uint16   fragment offset in 8-byte units; >0 means no L4 here
mf             bool     more-fragments flag
sport, dport   uint16   UDP/TCP ports
l4_hash        uint32   hash of the first L4 bytes routers leave alone (analysis/extract.py): with
                        addresses, protocol, IP ID and ports, tells untagged packets apart across hops
cls            uint8    packet class, see :class:`PacketClass`
icmp_type      uint8
icmp_code      uint8
icmp_id        uint16   echo identifier
icmp_seq       uint16   echo sequence
tag_kind       uint8    probe tag kind (0: no tag), see model.tag
tag_run        uint32   probe tag run id
tag_seq        uint32   probe tag sequence
spi            uint32   ESP SPI (cls ESP) or inner ESP SPI (cls ICMP_ERROR)
esp_seq        uint32   ESP sequence number
udp_encap      bool     ESP carried in UDP 4500 (NAT-T)
ike_spi_i      uint64   IKE initiator SPI (cls IKE)
ike_spi_r      uint64   IKE responder SPI
ike_exch       uint8    IKE exchange type (34 = IKE_SA_INIT)
ike_flags      uint8    IKE header flags (0x20 = response, 0x08 = initiator)
inner_src      uint32   ICMP error: quoted packet's source
inner_dst      uint32   ICMP error: quoted packet's destination
inner_proto    uint8    ICMP error: quoted packet's protocol
inner_id       uint16   ICMP error: quoted echo id (or UDP source port)
inner_seq      uint16   ICMP error: quoted echo seq (or UDP dest port)
mtu            uint16   ICMP frag-needed: next-hop MTU
=============  =======  ====================================================

On ``cls == ICMP_ERROR`` rows the identity columns (``tag_*``, ``spi``,
``esp_seq``, ``udp_encap``, ``ike_*``) describe the *quoted* packet, filled
when the quote covers them (Linux quotes up to 576 bytes, so a quoted echo
usually still carries its tag); ``inner_id``/``inner_seq`` hold TCP ports too.
Fields a truncated snapshot does not fully cover are 0.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from tracer.errors import BadInput
from tracer.model.distinct import distinct


class PacketClass(IntEnum):
    OTHER = 0
    ECHO_REQUEST = 1
    ECHO_REPLY = 2
    ESP = 3
    IKE = 4
    ICMP_ERROR = 5
    NAT_KEEPALIVE = 6
    FRAGMENT = 7  # non-first fragment: no L4 header here
    UDP = 8
    TCP = 9


COLUMNS: dict[str, np.dtype] = {
    name: np.dtype(dt)
    for name, dt in [
        ("ts_ns", "i8"),
        ("point", "i2"),
        ("file", "i2"),
        ("rec", "u4"),  # the record number in its file (rows dropped or merged keep pointing at their bytes)
        ("l3_off", "i8"),
        ("wire_len", "u4"),
        ("ipver", "u1"),
        ("src", "u4"),
        ("dst", "u4"),
        ("proto", "u1"),
        ("ip_len", "u2"),
        ("ipid", "u2"),
        ("ttl", "u1"),
        ("df", "?"),
        ("frag", "u2"),
        ("mf", "?"),
        ("sport", "u2"),
        ("dport", "u2"),
        ("l4_hash", "u4"),
        ("cls", "u1"),
        ("icmp_type", "u1"),
        ("icmp_code", "u1"),
        ("icmp_id", "u2"),
        ("icmp_seq", "u2"),
        ("tag_kind", "u1"),
        ("tag_run", "u4"),
        ("tag_seq", "u4"),
        ("spi", "u4"),
        ("esp_seq", "u4"),
        ("udp_encap", "?"),
        ("ike_spi_i", "u8"),
        ("ike_spi_r", "u8"),
        ("ike_exch", "u1"),
        ("ike_flags", "u1"),
        ("inner_src", "u4"),
        ("inner_dst", "u4"),
        ("inner_proto", "u1"),
        ("inner_id", "u2"),
        ("inner_seq", "u2"),
        ("mtu", "u2"),
    ]
}


@dataclass
class Observations:
    """Columnar packet records from one or more capture points."""

    cols: dict[str, np.ndarray]
    points: list[str] = field(default_factory=list)
    # Per capture file: its path (for going back to the bytes, e.g. ESP decryption).
    sources: list[str] = field(default_factory=list)
    # Point → what its captures held in all, where rows the analysis has no use for were left
    # out while reading (None: every row is here, count them).
    counts: dict[str, PointCounts] | None = None
    # The rows of each point, indexed once per ``point`` column (see point_rows).
    _by_point: tuple[np.ndarray, list[slice | np.ndarray]] | None = field(default=None, init=False, repr=False, compare=False)
    _esp: tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False,
                                                                             compare=False)

    def __len__(self) -> int:
        return len(self.cols["ts_ns"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    @classmethod
    def empty(cls, n: int = 0, points: list[str] | None = None) -> Observations:
        return cls({k: np.zeros(n, dt) for k, dt in COLUMNS.items()}, list(points or []))

    def select(self, mask: np.ndarray) -> Observations:
        return Observations({k: v[mask] for k, v in self.cols.items()}, self.points, self.sources)

    def point_counts(self, pidx: int) -> PointCounts:
        """What point number ``pidx`` captured in all (its rows, unless rows were left out)."""
        if self.counts is not None and (c := self.counts.get(self.points[pidx])) is not None:
            return c
        rows = self.point_rows(pidx)
        return count_rows(self.cols["ipver"][rows], self.cols["ts_ns"][rows])

    def point_rows(self, pidx: int) -> slice | np.ndarray:
        """The rows of point number ``pidx``, ascending: a slice when they are contiguous (each
        file is one point, as tracer writes them: no gather, views only), else row numbers.
        Indexed once for all points, so work at one point costs its rows, not all rows. The
        index is keyed on the column array: change points by assigning a new one, not in place."""
        col = self.cols["point"]
        if self._by_point is None or self._by_point[0] is not col:
            self._by_point = (col, _rows_by_point(col, len(self.points)))
        rows = self._by_point[1]
        return rows[pidx] if 0 <= pidx < len(rows) else slice(0, 0)

    def esp_rows(self, at: slice | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, SPI << 32 | ESP sequence) of the ESP packets among rows ``at`` (a
        :meth:`point_rows` value; None: all), ascending. Indexed once, like :meth:`point_rows`
        (keyed on the cls, spi and esp_seq arrays; 16 bytes an ESP row, kept while the observations
        live): every tunnel hop and both directions look carriers up in it instead of scanning all
        rows again. A slice is taken as point_rows gives them: ascending, step 1."""
        cols = (self.cols["cls"], self.cols["spi"], self.cols["esp_seq"])
        if self._esp is None or any(a is not b for a, b in zip(self._esp[0], cols, strict=True)):
            rows = np.flatnonzero(cols[0] == PacketClass.ESP)
            keys = (cols[1][rows].astype(np.uint64) << np.uint64(32)) | cols[2][rows].astype(np.uint64)
            self._esp = (cols, rows, keys)
        _, rows, keys = self._esp
        if at is None:
            return rows, keys
        if isinstance(at, slice):  # a point's contiguous rows (step 1)
            lo, hi = np.searchsorted(rows, [at.start or 0, len(cols[0]) if at.stop is None else at.stop])
            return rows[lo:hi], keys[lo:hi]
        sel = np.zeros(len(cols[0]), bool)
        sel[at] = True
        keep = sel[rows]
        return rows[keep], keys[keep]

    def point_index(self, name: str) -> int:
        """Index of capture point ``name``; -1 if no file covered it."""
        try:
            return self.points.index(name)
        except ValueError:
            return -1


@dataclass(frozen=True)
class PointCounts:
    """A capture point's packets in a few numbers, taken before any row is left out."""

    packets: int
    ip: int  # of which IPv4 or IPv6
    ip_median_ns: int | None  # median timestamp of the IP packets (None: none)


    @classmethod
    def of(cls, packets: int, ip_ts_ns: np.ndarray) -> PointCounts:
        """From the packet count and the timestamps of the IP packets."""
        return cls(packets, len(ip_ts_ns), int(np.median(ip_ts_ns)) if len(ip_ts_ns) else None)


def count_rows(ipver: np.ndarray, ts_ns: np.ndarray) -> PointCounts:
    return PointCounts.of(len(ipver), ts_ns[ipver > 0])


def _rows_by_point(col: np.ndarray, n: int) -> list[slice | np.ndarray]:
    if len(col) == 0:
        return [slice(0, 0)] * n
    change = np.flatnonzero(col[1:] != col[:-1]) + 1
    starts = np.concatenate(([0], change)) if len(col) else change
    if len(distinct(col[starts])) == len(starts):  # every point's rows are one run
        stops = np.append(starts[1:], len(col))
        out: list[slice | np.ndarray] = [slice(0, 0)] * n
        for p, a, b in zip(col[starts].tolist(), starts.tolist(), stops.tolist(), strict=True):
            if 0 <= p < n:
                out[p] = slice(a, b)
        return out
    order = np.argsort(col, kind="stable")
    bounds = np.searchsorted(col[order], np.arange(n + 1))
    return [order[bounds[p] : bounds[p + 1]] for p in range(n)]


class Merger:
    """Merged columns allocated once (zeroed lazily by the kernel), filled part after part in
    order with their points and files renumbered. A part's columns are moved in: copied, then
    dropped from the part, so at no time do all parts and their merged copy exist together.
    :meth:`slot` hands out the next rows' column views, for a part to be built in place."""

    def __init__(self, total: int) -> None:
        self.cols = {k: np.zeros(total, dt) for k, dt in COLUMNS.items()}
        self.index: dict[str, int] = {}  # point name → its number in the merged set
        self.sources: list[str] = []
        self.at = 0

    def slot(self, n: int) -> dict[str, np.ndarray]:
        """Zeroed views of the next ``n`` rows (the part added next must have at most ``n``, at their head)."""
        return {k: v[self.at : self.at + n] for k, v in self.cols.items()}

    def add(self, part: Observations) -> None:
        numbers = [self.index.setdefault(p, len(self.index)) for p in part.points]
        check_numbers(self.index, self.sources + part.sources)
        pmap = np.array(numbers or [0], dtype=np.int16)
        fbase = len(self.sources)
        self.sources.extend(part.sources)
        rows = slice(self.at, self.at + len(part))
        for k in COLUMNS:
            dst, v = self.cols[k][rows], part.cols.pop(k)
            if k == "point" and len(v):
                dst[:] = pmap[v]
            elif k == "file" and len(v):
                dst[:] = v + fbase
            elif v.ctypes.data != dst.ctypes.data:  # not already built in place in its slot
                dst[:] = v
            del v  # freed now, before the next column is copied
        self.at = rows.stop

    def result(self) -> Observations:
        """The rows added (fewer than allocated where parts left rows out: the rest was never touched)."""
        cols = self.cols if self.at == len(self.cols["ts_ns"]) else {k: v[: self.at] for k, v in self.cols.items()}
        return Observations(cols, list(self.index), self.sources)


MAX_POINTS = np.iinfo(np.int16).max  # points and files are numbered in int16 columns


def check_numbers(points: Sized, files: Sized) -> None:
    """Points and files are numbered in int16 columns: refuse more."""
    if len(points) > MAX_POINTS or len(files) > MAX_POINTS:
        raise BadInput(f"more than {MAX_POINTS} capture points or files in one run: split the captures")
