"""Observation columns as a compact file (``.cols``): what an SSH host with tracer sends back
instead of its whole capture (``tracer extract``, run there; tracer.sniff.ssh).

Layout: the line ``TRCOLS1``, then one zlib stream holding a 4-byte little-endian header
length, a JSON header, and every column of :data:`tracer.model.observations.COLUMNS` in that
order, ``rows`` little-endian values each. Column-major and compressed: the sparse header
fields of a packet (most are 0 for most packets) cost almost nothing, so a file is a few
bytes per packet whatever the packet's size. Read with numpy::

    raw = zlib.decompress(open(f, "rb").read()[8:]); n = int.from_bytes(raw[:4], "little")
    header = json.loads(raw[4 : 4 + n])  # then np.frombuffer per column, in COLUMNS order

The header says which point the rows are, how many, where the whole capture was kept on the
host (``capture``: it stays there, nothing recorded is lost), the reader's warnings and
damage, so a replay reads exactly what it would have read from the capture itself, and the
version of the tracer that extracted them (``tracer``).

A columns file comes back from another host: it is read as untrusted input, like a capture.
The header must be a JSON object with exactly the fields above, each of its type; the rows
it promises must fit the file (see :data:`MAX_RATIO`), and the stream must inflate to exactly
them and end with the file. Anything else is a one-line CaptureError naming the file.

Versions: the column format (``FORMAT``) is what must match; the tracer that classified the
packets may still differ from this one (a classification fixed since, say). A file from
another version is read, with a warning saying both versions. Files written before the
header carried ``tracer`` are read too, with a warning that the version is unknown: they
are the same format, and refusing them would lose a run whose captures stayed on hosts.

Numpy is imported only when columns are read or written: ``tracer extract --check`` (asked
once per host when a trace starts) must stay a bare interpreter start.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tracer.errors import CaptureError
from tracer.version import __version__

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"TRCOLS1\n"
SUFFIX = ".cols"
# The column layout this tracer reads and writes: its version and a fingerprint of COLUMNS
# (names and dtypes; tests/capture/test_columns.py recomputes it). A host whose tracer says
# another format is treated as having none: its capture is streamed whole.
FORMAT = "tracer-columns/1 8d8466efce5e"
MAX_HEADER = 1 << 20


def fingerprint() -> str:
    """The part of :data:`FORMAT` after the version, computed from COLUMNS."""
    import hashlib

    from tracer.model.observations import COLUMNS

    text = ";".join(f"{k}:{v.str}" for k, v in COLUMNS.items())
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def is_columns(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


def kept_note(kept_at: str | None) -> str:
    """Where a point's capture stayed when only its columns came back (``host:/path``)."""
    if not kept_at:
        return "capture kept on its host"
    host, sep, path = kept_at.partition(":/")
    return f"capture kept at /{path} on {host}" if sep else f"capture kept at {kept_at}"


@dataclass
class ColumnsInterface:
    """The one capture interface a columns file stands for (what capture mapping asks of a file)."""

    name: str


@dataclass
class ColumnsFile:
    """A columns file read back: one capture point's rows, as extracted on its host."""

    path: str
    point: str
    cols: dict[str, np.ndarray]
    capture: str | None = None  # where the whole capture is kept (host:path)
    warnings: list[str] = field(default_factory=list)
    damaged: str | None = None  # why the capture cannot prove absence (the reader said), or None

    @property
    def interfaces(self) -> list[ColumnsInterface]:
        return [ColumnsInterface(self.point)]

    def __len__(self) -> int:
        return len(self.cols["ts_ns"])

    def drop_pages(self) -> None:
        """Nothing mapped: the columns are the data (capture files hand their pages back here)."""


def write_columns(out: BinaryIO, cols: dict[str, np.ndarray], point: str, capture: str | None = None,
                  warnings: Iterable[str] = (), damaged: str | None = None, level: int = 1) -> int:
    """Write one point's columns (all of COLUMNS, equal lengths); return the bytes written.
    ``level``: zlib's (bench/bench_formats.py compares them)."""
    import numpy as np

    from tracer.model.observations import COLUMNS

    rows = len(cols["ts_ns"])
    header = json.dumps({"format": FORMAT, "tracer": __version__, "point": point, "rows": rows,
                         "capture": capture, "warnings": list(warnings), "damaged": damaged}).encode()
    # Level 1: on 792k kept rows (the 1M-packet bench run) 5.8x faster than level 6 (0.54 vs
    # 3.1 s of the remote host's CPU) for 11 % more bytes (23.6 vs 21.2 a row); any level reads.
    z = zlib.compressobj(level)
    parts = [MAGIC, z.compress(len(header).to_bytes(4, "little") + header)]
    for k, dt in COLUMNS.items():
        parts.append(z.compress(np.ascontiguousarray(cols[k], dtype=dt.newbyteorder("<")).tobytes()))
    parts.append(z.flush())
    data = b"".join(parts)
    out.write(data)
    return len(data)


# A deflate stream inflates to at most ~1032 times its size (a 258-byte match per 2 bits, RFC
# 1951): a header promising more than this many bytes per compressed byte, plus room for the
# header itself, cannot be true, and is refused before any column is allocated.
MAX_RATIO = 1100
SLACK = 1 << 16
CHUNK = 1 << 20  # compressed bytes read at a time
MAX_TEXT = 4096  # a point, kept_at, version, warning or damage note
MAX_WARNINGS = 10_000
_HEADER_KEYS = {"format", "point", "rows", "capture", "warnings", "damaged"}  # and "tracer" (optional, see above)


class _Inflater:
    """A zlib stream read from ``f`` in chunks, handing out exactly the bytes asked for."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.d = zlib.decompressobj()

    def _input(self) -> bytes:
        return self.d.unconsumed_tail or self.f.read(CHUNK)

    def read_into(self, out: memoryview) -> None:
        at = 0
        while at < len(out):
            data = self._input()
            if not data or self.d.eof:
                raise ValueError("columns cut short")
            got = self.d.decompress(data, len(out) - at)
            out[at : at + len(got)] = got
            at += len(got)

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.read_into(memoryview(buf))
        return bytes(buf)

    def finish(self) -> None:
        """The stream ends here, and so does the file."""
        while not self.d.eof:
            data = self._input()
            if not data:
                raise ValueError("columns cut short")
            if self.d.decompress(data, 1):
                raise ValueError("more columns than its rows")
        if self.d.unused_data or self.f.read(1):
            raise ValueError("data after the columns")


def _text(v: object, what: str, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > MAX_TEXT or (not v and not optional):
        raise ValueError(f"{what}: expected a string of up to {MAX_TEXT} characters")
    return v


def _check_header(header: object, path: str | Path) -> dict:
    """The header, every field of the type the writer gives it; CaptureError if not."""
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    if header.get("format") != FORMAT:
        fmt = header.get("format")
        shown = repr(fmt[:80]) if isinstance(fmt, str) else type(fmt).__name__
        raise CaptureError(f"{path}: columns of format {shown}, this tracer reads {FORMAT!r}")
    keys = set(header)
    if not _HEADER_KEYS <= keys <= _HEADER_KEYS | {"tracer"}:
        odd = sorted((keys ^ _HEADER_KEYS) - {"tracer"})[:3]
        raise ValueError(f"header fields {', '.join(repr(k[:40]) for k in odd)} unexpected or missing")
    rows = header["rows"]
    if type(rows) is not int or rows < 0:
        raise ValueError("rows: expected a count")
    _text(header["point"], "point")
    _text(header["capture"], "capture", optional=True)
    _text(header["damaged"], "damaged", optional=True)
    _text(header.get("tracer"), "tracer", optional=True)
    w = header["warnings"]
    if not isinstance(w, list) or len(w) > MAX_WARNINGS:
        raise ValueError(f"warnings: expected a list of up to {MAX_WARNINGS}")
    for x in w:
        _text(x, "warnings")
    return header


def _version_warning(path: str | Path, theirs: str | None) -> list[str]:
    """A note when the host's tracer is not this one: same columns, maybe classified otherwise."""
    if theirs == __version__:
        return []
    said = f"tracer {theirs}" if theirs else "a tracer that does not say its version (older)"
    return [f"{path}: extracted on its host by {said}, this is tracer {__version__}: same column format, "
            "but packets may be classified differently there"]


def read_columns(path: str | Path) -> ColumnsFile:
    """A columns file; CaptureError (one line) if it is not one, or not of this tracer's format.

    Read as it is inflated, in chunks, straight into its columns: a file claiming more rows
    than its size can hold is refused before anything is allocated, and memory stays that of
    the columns themselves."""
    import numpy as np

    from tracer.model.observations import COLUMNS

    try:
        f = open(path, "rb")  # closed by the with below (an open error is its own message)
    except OSError as e:
        raise CaptureError(f"{path}: cannot read ({e.strerror})") from None
    try:
        with f:
            size = os.fstat(f.fileno()).st_size
            if f.read(len(MAGIC)) != MAGIC:
                raise CaptureError(f"{path}: not a tracer columns file")
            z = _Inflater(f)
            n = int.from_bytes(z.read(4), "little")
            if n > MAX_HEADER:
                raise ValueError(f"header of {n} bytes")
            header = _check_header(json.loads(z.read(n)), path)
            rows = header["rows"]
            row = sum(dt.itemsize for dt in COLUMNS.values())
            if rows * row + 4 + n > MAX_RATIO * (size - len(MAGIC)) + SLACK:
                raise ValueError(f"{rows} rows cannot fit in {size} bytes")
            cols: dict[str, np.ndarray] = {}
            for k, dt in COLUMNS.items():
                a = np.empty(rows, dt.newbyteorder("<"))
                z.read_into(memoryview(a.view(np.uint8)))
                cols[k] = a.astype(dt, copy=False)
            z.finish()
    except CaptureError:
        raise
    except OSError as e:
        raise CaptureError(f"{path}: cannot read ({e.strerror})") from None
    except (zlib.error, ValueError, RecursionError) as e:
        # (json's own errors are ValueErrors; a header nested too deep is a RecursionError.)
        raise CaptureError(f"{path}: damaged columns file ({type(e).__name__}: {str(e)[:200]})") from None
    warnings = list(header["warnings"]) + _version_warning(path, header.get("tracer"))
    return ColumnsFile(str(path), header["point"], cols, header["capture"], warnings, header["damaged"] or None)
