"""Identity extraction: packet bytes at known offsets → observation columns.

Pure and vectorised (no file I/O, no per-packet Python): the caller hands in
the capture file's bytes as one numpy ``uint8`` buffer plus per-record arrays
(frame offset, captured length, link type) and gets back one array per
observation column.

How it stays fast: every step works on the subset of rows it applies to.
For the IPv4 rows one 64-byte window starting at the IP header is copied out
of the buffer with a single fancy-index gather (a ``V64`` view with a 1-byte
stride); every field is then a strided, possibly unaligned big-endian view at
a fixed offset of that window, converted to native order. Rows with IP
options get the L4 part of their window re-gathered from the real L4 offset,
so L4 fields always sit at window offset 20. ICMP errors run the same IPv4/L4
code on the quoted packet.

Truncated snapshots: a field is filled only when the captured bytes (and the
IP total length, so Ethernet padding is never parsed as payload) cover all of
it; uncovered fields stay 0.
"""

from __future__ import annotations

import numpy as np

from tracer.model.observations import COLUMNS, PacketClass
from tracer.model.tag import IKE_MAGIC, MAGIC, ProbeKind, tag_check

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

EXTRACTED: tuple[str, ...] = tuple(k for k in COLUMNS if k not in ("point", "file"))

_W = 64  # IPv4 window: 20-byte header + 44 bytes of L4 (enough for IKE behind the non-ESP marker)
_L4 = 20  # L4 always sits here in the window (rows with options are re-gathered)
_VLAN = np.array([0x8100, 0x88A8, 0x9100], np.uint16)
_AF_INET6 = np.array([10, 24, 28, 30], np.uint32)  # Linux, OpenBSD/NetBSD, FreeBSD, macOS
_TAG_MAGIC = int.from_bytes(MAGIC, "big")
_CHECK_XOR = tag_check(bytes(14))  # the words of an all-zero head sum to 0, leaving the xor constant
_KINDS = np.array(sorted(int(k) for k in ProbeKind), np.uint8)
_ICMP_ERRORS = np.array([3, 11, 12], np.uint8)

# (offset of the ethertype/protocol field, header length) for the cooked link types.
_ETHERTYPE_AT = {1: (12, 14), 113: (14, 16), 276: (0, 20)}


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

    ``rows`` must be C-contiguous; the field is read through a strided,
    possibly unaligned view, so only the selected items are touched.
    """
    dtype = np.dtype(dt)
    if rows.shape[0] == 0:
        return np.zeros(0, dtype.newbyteorder("="))
    view = np.ndarray((rows.shape[0],), dtype=dtype, buffer=rows, offset=off, strides=(rows.shape[1],))
    return (view if li is None else view[li]).astype(dtype.newbyteorder("="))


def values_at(buf: np.ndarray, idx: np.ndarray, dt: str) -> np.ndarray:
    """Native-order values of dtype ``dt`` at arbitrary byte offsets ``idx`` (one gather)."""
    dtype = np.dtype(dt)
    items = np.ndarray((len(buf) - dtype.itemsize + 1,), dtype=dtype, buffer=buf, strides=(1,))
    return items[idx].astype(dtype.newbyteorder("="))


class _Out:
    """The output columns plus scatter helpers; ``rows`` is a global index array or ``slice(None)``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.cols = {k: np.zeros(n, COLUMNS[k]) for k in EXTRACTED}

    def put(self, name: str, rows: np.ndarray | slice, values: np.ndarray | int, mask: np.ndarray | None = None) -> None:
        if mask is not None:
            values = np.where(mask, values, 0)
        self.cols[name][rows] = values


def _sub(rows: np.ndarray | slice, local: np.ndarray) -> np.ndarray:
    return local if isinstance(rows, slice) else rows[local]


def extract(
    buf: np.ndarray,
    data_off: np.ndarray,
    caplen: np.ndarray,
    linktype: int | np.ndarray,
    *,
    ts_ns: np.ndarray | None = None,
    wire_len: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Observation columns (all of ``COLUMNS`` except ``point`` and ``file``) for the given frames.

    ``buf``: uint8 array holding the frames (a whole capture file); frame ``i``
    is ``buf[data_off[i] : data_off[i] + caplen[i]]``. ``linktype``: one pcap
    link type for all frames or one per frame (see :data:`LINKTYPES`; others
    give non-IP rows). ``ts_ns``/``wire_len`` are copied through (default 0 and
    ``caplen``). ``l3_off`` is an offset into ``buf``.
    """
    data_off = np.asarray(data_off, np.int64)
    caplen = np.asarray(caplen, np.int64)
    n = len(data_off)
    out = _Out(n)
    if ts_ns is not None:
        out.cols["ts_ns"][:] = ts_ns
    out.cols["wire_len"][:] = caplen if wire_len is None else wire_len
    if n == 0:
        return out.cols
    end = int((data_off + caplen).max())
    if len(buf) < end + PAD:  # callers should pad; never read out of range if they did not
        buf = np.concatenate([buf[: min(len(buf), end)], np.zeros(end + PAD - min(len(buf), end), np.uint8)])

    l3, want = _link_layer(buf, data_off, caplen, linktype)
    avail = caplen - l3
    cand = np.flatnonzero((l3 >= 0) & (avail >= 1))
    if len(cand) == 0:
        return out.cols
    l3abs = data_off[cand] + l3[cand]
    nib = buf[l3abs] >> 4
    w = want[cand]
    is4 = (nib == 4) & (w != 6) & (avail[cand] >= 20)
    is6 = (nib == 6) & (w != 4) & (avail[cand] >= 40)
    if is6.any():
        r6 = cand[is6]
        out.put("ipver", r6, 6)
        out.put("l3_off", r6, l3abs[is6])
    r4 = cand[is4]
    rows: np.ndarray | slice = slice(None) if len(r4) == n else r4
    _ipv4(buf, l3abs[is4], avail[r4], rows, out, inner=False)
    return out.cols


def _link_layer(
    buf: np.ndarray, off: np.ndarray, caplen: np.ndarray, linktype: int | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: L3 offset relative to the frame (-1: not IP) and the IP version the L2 header announces (0: either)."""
    n = len(off)
    l3 = np.full(n, -1, np.int64)
    want = np.zeros(n, np.uint8)
    if np.ndim(linktype) == 0:
        groups: list[tuple[int, np.ndarray | slice]] = [(int(linktype), slice(None))]
    else:
        lt = np.asarray(linktype)
        groups = [(int(v), np.flatnonzero(lt == v)) for v in np.unique(lt)]
    for lt_, rows in groups:
        o, c = off[rows], caplen[rows]
        g_l3 = np.full(len(o), -1, np.int64)
        g_want = np.zeros(len(o), np.uint8)
        if lt_ in _ETHERTYPE_AT:
            et_at, hlen = _ETHERTYPE_AT[lt_]
            ok = c >= et_at + 2
            et = np.where(ok, values_at(buf, o + et_at, ">u2"), 0)
            g_hlen = np.full(len(o), hlen, np.int64)
            for _ in range(2):  # 802.1Q, QinQ: each tag is TCI + the next ethertype
                tagged = np.isin(et, _VLAN) & (c >= g_hlen + 4)
                if not tagged.any():
                    break
                t = np.flatnonzero(tagged)
                et[t] = values_at(buf, o[t] + g_hlen[t] + 2, ">u2")
                g_hlen[t] += 4
            v4, v6 = et == 0x0800, et == 0x86DD
            g_l3 = np.where(v4 | v6, g_hlen, -1)
            g_want = np.where(v4, 4, 6).astype(np.uint8)
        elif lt_ in (0, 108):
            ok = c >= 4
            fam = values_at(buf, o, ">u4" if lt_ == 108 else "<u4")
            if lt_ == 0:  # host order of the capturing machine: either
                fam = np.where(fam > 0xFFFF, fam.byteswap(), fam)
            v4, v6 = ok & (fam == 2), ok & np.isin(fam, _AF_INET6)
            g_l3 = np.where(v4 | v6, 4, -1)
            g_want = np.where(v4, 4, 6).astype(np.uint8)
        elif lt_ in (12, 14, 101, 228, 229):
            g_l3[:] = 0
            g_want[:] = {228: 4, 229: 6}.get(lt_, 0)
        l3[rows] = g_l3
        want[rows] = g_want
    return l3, want


def _ipv4(buf: np.ndarray, l3abs: np.ndarray, avail: np.ndarray, rows: np.ndarray | slice, out: _Out, *, inner: bool) -> None:
    """Parse IPv4 at ``l3abs`` (``avail`` captured bytes from there) into ``rows``.

    ``inner``: the packet quoted in an ICMP error; its header goes to the
    ``inner_*`` columns and its identity (tag, SPI, IKE SPI) to the shared ones.
    """
    w = gather_rows(buf, l3abs, _W)
    vihl = w[:, 0]
    ihl = (vihl & 0x0F).astype(np.int64) * 4
    ok = ((vihl >> 4) == 4) & (ihl >= 20) & (avail >= ihl)
    if not ok.all():
        k = np.flatnonzero(ok)
        w, ihl, avail, l3abs, rows = w[k], ihl[k], avail[k], l3abs[k], _sub(rows, k)
    if len(ihl) == 0:
        return
    ip_len = field(w, 2, ">u2").astype(np.int64)
    proto = w[:, 9].copy()
    flags = field(w, 6, ">u2")
    frag = flags & 0x1FFF
    if inner:
        lim = avail  # the quote is cut short: its total length describes the original
        out.put("inner_src", rows, field(w, 12, ">u4"))
        out.put("inner_dst", rows, field(w, 16, ">u4"))
        out.put("inner_proto", rows, proto)
    else:
        lim = np.where(ip_len >= ihl, np.minimum(avail, ip_len), avail)
        out.put("ipver", rows, 4)
        out.put("l3_off", rows, l3abs)
        out.put("src", rows, field(w, 12, ">u4"))
        out.put("dst", rows, field(w, 16, ">u4"))
        out.put("proto", rows, proto)
        out.put("ip_len", rows, ip_len)
        out.put("ipid", rows, field(w, 4, ">u2"))
        out.put("df", rows, (flags & 0x4000) != 0)
        out.put("mf", rows, (flags & 0x2000) != 0)
        out.put("frag", rows, frag)
        cls = np.where(frag > 0, PacketClass.FRAGMENT, PacketClass.OTHER).astype(np.uint8)
    opt = np.flatnonzero(ihl > 20)
    if len(opt):  # move L4 to window offset 20
        w[opt, _L4:] = gather_rows(buf, l3abs[opt] + ihl[opt], _W - _L4)
    l4cap = lim - ihl  # L4 bytes we may read
    first = frag == 0
    ctx = _L4Ctx(buf, w, rows, l4cap, l3abs + ihl, out, inner)
    for p, handler in ((1, ctx.icmp), (17, ctx.udp), (6, ctx.tcp), (50, ctx.esp)):
        li = np.flatnonzero(first & (proto == p))
        if len(li):
            c = handler(li)
            if not inner:
                cls[li] = c
    if not inner:
        out.put("cls", rows, cls)


class _L4Ctx:
    """L4 parsers for one batch of IPv4 rows; each returns the packet class of its rows ``li``."""

    def __init__(
        self, buf: np.ndarray, w: np.ndarray, rows: np.ndarray | slice, l4cap: np.ndarray, l4abs: np.ndarray,
        out: _Out, inner: bool,
    ) -> None:
        self.buf, self.w, self.rows, self.l4cap, self.l4abs, self.out, self.inner = buf, w, rows, l4cap, l4abs, out, inner

    def f(self, off: int, dt: str, li: np.ndarray) -> np.ndarray:
        """Field at L4 offset ``off`` for rows ``li``."""
        return field(self.w, _L4 + off, dt, li)

    def icmp(self, li: np.ndarray) -> np.ndarray:
        cap, out, g = self.l4cap[li], self.out, _sub(self.rows, li)
        typ = np.where(cap >= 1, self.w[li, _L4], 255)  # 255: unknown (no ICMP type is 255)
        cls = np.full(len(li), PacketClass.OTHER, np.uint8)
        echo = ((typ == 8) | (typ == 0)) & (cap >= 8)
        err = np.isin(typ, _ICMP_ERRORS)
        if not self.inner:
            out.put("icmp_type", g, typ, cap >= 1)
            out.put("icmp_code", g, self.w[li, _L4 + 1], cap >= 2)
            cls[typ == 8] = PacketClass.ECHO_REQUEST
            cls[typ == 0] = PacketClass.ECHO_REPLY
            cls[err] = PacketClass.ICMP_ERROR
        e = np.flatnonzero(echo)
        if len(e):
            le, ge = li[e], _sub(g, e)
            out.put("inner_id" if self.inner else "icmp_id", ge, self.f(4, ">u2", le))
            out.put("inner_seq" if self.inner else "icmp_seq", ge, self.f(6, ">u2", le))
            self.echo_tag(le, ge)
        if not self.inner:
            m = np.flatnonzero((typ == 3) & (self.w[li, _L4 + 1] == 4) & (cap >= 8))
            if len(m):
                out.put("mtu", _sub(g, m), self.f(6, ">u2", li[m]))
            # The quoted packet: IP header right after the 8-byte ICMP header.
            q = np.flatnonzero(err & (cap >= 8 + 20))
            if len(q):
                lq = li[q]
                _ipv4(self.buf, self.l4abs[lq] + 8, self.l4cap[lq] - 8, _sub(g, q), out, inner=True)
        return cls

    def echo_tag(self, li: np.ndarray, g: np.ndarray) -> None:
        """The 16-byte probe tag at ICMP offset 8, validated by magic, check word and kind."""
        k = np.flatnonzero(self.l4cap[li] >= 8 + 16)
        if len(k) == 0:
            return
        li, g = li[k], g[k]
        t = np.ascontiguousarray(self.w[li, _L4 + 8 : _L4 + 24])  # (m, 16) copy
        magic = field(t, 0, ">u4")
        words = t.view(">u2").astype(np.uint32)
        check = ((words[:, :7].sum(axis=1) & 0xFFFF) ^ _CHECK_XOR) == words[:, 7]
        kind = t[:, 4]
        ok = (magic == _TAG_MAGIC) & check & np.isin(kind, _KINDS)
        if ok.any():
            i = np.flatnonzero(ok)
            gi = g[i]
            self.out.put("tag_kind", gi, kind[i])
            self.out.put("tag_run", gi, field(t[i], 6, ">u4"))
            self.out.put("tag_seq", gi, field(t[i], 10, ">u4"))

    def udp(self, li: np.ndarray) -> np.ndarray:
        cap, out, g = self.l4cap[li], self.out, _sub(self.rows, li)
        cls = np.full(len(li), PacketClass.UDP, np.uint8)
        has = cap >= 4
        sport = np.where(has, self.f(0, ">u2", li), 0)
        dport = np.where(has, self.f(2, ">u2", li), 0)
        out.put("inner_id" if self.inner else "sport", g, sport)
        out.put("inner_seq" if self.inner else "dport", g, dport)
        ulen = np.where(cap >= 6, self.f(4, ">u2", li).astype(np.int64), 0)
        plen = np.where(ulen >= 8, ulen - 8, cap - 8)  # UDP payload length of the packet as sent
        natt = (sport == 4500) | (dport == 4500)
        ike500 = ~natt & ((sport == 500) | (dport == 500))
        if natt.any():
            first4 = np.where(cap >= 12, self.f(8, ">u4", li), 1)  # 1: unknown, not a marker
            keep = natt & (plen == 1) & (cap >= 9) & (self.w[li, _L4 + 8] == 0xFF)
            cls[keep] = PacketClass.NAT_KEEPALIVE
            marker = natt & (plen >= 4 + 28) & (cap >= 12) & (first4 == 0)
            esp = natt & ~keep & (cap >= 12) & (first4 != 0) & (plen >= 8)
            cls[esp] = PacketClass.ESP
            e = np.flatnonzero(esp)
            if len(e):
                ge = _sub(g, e)
                out.put("spi", ge, first4[e])
                out.put("esp_seq", ge, self.f(12, ">u4", li[e]), cap[e] >= 16)
                out.put("udp_encap", ge, True)
            m = np.flatnonzero(marker)
            if len(m):
                cls[m] = PacketClass.IKE
                self.ike(li[m], _sub(g, m), 12)
        i5 = np.flatnonzero(ike500 & (plen >= 28))
        if len(i5):
            cls[i5] = PacketClass.IKE
            self.ike(li[i5], _sub(g, i5), 8)
        return cls

    def ike(self, li: np.ndarray, g: np.ndarray, at: int) -> None:
        """IKE header at L4 offset ``at``: SPIs, exchange type, flags and the tracer tag in the initiator SPI."""
        cap, out = self.l4cap[li], self.out
        has_i, has_r, has_h = cap >= at + 8, cap >= at + 16, cap >= at + 20
        spi_i = self.f(at, ">u8", li)
        out.put("ike_spi_i", g, spi_i, has_i)
        out.put("ike_spi_r", g, self.f(at + 8, ">u8", li), has_r)
        out.put("ike_exch", g, self.w[li, _L4 + at + 18], has_h)
        out.put("ike_flags", g, self.w[li, _L4 + at + 19], has_h)
        kind = (spi_i >> np.uint64(48)).astype(np.uint8)
        tagged = np.flatnonzero(has_i & ((spi_i >> np.uint64(56)) == IKE_MAGIC) & np.isin(kind, _KINDS))
        if len(tagged):
            s, gt = spi_i[tagged], g[tagged]
            out.put("tag_kind", gt, kind[tagged])
            out.put("tag_run", gt, ((s >> np.uint64(16)) & np.uint64(0xFFFFFFFF)).astype(np.uint32))
            out.put("tag_seq", gt, (s & np.uint64(0xFFFF)).astype(np.uint32))

    def esp(self, li: np.ndarray) -> np.ndarray:
        cap, g = self.l4cap[li], _sub(self.rows, li)
        self.out.put("spi", g, self.f(0, ">u4", li), cap >= 4)
        self.out.put("esp_seq", g, self.f(4, ">u4", li), cap >= 8)
        return np.full(len(li), PacketClass.ESP, np.uint8)

    def tcp(self, li: np.ndarray) -> np.ndarray:
        cap, g = self.l4cap[li], _sub(self.rows, li)
        has = cap >= 4
        self.out.put("inner_id" if self.inner else "sport", g, self.f(0, ">u2", li), has)
        self.out.put("inner_seq" if self.inner else "dport", g, self.f(2, ">u2", li), has)
        return np.full(len(li), PacketClass.TCP, np.uint8)
