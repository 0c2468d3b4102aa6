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
host (``capture``: it stays there, nothing recorded is lost), and the reader's warnings and
damage, so a replay reads exactly what it would have read from the capture itself.

Numpy is imported only when columns are read or written: ``tracer extract --check`` (asked
once per host when a trace starts) must stay a bare interpreter start.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tracer.errors import CaptureError

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
                  warnings: Iterable[str] = (), damaged: str | None = None) -> int:
    """Write one point's columns (all of COLUMNS, equal lengths); return the bytes written."""
    import numpy as np

    from tracer.model.observations import COLUMNS

    rows = len(cols["ts_ns"])
    header = json.dumps({"format": FORMAT, "point": point, "rows": rows, "capture": capture,
                         "warnings": list(warnings), "damaged": damaged}).encode()
    z = zlib.compressobj(6)
    parts = [MAGIC, z.compress(len(header).to_bytes(4, "little") + header)]
    for k, dt in COLUMNS.items():
        parts.append(z.compress(np.ascontiguousarray(cols[k], dtype=dt.newbyteorder("<")).tobytes()))
    parts.append(z.flush())
    data = b"".join(parts)
    out.write(data)
    return len(data)


def read_columns(path: str | Path) -> ColumnsFile:
    """A columns file; CaptureError (one line) if it is not one, or not of this tracer's format."""
    import numpy as np

    from tracer.model.observations import COLUMNS

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CaptureError(f"{path}: cannot read ({e.strerror})") from None
    if not data.startswith(MAGIC):
        raise CaptureError(f"{path}: not a tracer columns file")
    row = sum(dt.itemsize for dt in COLUMNS.values())
    try:
        d = zlib.decompressobj()
        head = d.decompress(data[len(MAGIC):], 4 + MAX_HEADER)
        n = int.from_bytes(head[:4], "little")
        if n > MAX_HEADER or len(head) < 4 + n:
            raise ValueError("header cut short")
        header = json.loads(head[4 : 4 + n])
        if header.get("format") != FORMAT:
            raise CaptureError(f"{path}: columns of format {header.get('format')!r}, this tracer reads {FORMAT!r}")
        rows = header["rows"]
        if not isinstance(rows, int) or rows < 0 or rows > (1 << 40) // row:
            raise ValueError(f"rows {rows!r}")
        body = head[4 + n :] + d.decompress(d.unconsumed_tail, rows * row + 1)
        if len(body) != rows * row or not d.eof:
            raise ValueError(f"{len(body)} bytes of columns for {rows} rows")
        cols: dict[str, np.ndarray] = {}
        at = 0
        for k, dt in COLUMNS.items():
            size = rows * dt.itemsize
            cols[k] = np.frombuffer(body, dt.newbyteorder("<"), rows, at).astype(dt)
            at += size
        warnings = [str(w) for w in header.get("warnings") or []]
        damaged = header.get("damaged")
        return ColumnsFile(str(path), str(header["point"]), cols, header.get("capture"), warnings,
                           str(damaged) if damaged else None)
    except CaptureError:
        raise
    except (zlib.error, ValueError, KeyError, TypeError) as e:
        raise CaptureError(f"{path}: damaged columns file ({type(e).__name__}: {e})") from None
