"""Write pcapng files: one section, named interfaces, packets (with comments), and the sniffers' drop counts.

Each capture point's file carries its ``node:iface`` name (``if_name``) and
the kernel drop count its sniffer reported (``isb_ifdrop`` in a final
interface statistics block), so a run directory is self-describing.
Live sniffers capture with tcpdump into classic pcap and convert with
:func:`convert_pcap_to_pcapng`, which streams and survives a sniffer killed
mid-write.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from tracer.errors import CaptureError

_EPB_HEAD = struct.Struct("<IIIIIII")  # type, length, ifid, ts hi, ts lo, caplen, origlen
_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
               b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True)}
_MAX_CAPLEN = 262_144  # same bound as the reader (tracer.capture.pcapfile.MAX_CAPLEN)
_FLUSH_EVERY = 4096


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def _options(opts: list[bytes]) -> bytes:
    return b"".join(opts) + _opt(0, b"") if opts else b""


@dataclass(frozen=True)
class Interface:
    """One pcapng interface: its ``node:iface`` name, link type, snapshot length and the drop
    count its sniffer reported (None: unknown, no statistics block)."""

    name: str
    linktype: int
    snaplen: int = _MAX_CAPLEN
    drops: int | None = None
    description: str | None = None  # if_description


# (interface number, ts_ns, frame bytes, wire length, packet comment or None)
Record = tuple[int, int, bytes, int, str | None]


def write_pcapng(
    path: str | os.PathLike[str],
    records: Iterable[tuple[int, bytes, int]],
    *,
    if_name: str,
    linktype: int,
    snaplen: int = 262144,
    tsresol_ns: bool = True,
    drops: int | None = None,
    comment: str | None = None,
) -> int:
    """Write ``records`` — ``(ts_ns, frame_bytes, wire_len)`` — as a little-endian pcapng; return the packet count.

    Frames longer than ``snaplen`` are cut to it. ``tsresol_ns=False`` writes
    microsecond timestamps. ``drops``: add an interface statistics block with
    ``isb_ifdrop``.
    """
    return write_pcapng_interfaces(path, [Interface(if_name, linktype, snaplen, drops)],
                                   ((0, ts, frame, wire, None) for ts, frame, wire in records),
                                   tsresol_ns=tsresol_ns, comment=comment)


def write_pcapng_interfaces(
    path: str | os.PathLike[str],
    interfaces: list[Interface],
    records: Iterable[Record],
    *,
    tsresol_ns: bool = True,
    comment: str | None = None,
) -> int:
    """Write several interfaces' packets, in the order given, each with an optional comment
    (``opt_comment`` on its enhanced packet block); one statistics block per interface whose
    drops are known. Return the packet count."""
    with open(path, "wb") as f:
        return _write(f, interfaces, records, tsresol_ns=tsresol_ns, comment=comment)


def _write(
    f: BinaryIO, interfaces: list[Interface], records: Iterable[Record], *, tsresol_ns: bool, comment: str | None,
) -> int:
    shb_opts = [_opt(4, b"tracer")]
    if comment:
        shb_opts.insert(0, _opt(1, comment.encode()))
    f.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _options(shb_opts)))
    for i in interfaces:
        idb_opts = [_opt(2, i.name.encode()), _opt(9, bytes([9 if tsresol_ns else 6]))]
        if i.description:
            idb_opts.append(_opt(3, i.description.encode()))
        f.write(_block(1, struct.pack("<HHI", i.linktype, 0, i.snaplen) + _options(idb_opts)))
    snaplens = [i.snaplen for i in interfaces]
    div = 1 if tsresol_ns else 1000
    head = _EPB_HEAD.pack
    pending: list[bytes] = []
    count, ts = 0, None
    for ifid, ts, frame, wire_len, note in records:
        snaplen = snaplens[ifid]
        data = frame[:snaplen] if len(frame) > snaplen else frame
        pad = -len(data) % 4
        opts = _options([_opt(1, note.encode())]) if note else b""
        length = 32 + len(data) + pad + len(opts)
        t = ts // div
        pending += (head(6, length, ifid, t >> 32, t & 0xFFFFFFFF, len(data), wire_len), data,
                    b"\0" * pad + opts + length.to_bytes(4, "little"))
        count += 1
        if count % _FLUSH_EVERY == 0:
            f.writelines(pending)
            pending.clear()
    f.writelines(pending)
    t = (ts if ts is not None else time.time_ns()) // div
    for ifid, i in enumerate(interfaces):
        if i.drops is not None:
            stats = _options([_opt(5, struct.pack("<Q", i.drops))])
            f.write(_block(5, struct.pack("<III", ifid, t >> 32, t & 0xFFFFFFFF) + stats))
    return count


@dataclass
class ConvertResult:
    packets: int
    warnings: list[str] = field(default_factory=list)


def convert_pcap_to_pcapng(
    src_pcap: str | os.PathLike[str],
    dst_pcapng: str | os.PathLike[str],
    if_name: str,
    drops: int | None = None,
    *,
    linktype_if_empty: int | None = None,
) -> ConvertResult:
    """Stream a classic pcap (µs or ns, either byte order) into a pcapng named ``if_name``.

    A truncated or corrupt tail (a sniffer killed mid-write) ends the copy
    with a warning; the output is always a valid file. An empty source (or one
    cut inside its file header) is a :class:`CaptureError`, unless
    ``linktype_if_empty`` says which link type to give the empty output.
    """
    name = os.fspath(src_pcap)
    warnings: list[str] = []
    try:
        with open(name, "rb") as f:
            hdr = f.read(24)
            if len(hdr) < 24:
                if linktype_if_empty is None:
                    what = "empty file" if not hdr else f"truncated pcap file header ({len(hdr)} of 24 bytes)"
                    raise CaptureError(f"{name}: {what}")
                warnings.append(f"{name}: no pcap header ({len(hdr)} bytes); wrote an empty capture")
                n = write_pcapng(dst_pcapng, [], if_name=if_name, linktype=linktype_if_empty, drops=drops)
                return ConvertResult(n, warnings)
            if hdr[:4] not in _PCAP_MAGIC:
                raise CaptureError(f"{name}: not a classic pcap file (starts with {hdr[:4].hex()})")
            bo, ns = _PCAP_MAGIC[hdr[:4]]
            snaplen, lt = struct.unpack_from(bo + "II", hdr, 16)
            recs = _pcap_records(f, name, bo, ns, warnings)
            n = write_pcapng(dst_pcapng, recs, if_name=if_name, linktype=lt & 0xFFFF,
                             snaplen=snaplen or _MAX_CAPLEN, drops=drops)
    except OSError as e:
        raise CaptureError(f"{e.filename or name}: cannot convert: {e.strerror or e}") from None
    return ConvertResult(n, warnings)


def _pcap_records(f: BinaryIO, name: str, bo: str, ns: bool, warnings: list[str]) -> Iterator[tuple[int, bytes, int]]:
    unpack = struct.Struct(bo + "IIII").unpack
    mult = 1 if ns else 1000
    count = 0
    while True:
        h = f.read(16)
        if len(h) < 16:
            if h:
                warnings.append(f"{name}: truncated after {count} records ({len(h)} trailing bytes do not form a record header)")
            return
        sec, frac, caplen, wire = unpack(h)
        if caplen > _MAX_CAPLEN:
            warnings.append(f"{name}: stopped after {count} records (record {count + 1} claims {caplen} captured bytes)")
            return
        data = f.read(caplen)
        if len(data) < caplen:
            warnings.append(f"{name}: truncated after {count} records (record {count + 1} has {len(data)} of {caplen} bytes)")
            return
        count += 1
        yield sec * 1_000_000_000 + frac * mult, data, wire
