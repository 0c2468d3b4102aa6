"""Identity extraction: packet bytes at known offsets → observation columns.

Pure and vectorised (no file I/O, no per-packet Python): the caller hands in
the capture file's bytes as one numpy ``uint8`` buffer plus per-record arrays
(frame offset, captured length, link type) and gets back one array per
observation column.

How it stays fast (measured at ~4-5 M packets/s on one core): records are
processed in chunks of :data:`CHUNK` so windows and temporaries stay in cache.
Per chunk, one fancy-index gather (a void view with a 1-byte stride) copies
the link-layer protocol field plus the first 64 bytes of L3 of every frame;
fields are strided, possibly unaligned big-endian views of that window, and
every column is computed densely for all rows and masked (index arrays only
for the rare parts: VLAN rows, IP options, tags). Rows with IP options get
their L4 re-gathered so L4 always sits at window offset 20. IKE headers and
the packets ICMP errors quote are collected across chunks and parsed once at
the end; the quoted packet goes through the same IPv4/L4 code.

Truncated snapshots: a field is filled only when the captured bytes (and the
IP total length, so Ethernet padding is never parsed as payload) cover all of
it; uncovered fields stay 0.
"""

from __future__ import annotations

import numpy as np

from tracer.model.distinct import distinct
from tracer.model.observations import COLUMNS, PacketClass
from tracer.model.tag import IKE_MAGIC, MAGIC, tag_check

try:  # the compiled extractor (setup.py builds it when a C compiler is there): same columns, one pass
    from tracer.analysis._extract import frames as _compiled
except ImportError:
    _compiled = None

# Link types (pcap LINKTYPE_* numbers) that extract understands.
LINKTYPES: dict[int, str] = {
    0: "NULL (BSD loopback)",
    1: "Ethernet",
    12: "raw IP",
    14: "raw IP",
    101: "raw IP",
    108: "LOOP (OpenBSD loopback)",
    113: "Linux cooked (SLL)",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked v2 (SLL2)",
}

# Zero bytes the buffer must extend past the last frame, so that fixed-size
# window gathers never index out of range (callers that pad save a copy).
PAD = 256

EXTRACTED: tuple[str, ...] = tuple(k for k in COLUMNS if k not in ("point", "file", "rec"))

CHUNK = 32768  # records per pass (window 2 MiB)
_W = 64  # IPv4 window: 20-byte header + 44 bytes of L4 (enough for IKE behind the non-ESP marker)
_L4 = 20  # L4 always sits here in the window (rows with options are re-gathered)
_AF_INET6 = np.array([10, 24, 28, 30], np.uint32)  # Linux, OpenBSD/NetBSD, FreeBSD, macOS
_TAG_MAGIC = int.from_bytes(MAGIC, "big")
_MAGIC_SUM = (_TAG_MAGIC >> 16) + (_TAG_MAGIC & 0xFFFF)  # the magic's two words of the check sum
_CHECK_XOR = tag_check(bytes(14))  # the words of an all-zero head sum to 0, leaving the xor constant
_KIND_OK = np.ones(256, bool)  # lookup: can this byte be a probe kind? (any registered one: not 0)
_KIND_OK[0] = False

# Link type → (offset of its protocol field or -1, offset of L3, what the field is).
_L2: dict[int, tuple[int, int, str]] = {
    1: (12, 14, "ethertype"),
    113: (14, 16, "ethertype"),
    276: (0, 20, "ethertype"),
    0: (0, 4, "null"),
    108: (0, 4, "loop"),
    12: (-1, 0, "ip"),
    14: (-1, 0, "ip"),
    101: (-1, 0, "ip"),
    228: (-1, 0, "ipv4"),
    229: (-1, 0, "ipv6"),
}


def gather_rows(buf: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``(len(starts), width)`` uint8 copy of ``buf[s:s+width]`` for every start.

    One gather of ``width``-byte items (a void view with a 1-byte stride) is
    several times faster than a 2-D index array. ``buf`` must extend at least
    ``width`` bytes past every start.
    """
    if len(starts) == 0:
        return np.zeros((0, width), np.uint8)
    items = np.ndarray((len(buf) - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
    return items[starts].view(np.uint8).reshape(-1, width)


def field(rows: np.ndarray, off: int, dt: str, li: np.ndarray | None = None) -> np.ndarray:
    """Native-order copy of the field of dtype ``dt`` (e.g. ``">u4"``) at ``off`` in every row (or rows ``li``).

    Read through a strided, possibly unaligned view of the 2-D uint8 ``rows``
    (whose last axis must be contiguous), so only the selected items are touched.
    """
    dtype = np.dtype(dt)
    view = rows[:, off : off + dtype.itemsize].view(dtype)[:, 0]
    return (view if li is None else view[li]).astype(dtype.newbyteorder("="))


Rows = np.ndarray | slice  # global row indices, or slice(None) for "all rows, in order"


class _Later:
    """Rare work collected across chunks and done once at the end (per-chunk numpy calls on a
    handful of rows would cost more in call overhead than in work): (global rows, byte offsets, caps)."""

    def __init__(self) -> None:
        self.quoted: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # IP header quoted by an ICMP error
        self.ike: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # IKE header


class _Out:
    """Views of one chunk of the output columns; ``rows`` are chunk-relative."""

    def __init__(self, cols: dict[str, np.ndarray], start: int, stop: int, later: _Later) -> None:
        self.cols = {k: v[start:stop] for k, v in cols.items()}
        self.start, self.stop, self.later = start, stop, later

    def put(self, name: str, rows: Rows, values: np.ndarray | int) -> None:
        self.cols[name][rows] = values

    def glob(self, rows: Rows) -> np.ndarray:
        """Chunk-relative rows → global row numbers."""
        if isinstance(rows, slice):
            return np.arange(self.start, self.stop)
        return rows + self.start


def _sel(mask: np.ndarray) -> np.ndarray | slice:
    """Indices where ``mask`` holds, or slice(None) when it holds everywhere (no gather, no copy)."""
    return slice(None) if mask.all() else np.flatnonzero(mask)


def _sub(rows: Rows, local: np.ndarray | slice) -> Rows:
    if isinstance(local, slice):
        return rows
    return local if isinstance(rows, slice) else rows[local]


def extract(
    buf: np.ndarray,
    data_off: np.ndarray,
    caplen: np.ndarray,
    linktype: int | np.ndarray,
    *,
    ts_ns: np.ndarray | None = None,
    wire_len: np.ndarray | None = None,
    out: dict[str, np.ndarray] | None = None,
    compiled: bool | None = None,
) -> dict[str, np.ndarray]:
    """Observation columns (all of ``COLUMNS`` except ``point``, ``file`` and ``rec``) for the given frames.

    ``buf``: uint8 array holding the frames (a whole capture file); frame ``i``
    is ``buf[data_off[i] : data_off[i] + caplen[i]]``; pad it with :data:`PAD`
    zero bytes past the last frame to save a copy. ``linktype``: one pcap link
    type for all frames or one per frame (see :data:`LINKTYPES`; others give
    non-IP rows). ``ts_ns``/``wire_len`` are passed through (default 0 and
    ``caplen``; arrays of the right dtype are not copied). ``l3_off`` is an
    offset into ``buf``. ``out``: zeroed arrays to fill instead of new ones (views of merged
    columns: no per-file copy). ``compiled``: True/False to insist on/refuse the compiled
    extractor (:data:`COMPILED`); None: it when it is there and the columns suit it.
    """
    data_off = np.asarray(data_off, np.int64)
    caplen = np.asarray(caplen)
    n = len(data_off)
    cols = {k: np.zeros(n, COLUMNS[k]) if out is None else out[k] for k in EXTRACTED}
    if ts_ns is not None:
        cols["ts_ns"][:] = ts_ns
    cols["wire_len"][:] = caplen if wire_len is None else wire_len
    if compiled is not False and _compiled_fills(buf, data_off, caplen, linktype, cols, insist=bool(compiled)):
        return cols
    if n == 0:
        return cols
    per_record = np.ndim(linktype) > 0
    lts = np.asarray(linktype)
    # Frames ending within PAD bytes of the buffer's end (a memory-mapped file is not padded) are
    # extracted from a small zero-padded copy of the tail, so window gathers never leave the buffer.
    tail = np.flatnonzero(data_off + caplen > len(buf) - PAD)
    main = n
    if len(tail):
        t_off = np.minimum(data_off[tail], len(buf))
        t_cap = np.clip(len(buf) - t_off, 0, caplen[tail])  # frames past the buffer's end: cut
        if tail[0] == n - len(tail):  # the usual case: the last few records of the file
            main = int(tail[0])
        else:
            data_off, caplen = data_off.copy(), caplen.copy()
            data_off[tail] = caplen[tail] = 0
    # Chunks keep the window and every temporary in cache (and reuse their memory):
    # measured ~2x faster than whole-file arrays at 1M packets.
    later = _Later()
    for start in range(0, main, CHUNK):
        stop = min(main, start + CHUNK)
        lt = lts[start:stop] if per_record else linktype
        _chunk(buf, data_off[start:stop], caplen[start:stop].astype(np.int32), lt, _Out(cols, start, stop, later))
    everything = _Out(cols, 0, n, later)
    if later.quoted:  # before IKE: quoted IKE packets add to later.ike
        rows, at, cap = (np.concatenate(c) for c in zip(*later.quoted, strict=True))
        _ipv4(buf, gather_rows(buf, at, _W), at, cap, rows, everything, inner=True)
    if later.ike:
        _ike(buf, *(np.concatenate(c) for c in zip(*later.ike, strict=True)), cols)
    if len(tail):
        lo = int(t_off.min())
        small = np.zeros(len(buf) - lo + PAD, np.uint8)
        small[: len(buf) - lo] = buf[lo:]
        sub = extract(small, t_off - lo, t_cap, lts[tail] if per_record else linktype, compiled=compiled)
        for k, v in sub.items():
            if k not in ("ts_ns", "wire_len"):
                cols[k][tail] = v
        cols["l3_off"][tail[sub["ipver"] > 0]] += lo
    return cols


COMPILED = _compiled is not None  # is the compiled extractor installed?
# Compiled extraction's output columns, in the order its C code numbers them.
_COMPILED_COLUMNS = (
    "l3_off", "ipver", "src", "dst", "proto", "ip_len", "ipid", "ttl", "df", "frag", "mf", "sport", "dport",
    "l4_hash", "cls", "icmp_type", "icmp_code", "icmp_id", "icmp_seq", "tag_kind", "tag_run", "tag_seq", "spi",
    "esp_seq", "udp_encap", "ike_spi_i", "ike_spi_r", "ike_exch", "ike_flags", "inner_src", "inner_dst",
    "inner_proto", "inner_id", "inner_seq", "mtu",
)
_COMPILED_PARAMS = (
    *(int(c) for c in (PacketClass.ECHO_REQUEST, PacketClass.ECHO_REPLY, PacketClass.ICMP_ERROR, PacketClass.UDP,
                       PacketClass.TCP, PacketClass.ESP, PacketClass.NAT_KEEPALIVE, PacketClass.IKE,
                       PacketClass.FRAGMENT)),
    _TAG_MAGIC, _MAGIC_SUM, _CHECK_XOR, IKE_MAGIC,
)


def _compiled_fills(buf: np.ndarray, data_off: np.ndarray, caplen: np.ndarray, linktype: int | np.ndarray,
                    cols: dict[str, np.ndarray], *, insist: bool) -> bool:
    """Fill ``cols`` with the compiled extractor, if it is installed and every column is a
    contiguous array of its own dtype (views of merged columns are); False: numpy's turn."""
    outs = tuple(cols[k] for k in _COMPILED_COLUMNS)
    fits = _compiled is not None and all(v.flags.c_contiguous and v.dtype == COLUMNS[k]
                                         for k, v in zip(_COMPILED_COLUMNS, outs, strict=True))
    if not fits:
        if insist:
            raise RuntimeError("compiled extraction is not installed" if _compiled is None
                               else "compiled extraction needs contiguous columns of their own dtypes")
        return False
    if caplen.dtype not in (np.uint32, np.int64):
        caplen = caplen.astype(np.int64)
    # A link type is 16 bits; anything else is one no reader knows (-1), not the low bits of it.
    per_record = np.ndim(linktype) > 0
    lts = None
    if per_record:
        lts = np.asarray(linktype)
        lts = np.where((lts >= 0) & (lts <= 0xFFFF), lts, -1).astype(np.int32)
    one = -1 if per_record or not 0 <= int(linktype) <= 0xFFFF else int(linktype)
    _compiled(np.ascontiguousarray(buf, np.uint8), np.ascontiguousarray(data_off), np.ascontiguousarray(caplen),
              one, lts, outs, _COMPILED_PARAMS)
    return True


def _chunk(buf: np.ndarray, data_off: np.ndarray, caplen: np.ndarray, linktype: int | np.ndarray, out: _Out) -> None:
    if np.ndim(linktype) == 0:
        _frames(buf, data_off, caplen, int(linktype), slice(None), out)
        return
    for v in distinct(linktype).tolist():
        rows = np.flatnonzero(linktype == v)
        _frames(buf, data_off[rows], caplen[rows], v, rows, out)


def _frames(buf: np.ndarray, off: np.ndarray, cap: np.ndarray, linktype: int, rows: Rows, out: _Out) -> None:
    """Frames of one link type: find L3, then parse IP.

    One gather fetches the link-layer protocol field together with the first
    64 bytes after the (untagged) L2 header; VLAN-tagged rows are re-gathered.
    """
    spec = _L2.get(linktype)
    if spec is None:
        return  # not a link type we read: non-IP rows
    proto_at, l3_at, kind = spec
    start = l3_at if proto_at < 0 else proto_at
    skip = l3_at - start  # the window starts this far into each gathered row
    big = gather_rows(buf, off + start, skip + _W)
    l3: np.ndarray | int = l3_at
    if kind == "ethertype":
        et = field(big, 0, ">u2")
        et[cap < proto_at + 2] = 0
        for _ in range(2):  # 802.1Q, QinQ: each tag is a TCI plus the next ethertype
            tagged = (et == 0x8100) | (et == 0x88A8) | (et == 0x9100)
            if not tagged.any():
                break
            l3 = np.broadcast_to(l3, et.shape).copy()
            t = np.flatnonzero(tagged & (cap >= l3 + 4))
            et[tagged] = 0
            l3[t] += 4
            big[t] = gather_rows(buf, off[t] + l3[t] - skip, skip + _W)
            et[t] = field(big[t], skip - 2, ">u2")
        want = np.where(et == 0x0800, 4, np.where(et == 0x86DD, 6, 0))
    elif kind in ("null", "loop"):
        fam = field(big, 0, ">u4" if kind == "loop" else "<u4")
        if kind == "null":  # host order of the capturing machine: either
            fam = np.where(fam > 0xFFFF, fam.byteswap(), fam)
        want = np.where(cap < 4, 0, np.where(fam == 2, 4, np.where(np.isin(fam, _AF_INET6), 6, 0)))
    else:
        want = np.full(len(off), {"ipv4": 4, "ipv6": 6}.get(kind, 5))  # 5: either version
    w = big[:, skip:]
    avail = cap - l3
    ver = w[:, 0] >> 4
    is6 = (ver == 6) & ((want == 6) | (want == 5)) & (avail >= 40)
    if is6.any():
        k6 = np.flatnonzero(is6)
        out.put("ipver", _sub(rows, k6), 6)
        out.put("l3_off", _sub(rows, k6), (off + l3)[k6])
    k4 = _sel((ver == 4) & ((want == 4) | (want == 5)) & (avail >= 20))
    if isinstance(k4, slice):
        _ipv4(buf, w, off + l3, avail, rows, out, inner=False)
    elif len(k4):
        l3abs = off[k4] + (l3[k4] if isinstance(l3, np.ndarray) else l3)
        _ipv4(buf, w[k4], l3abs, avail[k4], _sub(rows, k4), out, inner=False)


def _ipv4(buf: np.ndarray, w: np.ndarray, l3abs: np.ndarray, avail: np.ndarray, rows: Rows, out: _Out, *, inner: bool) -> None:
    """Parse the IPv4 packets whose first bytes are the rows of window ``w`` into ``rows``.

    Dense: every field is computed for every row from a few strided big-endian
    word reads, then masked; index arrays only for the rare parts (IP options,
    IKE, tags, quoted packets). ``avail``: captured bytes from the IP header on.
    ``inner``: the packet quoted in an ICMP error; its header goes to the
    ``inner_*`` columns and its identity (tag, SPI, IKE SPI) to the shared ones.
    """
    vihl = w[:, 0].astype(np.int32)
    ihl = (vihl & 0x0F) * 4
    k = _sel(((vihl >> 4) == 4) & (ihl >= 20) & (avail >= ihl))
    if not isinstance(k, slice):
        w, ihl, avail, l3abs, rows = w[k], ihl[k], avail[k], l3abs[k], _sub(rows, k)
    if len(w) == 0:
        return
    word0, word1 = field(w, 0, ">u4"), field(w, 4, ">u4")
    ip_len = (word0 & 0xFFFF).astype(np.int32)
    proto = w[:, 9].copy()
    frag = (word1 & 0x1FFF).astype(np.uint16)
    if inner:
        lim = avail  # the quote is cut short: its total length describes the original
        out.put("inner_src", rows, field(w, 12, ">u4"))
        out.put("inner_dst", rows, field(w, 16, ">u4"))
        out.put("inner_proto", rows, proto)
    else:
        lim = np.where(ip_len >= ihl, np.minimum(avail, ip_len), avail)
        out.put("ipver", rows, np.full(len(w), 4, np.uint8))
        out.put("l3_off", rows, l3abs)
        out.put("src", rows, field(w, 12, ">u4"))
        out.put("dst", rows, field(w, 16, ">u4"))
        out.put("proto", rows, proto)
        out.put("ip_len", rows, ip_len)
        out.put("ipid", rows, word1 >> 16)
        out.put("ttl", rows, w[:, 8])
        out.put("df", rows, (word1 & 0x4000) != 0)
        out.put("mf", rows, (word1 & 0x2000) != 0)
        out.put("frag", rows, frag)
    if (ihl > 20).any():  # move L4 to window offset 20 for rows with IP options
        opt = np.flatnonzero(ihl > 20)
        w[opt, _L4:] = gather_rows(buf, l3abs[opt] + ihl[opt], _W - _L4)
    cap = lim - ihl  # L4 bytes that may be read
    L = _L4Words(w, cap, proto, frag == 0)
    ctx = _Ctx(buf, w, rows, cap, out, inner, l3abs + ihl)
    cls = np.zeros(len(w), np.uint8)
    echo, err = ctx.icmp(L, cls)
    ports = ctx.udp_tcp_esp(L, cls)
    # Echo id/seq and ports share the two id columns of a quoted packet.
    ident, seq = np.where(echo, L.w1 >> 16, 0), np.where(echo, L.w1 & 0xFFFF, 0)
    sport, dport = np.where(ports, L.w0 >> 16, 0), np.where(ports, L.w0 & 0xFFFF, 0)
    if inner:
        out.put("inner_id", rows, ident | sport)
        out.put("inner_seq", rows, seq | dport)
        return
    out.put("icmp_id", rows, ident)
    out.put("icmp_seq", rows, seq)
    out.put("sport", rows, sport)
    out.put("dport", rows, dport)
    out.put("l4_hash", rows, _l4_hash(L, cap, (frag == 0) & (cap >= np.minimum(16, ip_len - ihl))))
    cls[frag > 0] = PacketClass.FRAGMENT
    out.put("cls", rows, cls)
    # Last, so the outer columns written above are not overwritten: the packet an ICMP error
    # quotes, its IP header right after the 8-byte ICMP header.
    q = np.flatnonzero(err & (cap >= 8 + 20))
    if len(q):
        out.later.quoted.append((out.glob(_sub(rows, q)), l3abs[q] + ihl[q] + 8, cap[q] - 8))


_MIX = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77), np.uint32(0xC2B2AE3D), np.uint32(0x27D4EB2F))


def _l4_hash(L: _L4Words, cap: np.ndarray, first: np.ndarray) -> np.ndarray:
    """A hash of the first L4 bytes that no router changes, for telling untagged packets apart
    across hops: TCP sequence, acknowledgement, offset, flags and window (bytes 4-15); UDP
    length and the first 8 payload bytes, not the checksum (ESP-in-UDP: SPI and sequence);
    any other protocol its first 16 bytes, except ICMP's checksum. Bytes past the packet's
    end count as 0; a snapshot that cuts into the bytes hashed gives no hash (0), never a
    partial one. 32-bit multiply-xor: a few operations per row, the packets' other fields
    (addresses, IP ID, ports) do most of the telling apart."""
    words = [np.where(L.udp | L.tcp, 0, np.where(L.icmp, L.w0 & 0xFFFF0000, L.w0)).astype(np.uint32),  # no ports
             np.where(L.udp, L.w1 & 0xFFFF0000, L.w1).astype(np.uint32), L.w2, L.w3]  # NAT rewrites UDP checksums
    short = np.flatnonzero(cap < 16)  # few rows: bytes past the packet's end are zeroed there only
    for i, w in enumerate(words):
        if len(short):
            covered = np.clip(cap[short] - 4 * i, 0, 4).astype(np.uint64)
            w = w.copy()
            w[short] &= ((np.uint64(0xFFFFFFFF00000000) >> (covered * np.uint64(8))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        words[i] = w * _MIX[i]
    h = words[0] ^ words[1] ^ words[2] ^ words[3]
    h ^= h >> np.uint32(16)
    h[~first] = 0
    return h


class _L4Words:
    """The first 16 L4 bytes of every row as four native big-endian words, plus protocol masks."""

    def __init__(self, w: np.ndarray, cap: np.ndarray, proto: np.ndarray, first: np.ndarray) -> None:
        self.w0, self.w1, self.w2, self.w3 = (field(w, _L4 + 4 * i, ">u4") for i in range(4))
        self.icmp = first & (proto == 1) & (cap >= 1)
        self.udp = first & (proto == 17)
        self.tcp = first & (proto == 6)
        self.esp = first & (proto == 50)


class _Ctx:
    def __init__(
        self, buf: np.ndarray, w: np.ndarray, rows: Rows, cap: np.ndarray, out: _Out, inner: bool, l4abs: np.ndarray
    ) -> None:
        self.buf, self.w, self.rows, self.cap, self.out, self.inner, self.l4abs = buf, w, rows, cap, out, inner, l4abs

    def icmp(self, L: _L4Words, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICMP type/code, frag-needed MTU and probe tag; sets ``cls``; returns the echo (id/seq covered) and error masks."""
        cap, out, rows = self.cap, self.out, self.rows
        typ = (L.w0 >> 24).astype(np.uint8)
        code = ((L.w0 >> 16) & 0xFF).astype(np.uint8)
        is_echo = L.icmp & ((typ == 8) | (typ == 0))
        echo = is_echo & (cap >= 8)
        err = L.icmp & ((typ == 3) | (typ == 11) | (typ == 12))
        if not self.inner:
            out.put("icmp_type", rows, np.where(L.icmp, typ, 0))
            out.put("icmp_code", rows, np.where(L.icmp & (cap >= 2), code, 0))
            cls[is_echo & (typ == 8)] = PacketClass.ECHO_REQUEST
            cls[is_echo & (typ == 0)] = PacketClass.ECHO_REPLY
            cls[err] = PacketClass.ICMP_ERROR
            out.put("mtu", rows, np.where(L.icmp & (typ == 3) & (code == 4) & (cap >= 8), L.w1 & 0xFFFF, 0))
        # The 16-byte probe tag at ICMP offset 8: magic, then check word and kind on the few candidates.
        t = np.flatnonzero(echo & (cap >= 8 + 16) & (L.w2 == _TAG_MAGIC))
        if len(t):
            b4, b5 = L.w3[t], field(self.w, _L4 + 16, ">u4", t)
            b6 = field(self.w, _L4 + 20, ">u4", t)
            words = _MAGIC_SUM + (b4 >> 16) + (b4 & 0xFFFF) + (b5 >> 16) + (b5 & 0xFFFF) + (b6 >> 16)
            kind = (b4 >> 24).astype(np.uint8)
            ok = (((words & 0xFFFF) ^ _CHECK_XOR) == (b6 & 0xFFFF)) & _KIND_OK[kind]
            if ok.any():
                i = np.flatnonzero(ok)
                run, seq = ((b4[i] & 0xFFFF) << 16) | (b5[i] >> 16), ((b5[i] & 0xFFFF) << 16) | (b6[i] >> 16)
                _tag(out.cols, _sub(rows, t[i]), kind[i], run, seq)
        return echo, err

    def udp_tcp_esp(self, L: _L4Words, cls: np.ndarray) -> np.ndarray:
        """Ports; ESP (raw, or in UDP 4500 after the non-ESP check); NAT-T keepalives; IKE on 500 and 4500."""
        cap, out, rows, inner = self.cap, self.out, self.rows, self.inner
        ports = (L.udp | L.tcp) & (cap >= 4)
        sport, dport = L.w0 >> 16, L.w0 & 0xFFFF
        ulen = np.where(cap >= 6, L.w1 >> 16, 0).astype(np.int32)
        plen = np.where(ulen >= 8, ulen - 8, cap - 8)  # UDP payload length of the packet as sent
        natt = L.udp & (cap >= 4) & ((sport == 4500) | (dport == 4500))
        keepalive = natt & (plen == 1) & (cap >= 9) & ((L.w2 >> 24) == 0xFF)
        marker = natt & (plen >= 4 + 28) & (cap >= 12) & (L.w2 == 0)
        espu = natt & ~keepalive & (cap >= 12) & (L.w2 != 0) & (plen >= 8)
        ike500 = L.udp & (cap >= 4) & ~natt & ((sport == 500) | (dport == 500)) & (plen >= 28)
        spi = np.where(L.esp & (cap >= 4), L.w0, np.where(espu, L.w2, 0))
        seq = np.where(L.esp & (cap >= 8), L.w1, np.where(espu & (cap >= 16), L.w3, 0))
        if inner:  # only rows with an ESP identity: the ICMP part already wrote tags for quoted echoes
            e = np.flatnonzero(L.esp | espu)
            if len(e):
                g = _sub(rows, e)
                out.cols["spi"][g], out.cols["esp_seq"][g], out.cols["udp_encap"][g] = spi[e], seq[e], espu[e]
        else:
            out.put("spi", rows, spi)
            out.put("esp_seq", rows, seq)
            out.put("udp_encap", rows, espu)
            cls[L.udp] = PacketClass.UDP
            cls[L.tcp] = PacketClass.TCP
            cls[L.esp | espu] = PacketClass.ESP
            cls[keepalive] = PacketClass.NAT_KEEPALIVE
            cls[marker | ike500] = PacketClass.IKE
        for mask, at in ((ike500, 8), (marker, 12)):
            if mask.any():
                li = np.flatnonzero(mask)
                out.later.ike.append((out.glob(_sub(rows, li)), self.l4abs[li] + at, cap[li] - at))
        return ports


def _tag(cols: dict[str, np.ndarray], rows: Rows, kind: np.ndarray, run: np.ndarray, seq: np.ndarray) -> None:
    cols["tag_kind"][rows] = kind
    cols["tag_run"][rows] = run
    cols["tag_seq"][rows] = seq


def _ike(buf: np.ndarray, rows: np.ndarray, at: np.ndarray, cap: np.ndarray, cols: dict[str, np.ndarray]) -> None:
    """IKE headers at byte offsets ``at`` (``cap`` bytes readable): SPIs, exchange type, flags,
    and the tracer tag in the initiator SPI."""
    h = gather_rows(buf, at, 20)
    spi_i = field(h, 0, ">u8") * (cap >= 8)
    cols["ike_spi_i"][rows] = spi_i
    cols["ike_spi_r"][rows] = field(h, 8, ">u8") * (cap >= 16)
    cols["ike_exch"][rows] = h[:, 18] * (cap >= 20)
    cols["ike_flags"][rows] = h[:, 19] * (cap >= 20)
    kind = (spi_i >> np.uint64(48)).astype(np.uint8)
    t = np.flatnonzero(((spi_i >> np.uint64(56)) == IKE_MAGIC) & _KIND_OK[kind])
    if len(t):
        s = spi_i[t]
        run = ((s >> np.uint64(16)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        _tag(cols, rows[t], kind[t], run, (s & np.uint64(0xFFFF)).astype(np.uint32))
