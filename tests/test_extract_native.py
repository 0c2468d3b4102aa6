"""The compiled extractor and pcapng walk against their numpy reference code, differentially.

tracer/analysis/_extract.c must give exactly the columns of extract.py's numpy code
(``compiled=False``), and tracer/capture/_walk.c exactly the (starts, stop) of pcapfile.py's numpy
walk and the same read_capture results (pcapng and classic pcap), on every capture in the
repository, on random frames of every kind on every link type (cut
at every length), on frames with random bytes flipped and on mutated pcapng block words. Inputs
come from fixed seeds, so a failure replays; its message names the first differing row and its
bytes. Without the compiled modules built (``python3 setup.py build_ext --inplace``) the tests
skip, which CI turns into failures.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.fuzz.mutate import mutant
from tracer.analysis import extract as ex
from tracer.analysis.extract import EXTRACTED, LINKTYPES, PAD, extract
from tracer.capture import pcapfile
from tracer.capture.pcapfile import read_capture
from tracer.errors import CaptureError
from tracer.model.observations import COLUMNS, PacketClass
from tracer.model.tag import ProbeKind, ProbeTag

ROOT = Path(__file__).resolve().parent.parent
needs_extract = pytest.mark.skipif(
    not ex.COMPILED, reason="compiled extractor not built (python3 setup.py build_ext --inplace, or pip install -e .)")
needs_walk = pytest.mark.skipif(
    pcapfile._compiled_walk is None, reason="compiled capture walks not built (python3 setup.py build_ext --inplace)")


def same_columns(buf: np.ndarray, off: np.ndarray, cap: np.ndarray, lt: int | np.ndarray) -> None:
    """Compiled and numpy extraction give identical columns; else the first differing rows, with their bytes."""
    got = extract(buf, off, cap, lt, compiled=True)
    want = extract(buf, off, cap, lt, compiled=False)
    for k in EXTRACTED:
        bad = np.flatnonzero(got[k] != want[k])
        if len(bad):
            i = int(bad[0])
            o, c = int(off[i]), int(cap[i])
            frame = bytes(buf[max(o, 0) : max(o, 0) + max(min(c, 200), 0)])
            lti = int(lt[i]) if np.ndim(lt) else lt
            pytest.fail(f"{k}: {len(bad)} rows differ, first row {i} (linktype {lti}, data_off {o}, caplen {c}, "
                        f"buffer {len(buf)}): compiled {got[k][i]}, numpy {want[k][i]}; frame {frame.hex()}")


# --- frames, built from bytes (struct), so every field can be wrong -------------------------------

RUN = 0x5EED1234
A, B = bytes([192, 0, 2, 10]), bytes([198, 51, 100, 10])


def ip4(proto: int, payload: bytes, *, opts: bytes = b"", ident: int = 7, ff: int = 0, total: int | None = None,
        src: bytes = A, dst: bytes = B) -> bytes:
    """IPv4 header (+ options, padded to words) + payload; ``ff``: flags and fragment offset word."""
    opts += bytes(-len(opts) % 4)
    size = 20 + len(opts) + len(payload)
    head = struct.pack(">BBHHHBBH4s4s", 0x40 | (5 + len(opts) // 4), 0, (size if total is None else total) & 0xFFFF,
                       ident, ff, 64, proto, 0, src, dst)
    return head + opts + payload


def icmp(typ: int, code: int, rest: int, payload: bytes) -> bytes:
    return struct.pack(">BBHI", typ, code, 0, rest) + payload


def udp(sport: int, dport: int, payload: bytes, ulen: int | None = None) -> bytes:
    return struct.pack(">HHHH", sport, dport, (8 + len(payload) if ulen is None else ulen) & 0xFFFF, 0) + payload


def ike(spi_i: bytes, exch: int = 34, flags: int = 0x08) -> bytes:
    return spi_i + bytes(range(1, 9)) + struct.pack(">BBBBII", 33, 0x20, exch, flags, 0, 28 + 8) + bytes(8)


def esp(spi: int, seq: int, n: int = 40) -> bytes:
    return struct.pack(">II", spi, seq) + bytes((i * 7 + 3) & 0xFF for i in range(n))


def tag(seq: int, kind: int = ProbeKind.PING) -> bytes:
    return ProbeTag(RUN, kind, seq).encode()


def bad_tags(rng: random.Random, seq: int) -> list[bytes]:
    """Tags one byte off (check, kind 0, magic, any byte) and cut short."""
    good = tag(seq)
    flipped = bytearray(good)
    flipped[rng.randrange(16)] ^= 1 << rng.randrange(8)
    kind0 = bytearray(good)
    kind0[4] = 0
    kind0[14:16] = struct.pack(">H", (sum(struct.unpack(">7H", bytes(kind0[:14]))) & 0xFFFF) ^ 0x5A5A)
    return [bytes(flipped), bytes(kind0), good[:15], b"TRC2" + good[4:]]


def l3_templates(rng: random.Random) -> list[bytes]:
    """IPv4 packets of every kind extract tells apart (plus IPv6 and garbage), with random fields."""
    seq = rng.randrange(1 << 16)
    ike_tag = ProbeTag(RUN, ProbeKind.IKE, seq).ike_spi()
    spi = rng.getrandbits(32) | 1
    opts = bytes([7, 11, 4]) + bytes(8)  # record route
    echo = ip4(1, icmp(8, 0, (0x1234 << 16) | seq, tag(seq) + bytes(24)))
    quoted = [
        echo,
        ip4(17, udp(33434, 33435, bytes(12))),
        ip4(50, esp(spi, seq)),
        ip4(17, udp(4500, 4500, esp(spi, seq))),
        ip4(17, udp(500, 500, ike(ike_tag))),
        ip4(17, udp(4500, 4500, bytes(4) + ike(ike_tag))),
        ip4(1, icmp(8, 0, 5, tag(seq) + bytes(8)), opts=opts),
        ip4(6, struct.pack(">HHIIHHHH", 40000, 443, 1, 2, 0x5002, 1024, 0, 0)),
    ]
    out = [
        echo,
        ip4(1, icmp(0, 0, (0x1234 << 16) | seq, tag(seq, rng.choice([1, 2, 3, 0x42, 0xFF])) + bytes(24))),
        ip4(1, icmp(8, 0, 9, bytes(range(40)))),
        ip4(1, icmp(8, 0, 9, b"")),
        ip4(1, icmp(13, 0, 9, bytes(12))),
        ip4(1, icmp(8, 0, 3, tag(seq) + bytes(8)), opts=opts),
        ip4(1, icmp(8, 0, 3, tag(seq)), opts=bytes([1]) * rng.choice([4, 20, 40])),  # NOPs up to ihl 15
        *(ip4(1, icmp(rng.choice([0, 8]), 0, 3, t + bytes(8))) for t in bad_tags(rng, seq)),
        *(ip4(1, icmp(3, 4, rng.choice([0, 576, 1280, 1400, 0xFFFF]), q)) for q in quoted),
        *(ip4(1, icmp(t, c, 0, q[: rng.choice([20, 28, 36, len(q)])])) for t, c in ((11, 0), (12, 0), (3, 3)) for q in quoted),
        ip4(1, icmp(3, 1, 0, quoted[0]), opts=opts),
        ip4(17, udp(500, 500, ike(ike_tag))),
        ip4(17, udp(500, rng.choice([500, 4501]), ike(rng.randbytes(8)))),
        ip4(17, udp(500, 500, ike(b"\xd7\x00" + rng.randbytes(6)))),
        ip4(17, udp(500, 500, bytes(10))),
        ip4(17, udp(4500, 4500, bytes(4) + ike(ike_tag, 35))),
        ip4(17, udp(rng.randrange(1024, 65536), 4500, bytes(4) + ike(ike_tag))),
        ip4(17, udp(4500, 4500, b"\xff")),
        ip4(17, udp(4500, 4500, b"\xff", ulen=rng.choice([0, 7, 8, 9, 10]))),
        ip4(17, udp(4500, 4500, esp(spi, seq))),
        ip4(17, udp(4500, rng.randrange(1 << 16), esp(spi, seq, 0))),
        ip4(17, udp(4500, 4500, esp(spi, seq), ulen=rng.choice([0, 8, 12, 16, 40, 0xFFFF]))),
        ip4(50, esp(spi, seq)),
        ip4(50, esp(spi, seq), opts=opts),
        ip4(6, struct.pack(">HHIIHHHH", 40000, 443, rng.getrandbits(32), 0, 0x5002, 1024, 0, 0) + bytes(8)),
        ip4(17, udp(5353, 53, bytes(30))),
        ip4(47, bytes(24)),
        ip4(17, udp(1234, 53, bytes(96)), ff=0x2000),  # first fragment
        ip4(17, bytes(104), ff=12),  # later fragment
        ip4(1, icmp(8, 0, 1, tag(seq)), ff=0x2000 | 1),
        bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + A * 4 + B * 4 + udp(1, 2, b""),  # IPv6
        rng.randbytes(rng.randrange(60)),
    ]
    # IP total length shorter or longer than the packet, or below the header length
    for p in rng.sample(out[:-2], 12):
        p = bytearray(p)
        p[2:4] = struct.pack(">H", rng.choice([0, 19, 20, 21, 24, 27, 28, 40, len(p) - 1, len(p) + 1, 0xFFFF]))
        out.append(bytes(p))
    return out


def _ether_type(l3: bytes) -> int:
    return 0x86DD if l3[:1] and l3[0] >> 4 == 6 else 0x0800


def _typed(rng: random.Random, before: bytes, after: bytes, l3: bytes) -> bytes:
    """``before`` + protocol type + ``after`` + L3, with 0-3 802.1Q/QinQ tags: each moves L3 on by
    4 bytes and puts its TCI and the next type where L3 was (extract reads that type at L3 - 2)."""
    tags = [rng.choice([0x8100, 0x88A8, 0x9100]) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
    et = _ether_type(l3) if rng.random() < 0.9 else rng.choice([0x0806, 0x0800, 0x86DD, 0x1234])
    types = [*tags, et]
    out = before + struct.pack(">H", types[0]) + after
    for nxt in types[1:]:
        out += struct.pack(">HH", rng.randrange(1 << 16), nxt)
    return out + l3


def _family(rng: random.Random, l3: bytes) -> int:
    return rng.choice([2, 10, 24, 28, 30, 7]) if l3[:1] and l3[0] >> 4 == 6 else rng.choice([2, 2, 2, 10, 0, 0x10000])


Wrap = Callable[[random.Random, bytes], bytes]
WRAPS: dict[int, Wrap] = {  # link type → frame around an L3 packet; 147: one extract does not read
    1: lambda r, l3: _typed(r, b"\x02" * 6 + b"\x04" * 6, b"", l3),
    113: lambda r, l3: _typed(r, struct.pack(">HHH8s", 0, 1, 6, b"\x02" * 8), b"", l3),
    276: lambda r, l3: _typed(r, b"", struct.pack(">HIHBB8s", 0, 3, 1, 4, 6, b"\x02" * 8), l3),
    0: lambda r, l3: struct.pack(r.choice("<>") + "I", _family(r, l3)) + l3,
    108: lambda r, l3: struct.pack(">I", _family(r, l3)) + l3,
    12: lambda r, l3: l3,
    14: lambda r, l3: l3,
    101: lambda r, l3: l3,
    228: lambda r, l3: l3,
    229: lambda r, l3: l3,
    147: lambda r, l3: struct.pack(">H", _ether_type(l3)) + l3,
}


def random_frames(seed: int) -> tuple[list[bytes], list[int]]:
    """Every template on every link type (random fields, tags, families), shuffled: frames and link types."""
    rng = random.Random(seed)
    pairs = [(wrap(rng, l3), lt) for l3 in l3_templates(rng) for lt, wrap in WRAPS.items()]
    rng.shuffle(pairs)
    return [f for f, _ in pairs], [lt for _, lt in pairs]


def lay(rng: random.Random, frames: list[bytes], *, pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """Frames in one buffer with random junk (record headers, say) before each and, if ``pad``,
    after the last (nothing may be read past a caplen); unpadded, the last frame ends the buffer."""
    parts, offs, o = [], [], 0
    for f in frames:
        junk = rng.randbytes(rng.randrange(24))
        parts += [junk, f]
        offs.append(o + len(junk))
        o += len(junk) + len(f)
    if pad:
        parts.append(rng.randbytes(PAD + 64))
    return np.frombuffer(b"".join(parts), np.uint8), np.array(offs, np.int64)


def cut(rng: random.Random, frames: list[bytes]) -> np.ndarray:
    """Caplens: mostly the whole frame, else shorter (the rest of the frame follows in the buffer) or longer."""
    return np.array([len(f) if r < 0.6 else rng.randrange(len(f) + 1) if r < 0.9 else len(f) + rng.randrange(1, 40)
                     for f, r in ((f, rng.random()) for f in frames)], np.uint32)


def mutated(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    """1-6 bytes of each frame's first 100 flipped or set to a value some parser branch tests for."""
    out = []
    for f in frames:
        b = bytearray(f)
        for _ in range(rng.randrange(1, 7)):
            if not b:
                break
            i = rng.randrange(min(100, len(b)))
            b[i] = rng.choice([b[i] ^ (1 << rng.randrange(8)), rng.randrange(256),
                               rng.choice([0, 1, 2, 3, 4, 6, 8, 0x11, 0x20, 0x32, 0x45, 0x46, 0x4F, 0x60, 0x81, 0x86,
                                           0x88, 0xD7, 0xDD, 0xFF])])
        out.append(bytes(b))
    return out


# --- tests --------------------------------------------------------------------------------------------

def capture_files() -> list[Path]:
    """Every pcap or pcapng file under captures/ and tests/, whatever its name."""
    magics = {bytes.fromhex(m) for m in ("d4c3b2a1", "a1b2c3d4", "4d3cb2a1", "a1b23c4d", "0a0d0d0a")}
    found = []
    for top in ("captures", "tests"):
        for p in sorted((ROOT / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                with p.open("rb") as f:
                    if f.read(4) in magics:
                        found.append(p)
    return found


@needs_extract
def test_every_capture_in_the_repository():
    read = 0
    for path in capture_files():
        try:
            cap = read_capture(path, check_linktypes=False)
        except CaptureError:
            continue
        read += 1
        same_columns(cap.buf, cap.data_off, cap.caplen, cap.linktypes())
        size = path.stat().st_size  # the file without the zero bytes read_capture pads small ones with
        same_columns(cap.buf[:size], cap.data_off, cap.caplen, cap.linktypes())
    assert read > 100, f"only {read} captures read: the corpus moved?"


def pcapng_words(data: bytes) -> np.ndarray:
    """The file's words in the byte order of its first section (its byte-order magic)."""
    bo = "<" if data[8:12] == struct.pack("<I", 0x1A2B3C4D) else ">"
    return np.frombuffer(data, bo + "u4", count=len(data) // 4).astype("=u4")


def same_walk(monkeypatch: pytest.MonkeyPatch, w: np.ndarray, i: int, end: int) -> None:
    got = pcapfile._walk_blocks(w, i, end, None)
    with monkeypatch.context() as m:
        m.setattr(pcapfile, "_compiled_walk", None)
        want = pcapfile._walk_blocks(w, i, end, None)
    assert got[1] == want[1] and np.array_equal(got[0], want[0]), (
        f"walk from {i} to {end} of {len(w)} words: compiled stops at {got[1]} after {len(got[0])} blocks, "
        f"numpy at {want[1]} after {len(want[0])}; first difference at block "
        f"{next((k for k, (a, b) in enumerate(zip(got[0], want[0], strict=False)) if a != b), min(len(got[0]), len(want[0])))}")


def _read(path: Path) -> object:
    try:
        return read_capture(path, check_linktypes=False)
    except CaptureError as e:
        return e


def same_read(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """read_capture gives the same records (or the same refusal) with the compiled walk and
    block heads as with numpy's."""
    got = _read(path)
    with monkeypatch.context() as m:
        m.setattr(pcapfile, "_compiled_walk", None)
        m.setattr(pcapfile, "_compiled_heads", None)
        m.setattr(pcapfile, "_compiled_pcap", None)
        want = _read(path)
    if isinstance(want, CaptureError) or isinstance(got, CaptureError):
        assert str(got) == str(want), path
        return
    for k in ("data_off", "caplen", "wire_len", "ts_ns", "iface"):
        assert np.array_equal(getattr(got, k), getattr(want, k)), (path, k)
    assert (got.warnings, got.interfaces) == (want.warnings, want.interfaces), path


@needs_walk
def test_walk_of_every_pcapng_in_the_repository(monkeypatch):
    walked = 0
    for path in capture_files():
        data = path.read_bytes()
        if data[:4] != b"\x0a\x0d\x0d\x0a" or len(data) < 12:
            continue
        walked += 1
        w = pcapng_words(data)
        same_walk(monkeypatch, w, 0, len(w))
        same_read(monkeypatch, path)  # the whole read, sections in either byte order included
    assert walked > 100, f"only {walked} pcapng files: the corpus moved?"


@needs_walk
def test_read_of_mutated_captures(monkeypatch, tmp_path):
    """The fuzzer's structure-aware mutants (tests/fuzz/mutate.py): lengths, types, options, sections."""
    seeds = [(str(p), p.read_bytes()) for p in capture_files() if p.suffix == ".pcapng"]
    for case in range(400):
        _name, data, _muts = mutant(seeds, 50_000 + case)
        path = tmp_path / f"{case}.pcapng"
        path.write_bytes(data)
        same_read(monkeypatch, path)


def _pcap_mutant(rng: random.Random, data: bytes) -> bytes:
    """A classic pcap with record lengths, bytes, its end or its byte order changed."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        k, at = rng.randrange(5), rng.randrange(max(len(out), 1))
        if k == 0 and len(out) >= 24:  # the other byte order's magic: every length reads differently
            out[0:4] = out[0:4][::-1]
        elif k == 1 and at + 4 <= len(out):  # a length anywhere: 0, small, huge, past the end
            out[at : at + 4] = rng.choice([0, 1, 15, 16, 60, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]).to_bytes(4, "little")
        elif k == 2:
            del out[at:]
        elif k == 3 and at < len(out):
            out[at] = rng.randrange(256)
        else:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 7)))
    return bytes(out)


@needs_walk
def test_read_of_every_classic_pcap_and_its_mutants(monkeypatch, tmp_path):
    pcaps = [p for p in capture_files() if p.read_bytes()[:4] != b"\x0a\x0d\x0d\x0a"]
    assert len(pcaps) > 20, f"only {len(pcaps)} classic pcaps: the corpus moved?"
    for path in pcaps:
        same_read(monkeypatch, path)
    rng = random.Random(24)
    for case in range(400):
        path = tmp_path / f"{case}.pcap"
        path.write_bytes(_pcap_mutant(rng, rng.choice(pcaps).read_bytes()))
        same_read(monkeypatch, path)


@needs_extract
@pytest.mark.parametrize("seed", range(4))
def test_random_frames_of_every_kind_on_every_link_type(seed):
    rng = random.Random(1000 + seed)
    frames, lts = random_frames(seed)
    for pad in (True, False):  # unpadded: the last frames take extract.py's tail path
        buf, off = lay(rng, frames, pad=pad)
        cap = cut(rng, frames)
        same_columns(buf, off, cap, np.array(lts, np.int32))  # one link type per record
        same_columns(buf, off, cap.astype(np.int64), np.array(lts, np.int64))
    for lt in WRAPS:  # one link type for all: every frame read as this one
        same_columns(buf, off, cap, lt)
    # the frames reach every branch, so the comparisons above compare something
    c = extract(buf, off, np.array([len(f) for f in frames], np.uint32), np.array(lts, np.int32), compiled=False)
    assert set(c["cls"].tolist()) == {int(k) for k in PacketClass}
    assert set(c["ipver"].tolist()) == {0, 4, 6}
    assert {1, 2} <= set(c["tag_kind"].tolist())  # ICMP and IKE tags
    assert {1, 6, 17, 50} <= set(c["inner_proto"].tolist())
    for k in ("ike_spi_i", "ike_spi_r", "ike_exch", "mtu", "udp_encap", "spi", "esp_seq", "inner_id", "l4_hash"):
        assert c[k].any(), k


@needs_extract
def test_every_caplen_of_every_frame():
    """Each frame read at every caplen from 0 to its length (and a few past it): every boundary of every field."""
    rng = random.Random(7)
    frames, lts = random_frames(7)
    buf, off = lay(rng, frames, pad=False)
    rows = [(int(o), c, lt) for o, f, lt in zip(off, frames, lts, strict=True) for c in range(len(f) + 4)]
    for order in ("laid", "shuffled"):  # shuffled: the records near the buffer's end are not the last ones
        if order == "shuffled":
            rng.shuffle(rows)
        o, c, lt = (np.array(x) for x in zip(*rows, strict=True))
        same_columns(buf, o.astype(np.int64), c.astype(np.uint32), lt.astype(np.int32))


@needs_extract
@pytest.mark.parametrize("seed", range(3))
def test_frames_with_bytes_flipped(seed):
    rng = random.Random(2000 + seed)
    frames, lts = [], []
    for s in range(3):
        f, lt = random_frames(100 * seed + s)
        frames += f
        lts += lt
    for round_ in range(2):
        bent = mutated(rng, frames)
        buf, off = lay(rng, bent, pad=bool(round_))
        same_columns(buf, off, cut(rng, bent), np.array(lts, np.int32))
        # the same bytes read as another link type now and then
        other = [lt if rng.random() < 0.8 else rng.choice([*LINKTYPES, 147]) for lt in lts]
        same_columns(buf, off, np.array([len(f) for f in bent], np.uint32), np.array(other, np.int32))


@needs_extract
def test_records_anywhere_in_the_buffer():
    """Records at random offsets with random caplens, some running past the buffer's end or starting after it."""
    rng = random.Random(3)
    frames, _ = random_frames(3)
    buf, _ = lay(rng, frames, pad=False)
    n = 20000
    off = np.array([rng.randrange(len(buf)) if rng.random() < 0.95 else len(buf) + rng.randrange(-64, 300)
                    for _ in range(n)], np.int64)
    cap = np.array([rng.randrange(200) if rng.random() < 0.97 else rng.choice([0, 65535, 262144, 1 << 31])
                    for _ in range(n)], np.uint32)
    lts = np.array([rng.choice([*LINKTYPES, 147]) for _ in range(n)], np.int32)
    same_columns(buf, off, cap, lts)
    same_columns(buf, off, cap.astype(np.int64), 1)
    same_columns(buf, off, cap, 101)


def mutated_words(rng: random.Random, w: np.ndarray) -> np.ndarray:
    """Block words with lengths and types rewritten (zero, short, odd, huge, EPB types in payloads)."""
    w = w.copy()
    for _ in range(rng.randrange(1, 8)):
        i = rng.randrange(len(w))
        w[i] = rng.choice([0, 1, 4, 6, 8, 12, 16, 28, 32, 33, 0xFFFFFFFC, 0xFFFFFFFF, 4 * len(w),
                           4 * (len(w) - i), rng.getrandbits(32), rng.randrange(64)])
    return w


@needs_walk
def test_walk_of_mutated_and_random_words(monkeypatch):
    rng = random.Random(11)
    seeds = [pcapng_words(p.read_bytes()) for p in capture_files() if p.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"]
    seeds = [w for w in seeds if len(w) >= 3]
    for scan in (pcapfile._SCAN_WORDS, 64):  # small scans: walks cross scan boundaries everywhere
        monkeypatch.setattr(pcapfile, "_SCAN_WORDS", scan)
        for _ in range(300):
            w = mutated_words(rng, rng.choice(seeds))
            end = len(w) if rng.random() < 0.6 else rng.randrange(len(w) + 1)  # a file cut short
            same_walk(monkeypatch, w, rng.choice([0, 0, 0, 1, rng.randrange(len(w))]), end)
        for _ in range(50):  # noise, dense with EPB types and tiny lengths: numpy's one-block-at-a-time path
            n = rng.randrange(1, 3000)
            w = np.array([rng.choice([6, 6, 6, 0, 4, 8, 12, 28, 32, rng.getrandbits(32)]) for _ in range(n)], np.uint32)
            same_walk(monkeypatch, w, 0, n)
        same_walk(monkeypatch, np.zeros(0, np.uint32), 0, 0)
        same_walk(monkeypatch, np.full(5, 6, np.uint32), 0, 5)


@needs_extract
def test_insisting_on_compiled_with_columns_it_cannot_fill_raises():
    buf, off = lay(random.Random(5), random_frames(5)[0][:10], pad=True)
    cap = np.full(10, 60, np.uint32)
    out = {k: np.zeros(20, COLUMNS[k])[::2] for k in EXTRACTED}  # views of merged columns, strided
    with pytest.raises(RuntimeError, match="contiguous"):
        extract(buf, off, cap, 101, out=out, compiled=True)
    extract(buf, off, cap, 101, out=out)  # without insisting: numpy fills them
    want = extract(buf, off, cap, 101, compiled=False)
    for k in EXTRACTED:
        assert np.array_equal(out[k], want[k]), k


@needs_extract
def test_compiled_refuses_output_columns_shorter_than_the_frames():
    n = 10
    cols = [np.zeros(n - 1 if k == "mtu" else n, COLUMNS[k]) for k in ex._COMPILED_COLUMNS]
    with pytest.raises(ValueError, match="shorter"):
        ex._compiled(np.zeros(1000, np.uint8), np.zeros(n, np.int64), np.full(n, 60, np.int64), 101, None,
                     tuple(cols), ex._COMPILED_PARAMS)


def _block(typ: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", typ, n) + body + struct.pack("<I", n)


def _shb() -> bytes:
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def _idb(linktype: int = 1) -> bytes:
    return _block(1, struct.pack("<HHI", linktype, 0, 65535))


def _epb(ifid: int, frame: bytes, caplen: int | None = None, ts: int = 1_700_000_000_000_000) -> bytes:
    pad = b"\0" * (-len(frame) % 4)
    cap = len(frame) if caplen is None else caplen
    return _block(6, struct.pack("<IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, cap, len(frame)) + frame + pad)


@needs_walk
def test_packet_blocks_decoded_compiled_say_the_same_as_numpy(monkeypatch, tmp_path):
    """Runs the compiled packet-block decoder takes (enhanced packet blocks among a few others)
    and each way one can be wrong: numpy's decoder gives the same records or the same refusal."""
    frame = bytes(14) + ip4(1, icmp(8, 0, 1, tag(1)))
    good = [_epb(0, frame) for _ in range(5)]
    files = {
        "plain": _shb() + _idb() + b"".join(good),
        "two sections": _shb() + _idb() + good[0] + _shb() + _idb() + _idb(101) + _epb(1, frame) + good[1],
        "interface defined later in the run": _shb() + _epb(0, frame) + _idb() + good[0],
        "unknown interface": _shb() + _idb() + good[0] + _epb(1, frame),
        "caplen past the block": _shb() + _idb() + _epb(0, frame, caplen=len(frame) + 8),
        "caplen over the limit": _shb() + _idb() + _epb(0, frame + bytes(300_000), caplen=300_000),
        "block too short": _shb() + _idb() + good[0] + _block(6, bytes(12)),
        "trailer mismatch": _shb() + _idb() + good[0][:-4] + struct.pack("<I", 999) + good[1],
        "statistics and unknown blocks": _shb() + _idb() + good[0] + _block(5, struct.pack("<IIII", 0, 0, 0, 0))
        + _block(0x0BAD, bytes(8)) + good[1],
        "no interface at all": _shb() + good[0],
        "many other blocks": _shb() + _idb() + b"".join(_block(0x0BAD, bytes(4)) + g for g in good * 20),
    }
    epbs = pcapfile._compiled_epbs
    said: list[int] = []  # epbs()'s verdict on each run it decoded (-1: every packet block well formed)

    def watched(*args: object) -> tuple[int, int]:
        bad, decoded = epbs(*args)
        said.append(bad)
        return bad, decoded

    monkeypatch.setattr(pcapfile, "_compiled_epbs", watched)
    compiled = set()
    for label, data in files.items():
        path = tmp_path / f"{label.replace(' ', '-')}.pcapng"
        path.write_bytes(data)
        said.clear()
        same_read(monkeypatch, path)
        if said and said[0] == -1:
            compiled.add(label)
    # The test must be able to fail: the well-formed runs were decoded compiled, not by numpy's way.
    assert compiled == {"plain", "two sections", "interface defined later in the run", "statistics and unknown blocks"}
    assert len(read_capture(tmp_path / "two-sections.pcapng").interfaces) == 3
