"""BTF reading: a hand-built blob (structs, an anonymous union, a typedef, a pointer) and, where
the kernel has BTF, the offsets the drop-reason script reads on the running kernel."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tracer.evidence import btf, dropreasons


def _blob() -> bytes:
    """struct inner {int a; int b;}; typedef struct inner inner_t;
    struct outer {char *p; union {int u; inner_t in;}; int c;}  (offsets 0, 8, 16)."""
    strings = b"\0int\0inner\0a\0b\0inner_t\0outer\0p\0u\0in\0c\0char\0"
    at = {s: strings.index(b"\0" + s.encode() + b"\0") + 1 for s in ("int", "inner", "a", "b", "inner_t", "outer",
                                                                     "p", "u", "in", "c", "char")}

    def rec(name: int, kind: int, vlen: int, size: int) -> bytes:
        return struct.pack("<III", name, kind << 24 | vlen, size)

    types = b"".join([
        rec(at["int"], 1, 0, 4) + struct.pack("<I", 32),                     # 1 int
        rec(at["inner"], 4, 2, 8) + struct.pack("<III", at["a"], 1, 0)
        + struct.pack("<III", at["b"], 1, 32),                               # 2 struct inner
        rec(at["inner_t"], 8, 0, 2),                                         # 3 typedef inner_t
        rec(0, 5, 2, 8) + struct.pack("<III", at["u"], 1, 0)
        + struct.pack("<III", at["in"], 3, 0),                               # 4 anonymous union
        rec(at["char"], 1, 0, 1) + struct.pack("<I", 8),                     # 5 char
        rec(0, 2, 0, 5),                                                     # 6 char *
        rec(at["outer"], 4, 3, 24) + struct.pack("<III", at["p"], 6, 0)
        + struct.pack("<III", 0, 4, 64) + struct.pack("<III", at["c"], 1, 128),  # 7 struct outer
    ])
    header = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_members_through_anonymous_unions_and_typedefs() -> None:
    b = btf.Btf(_blob())
    assert b.field("outer", "p") == btf.Field(0, 8)  # a pointer
    assert b.field("outer", "u") == btf.Field(8, 4)  # inside the anonymous union
    assert b.field("outer", "in", "b") == btf.Field(12, 4)  # through the typedef
    assert b.field("outer", "c") == btf.Field(16, 4)
    with pytest.raises(KeyError):
        b.field("outer", "nope")
    with pytest.raises(KeyError):
        b.field("nostruct", "a")
    with pytest.raises(ValueError):
        btf.Btf(b"\0" * 24)


def test_offsets_are_cached_per_kernel_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not btf.VMLINUX.exists():
        pytest.skip("this kernel has no BTF")
    monkeypatch.setattr(btf, "CACHE_DIRS", (tmp_path,))
    first = btf.offsets(dropreasons.FIELDS)
    [cached] = tmp_path.iterdir()
    assert btf.build_id() is None or cached.name.startswith(btf.build_id())
    assert btf.offsets(dropreasons.FIELDS) == first
    # A cache written for other fields is not trusted for these.
    assert btf.offsets({"head": ("sk_buff", "head")}) == {"head": first["skb_head"]}
    assert first["skb_head"].size == 8 and first["dev_name"].size == 0


def test_script_reads_fields_at_btf_offsets_else_by_type() -> None:
    match = dropreasons.ProbeMatch(1)
    fields = {k: btf.Field(100 + i, 8 if k in ("skb_head", "skb_dev", "skb_sk", "dev_net", "sk_net") else 4)
              for i, k in enumerate(dropreasons.FIELDS)}
    fast = dropreasons.script(match, fields=fields)
    assert "struct" not in fast and "->" not in fast.replace("args->", "")
    assert "*(uint64 *)($skb + 100)" in fast and "str($dev + 106, 16)" in fast
    assert "(struct sk_buff *)args->skbaddr" in dropreasons.script(match)
