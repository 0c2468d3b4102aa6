"""Read classic pcap and pcapng files into a :class:`CaptureIndex`.

The file is memory-mapped (read, if small): no copy. The only per-record
Python work is the classic pcap header walk (read one length, append one offset); the
timestamps, lengths and interface ids are then gathered from the offsets with
numpy. Classic pcap walks with a precomputed ``struct.Struct.unpack_from`` on
the mmap/bytes (measured fastest: ~130 ns/record, vs ~230 for
``int.from_bytes`` on memoryview slices and ~270 for ``unpack_from`` on a
numpy array, whose buffer export is slow; mmap instead of one read saves
~150 ms on a 270 MB file). pcapng blocks are 4-byte aligned: its walk takes runs of
enhanced packet blocks with numpy over ``uint32`` words (~5x the one-block-at-a-time
loop) and steps through the few other blocks one at a time.

Damage policy (one line per problem, always naming the file):

* not a capture, truncated file header, records that lie inside the file but
  are impossible (caplen > :data:`MAX_CAPLEN`, bad pcapng block length or
  trailer, packet data overrunning its block, unknown interface id) and link
  types :mod:`tracer.analysis.extract` cannot read → :class:`CaptureError`;
* a last record that runs past the end of the file, or trailing bytes too
  short to be a record (a sniffer killed mid-write, garbage appended) → the
  readable records are kept and a warning is added. If not a single record is
  complete, that is a :class:`CaptureError` ("record 1 runs past end of file").
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from array import array
from dataclasses import dataclass, field

import numpy as np

from tracer.analysis import extract as ex
from tracer.errors import CaptureError
from tracer.model.distinct import distinct
from tracer.textfile import irregular

try:  # the compiled walks (setup.py builds them when a C compiler is there)
    from tracer.capture._walk import heads as _compiled_heads
    from tracer.capture._walk import pcap as _compiled_pcap
    from tracer.capture._walk import walk as _compiled_walk
except ImportError:
    _compiled_walk = _compiled_heads = _compiled_pcap = None
try:  # the compiled packet-block decoder, apart: a build without it still walks compiled
    from tracer.capture._walk import epbs as _compiled_epbs
    from tracer.capture._walk import scan as _compiled_scan
except ImportError:
    _compiled_scan = _compiled_epbs = None

# Largest caplen accepted: 256 KiB, the largest snapshot length tcpdump and
# Wireshark write for any link type tracer reads. Anything larger is corruption.
MAX_CAPLEN = 262_144

_PCAP_MAGIC = {  # magic as little-endian u32 → (byte order, nanosecond timestamps)
    0xA1B2C3D4: ("<", False),
    0xD4C3B2A1: (">", False),
    0xA1B23C4D: ("<", True),
    0x4D3CB2A1: (">", True),
}
_SHB = 0x0A0D0D0A  # a palindrome: the same in both byte orders
_BOM = 0x1A2B3C4D
_IDB, _PB, _SPB, _ISB, _EPB = 1, 2, 3, 5, 6
_NATIVE = "<" if sys.byteorder == "little" else ">"
_MMAP_FROM = 1 << 20  # smaller files are simply read
Buffer = bytes | mmap.mmap


@dataclass(frozen=True)
class IfaceInfo:
    """One capture interface (classic pcap has exactly one, without a name).

    ``tsresol`` is the pcapng ``if_tsresol`` byte: 6 = microseconds (the
    default), 9 = nanoseconds, ``0x80 | k`` = 2**-k seconds. ``drops`` is the
    kernel/interface drop count from the last statistics block
    (``isb_ifdrop + isb_osdrop``); None when the file does not say.
    """

    name: str | None
    linktype: int
    tsresol: int = 6
    drops: int | None = None
    description: str | None = None
    snaplen: int = 0


@dataclass(frozen=True)
class CaptureHead:
    """What a capture says besides its packets (what mapping it to capture points needs)."""

    path: str
    fmt: str  # "pcap" or "pcapng"
    interfaces: list[IfaceInfo]
    busy: tuple[int, ...]  # the interfaces that carry packets


@dataclass
class CaptureIndex:
    """A capture file's bytes plus one row per packet record.

    ``buf`` is the whole file as read-only uint8: memory-mapped for large files (no padding:
    :func:`tracer.analysis.extract.extract` handles frames at the very end itself), small ones
    followed by :data:`tracer.analysis.extract.PAD` zero bytes (extract then needs no padded
    copy of the tail: half its time on a small file); frame ``i`` is
    ``buf[data_off[i] : data_off[i] + caplen[i]]``.
    """

    path: str
    fmt: str  # "pcap" or "pcapng"
    buf: np.ndarray
    data_off: np.ndarray  # int64
    caplen: np.ndarray  # uint32
    wire_len: np.ndarray  # uint32
    ts_ns: np.ndarray  # int64, ns since the epoch
    iface: np.ndarray  # int16, index into interfaces
    interfaces: list[IfaceInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def damage(self) -> list[str]:
        """Warnings that mean a packet missing from this file may still have been there (a lost end)."""
        return [w for w in self.warnings if f": {TRUNCATED} " in w]

    def __len__(self) -> int:
        return len(self.data_off)

    @property
    def head(self) -> CaptureHead:
        busy = tuple(np.flatnonzero(np.bincount(self.iface)).tolist()) if self.fmt == "pcapng" else (0,)
        return CaptureHead(self.path, self.fmt, self.interfaces, busy)

    def linktypes(self) -> int | np.ndarray:
        """The link type of every record: one int if all interfaces share it, else a per-record array."""
        kinds = {i.linktype for i in self.interfaces}
        if len(kinds) <= 1:
            return kinds.pop() if kinds else 1
        return np.array([i.linktype for i in self.interfaces], np.int32)[self.iface]

    def drop_pages(self) -> None:
        """Hand the file's pages this process has touched back to the kernel (a memory-mapped
        file: they stay in the page cache and come back on the next access, but stop counting
        as this process's memory while other files are worked on)."""
        _hand_back(getattr(self.buf.base, "obj", None))

    def frame(self, i: int) -> bytes:
        """The captured bytes of record ``i`` (for tests and debugging, not the hot path)."""
        o = int(self.data_off[i])
        return self.buf[o : o + int(self.caplen[i])].tobytes()


def read_capture(path: str | os.PathLike[str], *, check_linktypes: bool = True) -> CaptureIndex:
    """Index a pcap or pcapng file. Raises :class:`CaptureError` on unusable input.

    ``check_linktypes``: refuse link types that extraction cannot read (only
    for interfaces that carry packets).
    """
    name = os.fspath(path)
    raw, size = _load(name)
    if size == 0:
        raise CaptureError(f"{name}: empty file (no capture header)")
    if size < 4:
        raise CaptureError(f"{name}: not a pcap or pcapng file (only {size} bytes)")
    magic = int.from_bytes(raw[:4], "little")
    if size < _MMAP_FROM:  # a small file, read: a copy with PAD zero bytes after it costs microseconds
        buf = np.zeros(size + ex.PAD, np.uint8)
        buf[:size] = np.frombuffer(raw, np.uint8)
        buf.flags.writeable = False
    else:  # memory-mapped (or a large file read where mmap failed): not copied
        buf = np.frombuffer(raw, np.uint8)
    if magic in _PCAP_MAGIC:
        cap = _read_pcap(name, raw, buf, size, *_PCAP_MAGIC[magic])
    elif magic == _SHB:
        cap = _read_pcapng(name, raw, buf, size)
    elif raw[:2] == b"\x1f\x8b":
        raise CaptureError(f"{name}: a gzip-compressed file: uncompress it first (gunzip -k {name})")
    else:
        raise CaptureError(f"{name}: not a pcap or pcapng file (starts with {bytes(raw[:4]).hex()})")
    if check_linktypes:
        if cap.fmt == "pcap":
            used = [0]
        elif len(cap.interfaces) == 1:
            used = [0] if len(cap) else []
        else:
            used = distinct(cap.iface).tolist()
        refuse_linktypes(cap, used)
    return cap


def refuse_linktypes(cap: CaptureHead | CaptureIndex, interfaces: list[int]) -> None:
    """CaptureError for the first of ``interfaces`` whose link type extraction cannot read."""
    for i in interfaces:
        info = cap.interfaces[i]
        if info.linktype not in ex.LINKTYPES:
            where = f" on interface {info.name}" if info.name else ""
            raise CaptureError(
                f"{cap.path}: unsupported link type {info.linktype}{where} "
                "(tracer reads Ethernet, raw IP, Linux cooked SLL/SLL2 and loopback captures)"
            )


def _load(name: str) -> tuple[Buffer, int]:
    """The file's bytes: memory-mapped when large (no copy, no read), else read."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; only regular files are read at all
        # (a FIFO or a device such as /dev/zero would block or be read forever).
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        st = os.fstat(fd)  # before open(), which refuses a directory with an exception of its own
        if (kind := irregular(st)) is not None:
            os.close(fd)
            raise CaptureError(f"{name}: a capture must be a regular file, this is {kind}")
        with open(fd, "rb") as f:
            if st.st_size >= _MMAP_FROM:
                try:
                    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    return m, len(m)  # not st_size: the file may have shrunk since fstat
                except (OSError, ValueError):
                    pass  # a file system without mmap: read it
            data = f.read()
    except OSError as e:
        raise CaptureError(f"{name}: cannot read: {e.strerror or e}") from None
    return data, len(data)


def _hand_back(m: object, upto: int | None = None) -> None:
    """Drop this process's pages of a memory-mapped file (below byte ``upto``, else all): they
    stay in the page cache, but stop counting as this process's memory. Not for a file smaller
    than :func:`keep_pages_below` says."""
    if isinstance(m, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and len(m) >= _keep_below:
        if upto is None:
            m.madvise(mmap.MADV_DONTNEED)
        elif (upto := upto - upto % mmap.PAGESIZE) > 0:
            m.madvise(mmap.MADV_DONTNEED, 0, upto)


_keep_below = 0


def keep_pages_below(size: int) -> None:
    """From now on in this process, a memory-mapped file smaller than ``size`` bytes keeps the
    pages it touched until it is closed (for a process that reads one file at a time)."""
    global _keep_below
    _keep_below = size


# --- classic pcap -------------------------------------------------------------------------------


def _walk_pcap(raw: Buffer, size: int, bo: str) -> tuple[array, int]:
    """Offsets of the record headers; and where the walk stopped (> size: last record cut short)."""
    if _compiled_pcap is not None:
        return _walk_pcap_compiled(raw, size, bo)
    caplen_of = struct.Struct(bo + "8xI").unpack_from
    offs = array("q")
    append = offs.append
    o, last = 24, size - 16
    while o <= last:
        append(o)
        o += 16 + caplen_of(raw, o)[0]
    return offs, o


def _walk_pcap_compiled(raw: Buffer, size: int, bo: str) -> tuple[array, int]:
    """:func:`_walk_pcap`, compiled: :data:`_WALK_ROOM` records a call."""
    offs = array("q")
    room = np.empty(_WALK_ROOM, np.int64)
    data = memoryview(raw)[:size]
    o = 24
    while o <= size - 16:
        count, o = _compiled_pcap(data, o, bo == ">", room)
        if not count:  # the buffer is shorter than size (a file that shrank while mapped): stop, not spin
            break
        offs.frombytes(room[:count].tobytes())
    return offs, o


def _read_pcap(name: str, raw: Buffer, buf: np.ndarray, size: int, bo: str, ns: bool) -> CaptureIndex:
    if size < 24:
        raise CaptureError(f"{name}: truncated pcap file header ({size} of 24 bytes)")
    snaplen, lt_field = struct.unpack_from(bo + "II", raw, 16)
    linktype = lt_field & 0xFFFF  # upper bits: FCS length flags
    offs, stop = _walk_pcap(raw, size, bo)
    warnings: list[str] = []
    if stop > size:  # the last record's data runs past the end
        bad = offs.pop()
        need = stop - bad
        _tail(name, len(offs), warnings, f"record {len(offs) + 1} at offset {bad} needs {need} bytes, {size - bad} left")
    elif stop < size:
        _tail(name, len(offs), warnings, f"{size - stop} trailing bytes do not form a record header")
    hdr_off = np.frombuffer(offs, np.int64)
    hdr = ex.gather_rows(buf, hdr_off, 16)
    u4 = bo + "u4"
    caplen = ex.field(hdr, 8, u4)
    bad = np.flatnonzero(caplen > MAX_CAPLEN)
    if len(bad):
        k = int(bad[0])
        raise CaptureError(
            f"{name}: record {k + 1} at offset {int(hdr_off[k])} claims {int(caplen[k])} captured bytes, "
            f"more than the {MAX_CAPLEN} tracer accepts (corrupt file?)"
        )
    sec = ex.field(hdr, 0, u4).astype(np.int64)
    frac = ex.field(hdr, 4, u4).astype(np.int64)
    ts_ns = sec * 1_000_000_000 + (frac if ns else frac * 1000)
    iface = IfaceInfo(None, linktype, 9 if ns else 6, None, None, snaplen)
    return CaptureIndex(
        name, "pcap", buf, hdr_off + 16, caplen, ex.field(hdr, 12, u4), ts_ns,
        np.zeros(len(hdr_off), np.int16), [iface], warnings,
    )


TRUNCATED = "truncated after"  # in a warning: the file lost its end, so what it lacks proves nothing


def _tail(name: str, kept: int, warnings: list[str], what: str) -> None:
    if kept == 0:
        raise CaptureError(f"{name}: record 1 runs past end of file ({what})")
    warnings.append(f"{name}: {TRUNCATED} {kept} records ({what})")


# --- pcapng ---------------------------------------------------------------------------------------


class _Words:
    """The file as native uint32 words in one byte order (a swapped copy only for foreign-order sections)."""

    def __init__(self, raw: Buffer, size: int) -> None:
        self.raw, self.n = raw, size // 4
        self._arr: dict[str, np.ndarray] = {}

    def arr(self, bo: str) -> np.ndarray:
        if bo not in self._arr:
            a = np.frombuffer(self.raw, bo + "u4", count=self.n)
            self._arr[bo] = a if bo == _NATIVE else a.astype("=u4")
        return self._arr[bo]


def _walk_pcapng(w: np.ndarray, i: int, end: int, raw: Buffer | None = None) -> tuple[np.ndarray, int]:
    """Word offsets of the blocks from word ``i``; and where the walk stopped.

    The same steps as one block at a time (next = here + length, never stalling on a zero
    length; validated afterwards), but runs of enhanced packet blocks are walked with numpy:
    every word holding the EPB type is a candidate start, its successor is computed for all
    at once, and a run of candidates that each lead to the next is taken whole. Other blocks,
    and an EPB-typed word in a payload that the walk skips, cost one Python step each.

    The file is scanned a chunk at a time, so the candidate arrays stay chunk-sized. A chunk
    with more candidates than real EPBs could fill (payloads full of EPB-typed words, e.g. a
    hostile capture) is walked one block at a time instead: the candidates would only be noise.
    """
    last = end - 2  # a block needs its type and length words
    words = memoryview(w)  # one word at a time: memoryview indexing is the fastest from Python
    runs: list[np.ndarray] = []
    slow = array("q")
    append = slow.append
    while i <= last:
        _hand_back(raw, 4 * i - 4096)  # the walk never goes back: the pages behind it can go
        stop = min(i + _SCAN_WORDS, last + 1)
        typed = w[i:stop] == _EPB
        if np.count_nonzero(typed) > (stop - i) // _MIN_EPB_WORDS:
            while i < stop:  # more candidates than blocks could start: one block at a time
                append(i)
                i += (words[i + 1] >> 2) or 3
            continue
        cand = np.flatnonzero(typed) + i
        step = (w[cand + 1] >> 2).astype(np.int64)
        step[step == 0] = 3
        nxt = cand + step
        # breaks: candidates whose successor is not the next candidate (the last one always)
        breaks = np.flatnonzero(np.append(nxt[:-1] != cand[1:], True))
        while i < stop:
            if words[i] != _EPB:
                append(i)
                i += (words[i + 1] >> 2) or 3
                continue
            j = int(np.searchsorted(cand, i))  # i holds the EPB type, so it is a candidate
            k = int(breaks[np.searchsorted(breaks, j)])
            if slow:
                runs.append(np.frombuffer(slow, np.int64).copy())
                del slow[:]
            runs.append(cand[j : k + 1])
            i = int(nxt[k])
    if slow:
        runs.append(np.frombuffer(slow, np.int64).copy())
    if not runs:
        return np.zeros(0, np.int64), i
    starts = np.concatenate(runs) if len(runs) != 1 else runs[0]
    return starts, i


def _walk_compiled(w: np.ndarray, i: int, end: int, raw: Buffer | None) -> tuple[np.ndarray, int, np.ndarray]:
    """:func:`_walk_pcapng`'s steps, compiled, plus every block's type word: a scan slice at a
    time, its pages handed back after it."""
    runs: list[tuple[np.ndarray, np.ndarray]] = []
    room = np.empty(_WALK_ROOM, np.int64)  # the walk stops when it is full, and goes on from there
    types = np.empty(len(room), np.uint32)
    while i <= end - 2:
        _hand_back(raw, 4 * i - 4096)
        count, i = _compiled_walk(w, i, i + _SCAN_WORDS, end, room, types)
        runs.append((room[:count].copy(), types[:count].copy()))
    if not runs:
        return np.zeros(0, np.int64), i, np.zeros(0, np.uint32)
    if len(runs) == 1:
        return runs[0][0], i, runs[0][1]
    return np.concatenate([r[0] for r in runs]), i, np.concatenate([r[1] for r in runs])


def _walk_blocks(w: np.ndarray, i: int, end: int, raw: Buffer) -> tuple[np.ndarray, int, np.ndarray]:
    """The blocks from word ``i`` (:func:`_walk_pcapng`), where the walk stopped, and the type word
    of every block but the first (section headers are found by them): compiled when built."""
    if _compiled_walk is not None:
        st, stop, types = _walk_compiled(w, i, end, raw)
        return st, stop, types[1:]
    st, stop = _walk_pcapng(w, i, end, raw)
    return st, stop, _words_at(w, st[1:], raw)


def _heads(w: np.ndarray, st: np.ndarray) -> np.ndarray | None:
    """With the compiled walk: the first seven words and the trailing length word of every block
    (one pass with the next headers prefetched); else None (the decoder gathers them with numpy)."""
    if _compiled_heads is None:
        return None
    out = np.empty((len(st), 8), np.uint32)
    _compiled_heads(w, st, out)
    return out


def _words_at(w: np.ndarray, at: np.ndarray, raw: Buffer) -> np.ndarray:
    """``w[at]`` (``at`` ascending), gathered a run at a time with the pages handed back after each."""
    if len(at) <= _DECODE_BLOCKS:
        return w[at]
    parts = []
    for a in range(0, len(at), _DECODE_BLOCKS):
        parts.append(w[at[a : a + _DECODE_BLOCKS]])
        _hand_back(raw)
    return np.concatenate(parts)


_WALK_ROOM = 1 << 16  # blocks the compiled walk records per call (768 KiB of starts and types)
_COMPILED_OTHER = 64  # blocks other than EPBs a run may hold and still be decoded compiled
_DECODE_BLOCKS = 1 << 18  # blocks decoded at a time (~70 MB of file at 280 bytes a packet)
_SCAN_WORDS = 1 << 20  # words scanned at a time: a 4 MiB slice, candidate arrays at most this long
_MIN_EPB_WORDS = 8  # the smallest enhanced packet block: 32 bytes (28 of header, 4 of trailing length)


def _read_pcapng(name: str, raw: Buffer, buf: np.ndarray, size: int) -> CaptureIndex:
    if size < 28:
        raise CaptureError(f"{name}: truncated pcapng section header ({size} of at least 28 bytes)")
    words = _Words(raw, size)
    bo = _section_order(name, raw, size, 0)
    # Walk section by section: a section in the other byte order restarts the walk at its SHB.
    chunks: list[tuple[np.ndarray, str]] = []
    i, stop = 0, 0
    while True:
        w = words.arr(bo)
        st, stop, types = _walk_blocks(w, i, words.n, raw)
        shb = np.flatnonzero(types == _SHB) + 1
        flip = next((int(k) for k in shb if _section_order(name, raw, size, int(st[k]) * 4) != bo), None)
        if flip is None:
            chunks.append((st, bo))
            break
        chunks.append((st[:flip], bo))
        i, bo = int(st[flip]), _section_order(name, raw, size, int(st[flip]) * 4)
    tail = None  # the tail: a block past the end of the file, or bytes too short for a block header
    last_st, last_bo = chunks[-1]
    if len(last_st) and stop * 4 > size:
        bad = int(last_st[-1])
        chunks[-1] = (last_st[:-1], last_bo)
        need = int(words.arr(last_bo)[bad + 1])
        tail = f"block at offset {bad * 4} needs {need} bytes, {size - bad * 4} left"
    elif stop * 4 < size:
        tail = f"{size - stop * 4} trailing bytes do not form a block"
    dec = _Decoder(name, raw, size, words)
    for st, bo_ in chunks:
        # A run of blocks at a time, the pages handed back after each (a chunk starts anywhere
        # in a section: its blocks before the first SHB belong to the section before).
        for a in range(0, len(st), _DECODE_BLOCKS):
            run = st[a : a + _DECODE_BLOCKS]
            dec.chunk(run, bo_, _heads(words.arr(bo_), run))
            _hand_back(raw)
    cap = dec.result(buf)
    if tail:
        _tail(name, len(cap), cap.warnings, tail)
    return cap


def _section_order(name: str, raw: Buffer, size: int, off: int) -> str:
    if off + 28 > size:
        raise CaptureError(f"{name}: truncated pcapng section header at offset {off}")
    bom = int.from_bytes(raw[off + 8 : off + 12], "little")
    if bom == _BOM:
        return "<"
    if bom == 0x4D3C2B1A:
        return ">"
    raise CaptureError(f"{name}: bad pcapng byte-order magic {bom:#010x} at offset {off + 8}")


def _options(raw: Buffer, off: int, end: int, bo: str) -> list[tuple[int, bytes]]:
    """(code, value) of the options between ``off`` and ``end``, up to opt_endofopt."""
    out = []
    while off + 4 <= end:
        code, length = struct.unpack_from(bo + "HH", raw, off)
        if code == 0:
            break
        out.append((code, bytes(raw[off + 4 : min(off + 4 + length, end)])))
        off += 4 + ((length + 3) & ~3)
    return out


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class _Iface:
    """A capture interface as its header blocks describe it."""

    linktype: int
    snaplen: int
    name: str | None = None
    description: str | None = None
    tsresol: int = 6
    tsoffset: int = 0  # seconds
    drops: int | None = None


class _Decoder:
    """Turns the walked blocks of each same-byte-order chunk into packet columns and interface records."""

    def __init__(self, name: str, raw: Buffer, size: int, words: _Words) -> None:
        self.name, self.raw, self.size, self.words = name, raw, size, words
        self.ifaces: list[_Iface] = []
        self.sec_base: list[int] = []  # per section: index of its first interface
        self.sec_count: list[int] = []  # per section: interfaces defined so far
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.untimed = 0
        self.warnings: list[str] = []

    def chunk(self, st: np.ndarray, bo: str, heads: np.ndarray | None = None) -> None:
        """``heads``: :func:`_heads` of ``st`` (None: gathered here)."""
        if len(st) == 0 or (heads is not None and self._compiled(st, bo, heads)):
            return
        name, w = self.name, self.words.arr(bo)
        # The seven header words of every block in one gather (one pass over the file, not
        # several): type and length of all blocks, the packet fields of packet blocks. A block
        # within seven words of the end (a short SPB, or a cut file) is clipped to the end; its
        # type and length are read alone, and what an SPB lacks is overwritten below.
        hdr = heads if heads is not None else _gather_words(w, np.minimum(st, max(len(w) - 7, 0)), 7)
        types, lens = hdr[:, 0].copy(), hdr[:, 1].astype(np.int64)
        if len(near := np.flatnonzero(st > len(w) - 7)):
            types[near], lens[near] = w[st[near]], w[st[near] + 1]
        bad = (lens < 12) | (lens % 4 != 0)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CaptureError(f"{name}: block at offset {int(st[k]) * 4} has an impossible length {int(lens[k])} (corrupt file)")
        trailer = heads[:, 7] if heads is not None else w[st + lens // 4 - 1]
        bad = trailer != lens
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CaptureError(
                f"{name}: block at offset {int(st[k]) * 4}: trailing length {int(trailer[k])} "
                f"does not match {int(lens[k])} (corrupt file)"
            )
        # Section, interface and statistics blocks are few: plain Python, in file order.
        first_sec = len(self.sec_base)
        for k in np.flatnonzero(np.isin(types, (_SHB, _IDB, _ISB))).tolist():
            self._meta(int(types[k]), int(st[k]) * 4, int(lens[k]), bo)
        self._packets(st, bo, types, lens, hdr, first_sec)

    def _compiled(self, st: np.ndarray, bo: str, heads: np.ndarray) -> bool:
        """The usual run, compiled: every block's length possible and repeated by its trailer,
        few blocks other than enhanced packet blocks (no obsolete or simple packet blocks), every
        packet block well formed. Decoded as :meth:`chunk` does, or False (nothing done yet) for
        numpy's way; a packet block that fails a check goes to :meth:`_packets`, which says which."""
        if _compiled_scan is None:
            return False
        other = np.empty(_COMPILED_OTHER, np.int64)
        n_other, ok = _compiled_scan(heads, other)
        if not ok or n_other < 0:
            return False
        other = other[:n_other]
        otypes = heads[other, 0]
        if np.isin(otypes, (_PB, _SPB)).any():
            return False
        first_sec = len(self.sec_base)
        for k in other[np.isin(otypes, (_SHB, _IDB, _ISB))].tolist():
            self._meta(int(heads[k, 0]), int(st[k]) * 4, int(heads[k, 1]), bo)
        n = len(st) - n_other
        data, caplen, ticks, gif = (np.empty(n, np.int64) for _ in range(4))
        wire = np.empty(n, np.uint32)
        bad, decoded = _compiled_epbs(heads, np.ascontiguousarray(st, np.int64), other[otypes == _SHB], first_sec - 1,
                                   np.array(self.sec_base, np.int64), np.array(self.sec_count, np.int64), MAX_CAPLEN,
                                   data, caplen, wire, ticks, gif)
        if bad >= 0 or decoded != n:  # numpy's way says what is wrong (or, if nothing is, decodes it)
            self._packets(st, bo, heads[:, 0].copy(), heads[:, 1].astype(np.int64), heads, first_sec)
            return True
        if n:
            self.parts.append((data, caplen, wire, ticks.view(np.uint64), gif, np.zeros(n, bool)))
        return True

    def _packets(self, st: np.ndarray, bo: str, types: np.ndarray, lens: np.ndarray, hdr: np.ndarray,
                 first_sec: int) -> None:
        """The packet blocks among ``st`` (their sections' metadata already read), checked and decoded."""
        name, w = self.name, self.words.arr(bo)
        sec = np.cumsum(types == _SHB) - 1 + first_sec  # blocks before the first SHB: the section before
        pk = np.flatnonzero(np.isin(types, (_EPB, _PB, _SPB)))
        if len(pk) == 0:
            return
        s, t, ln, sec = st[pk], types[pk], lens[pk], sec[pk]
        hdr = hdr[pk] if len(pk) < len(st) else hdr
        is_spb, is_pb = t == _SPB, t == _PB
        bad = ln < np.where(is_spb, 16, 32)  # shorter than the block's fixed fields
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CaptureError(f"{name}: packet block at offset {int(s[k]) * 4} is too short ({int(ln[k])} bytes; "
                               "corrupt file)")

        def word(k: int) -> np.ndarray:
            return hdr[:, k]

        ifid = word(2).astype(np.int64)
        if is_pb.any():  # obsolete PB: 16-bit interface id, then a 16-bit drop count
            ifid = np.where(is_pb, (ifid & 0xFFFF) if bo == "<" else (ifid >> 16), ifid)
        ifid[is_spb] = 0
        caplen = word(5).astype(np.int64)
        wire = word(6)
        data = s * 4 + 28
        ticks = (word(3).astype(np.uint64) << np.uint64(32)) | word(4)
        counts = np.array(self.sec_count, np.int64)[sec]
        bad = ifid >= counts
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CaptureError(
                f"{name}: packet block at offset {int(s[k]) * 4} refers to interface {int(ifid[k])}, "
                f"but its section defines {int(counts[k])}"
            )
        gif = np.array(self.sec_base, np.int64)[sec] + ifid
        if is_spb.any():  # simple packet block: no interface id, no timestamp, caplen implied
            m = np.flatnonzero(is_spb)
            wire[m] = w[s[m] + 2]
            snap = np.array([self.ifaces[g].snaplen or MAX_CAPLEN for g in gif[m].tolist()], np.int64)
            caplen[m] = np.minimum(np.minimum(wire[m], ln[m] - 16), snap)
            data[m] = s[m] * 4 + 12
            ticks[m] = 0
            self.untimed += len(m)
        room = np.where(is_spb, ln - 16, ln - 32)
        bad = (caplen > room) | (caplen > MAX_CAPLEN)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            limit = min(int(room[k]), MAX_CAPLEN)
            raise CaptureError(
                f"{name}: packet block at offset {int(s[k]) * 4} claims {int(caplen[k])} captured bytes, "
                f"more than {'its block holds' if caplen[k] > room[k] else 'tracer accepts'} ({limit}) (corrupt file?)"
            )
        self.parts.append((data, caplen, wire, ticks, gif, is_spb))

    def _meta(self, typ: int, off: int, length: int, bo: str) -> None:
        _META_BLOCKS[typ](self, off, length, bo)

    def _section(self, off: int, length: int, bo: str) -> None:
        self.sec_base.append(len(self.ifaces))
        self.sec_count.append(0)

    def _interface(self, off: int, length: int, bo: str) -> None:
        if length < 20:
            raise CaptureError(f"{self.name}: interface block at offset {off} is too short ({length} bytes)")
        linktype, _reserved, snaplen = struct.unpack_from(bo + "HHI", self.raw, off + 8)
        if len(self.ifaces) >= _MAX_IFACES:
            raise CaptureError(f"{self.name}: interface block at offset {off} is interface {len(self.ifaces) + 1}; "
                               f"tracer reads at most {_MAX_IFACES} per file (corrupt file?)")
        info = _Iface(linktype, snaplen)
        for code, val in _options(self.raw, off + 16, off + length - 4, bo):
            if code == 2:
                info.name = _text(val)
            elif code == 3:
                info.description = _text(val)
            elif code == 9 and val:
                info.tsresol = self._tsresol(val[0], off)
            elif code == 14 and len(val) >= 8:
                info.tsoffset = self._tsoffset(struct.unpack_from(bo + "q", val)[0], off)
        self.ifaces.append(info)
        self.sec_count[-1] += 1

    def _statistics(self, off: int, length: int, bo: str) -> None:
        if length < 24:
            return
        (ifid,) = struct.unpack_from(bo + "I", self.raw, off + 8)
        if ifid >= self.sec_count[-1]:
            self.warnings.append(f"{self.name}: statistics block at offset {off} names unknown interface {ifid}")
            return
        drops = [struct.unpack_from(bo + "Q", val)[0] for code, val in _options(self.raw, off + 20, off + length - 4, bo)
                 if code in (5, 7) and len(val) >= 8]
        if drops:  # counters are cumulative: the last statistics block wins
            self.ifaces[self.sec_base[-1] + ifid].drops = sum(drops)

    def _tsresol(self, value: int, off: int) -> int:
        # Beyond 10**-19 s or 2**-63 s a tick no longer fits the 64-bit arithmetic: not a real clock.
        if value > (0x80 | 63) or (not value & 0x80 and value > 19):
            raise CaptureError(f"{self.name}: interface block at offset {off} has an impossible timestamp "
                               f"resolution (if_tsresol 0x{value:02x}; corrupt file?)")
        return value

    def _tsoffset(self, value: int, off: int) -> int:
        if abs(value) > _MAX_TSOFFSET_S:
            raise CaptureError(f"{self.name}: interface block at offset {off} shifts its timestamps by {value} s "
                               "(if_tsoffset beyond ±272 years; corrupt file?)")
        return value

    def result(self, buf: np.ndarray) -> CaptureIndex:
        if self.parts:
            data, caplen, wire, ticks, gif, untimed = (np.concatenate(c) if len(c) > 1 else c[0]
                                                       for c in zip(*self.parts, strict=True))
        else:
            data, caplen, wire, gif = (np.zeros(0, np.int64) for _ in range(4))
            ticks, untimed = np.zeros(0, np.uint64), np.zeros(0, bool)
        if len(self.ifaces) == 1:  # the common case: one interface, no per-interface masks
            info = self.ifaces[0]
            ts_ns = _ticks_to_ns(ticks, info.tsresol) + info.tsoffset * 1_000_000_000
        else:
            ts_ns = np.zeros(len(data), np.int64)
            for g in distinct(gif).tolist():
                m = gif == g
                info = self.ifaces[g]
                ts_ns[m] = _ticks_to_ns(ticks[m], info.tsresol) + info.tsoffset * 1_000_000_000
        warnings = self.warnings
        if self.untimed:
            ts_ns[untimed] = 0
            warnings.append(f"{self.name}: {self.untimed} simple packet blocks carry no timestamp (set to 0)")
        ifaces = [IfaceInfo(i.name, i.linktype, i.tsresol, i.drops, i.description, i.snaplen) for i in self.ifaces]
        return CaptureIndex(
            self.name, "pcapng", buf, data, np.ascontiguousarray(caplen, np.uint32), np.ascontiguousarray(wire, np.uint32),
            ts_ns, np.ascontiguousarray(gif, np.int16), ifaces, warnings,
        )


def _gather_words(w: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """``(len(starts), n)`` copy of ``w[s : s + n]`` for every start: one gather of ``n``-word
    items (a void view with a one-word stride; ~5x a 2-D index array). ``w`` must hold ``n``
    words from every start."""
    if len(w) < n:
        return np.zeros((len(starts), n), w.dtype)
    items = np.ndarray((len(w) - n + 1,), dtype=f"V{4 * n}", buffer=w, strides=(4,))
    return items[starts].view(w.dtype).reshape(-1, n)


_META_BLOCKS = {_SHB: _Decoder._section, _IDB: _Decoder._interface, _ISB: _Decoder._statistics}
_MAX_IFACES = 32767  # interface numbers are int16 columns
_MAX_TSOFFSET_S = 1 << 33  # ±272 years: keeps offset * 1e9 inside int64


def _ticks_to_ns(ticks: np.ndarray, tsresol: int) -> np.ndarray:
    """pcapng timestamp units → ns. if_tsresol: ``k`` = 10**-k s, ``0x80 | k`` = 2**-k s."""
    t = ticks.astype(np.uint64)
    k = tsresol & 0x7F
    if tsresol & 0x80:
        whole = (t >> np.uint64(k)) * np.uint64(1_000_000_000)
        frac = t & np.uint64((1 << k) - 1)
        if k > 34:  # keep frac * 1e9 inside 64 bits
            frac, k = frac >> np.uint64(k - 34), 34
        return (whole + ((frac * np.uint64(1_000_000_000)) >> np.uint64(k))).astype(np.int64)
    if k <= 9:
        return (t * np.uint64(10 ** (9 - k))).astype(np.int64)
    return (t // np.uint64(10 ** (k - 9))).astype(np.int64)
