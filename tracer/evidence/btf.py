"""Kernel struct field offsets from the running kernel's BTF (``/sys/kernel/btf/vmlinux``).

The drop-reason script (:mod:`.dropreasons`) reads a few fields of ``struct sk_buff``,
``struct net_device``, ``struct net`` and ``struct sock``. Written as ``$skb->dev->name``,
bpftrace resolves those types itself at every start, which costs it about a second of its
1–1.5 s start-up (measured on 6.x kernels, bpftrace 0.17); written as loads at byte offsets
read here, it attaches in 0.2–0.3 s. The offsets come from the kernel's own BTF, never from
a table written here, and are cached per kernel build (its release, GNU build id and the size
of its BTF; a hash of the BTF when it has no build id) so a trace reads the ~5 MB of BTF only
once per boot of a new kernel.

The offsets go verbatim into a program run as root, so the cache is trusted as little as
possible: root reads and writes only ``/run/tracer/btf`` (never ``$XDG_CACHE_HOME``, which
``sudo -E`` hands over from the user), a directory or file not owned by the reader or
writable by others is not read, and a document whose offsets are not small integers of the
fields asked for is ignored (the offsets are then read from the BTF again).

Only what this needs of the BTF format (Documentation/bpf/btf.rst) is decoded: every type
record's length (to number them), and the members of structs and unions, descending into
anonymous ones (``struct_group``, unions of pointers) as C name lookup does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
from pathlib import Path
from typing import NamedTuple

from tracer.privdir import ours, owned
from tracer.textfile import write_private

VMLINUX = Path("/sys/kernel/btf/vmlinux")
NOTES = Path("/sys/kernel/notes")
CACHE_DIRS = (Path("/run/tracer/btf"),)  # root's; anyone else: $XDG_CACHE_HOME/tracer/btf (see cache_dirs)
MAX_OFFSET = 1 << 16  # bytes: far beyond any of the structs read (sk_buff is ~256 bytes)
SIZES = frozenset({0, 1, 2, 4, 8})  # what Btf.field gives (0: an array)
MAX_CACHE_FILE = 1 << 16  # bytes read from a cache file at most
BTF_MAGIC = 0xEB9F
NT_GNU_BUILD_ID = 3

# BTF kinds: a record is 12 bytes, plus this many bytes, plus per-member bytes × vlen.
_INT, _PTR, _ARRAY, _STRUCT, _UNION = 1, 2, 3, 4, 5
_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG = 8, 9, 10, 11, 18
_QUALIFIERS = frozenset({_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG})
_EXTRA = {_INT: 4, _ARRAY: 12, 14: 4, 17: 4}  # INT, ARRAY, VAR, DECL_TAG
_PER_MEMBER = {_STRUCT: 12, _UNION: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # ENUM, FUNC_PROTO, DATASEC, ENUM64
_RECORD = struct.Struct("<III")


class Field(NamedTuple):
    """Where a field lies from the start of its outermost struct."""

    offset: int  # bytes
    size: int  # bytes: 8 for a pointer, 0 for an array


class Btf:
    """The type records of one BTF blob, numbered as the kernel numbers them (from 1)."""

    def __init__(self, data: bytes) -> None:
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from(
            "<HBBIIIII", data, 0)
        if magic != BTF_MAGIC:
            raise ValueError("not BTF (bad magic)")
        self._data = data
        self._strings = hdr_len + str_off
        self._records: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]  # pos, kind, info, size/type; id 0 is void
        self._structs: dict[str, int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name, info, size = _RECORD.unpack_from(data, pos)
            kind = (info >> 24) & 0x1F
            if kind in (_STRUCT, _UNION) and name:
                self._structs.setdefault(self._name(name), len(self._records))
            self._records.append((pos, kind, info, size))
            pos += 12 + _EXTRA.get(kind, 0) + _PER_MEMBER.get(kind, 0) * (info & 0xFFFF)

    def _name(self, off: int) -> str:
        start = self._strings + off
        return self._data[start:self._data.index(b"\0", start)].decode()

    def _resolve(self, tid: int) -> int:
        while self._records[tid][1] in _QUALIFIERS:
            tid = self._records[tid][3]
        return tid

    def _member(self, tid: int, name: str) -> tuple[int, int, int] | None:
        """(bit offset, type id, bit field size or 0) of ``name`` in struct/union ``tid``, looking
        into anonymous members."""
        pos, kind, info, _ = self._records[self._resolve(tid)]
        if kind not in (_STRUCT, _UNION):
            return None
        bitfields = bool(info >> 31)  # kind_flag: moff is bit field size << 24 | bit offset
        for k in range(info & 0xFFFF):
            mname, mtype, moff = _RECORD.unpack_from(self._data, pos + 12 + 12 * k)
            bit, bits = (moff & 0xFFFFFF, moff >> 24) if bitfields else (moff, 0)
            if mname and self._name(mname) == name:
                return bit, mtype, bits
            if not mname and (inner := self._member(mtype, name)) is not None:
                return bit + inner[0], inner[1], inner[2]
        return None

    def field(self, struct_name: str, *path: str) -> Field:
        """``struct_name.path[0].path[1]…``: KeyError naming what is missing on this kernel."""
        if struct_name not in self._structs:
            raise KeyError(f"struct {struct_name}")
        tid, bits = self._structs[struct_name], 0
        for name in path:
            found = self._member(tid, name)
            if found is None:
                raise KeyError(f"{struct_name}.{'.'.join(path)}")
            bits, tid = bits + found[0], found[1]
            if found[2]:  # even byte-aligned: a load of its storage type would read its neighbours
                raise KeyError(f"{struct_name}.{'.'.join(path)} is a bit field")
        if bits % 8:
            raise KeyError(f"{struct_name}.{'.'.join(path)} is a bit field")
        _, kind, _, size = self._records[self._resolve(tid)]
        return Field(bits // 8, 8 if kind == _PTR else size if kind in (_INT, _STRUCT, _UNION) else 0)


def build_id() -> str | None:
    """The running kernel's GNU build id (hex), from its ELF notes; None when it has none."""
    try:
        data = NOTES.read_bytes()
    except OSError:
        return None
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_end = pos + 12 + (namesz + 3) // 4 * 4
        if ntype == NT_GNU_BUILD_ID and data[pos + 12:pos + 12 + namesz].rstrip(b"\0") == b"GNU":
            return data[name_end:name_end + descsz].hex()
        pos = name_end + (descsz + 3) // 4 * 4
    return None


def cache_dirs() -> list[Path]:
    """Where offsets are cached: root only in its own ``/run`` directory (its environment may
    be the user's, ``sudo -E``), anyone else in ``$XDG_CACHE_HOME``."""
    if os.geteuid() == 0:
        return list(CACHE_DIRS)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(xdg) / "tracer" / "btf"]


def cache_key() -> str:
    """This kernel build: release, build id and BTF size, or a hash of the BTF without a build id.
    OSError without BTF."""
    size = VMLINUX.stat().st_size
    build = build_id() or f"no-build-id-{hashlib.sha256(VMLINUX.read_bytes()).hexdigest()[:32]}"
    release = re.sub(r"[^A-Za-z0-9._+-]", "_", os.uname().release)
    return f"{release}-{build}-{size}"


def _read(path: Path) -> dict | None:
    """A cache document, or None: missing, not a regular file of ours, too long, not JSON."""
    if not ours(path.parent):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not owned(st):
            return None
        data = f.read(MAX_CACHE_FILE + 1)
    try:
        doc = json.loads(data) if len(data) <= MAX_CACHE_FILE else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _int(v: object) -> bool:
    return type(v) is int  # not bool, not float


def parse_cached(doc: dict, fields: dict[str, tuple[str, ...]]) -> dict[str, Field] | None:
    """The offsets of a cache document if it is for exactly ``fields`` and every one is a
    ``[offset, size]`` pair of plausible integers; None otherwise (then recomputed)."""
    if doc.get("fields") != {k: list(v) for k, v in fields.items()}:
        return None
    offs = doc.get("offsets")
    if not isinstance(offs, dict) or set(offs) != set(fields):
        return None
    out = {}
    for name, v in offs.items():
        if not (isinstance(v, list) and len(v) == 2 and all(_int(x) for x in v)):
            return None
        if not (0 <= v[0] < MAX_OFFSET and v[1] in SIZES):
            return None
        out[name] = Field(v[0], v[1])
    return out


def offsets(fields: dict[str, tuple[str, ...]]) -> dict[str, Field]:
    """``name → (struct, member, member…)`` resolved on the running kernel, from the cache when this
    kernel build was seen before. KeyError or OSError (no BTF, a field this kernel lacks): the
    caller falls back to letting bpftrace resolve the types."""
    try:
        key: str | None = cache_key()
    except OSError:
        key = None
    for d in cache_dirs() if key else []:
        doc = _read(d / f"{key}.json")
        if doc is not None and (cached := parse_cached(doc, fields)) is not None:
            return cached
    btf = Btf(VMLINUX.read_bytes())
    out = {k: btf.field(*path) for k, path in fields.items()}
    if key:
        _save(key, {"fields": {k: list(v) for k, v in fields.items()},
                    "offsets": {k: list(v) for k, v in out.items()}})
    return out


def _save(key: str, doc: dict) -> None:
    """Into the first cache directory of ours alone that takes it (textfile.write_private: a new
    file no symlink redirects, renamed into place)."""
    for d in cache_dirs():
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not ours(d):
                continue
            d.chmod(0o700)  # one made by an older tracer (0755): the cache is no one else's business
            write_private(d / f"{key}.json", json.dumps(doc))
            return
        except OSError:
            continue
