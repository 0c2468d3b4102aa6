"""BTF reading: a hand-built blob (structs, an anonymous union, a typedef, a pointer) and, where
the kernel has BTF, the offsets the drop-reason script reads on the running kernel."""

from __future__ import annotations

import json
import os
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


def test_a_byte_aligned_bit_field_is_refused() -> None:
    """struct bf {unsigned x:8; unsigned y;} with kind_flag: x starts on a byte, but a 4-byte load
    of its storage type would also read the bits after it."""
    strings = b"\0int\0bf\0x\0y\0"
    at = {n: strings.index(b"\0" + n + b"\0") + 1 for n in (b"int", b"bf", b"x", b"y")}
    types = (struct.pack("<III", at[b"int"], 1 << 24, 4) + struct.pack("<I", 32)
             + struct.pack("<III", at[b"bf"], 1 << 31 | 4 << 24 | 2, 8)
             + struct.pack("<III", at[b"x"], 1, 8 << 24 | 0) + struct.pack("<III", at[b"y"], 1, 32))
    b = btf.Btf(struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
                + types + strings)
    with pytest.raises(KeyError, match="bit field"):
        b.field("bf", "x")
    assert b.field("bf", "y") == btf.Field(4, 4)  # kind_flag, bit field size 0: an ordinary member


def test_cache_key_tells_kernels_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a build id, two BTF blobs of one size are two keys; the release is in it."""
    monkeypatch.setattr(btf, "NOTES", tmp_path / "no-notes")
    vmlinux = tmp_path / "vmlinux"
    monkeypatch.setattr(btf, "VMLINUX", vmlinux)
    vmlinux.write_bytes(_blob())
    first = btf.cache_key()
    vmlinux.write_bytes(_blob().replace(b"inner", b"innex"))
    assert btf.cache_key() != first and os.uname().release in first and "no-build-id" in first


@pytest.fixture
def kernel_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Root's cache directory moved to ``tmp_path/run`` (empty, as after a reboot)."""
    if not btf.VMLINUX.exists():
        pytest.skip("this kernel has no BTF")
    if os.geteuid() != 0:
        pytest.skip("root's cache")
    run = tmp_path / "run"
    monkeypatch.setattr(btf, "CACHE_DIRS", (run,))
    return run


def _truth() -> dict[str, btf.Field]:
    b = btf.Btf(btf.VMLINUX.read_bytes())
    return {k: b.field(*path) for k, path in dropreasons.FIELDS.items()}


def _doc(offsets: dict) -> str:
    return json.dumps({"fields": {k: list(v) for k, v in dropreasons.FIELDS.items()}, "offsets": offsets})


INJECTION = '0); system("touch /tmp/trc-pwned"); //'


def test_root_never_reads_the_callers_xdg_cache(kernel_cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``sudo -E tracer``: root has the user's XDG_CACHE_HOME, whose files the user wrote."""
    xdg = tmp_path / "xdg"
    (xdg / "tracer" / "btf").mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    poisoned = {k: [INJECTION, 8] for k in dropreasons.FIELDS}
    (xdg / "tracer" / "btf" / f"{btf.cache_key()}.json").write_text(_doc(poisoned))
    assert btf.cache_dirs() == [kernel_cache]
    fields = dropreasons.kernel_fields()
    assert fields == _truth()
    assert "system" not in dropreasons.script(dropreasons.ProbeMatch(1), fields=fields)


@pytest.mark.parametrize("bad", [
    {"skb_head": ["0); system(\"id\"); //", 8]},  # code, not an offset
    {"skb_head": [24, True]},  # a bool is an int to Python
    {"skb_head": [24.0, 8]},
    {"skb_head": [-8, 8]},
    {"skb_head": [65536, 8]},
    {"skb_head": [24, 3]},
    {"skb_head": [24, 8, 0]},
    {"skb_head": 24},
    {"evil": [0, 8]},  # a field not asked for
    {"skb_head": None},
])
def test_a_cache_with_anything_but_small_integer_offsets_is_recomputed(kernel_cache: Path, bad: dict) -> None:
    truth = _truth()
    doc = {k: list(v) for k, v in truth.items()} | bad
    if bad.get("skb_head", 0) is None:
        del doc["skb_head"]  # a field missing
    kernel_cache.mkdir(mode=0o700)
    (kernel_cache / f"{btf.cache_key()}.json").write_text(_doc(doc))
    assert btf.offsets(dropreasons.FIELDS) == truth
    # ... and the cache is written again, right.
    assert json.loads((kernel_cache / f"{btf.cache_key()}.json").read_text())["offsets"] == {
        k: list(v) for k, v in truth.items()}


def test_fields_unfit_for_the_script_are_refused() -> None:
    fields = {k: btf.Field(8, 8) for k in dropreasons.FIELDS}
    assert dropreasons.usable(fields)
    for bad in (btf.Field("8) + 1; //", 8), btf.Field(8, 16), btf.Field(8, 0), btf.Field(True, 8), btf.Field(1 << 16, 8)):
        with pytest.raises(ValueError):
            dropreasons.script(dropreasons.ProbeMatch(1), fields=fields | {"skb_head": bad})  # type: ignore[arg-type]
    assert not dropreasons.usable({k: v for k, v in fields.items() if k != "inum"})


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "other owner", "symlink", "open dir"])
def test_a_cache_file_not_ours_alone_is_not_read(kernel_cache: Path, tmp_path: Path, how: str) -> None:
    """Valid-looking but wrong offsets, in a file someone else could have written: not read."""
    wrong = {k: [4, 8] for k in dropreasons.FIELDS}
    kernel_cache.mkdir(mode=0o700)
    path = kernel_cache / f"{btf.cache_key()}.json"
    target = tmp_path / "elsewhere.json"
    (target if how == "symlink" else path).write_text(_doc(wrong))
    if how == "symlink":
        path.symlink_to(target)
    elif how == "open dir":
        kernel_cache.chmod(0o777)
    else:
        os.chmod(path, {"group-writable": 0o620, "world-writable": 0o602, "other owner": 0o600}[how])
        if how == "other owner":
            os.chown(path, 12345, 12345)
    assert btf.offsets(dropreasons.FIELDS) == _truth()


def test_saving_follows_no_symlink(kernel_cache: Path, tmp_path: Path) -> None:
    """Links planted at the names the cache writes (its old, predictable temporary name, the
    cache file itself) redirect no write as root: the victim stays as it was. The directory
    (0755 as older tracers made it) ends up root's alone."""
    kernel_cache.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    key = btf.cache_key()
    (kernel_cache / f".{key}.{os.getpid()}").symlink_to(victim)
    (kernel_cache / f"{key}.json").symlink_to(victim)
    assert btf.offsets(dropreasons.FIELDS) == _truth()
    assert victim.read_text() == "precious"
    saved = kernel_cache / f"{key}.json"
    assert not saved.is_symlink() and saved.stat().st_mode & 0o777 == 0o600
    assert kernel_cache.stat().st_mode & 0o777 == 0o700
    assert btf.offsets(dropreasons.FIELDS) == _truth()


def test_offsets_are_cached_per_kernel_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not btf.VMLINUX.exists():
        pytest.skip("this kernel has no BTF")
    monkeypatch.setattr(btf, "CACHE_DIRS", (tmp_path,))
    first = btf.offsets(dropreasons.FIELDS)
    [cached] = tmp_path.iterdir()
    assert cached.name == f"{btf.cache_key()}.json" and os.uname().release in cached.name
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
