"""Kernel struct field offsets from the running kernel's BTF (``/sys/kernel/btf/vmlinux``).

The drop-reason script (:mod:`.dropreasons`) reads a few fields of ``struct sk_buff``,
``struct net_device``, ``struct net`` and ``struct sock``. Written as ``$skb->dev->name``,
bpftrace resolves those types itself at every start, which costs it about a second of its
1–1.5 s start-up (measured on 6.x kernels, bpftrace 0.17); written as loads at byte offsets
read here, it attaches in 0.2–0.3 s. The offsets come from the kernel's own BTF, never from
a table written here, and are cached per kernel build (its GNU build id and the size of its
BTF) so a trace reads the ~5 MB of BTF only once per boot of a new kernel.

Only what this needs of the BTF format (Documentation/bpf/btf.rst) is decoded: every type
record's length (to number them), and the members of structs and unions, descending into
anonymous ones (``struct_group``, unions of pointers) as C name lookup does.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import NamedTuple

VMLINUX = Path("/sys/kernel/btf/vmlinux")
NOTES = Path("/sys/kernel/notes")
CACHE_DIRS = (Path("/run/tracer/btf"),)  # then $XDG_CACHE_HOME/tracer/btf (see cache_dirs)
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

    def _member(self, tid: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of ``name`` in struct/union ``tid``, looking into anonymous members."""
        pos, kind, info, _ = self._records[self._resolve(tid)]
        if kind not in (_STRUCT, _UNION):
            return None
        bitfields = bool(info >> 31)
        for k in range(info & 0xFFFF):
            mname, mtype, moff = _RECORD.unpack_from(self._data, pos + 12 + 12 * k)
            bit = moff & 0xFFFFFF if bitfields else moff
            if mname and self._name(mname) == name:
                return bit, mtype
            if not mname and (inner := self._member(mtype, name)) is not None:
                return bit + inner[0], inner[1]
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
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [*CACHE_DIRS, Path(xdg) / "tracer" / "btf"]


def offsets(fields: dict[str, tuple[str, ...]]) -> dict[str, Field]:
    """``name → (struct, member, member…)`` resolved on the running kernel, from the cache when this
    kernel build was seen before. KeyError or OSError (no BTF, a field this kernel lacks): the
    caller falls back to letting bpftrace resolve the types."""
    try:
        key = f"{build_id() or 'no-build-id'}-{VMLINUX.stat().st_size}"
    except OSError:
        key = None
    wanted = {k: list(v) for k, v in fields.items()}
    for d in cache_dirs() if key else []:
        try:
            doc = json.loads((d / f"{key}.json").read_text())
        except (OSError, ValueError):
            continue
        if doc.get("fields") == wanted:
            return {k: Field(*v) for k, v in doc["offsets"].items()}
    btf = Btf(VMLINUX.read_bytes())
    out = {k: btf.field(*path) for k, path in fields.items()}
    if key:
        _save(key, {"fields": wanted, "offsets": {k: list(v) for k, v in out.items()}})
    return out


def _save(key: str, doc: dict) -> None:
    """Into the first cache directory that takes it (atomically: a reader never sees half a file)."""
    for d in cache_dirs():
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{key}.{os.getpid()}"
            tmp.write_text(json.dumps(doc))
            tmp.replace(d / f"{key}.json")
            return
        except OSError:
            continue
