"""Structure-aware mutator for classic pcap and pcapng capture files (deterministic given a seed).

A seed file is parsed into its structure (pcapng: blocks in their section's
byte order, with the fixed fields and options of SHB, IDB, EPB, PB, SPB and
ISB; classic pcap: file header fields and records), one to four structural
mutations are applied (field values chosen from boundary values, lengths kept
consistent or deliberately broken, blocks inserted, dropped, duplicated,
converted or byte-swapped, options rewritten), the structure is serialised
again and finally, sometimes, the bytes are cut short or garbage is appended.

``mutant(seeds, case)`` is a pure function of the seed list and the case
number (``random.Random(case)``); it also returns a description of every
mutation applied, so a failing case can be reported and replayed.
:func:`minimise` shrinks a failing input while a predicate still holds.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

SHB, IDB, PB, SPB, NRB, ISB, EPB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6
BOM = 0x1A2B3C4D
MAX_CAPLEN = 262_144
PCAP_MAGICS = (0xA1B2C3D4, 0xA1B23C4D)  # micro, nano (written in the file's byte order)
LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276)

U32 = (0, 1, 2, 3, 4, 7, 8, 11, 12, 13, 15, 16, 20, 24, 27, 28, 31, 32, 64, 1500, 65535, 65536,
       MAX_CAPLEN - 1, MAX_CAPLEN, MAX_CAPLEN + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFC, 0xFFFFFFFF)
U16 = (0, 1, 2, 3, 4, 7, 8, 9, 14, 255, 256, 0x7FFF, 0x8000, 0xFFFF)
I64 = (0, 1, -1, 1 << 31, 1 << 32, 1 << 33, (1 << 33) + 1, -(1 << 33), -(1 << 33) - 1, (1 << 62), (1 << 63) - 1, -(1 << 63))
TSRESOL = (0, 1, 3, 6, 9, 10, 12, 19, 20, 63, 0x7F, 0x80, 0x81, 0x8A, 0x9E, 0xA0, 0xA2, 0xBF, 0xC0, 0xFF)


def u32(rng: random.Random, current: int | None = None) -> int:
    """A boundary value, a small step from ``current``, or any 32-bit value."""
    r = rng.random()
    if current is not None and r < 0.3:
        return (current + rng.choice((-8, -4, -3, -1, 1, 3, 4, 8, 16, 64))) & 0xFFFFFFFF
    if r < 0.85:
        return rng.choice(U32)
    return rng.getrandbits(32)


def u16(rng: random.Random) -> int:
    return rng.choice(U16) if rng.random() < 0.8 else rng.getrandbits(16)


def flip(bo: str) -> str:
    return ">" if bo == "<" else "<"


# --- pcapng structure ------------------------------------------------------------------------------------------


@dataclass
class Block:
    """One pcapng block: ``body`` lies between the leading length and the trailing length, in byte order ``bo``.

    ``length``/``trailer`` override the computed lengths (a deliberately broken block); ``raw`` replaces the
    whole serialised block (bytes that did not parse as a block).
    """

    type: int
    body: bytes
    bo: str
    length: int | None = None
    trailer: int | None = None
    raw: bytes | None = None

    def serialise(self) -> bytes:
        if self.raw is not None:
            return self.raw
        body = self.body + bytes(-len(self.body) % 4)
        n = 12 + len(body)
        length = n if self.length is None else self.length
        trailer = n if self.trailer is None else self.trailer
        return struct.pack(self.bo + "II", self.type, length) + body + struct.pack(self.bo + "I", trailer)


# Fixed part of each block body before its options (or packet data): struct format without byte order.
FIXED = {SHB: "IHHq", IDB: "HHI", EPB: "IIIII", PB: "HHIIII", SPB: "I", ISB: "III"}


def parse_pcapng(data: bytes) -> list[Block]:
    """Blocks of a pcapng file; whatever does not parse (bad magic, lengths) ends the list as one raw block."""
    out: list[Block] = []
    off, bo = 0, "<"
    while off + 12 <= len(data):
        typ = int.from_bytes(data[off : off + 4], "little")
        if typ == SHB and off + 12 <= len(data):
            bom = data[off + 8 : off + 12]
            if bom == struct.pack("<I", BOM):
                bo = "<"
            elif bom == struct.pack(">I", BOM):
                bo = ">"
            else:
                break
        typ, length = struct.unpack_from(bo + "II", data, off)
        if length < 12 or length % 4 or off + length > len(data):
            break
        (trailer,) = struct.unpack_from(bo + "I", data, off + length - 4)
        if trailer != length:
            break
        out.append(Block(typ, data[off + 8 : off + length - 4], bo))
        off += length
    if off < len(data):
        out.append(Block(0, b"", bo, raw=data[off:]))
    return out


def serialise_pcapng(blocks: Sequence[Block]) -> bytes:
    return b"".join(b.serialise() for b in blocks)


def packet_data_end(b: Block) -> int:
    """Offset in ``b.body`` where the options of an EPB/PB start (after the padded packet data)."""
    fixed = struct.calcsize("=" + FIXED[b.type])
    caplen = struct.unpack_from(b.bo + "I", b.body, fixed - 8)[0]
    return min(len(b.body), fixed + caplen + (-caplen % 4))


def options_at(b: Block) -> int | None:
    """Offset of the options in ``b.body``, None for blocks without options (or unknown ones)."""
    if b.raw is not None or b.type not in FIXED or b.type == SPB:
        return None
    if len(b.body) < struct.calcsize("=" + FIXED[b.type]):
        return None
    if b.type in (EPB, PB):
        return packet_data_end(b)
    return struct.calcsize("=" + FIXED[b.type])


def parse_options(raw: bytes, bo: str) -> list[tuple[int, bytes]]:
    out = []
    off = 0
    while off + 4 <= len(raw):
        code, length = struct.unpack_from(bo + "HH", raw, off)
        if code == 0:
            break
        out.append((code, raw[off + 4 : off + 4 + length]))
        off += 4 + length + (-length % 4)
    return out


def build_options(opts: Sequence[tuple[int, bytes]], bo: str, *, end: bool = True) -> bytes:
    out = [struct.pack(bo + "HH", c, len(v)) + v + bytes(-len(v) % 4) for c, v in opts]
    if end and opts:
        out.append(struct.pack(bo + "HH", 0, 0))
    return b"".join(out)


# Numeric option values (code → struct format) that change with the byte order.
_NUMERIC_OPTS = {IDB: {8: "Q", 14: "q"}, EPB: {2: "I", 4: "Q"}, PB: {2: "I"},
                 ISB: {2: "II", 3: "II", 4: "Q", 5: "Q", 6: "Q", 7: "Q", 8: "Q"}}


def swap_block(b: Block, to: str) -> Block:
    """``b`` re-encoded in byte order ``to`` (fixed fields and known numeric options swapped; the data kept)."""
    if b.raw is not None or b.bo == to:
        return replace(b, bo=to)
    fmt = FIXED.get(b.type)
    body = b.body
    if fmt is not None and len(body) >= struct.calcsize("=" + fmt):
        n = struct.calcsize("=" + fmt)
        head = struct.pack(to + fmt, *struct.unpack_from(b.bo + fmt, body))
        at = options_at(b)
        if at is None:  # SPB: the rest is packet data
            body = head + body[n:]
        else:
            opts = []
            for code, v in parse_options(body[at:], b.bo):
                vf = _NUMERIC_OPTS.get(b.type, {}).get(code)
                if vf and len(v) == struct.calcsize("=" + vf):
                    v = struct.pack(to + vf, *struct.unpack(b.bo + vf, v))
                opts.append((code, v))
            body = head + body[n:at] + build_options(opts, to)

    def swap(x: int | None) -> int | None:  # a length override keeps its bytes, read in the other order
        return None if x is None else int.from_bytes(struct.pack(b.bo + "I", x), "big" if to == ">" else "little")

    return Block(b.type, body, to, swap(b.length), swap(b.trailer))


def set_fixed(b: Block, index: int, value: int) -> Block:
    """``b`` with fixed field ``index`` (see :data:`FIXED`) set to ``value`` (masked to the field's width)."""
    fmt = FIXED[b.type]
    n = struct.calcsize("=" + fmt)
    if len(b.body) < n:
        return b
    vals = list(struct.unpack_from(b.bo + fmt, b.body))
    bits = struct.calcsize("=" + fmt[index]) * 8
    value &= (1 << bits) - 1
    if fmt[index] == "q" and value >= 1 << 63:
        value -= 1 << 64
    vals[index] = value
    return replace(b, body=struct.pack(b.bo + fmt, *vals) + b.body[n:])


def with_options(b: Block, opts: Sequence[tuple[int, bytes]], *, end: bool = True) -> Block:
    at = options_at(b)
    if at is None:
        return b
    return replace(b, body=b.body[:at] + build_options(opts, b.bo, end=end))


# --- pcapng mutations: each returns a description, or None when it did not apply ---------------------------------

Muts = list[Block]


def _pick(rng: random.Random, blocks: Muts, types: Sequence[int] | None = None) -> int | None:
    idx = [i for i, b in enumerate(blocks) if b.raw is None and (types is None or b.type in types)]
    return rng.choice(idx) if idx else None


def m_block_type(rng: random.Random, bl: Muts) -> str | None:
    i = _pick(rng, bl)
    if i is None:
        return None
    t = rng.choice((0, IDB, PB, SPB, NRB, ISB, EPB, 7, 8, 0x0BAD, 0x80000001, SHB, rng.getrandbits(32)))
    bl[i] = replace(bl[i], type=t)
    return f"block {i} type → {t:#x}"


def m_block_len(rng: random.Random, bl: Muts) -> str | None:
    i = _pick(rng, bl)
    if i is None:
        return None
    n = 12 + len(bl[i].body) + (-len(bl[i].body) % 4)
    which = rng.choice(("leading", "trailing", "both"))
    v = u32(rng, n)
    if which in ("leading", "both"):
        bl[i].length = v
    if which in ("trailing", "both"):
        bl[i].trailer = v
    return f"block {i} {which} length {n} → {v}"


def m_resize_body(rng: random.Random, bl: Muts) -> str | None:
    """Grow or shrink a block's body, lengths kept consistent (fields after the cut move or vanish)."""
    i = _pick(rng, bl)
    if i is None:
        return None
    body = bl[i].body
    at = rng.randrange(len(body) + 1)
    if rng.random() < 0.5 and body:
        k = rng.choice((1, 2, 4, 8, 16, len(body) - at))
        bl[i] = replace(bl[i], body=body[:at] + body[at + k :])
        return f"block {i}: {k} body bytes cut at {at}"
    k = rng.choice((1, 4, 8, 64, 1000))
    bl[i] = replace(bl[i], body=body[:at] + rng.randbytes(k) + body[at:])
    return f"block {i}: {k} body bytes inserted at {at}"


def m_shb(rng: random.Random, bl: Muts) -> str | None:
    i = _pick(rng, bl, (SHB,))
    if i is None:
        return None
    what = rng.choice(("bom", "version", "section length", "options"))
    if what == "bom":
        v = rng.choice((0x4D3C2B1A, 0, 0x1A2B3C4C, rng.getrandbits(32)))
        bl[i] = set_fixed(bl[i], 0, v)
        return f"SHB {i} byte-order magic → {v:#x}"
    if what == "version":
        idx = rng.choice((1, 2))
        v = u16(rng)
        bl[i] = set_fixed(bl[i], idx, v)
        return f"SHB {i} version field {idx} → {v}"
    if what == "section length":
        v = rng.choice((*I64, len(serialise_pcapng(bl)), rng.getrandbits(64)))
        bl[i] = set_fixed(bl[i], 3, v)
        return f"SHB {i} section length → {v}"
    return _m_options(rng, bl, i)


def m_idb(rng: random.Random, bl: Muts) -> str | None:
    i = _pick(rng, bl, (IDB,))
    if i is None:
        return None
    what = rng.choice(("linktype", "snaplen", "options", "options", "options"))
    if what == "linktype":
        v = rng.choice((*LINKTYPES, 2, 105, 127, 147, 0xFFFF, u16(rng)))
        bl[i] = set_fixed(bl[i], 0, v)
        return f"IDB {i} link type → {v}"
    if what == "snaplen":
        v = u32(rng)
        bl[i] = set_fixed(bl[i], 2, v)
        return f"IDB {i} snaplen → {v}"
    return _m_options(rng, bl, i)


def _option_value(rng: random.Random, btype: int, code: int, bo: str) -> bytes:
    r = rng.random()
    if btype == IDB and code == 9:
        return bytes([rng.choice(TSRESOL)]) if r < 0.8 else rng.randbytes(rng.choice((0, 2, 4)))
    if btype == IDB and code == 14:
        if r < 0.8:
            return struct.pack(bo + "q", rng.choice(I64) if rng.random() < 0.7 else rng.getrandbits(64) - (1 << 63))
        return rng.randbytes(rng.choice((0, 1, 4, 7, 9, 16)))
    if btype == IDB and code in (2, 3):
        return rng.choice((b"", b"\0", b"west:eth0", b"x" * 300, b"\xff\xfe\x80", b"a\0b", rng.randbytes(rng.randrange(40))))
    if btype == ISB and code in (4, 5, 6, 7, 8):
        if r < 0.8:
            return struct.pack(bo + "Q", rng.choice((0, 1, 3, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, rng.getrandbits(64))))
        return rng.randbytes(rng.choice((0, 4, 7, 9)))
    return rng.randbytes(rng.choice((0, 1, 2, 4, 8, 13, rng.randrange(100))))


def _m_options(rng: random.Random, bl: Muts, i: int) -> str | None:
    b = bl[i]
    at = options_at(b)
    if at is None:
        return None
    opts = parse_options(b.body[at:], b.bo)
    codes = {IDB: (2, 3, 8, 9, 14, 1, 4, 5, 6, 7, 10, 11, 12, 13, 15), ISB: (4, 5, 6, 7, 8, 1, 2, 3),
             SHB: (1, 2, 3, 4), EPB: (1, 2, 3, 4, 5, 6, 7)}.get(b.type, (1, 2))
    op = rng.choice(("add", "add", "replace", "drop", "no end", "bad length", "dup", "random code"))
    if op in ("add", "replace", "random code") or not opts:
        code = rng.getrandbits(16) or 1 if op == "random code" else rng.choice(codes)
        val = _option_value(rng, b.type, code, b.bo)
        if op == "replace" and opts:
            opts[rng.randrange(len(opts))] = (code, val)
        else:
            opts.insert(rng.randrange(len(opts) + 1), (code, val))
        bl[i] = with_options(b, opts)
        return f"block {i} type {b.type:#x}: option {code} = {val[:16].hex()}{'…' if len(val) > 16 else ''} ({op})"
    if op == "drop":
        k = rng.randrange(len(opts))
        del opts[k]
        bl[i] = with_options(b, opts)
        return f"block {i} type {b.type:#x}: option {k} dropped"
    if op == "dup":
        opts = opts + opts
        bl[i] = with_options(b, opts)
        return f"block {i} type {b.type:#x}: options duplicated"
    if op == "no end":
        bl[i] = with_options(b, opts, end=False)
        return f"block {i} type {b.type:#x}: no opt_endofopt"
    # An option length field that disagrees with its value (runs past the block or stops short).
    raw = bytearray(build_options(opts, b.bo))
    k = rng.randrange(len(opts))
    off = sum(4 + len(v) + (-len(v) % 4) for _, v in opts[:k])
    v = u16(rng)
    struct.pack_into(b.bo + "H", raw, off + 2, v)
    bl[i] = replace(b, body=b.body[:at] + bytes(raw))
    return f"block {i} type {b.type:#x}: option {k} length → {v}"


def m_packet(rng: random.Random, bl: Muts) -> str | None:
    i = _pick(rng, bl, (EPB, PB))
    if i is None:
        return None
    b = bl[i]
    names = ("ifid", "ts_hi", "ts_lo", "caplen", "wire")
    if b.type == PB:
        names = ("ifid", "drops", *names[1:])
    what = rng.choice(("field", "field", "field", "caplen consistent", "options"))
    if what == "options":
        return _m_options(rng, bl, i)
    if what == "caplen consistent":  # a new caplen with the data resized to match
        fixed = struct.calcsize("=" + FIXED[b.type])
        if len(b.body) < fixed:
            return None
        caplen = struct.unpack_from(b.bo + "I", b.body, fixed - 8)[0]
        new = rng.choice((0, 1, 4, 13, 14, 20, 33, 34, 41, 42, 60, max(0, caplen - 1), caplen + 1, 300, 2000))
        new = min(new, 4096)
        data = b.body[fixed : fixed + caplen]
        data = data[:new] + rng.randbytes(max(0, new - len(data)))
        rest = b.body[packet_data_end(b) :]
        nb = replace(b, body=b.body[:fixed] + data + bytes(-new % 4) + rest)
        bl[i] = set_fixed(nb, len(names) - 2, new)
        return f"packet block {i}: caplen {caplen} → {new}, data resized"
    k = rng.randrange(len(names))
    name = names[k]
    if name == "ifid":
        v = rng.choice((0, 1, 2, 3, 0xFFFF, 0xFFFFFFFF, 0x10000, rng.getrandbits(32)))
    elif name.startswith("ts"):
        v = rng.choice((0, 1, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, rng.getrandbits(32)))
    else:
        cur = struct.unpack_from(b.bo + FIXED[b.type], b.body)[k] if len(b.body) >= struct.calcsize("=" + FIXED[b.type]) else 0
        v = u32(rng, cur)
    bl[i] = set_fixed(b, k, v)
    return f"packet block {i} ({'EPB' if b.type == EPB else 'PB'}) {name} → {v}"


def m_convert(rng: random.Random, bl: Muts) -> str | None:
    """Turn an EPB into a simple packet block or an obsolete packet block (same data)."""
    i = _pick(rng, bl, (EPB,))
    if i is None:
        return None
    b = bl[i]
    if len(b.body) < 20:
        return None
    ifid, hi, lo, caplen, wire = struct.unpack_from(b.bo + "IIIII", b.body)
    data = b.body[20 : 20 + caplen]
    if rng.random() < 0.5:
        w = wire if rng.random() < 0.7 else u32(rng, wire)
        bl[i] = Block(SPB, struct.pack(b.bo + "I", w) + data, b.bo)
        return f"EPB {i} → SPB (wire len {w})"
    bl[i] = Block(PB, struct.pack(b.bo + "HHIIII", ifid & 0xFFFF, rng.choice((0, 1, 0xFFFF)), hi, lo, caplen, wire) + data
                  + bytes(-len(data) % 4) + b.body[packet_data_end(b) :], b.bo)
    return f"EPB {i} → PB"


def m_spb(rng: random.Random, bl: Muts) -> str | None:
    i = _pick(rng, bl, (SPB,))
    if i is None:
        return m_convert(rng, bl)
    v = u32(rng, struct.unpack_from(bl[i].bo + "I", bl[i].body)[0] if len(bl[i].body) >= 4 else 0)
    bl[i] = set_fixed(bl[i], 0, v)
    return f"SPB {i} wire len → {v}"


def m_isb(rng: random.Random, bl: Muts) -> str | None:
    i = _pick(rng, bl, (ISB,))
    if i is None or rng.random() < 0.3:  # insert a new statistics block after some block
        at = rng.randrange(1, len(bl) + 1) if bl else 0
        bo = bl[at - 1].bo if at else "<"
        ifid = rng.choice((0, 0, 1, 2, 0xFFFFFFFF))
        opts = [(c, _option_value(rng, ISB, c, bo)) for c in rng.sample((4, 5, 6, 7, 8), rng.randrange(4))]
        bl.insert(at, Block(ISB, struct.pack(bo + "III", ifid, 0, 0) + build_options(opts, bo), bo))
        return f"ISB inserted at {at} (interface {ifid}, options {[c for c, _ in opts]})"
    if rng.random() < 0.4:
        v = rng.choice((0, 1, 2, 0xFFFFFFFF, rng.getrandbits(32)))
        bl[i] = set_fixed(bl[i], 0, v)
        return f"ISB {i} interface id → {v}"
    return _m_options(rng, bl, i)


def m_unknown_block(rng: random.Random, bl: Muts) -> str | None:
    at = rng.randrange(1, len(bl) + 1) if bl else 0
    bo = bl[at - 1].bo if at else "<"
    t = rng.choice((4, 7, 8, 9, 10, 0xBAD, 0x80000001, 0x40000000, rng.getrandbits(32) & ~0 or 7))
    if t == SHB:
        t = 7
    bl.insert(at, Block(t, rng.randbytes(rng.choice((0, 4, 8, 13, 64))), bo))
    return f"unknown block {t:#x} inserted at {at}"


def m_shuffle(rng: random.Random, bl: Muts) -> str | None:
    if len(bl) < 2:
        return None
    op = rng.choice(("delete", "duplicate", "swap", "move"))
    i, j = rng.randrange(len(bl)), rng.randrange(len(bl))
    if op == "delete":
        del bl[i]
        return f"block {i} deleted"
    if op == "duplicate":
        bl.insert(j, replace(bl[i]))
        return f"block {i} duplicated at {j}"
    if op == "swap":
        bl[i], bl[j] = bl[j], bl[i]
        return f"blocks {i} and {j} swapped"
    b = bl.pop(i)
    bl.insert(j, b)
    return f"block {i} moved to {j}"


def m_byte_order(rng: random.Random, bl: Muts) -> str | None:
    """Re-encode a whole section (SHB to the next SHB) in the other byte order, or only one block of it."""
    shbs = [k for k, b in enumerate(bl) if b.type == SHB and b.raw is None]
    if not shbs:
        return None
    s = rng.choice(shbs)
    e = next((k for k in shbs if k > s), len(bl))
    to = flip(bl[s].bo)
    if rng.random() < 0.8:
        bl[s:e] = [swap_block(b, to) for b in bl[s:e]]
        return f"section at block {s} re-encoded {'big' if to == '>' else 'little'}-endian"
    k = rng.randrange(s, e)
    bl[k] = swap_block(bl[k], to)
    return f"only block {k} re-encoded {'big' if to == '>' else 'little'}-endian"


def m_new_section(rng: random.Random, bl: Muts) -> str | None:
    """Append (or insert) a copy of the first section, possibly in the other byte order."""
    shbs = [k for k, b in enumerate(bl) if b.type == SHB and b.raw is None]
    if not shbs:
        return None
    e = next((k for k in shbs if k > shbs[0]), len(bl))
    sec = [replace(b) for b in bl[shbs[0] : e] if b.raw is None]
    to = flip(sec[0].bo) if rng.random() < 0.5 else sec[0].bo
    sec = [swap_block(b, to) for b in sec]
    at = rng.choice((len(bl), rng.randrange(len(bl) + 1)))
    bl[at:at] = sec
    return f"section of {len(sec)} blocks ({to}) inserted at block {at}"


def m_havoc(rng: random.Random, bl: Muts) -> str | None:
    """A few random bytes overwritten inside one block (header included)."""
    i = _pick(rng, bl)
    if i is None:
        return None
    raw = bytearray(bl[i].serialise())
    at = rng.randrange(len(raw))
    k = rng.choice((1, 2, 4))
    raw[at : at + k] = rng.randbytes(len(raw[at : at + k]))
    bl[i] = Block(bl[i].type, b"", bl[i].bo, raw=bytes(raw))
    return f"block {i}: {k} random bytes at block offset {at}"


PCAPNG_MUTATIONS: tuple[Callable[[random.Random, Muts], str | None], ...] = (
    m_block_type, m_block_len, m_block_len, m_resize_body, m_shb, m_idb, m_idb, m_idb, m_packet, m_packet, m_packet,
    m_convert, m_spb, m_isb, m_isb, m_unknown_block, m_shuffle, m_byte_order, m_byte_order, m_new_section, m_havoc,
)


# --- classic pcap structure ------------------------------------------------------------------------------------------


@dataclass
class Record:
    sec: int
    frac: int
    caplen: int | None  # None: len(data)
    wire: int
    data: bytes


@dataclass
class Pcap:
    bo: str
    magic: int
    major: int
    minor: int
    zone: int
    sigfigs: int
    snaplen: int
    linktype: int
    records: list[Record] = field(default_factory=list)
    tail: bytes = b""

    def serialise(self) -> bytes:
        out = [struct.pack(self.bo + "IHHIIII", self.magic, self.major, self.minor, self.zone, self.sigfigs,
                           self.snaplen, self.linktype)]
        for r in self.records:
            out.append(struct.pack(self.bo + "IIII", r.sec, r.frac, len(r.data) if r.caplen is None else r.caplen,
                                   r.wire) + r.data)
        return b"".join(out) + self.tail


def parse_pcap(data: bytes) -> Pcap:
    magic = int.from_bytes(data[:4], "little")
    bo = "<" if magic in PCAP_MAGICS else ">"
    p = Pcap(bo, *struct.unpack_from(bo + "IHHIIII", data))
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, wire = struct.unpack_from(bo + "IIII", data, off)
        if off + 16 + caplen > len(data):
            break
        p.records.append(Record(sec, frac, None, wire, data[off + 16 : off + 16 + caplen]))
        off += 16 + caplen
    p.tail = data[off:]
    return p


def pcap_from_pcapng(data: bytes, *, bo: str = "<", nano: bool = False) -> bytes:
    """A classic pcap with the EPBs of the first interface of a pcapng file (if_tsresol 6 or 9)."""
    blocks = parse_pcapng(data)
    idb = next(b for b in blocks if b.type == IDB)
    linktype = struct.unpack_from(idb.bo + "H", idb.body)[0]
    per_s = 10 ** dict(parse_options(idb.body[8:], idb.bo)).get(9, b"\x06")[0]
    p = Pcap(bo, PCAP_MAGICS[nano], 2, 4, 0, 0, MAX_CAPLEN, linktype)
    for b in blocks:
        if b.type == EPB:
            ifid, hi, lo, caplen, wire = struct.unpack_from(b.bo + "IIIII", b.body)
            if ifid == 0:
                sec, ticks = divmod((hi << 32) | lo, per_s)
                frac = ticks * (1_000_000_000 if nano else 1_000_000) // per_s
                p.records.append(Record(sec, frac, None, wire, b.body[20 : 20 + caplen]))
    return p.serialise()


def mutate_pcap(rng: random.Random, p: Pcap) -> str:
    op = rng.choice(("magic", "byte order", "version", "zone", "snaplen", "linktype", "linktype", "ts", "caplen",
                     "caplen", "caplen consistent", "wire", "records", "records", "tail"))
    if op == "magic":
        p.magic = rng.choice((*PCAP_MAGICS, 0xD4C3B2A1, 0x4D3CB2A1, 0xA1B2C3D5, SHB, rng.getrandbits(32)))
        return f"magic → {p.magic:#x}"
    if op == "byte order":
        p.bo = flip(p.bo)
        return f"byte order → {p.bo}"
    if op == "version":
        p.major, p.minor = u16(rng), u16(rng)
        return f"version → {p.major}.{p.minor}"
    if op == "zone":
        p.zone, p.sigfigs = u32(rng), u32(rng)
        return f"thiszone/sigfigs → {p.zone}/{p.sigfigs}"
    if op == "snaplen":
        p.snaplen = u32(rng)
        return f"snaplen → {p.snaplen}"
    if op == "linktype":
        base = rng.choice((*LINKTYPES, 2, 105, 147, 0xFFFF, u16(rng)))
        p.linktype = base | (rng.choice((0, 0, 0x10000000, 0x14000000, 0xFFFF0000)))
        return f"link type field → {p.linktype:#x}"
    if op == "tail":
        p.tail += rng.randbytes(rng.choice((1, 4, 15, 16, 17, 100)))
        return "garbage appended"
    if not p.records or op == "records":
        return _m_records(rng, p)
    k = rng.randrange(len(p.records))
    r = p.records[k]
    if op == "ts":
        r.sec = rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)))
        r.frac = rng.choice((0, 999_999, 1_000_000, 999_999_999, 1_000_000_000, 0xFFFFFFFF, rng.getrandbits(32)))
        return f"record {k} ts → {r.sec}.{r.frac}"
    if op == "caplen":
        r.caplen = u32(rng, len(r.data))
        return f"record {k} caplen field {len(r.data)} → {r.caplen}"
    if op == "caplen consistent":
        new = rng.choice((0, 1, 4, 13, 14, 16, 20, 33, 34, 41, 42, 60, max(0, len(r.data) - 1), len(r.data) + 1, 2000))
        r.data = r.data[:new] + rng.randbytes(max(0, new - len(r.data)))
        return f"record {k} data resized to {new}"
    r.wire = u32(rng, r.wire)
    return f"record {k} wire len → {r.wire}"


def _m_records(rng: random.Random, p: Pcap) -> str:
    op = rng.choice(("delete", "duplicate", "none", "insert"))
    if op == "none" or (not p.records and op != "insert"):
        p.records = []
        return "all records removed"
    if op == "insert":
        data = rng.randbytes(rng.choice((0, 1, 14, 34, 60, 100)))
        at = rng.randrange(len(p.records) + 1)
        p.records.insert(at, Record(rng.getrandbits(32), rng.getrandbits(20), None, len(data), data))
        return f"random record inserted at {at}"
    k = rng.randrange(len(p.records))
    if op == "delete":
        del p.records[k]
        return f"record {k} deleted"
    p.records.insert(rng.randrange(len(p.records) + 1), replace(p.records[k]))
    return f"record {k} duplicated"


# --- driver -------------------------------------------------------------------------------------------------------


def is_pcapng(data: bytes) -> bool:
    return data[:4] == struct.pack("<I", SHB)


def mutate(data: bytes, rng: random.Random, rounds: int | None = None) -> tuple[bytes, list[str]]:
    """One mutant of ``data`` (pcap or pcapng) and the description of each mutation applied."""
    rounds = rounds if rounds is not None else rng.choice((1, 1, 1, 2, 2, 3, 4))
    desc: list[str] = []
    if is_pcapng(data):
        blocks = parse_pcapng(data)
        for _ in range(rounds):
            for _try in range(5):
                d = rng.choice(PCAPNG_MUTATIONS)(rng, blocks)
                if d:
                    desc.append(d)
                    break
        out = serialise_pcapng(blocks)
    else:
        p = parse_pcap(data)
        for _ in range(rounds):
            desc.append(mutate_pcap(rng, p))
        out = p.serialise()
    r = rng.random()
    if r < 0.15 and out:  # cut anywhere: inside a header, a length, the data, a trailer
        at = rng.randrange(len(out))
        out = out[:at]
        desc.append(f"truncated to {at} bytes")
    elif r < 0.2:
        k = rng.choice((1, 3, 4, 8, 12, 28, 100))
        out += rng.randbytes(k)
        desc.append(f"{k} garbage bytes appended")
    return out, desc


def mutant(seeds: Sequence[tuple[str, bytes]], case: int) -> tuple[str, bytes, list[str]]:
    """Case ``case``: (seed name, mutant bytes, mutations). A pure function of ``seeds`` and ``case``."""
    rng = random.Random(case)
    classic = [s for s in seeds if not is_pcapng(s[1])]
    pool = classic if classic and rng.random() < 0.25 else seeds  # classic pcap seeds are few: a quarter of the cases
    name, data = pool[rng.randrange(len(pool))]
    out, desc = mutate(data, rng)
    return name, out, desc


def minimise(data: bytes, fails: Callable[[bytes], bool], *, budget: int = 2000) -> bytes:
    """A smaller input for which ``fails`` still holds: cut the tail, then drop chunks (halving their size)."""
    assert fails(data)
    lo = 0
    hi = len(data)  # shortest failing prefix by bisection (a heuristic: failure need not be monotone)
    while lo < hi and budget > 0:
        mid = (lo + hi) // 2
        budget -= 1
        if fails(data[:mid]):
            hi = mid
        else:
            lo = mid + 1
    if fails(data[:hi]):
        data = data[:hi]
    chunk = max(4, (len(data) // 8) & ~3)
    while chunk >= 4 and budget > 0:
        i = 0
        while i < len(data) and budget > 0:
            cand = data[:i] + data[i + chunk :]
            budget -= 1
            if cand and fails(cand):
                data = cand
            else:
                i += chunk
        chunk //= 2
    return data


# --- tracer's columns files (tracer.columns) --------------------------------------------------------------------

COLUMNS_MAGIC = b"TRCOLS1\n"
HEADER_VALUES = (None, True, False, -1, 0, 1, 1 << 40, 1.5, "", "x" * 5000, "abc", [], ["a"], [1], {}, {"a": 1})


def mutate_columns(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """A columns file with one to three of: a header field changed, deleted or added, the
    header's length or bytes broken, the columns cut, extended or flipped, then (sometimes)
    the compressed stream cut, flipped or followed by more."""
    import json
    import zlib

    assert data.startswith(COLUMNS_MAGIC)
    raw = zlib.decompress(data[len(COLUMNS_MAGIC):])
    n = int.from_bytes(raw[:4], "little")
    header, body = json.loads(raw[4 : 4 + n]), raw[4 + n :]
    hb: bytes | None = None
    desc = []
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        key = rng.choice(sorted(header))
        if r < 0.3:
            header[key] = rng.choice(HEADER_VALUES)
            desc.append(f"header {key} = {header[key]!r:.20}")
        elif r < 0.4:
            header["rows"] = max(0, int(header.get("rows") or 0) + rng.choice((-1, 1, 2, -2, 1 << 20, 1 << 33)))
            desc.append(f"rows {header['rows']}")
        elif r < 0.45:
            del header[key]
            desc.append(f"header without {key}")
        elif r < 0.5:
            header[rng.choice(("extra", "x"))] = 1
            desc.append("header with a field more")
        elif r < 0.6:
            hb = rng.choice((b"[1,2]", b"[" * 5000, b"\xff\xfe", b"null", b"{}", b"", b'{"format": 1}'))
            desc.append(f"header bytes {hb[:12]!r}")
        elif r < 0.7:
            n = rng.choice((0, 3, 1 << 20, (1 << 20) + 1, 0xFFFFFFFF, n + 1, max(0, n - 1)))
            hb = hb if hb is not None else json.dumps(header).encode()
            desc.append(f"header length {n}")
        elif r < 0.8:
            cut = rng.randint(1, max(1, len(body)))
            body = body[:-cut]
            desc.append(f"columns cut by {cut}")
        elif r < 0.9:
            body += bytes(rng.choice((1, 7, 113, 4096)))
            desc.append("columns extended")
        elif body:
            at = rng.randrange(len(body))
            body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]
            desc.append(f"column byte {at} flipped")
    hb = hb if hb is not None else json.dumps(header).encode()
    length = n if any(d.startswith("header length") for d in desc) else len(hb)
    stream = zlib.compress(length.to_bytes(4, "little") + hb + body)
    r = rng.random()
    if r < 0.1:
        stream = stream[: rng.randrange(len(stream))]
        desc.append("stream cut")
    elif r < 0.2:
        at = rng.randrange(len(stream))
        stream = stream[:at] + bytes([stream[at] ^ (1 << rng.randrange(8))]) + stream[at + 1 :]
        desc.append(f"stream bit flipped at {at}")
    elif r < 0.3:
        stream += rng.choice((b"x", zlib.compress(b"more"), bytes(100)))
        desc.append("stream followed by more")
    return COLUMNS_MAGIC + stream, desc
