"""Reading pcap/pcapng: every format variant, the damage policy, observe_file glue, and a real tcpdump capture."""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP

from tests.analysis.test_extract import CORPUS, RUN, WRAP, eth, reference
from tracer.analysis.extract import EXTRACTED, LINKTYPES, PAD, extract
from tracer.capture import observe_file, observe_files, pcapfile, read_capture
from tracer.capture.pcapfile import MAX_CAPLEN
from tracer.errors import CaptureError
from tracer.model import tag
from tracer.model.observations import COLUMNS, PacketClass
from tracer.model.tag import ProbeKind, ProbeTag

T0 = 1_700_000_000_123_456_789


# --- writers for test files (independent of tracer's own writer) ------------------------------------

def pcap_bytes(records: list[tuple[int, bytes, int]], *, linktype: int = 1, order: str = "<", nano: bool = False,
               snaplen: int = 262144) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data, wire in records:
        sec, frac = divmod(ts, 1_000_000_000)
        out.append(struct.pack(order + "IIII", sec, frac if nano else frac // 1000, len(data), wire) + data)
    return b"".join(out)


def _opt(o: str, code: int, value: bytes) -> bytes:
    return struct.pack(o + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def _block(o: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack(o + "II", btype, 12 + len(body)) + body + struct.pack(o + "I", 12 + len(body))


def shb(o: str) -> bytes:
    return _block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(o, 4, b"test") + _opt(o, 0, b""))


def idb(o: str, linktype: int, name: str | None = None, tsresol: int | None = None, tsoffset: int | None = None,
        snaplen: int = 0, desc: str | None = None) -> bytes:
    opts = b""
    if name is not None:
        opts += _opt(o, 2, name.encode())
    if desc is not None:
        opts += _opt(o, 3, desc.encode())
    if tsresol is not None:
        opts += _opt(o, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += _opt(o, 14, struct.pack(o + "q", tsoffset))
    return _block(o, 1, struct.pack(o + "HHI", linktype, 0, snaplen) + (opts + _opt(o, 0, b"") if opts else b""))


def epb(o: str, ifid: int, ticks: int, data: bytes, wire: int | None = None) -> bytes:
    wire = len(data) if wire is None else wire
    return _block(o, 6, struct.pack(o + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire) + data)


def pb(o: str, ifid: int, ticks: int, data: bytes) -> bytes:
    return _block(o, 2, struct.pack(o + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data)


def spb(o: str, data: bytes, wire: int | None = None) -> bytes:
    return _block(o, 3, struct.pack(o + "I", len(data) if wire is None else wire) + data)


def isb(o: str, ifid: int, ifdrop: int | None = None, osdrop: int | None = None) -> bytes:
    opts = b""
    if ifdrop is not None:
        opts += _opt(o, 5, struct.pack(o + "Q", ifdrop))
    if osdrop is not None:
        opts += _opt(o, 7, struct.pack(o + "Q", osdrop))
    return _block(o, 5, struct.pack(o + "III", ifid, 0, 0) + opts + _opt(o, 0, b""))


def frames(wrap: str = "ethernet") -> list[tuple[str, bytes]]:
    _lt, build, _l2 = WRAP[wrap]
    return [(k, build(bytes(p), 0x0800)) for k, p in CORPUS.items()]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _check_rows(obs_cols: dict[str, np.ndarray], names: list[str]) -> None:
    for i, k in enumerate(names):
        want = reference(bytes(CORPUS[k]))
        got = {c: int(obs_cols[c][i]) for c in want}
        assert got == want, (k, {c: (got[c], want[c]) for c in want if got[c] != want[c]})


# --- classic pcap -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_variants(tmp_path, order, nano):
    fr = frames()
    recs = [(T0 + i * 1_000_001_001, f, len(f) + 4) for i, (_k, f) in enumerate(fr)]
    path = _write(tmp_path / "cap.pcap", pcap_bytes(recs, order=order, nano=nano))
    cap = read_capture(path)
    assert cap.fmt == "pcap" and len(cap) == len(recs) and cap.warnings == []
    res = 1 if nano else 1000
    assert cap.ts_ns.tolist() == [t // res * res for t, _f, _w in recs]
    assert cap.wire_len.tolist() == [w for _t, _f, w in recs]
    assert [cap.frame(i) for i in range(len(cap))] == [f for _t, f, _w in recs]
    assert cap.interfaces[0].linktype == 1 and cap.interfaces[0].tsresol == (9 if nano else 6)
    fo = observe_file(path)
    assert fo.obs.points == ["cap"] and fo.obs.sources == [str(path)]
    assert fo.drops == {"cap": None}
    _check_rows(fo.obs.cols, [k for k, _f in fr])
    assert (fo.obs["l3_off"] == cap.data_off + 14).all()


def test_pcap_without_records(tmp_path):
    fo = observe_file(_write(tmp_path / "none.pcap", pcap_bytes([])))
    assert len(fo.obs) == 0 and fo.warnings == [] and fo.obs.points == ["none"]


@pytest.mark.parametrize("wrap", sorted(WRAP))
def test_every_link_type_from_a_file(tmp_path, wrap):
    linktype = WRAP[wrap][0]
    fr = frames(wrap)
    path = _write(tmp_path / f"{wrap}.pcap", pcap_bytes([(T0, f, len(f)) for _k, f in fr], linktype=linktype))
    fo = observe_file(path, "node:if0")
    assert fo.obs.points == ["node:if0"] and (fo.obs["point"] == 0).all()
    _check_rows(fo.obs.cols, [k for k, _f in fr])


def test_columns_and_dtypes(tmp_path):
    path = _write(tmp_path / "a.pcap", pcap_bytes([(T0, f, len(f)) for _k, f in frames()]))
    obs = observe_file(path).obs
    assert set(obs.cols) == set(COLUMNS)
    assert all(obs.cols[k].dtype == dt for k, dt in COLUMNS.items())
    assert set(EXTRACTED) | {"point", "file", "rec"} == set(COLUMNS)


def test_large_file_is_memory_mapped_and_the_last_frames_are_read_correctly(tmp_path):
    """> 1 MiB: mmap, no padding; the frames ending right at EOF still parse exactly."""
    fr = [f for _k, f in frames()]
    recs = [(T0 + i, fr[i % len(fr)], len(fr[i % len(fr)])) for i in range(9000)]
    path = _write(tmp_path / "big.pcap", pcap_bytes(recs))
    assert path.stat().st_size > 1 << 20
    cap = read_capture(path)
    assert len(cap.buf) == path.stat().st_size  # no padding with mmap
    got = extract(cap.buf, cap.data_off, cap.caplen, 1)
    padded = np.concatenate([cap.buf, np.zeros(PAD, np.uint8)])
    want = extract(padded, cap.data_off, cap.caplen, 1)
    for k in EXTRACTED:
        assert (got[k] == want[k]).all(), k
    assert got["tag_kind"][-len(fr):].any()


# --- pcapng -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("blocks", "words"), [(None, None), (1, 16), (2, 64), (3, None)])
def test_pcapng_sections_interfaces_resolutions_and_drops(tmp_path, monkeypatch, blocks, words):
    """Also decoded a few blocks at a time and walked a few words at a time (as large files are,
    their pages handed back as the reader goes)."""
    if blocks:
        monkeypatch.setattr(pcapfile, "_DECODE_BLOCKS", blocks)
    if words:
        monkeypatch.setattr(pcapfile, "_SCAN_WORDS", words)
    echo = bytes(CORPUS["echo-request-tagged"])
    esp = bytes(CORPUS["esp-udp4500"])
    ether = bytes(eth() / CORPUS["echo-reply-tagged"])
    s1 = (
        shb("<")
        + idb("<", 1, "west-gw:lan0", tsresol=9, snaplen=262144, desc="LAN side")
        + idb("<", 101, "west-gw:ipsec0")  # default resolution: microseconds
        + epb("<", 0, T0, ether)
        + _block("<", 0x00000BAD, b"custom block, skipped")
        + epb("<", 1, T0 // 1000 + 5, echo)
        + _block("<", 4, b"\0" * 4)  # name resolution block, skipped
        + isb("<", 0, ifdrop=5, osdrop=2)
        + isb("<", 1)  # statistics without drop counters: still unknown
    )
    s2 = (
        shb(">")
        + idb(">", 228, "east:eth0", tsresol=0x80 | 20, tsoffset=100)  # 2**-20 s ticks, +100 s
        + idb(">", 1, None, tsresol=3)  # milliseconds, no name
        + epb(">", 0, (5 << 20) + (1 << 19), esp)  # 5.5 s
        + pb(">", 0, 3 << 20, echo)
        + spb(">", echo)
        + epb(">", 1, 1234, ether)
        + isb(">", 0, ifdrop=7)
        + isb(">", 0, ifdrop=9)  # the last one wins: counters are cumulative
    )
    s3 = shb("<") + idb("<", 1, "west-gw:lan0", tsresol=9) + epb("<", 0, T0 + 1, ether)
    path = _write(tmp_path / "multi.pcapng", s1 + s2 + s3)
    cap = read_capture(path)
    assert cap.fmt == "pcapng"
    assert [(i.name, i.linktype, i.tsresol, i.drops) for i in cap.interfaces] == [
        ("west-gw:lan0", 1, 9, 7), ("west-gw:ipsec0", 101, 6, None), ("east:eth0", 228, 0x94, 9), (None, 1, 3, None),
        ("west-gw:lan0", 1, 9, None),
    ]
    assert cap.interfaces[0].description == "LAN side"
    assert cap.iface.tolist() == [0, 1, 2, 2, 2, 3, 4]
    assert cap.ts_ns.tolist() == [T0, T0 // 1000 * 1000 + 5000, 105_500_000_000, 103_000_000_000, 0, 1_234_000_000, T0 + 1]
    assert [cap.frame(i) for i in range(len(cap))] == [ether, echo, esp, echo, echo, ether, ether]
    assert any("simple packet blocks" in w for w in cap.warnings)
    fo = observe_file(path)
    assert fo.obs.points == ["west-gw:lan0", "west-gw:ipsec0", "east:eth0", "multi#3"]
    assert fo.obs["point"].tolist() == [0, 1, 2, 2, 2, 3, 0]
    assert fo.drops == {"west-gw:lan0": 7, "west-gw:ipsec0": None, "east:eth0": 9, "multi#3": None}
    assert fo.obs["cls"].tolist() == [PacketClass.ECHO_REPLY, PacketClass.ECHO_REQUEST, PacketClass.ESP,
                                      PacketClass.ECHO_REQUEST, PacketClass.ECHO_REQUEST, PacketClass.ECHO_REPLY,
                                      PacketClass.ECHO_REPLY]
    assert (fo.obs["tag_run"][fo.obs["cls"] != PacketClass.ESP] == RUN).all()


@pytest.mark.parametrize("tsresol", [6, 9, 0, 12, 0x80 | 0, 0x80 | 10, 0x80 | 32, 0x80 | 40])
def test_pcapng_timestamp_resolutions(tmp_path, tsresol):
    k = tsresol & 0x7F
    secs = 1_700_000_123 if k <= 9 or (tsresol & 0x80 and k <= 32) else 100_000
    ticks = secs << k if tsresol & 0x80 else secs * 10**k
    ticks += 1  # one tick past the second
    data = shb("<") + idb("<", 101, "x", tsresol=tsresol) + epb("<", 0, ticks, bytes(CORPUS["udp-dns"]))
    cap = read_capture(_write(tmp_path / "r.pcapng", data))
    tick_ns = 1e9 / (2**k if tsresol & 0x80 else 10**k)
    assert abs(int(cap.ts_ns[0]) - (secs * 10**9 + tick_ns)) <= 1


def test_single_unnamed_pcapng_interface_takes_the_file_stem(tmp_path):
    data = shb("<") + idb("<", 101) + epb("<", 0, 1, bytes(CORPUS["udp-dns"]))
    fo = observe_file(_write(tmp_path / "router_eth1.pcapng", data))
    assert fo.obs.points == ["router_eth1"]


def test_observe_files_merges_points_and_drops(tmp_path):
    a = _write(tmp_path / "a.pcapng", shb("<") + idb("<", 101, "r:eth0") + epb("<", 0, 10, bytes(CORPUS["udp-dns"]))
               + isb("<", 0, ifdrop=3))
    b = _write(tmp_path / "b.pcapng", shb("<") + idb("<", 101, "r:eth0") + epb("<", 0, 20, bytes(CORPUS["tcp-syn"]))
               + isb("<", 0, ifdrop=4))
    c = _write(tmp_path / "c.pcap", pcap_bytes([(30_000, bytes(CORPUS["gre"]), 44)], linktype=101))
    merged = observe_files([(a, None), (b, None), (c, "r:eth1")])
    obs, drops, warnings = merged.obs, merged.drops, merged.warnings
    assert obs.points == ["r:eth0", "r:eth1"] and obs.sources == [str(a), str(b), str(c)]
    assert obs["point"].tolist() == [0, 0, 1] and obs["file"].tolist() == [0, 1, 2]
    assert drops == {"r:eth0": 7, "r:eth1": None}
    assert warnings == []
    assert obs["ts_ns"].tolist() == [10_000, 20_000, 30_000]


def test_pcapng_without_packets(tmp_path):
    cap = read_capture(_write(tmp_path / "e.pcapng", shb("<") + idb("<", 1, "a:b") + isb("<", 0, ifdrop=0)))
    assert len(cap) == 0 and cap.interfaces[0].drops == 0
    fo = observe_file(cap.path)
    assert len(fo.obs) == 0 and fo.drops == {"a:b": 0}


# --- damage ---------------------------------------------------------------------------------------------------

def _error(path: Path) -> str:
    with pytest.raises(CaptureError) as ei:
        observe_file(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert ei.value.exit_code == 2
    return msg


def _good_pcap(n: int = 3) -> bytes:
    f = bytes(eth() / CORPUS["echo-request-tagged"])
    return pcap_bytes([(T0 + i, f, len(f)) for i in range(n)])


def test_empty_file(tmp_path):
    assert "empty file" in _error(_write(tmp_path / "e.pcap", b""))


# Fixed random bytes (seeded, so they never start with a capture magic by chance: they start 6d688da3).
@pytest.mark.parametrize("data", [b"\x00", b"hello world, this is not a capture at all" * 3,
                                  b"\x89PNG\r\n\x1a\n" + bytes(100), random.Random(3000).randbytes(3000)])
def test_garbage_and_wrong_magic(tmp_path, data):
    assert "not a pcap or pcapng file" in _error(_write(tmp_path / "g.pcap", data))


def test_truncated_global_headers(tmp_path):
    assert "truncated pcap file header (10 of 24 bytes)" in _error(_write(tmp_path / "t.pcap", _good_pcap()[:10]))
    assert "truncated pcapng section header" in _error(_write(tmp_path / "t.pcapng", shb("<")[:20]))


@pytest.mark.parametrize("cut", [1, 10, 16, 20, 40])
def test_truncated_last_record_keeps_the_rest(tmp_path, cut):
    data = _good_pcap(4)
    path = _write(tmp_path / "t.pcap", data[: len(data) - cut])
    fo = observe_file(path)
    assert len(fo.obs) == 3
    assert fo.warnings and fo.warnings[0].startswith(f"{path}: truncated after 3 records (")
    assert "\n" not in fo.warnings[0]
    assert (fo.obs["tag_seq"] == 5).all()


def test_truncated_last_pcapng_block_keeps_the_rest(tmp_path):
    e = bytes(CORPUS["udp-dns"])
    data = shb("<") + idb("<", 101, "a:b") + epb("<", 0, 1, e) + epb("<", 0, 2, e)
    for cut in (1, 5, 30):
        path = _write(tmp_path / f"t{cut}.pcapng", data[:-cut])
        fo = observe_file(path)
        assert len(fo.obs) == 1 and fo.warnings[0].startswith(f"{path}: truncated after 1 records (")


def test_garbage_after_valid_records(tmp_path):
    for junk in (b"\x01\x02\x03", os.urandom(100), b"\xff" * 64):
        path = _write(tmp_path / "j.pcap", _good_pcap(3) + junk)
        fo = observe_file(path)
        assert len(fo.obs) == 3 and len(fo.warnings) == 1 and "truncated after 3 records" in fo.warnings[0]
    path = _write(tmp_path / "j.pcapng", shb("<") + idb("<", 101) + epb("<", 0, 1, bytes(CORPUS["udp-dns"])) + b"\xff" * 40)
    fo = observe_file(path)
    assert len(fo.obs) == 1 and "truncated after 1 records" in fo.warnings[0]


def test_first_record_past_end_of_file(tmp_path):
    data = _good_pcap(1)
    assert "record 1 runs past end of file" in _error(_write(tmp_path / "one.pcap", data[:-5]))


def test_oversized_record(tmp_path):
    big = bytes(MAX_CAPLEN + 1)
    data = _good_pcap(2) + struct.pack("<IIII", 1, 0, len(big), len(big)) + big + _good_pcap(1)[24:]
    msg = _error(_write(tmp_path / "o.pcap", data))
    assert f"record 3 at offset {len(_good_pcap(2))} claims {MAX_CAPLEN + 1} captured bytes" in msg
    ng = shb("<") + idb("<", 1) + epb("<", 0, 1, big) + epb("<", 0, 2, bytes(60))
    assert "claims 262145 captured bytes" in _error(_write(tmp_path / "o.pcapng", ng))


def test_unknown_link_type(tmp_path):
    assert 147 not in LINKTYPES
    msg = _error(_write(tmp_path / "u.pcap", pcap_bytes([(1, b"xx", 2)], linktype=147)))
    assert "unsupported link type 147" in msg
    ng = shb("<") + idb("<", 1, "a:eth0") + idb("<", 189, "a:usb0") + epb("<", 0, 1, bytes(60)) + epb("<", 1, 1, bytes(60))
    assert "unsupported link type 189 on interface a:usb0" in _error(_write(tmp_path / "u.pcapng", ng))
    # An unsupported interface that carried no packets does not matter.
    ok = shb("<") + idb("<", 1, "a:eth0") + idb("<", 189, "a:usb0") + epb("<", 0, 1, bytes(60))
    assert len(observe_file(_write(tmp_path / "ok.pcapng", ok)).obs) == 1


def test_corrupt_pcapng_blocks(tmp_path):
    e = bytes(CORPUS["udp-dns"])
    good = shb("<") + idb("<", 101)
    bad_trailer = bytearray(epb("<", 0, 1, e))
    bad_trailer[-4:] = struct.pack("<I", 8)
    msg = _error(_write(tmp_path / "c1.pcapng", good + bytes(bad_trailer) + epb("<", 0, 2, e)))
    assert "does not match" in msg
    short = struct.pack("<II", 6, 4) + bytes(8)
    assert "impossible length 4" in _error(_write(tmp_path / "c2.pcapng", good + short + epb("<", 0, 2, e)))
    assert "refers to interface 3" in _error(_write(tmp_path / "c3.pcapng", good + epb("<", 3, 1, e)))
    bad_bom = bytearray(shb("<"))
    bad_bom[8:12] = b"abcd"
    assert "byte-order magic" in _error(_write(tmp_path / "c4.pcapng", bytes(bad_bom)))


def test_unreadable_paths(tmp_path):
    assert "cannot read" in _error(tmp_path / "missing.pcap")
    assert "must be a regular file, this is a directory" in _error(tmp_path)


# --- a real capture ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tcpdump"), reason="needs root and tcpdump")
@pytest.mark.parametrize("iface", ["lo", "any"])
def test_real_tcpdump_capture_of_tagged_pings(tmp_path, iface):
    """tcpdump on loopback (Ethernet on lo, SLL2 on any) while tagged pings go to 127.0.0.1; tshark agrees."""
    path = tmp_path / "lo.pcap"
    run = int.from_bytes(os.urandom(4), "big")
    ident = tag.icmp_id_for(run)
    # --immediate-mode: without it packets wait in the TPACKET_V3 ring for up to a second and a
    # prompt SIGTERM loses them.
    dump = subprocess.Popen(["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-w", str(path),
                             f"icmp and icmp[4:2] = {ident}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(dump)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            for seq in range(5):
                pkt = ICMP(type=8, id=ident, seq=seq) / (ProbeTag(run, ProbeKind.PING, seq).encode() + bytes(32))
                s.sendto(bytes(pkt), ("127.0.0.1", 0))
        wait_for_records(path, 10, timeout=3)
    finally:
        dump.terminate()
        dump.wait(5)
    fo = observe_file(path, "host:lo")
    obs = fo.obs.select(fo.obs["tag_run"] == run)
    req = obs.select(obs["cls"] == PacketClass.ECHO_REQUEST)
    rep = obs.select(obs["cls"] == PacketClass.ECHO_REPLY)
    # Every captured request and reply carries its tag (a loaded machine's `-i any` capture has been seen
    # to miss a packet now and then: the file, as tshark reads it, is the reference, not what was sent).
    assert len(obs) == len(fo.obs) >= 4 and len(req) == len(rep)
    assert set(req["tag_seq"].tolist()) == set(rep["tag_seq"].tolist()) <= set(range(5))
    assert (req["icmp_seq"] == req["tag_seq"]).all()
    assert (obs["src"] == 0x7F000001).all() and (obs["icmp_id"] == ident).all()
    assert (obs["tag_kind"] == ProbeKind.PING).all()
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.id",
                              "-e", "icmp.type", "-e", "icmp.seq", "-e", "frame.len"],
                             capture_output=True, text=True, check=True).stdout
        rows = [line.split("\t") for line in out.splitlines()]
        assert len(rows) == len(obs)
        for i, (t, ipid, typ, seq, flen) in enumerate(rows):
            assert int(ipid, 16) == obs["ipid"][i] and int(typ) == obs["icmp_type"][i]
            assert int(seq) == obs["icmp_seq"][i] and int(flen) == obs["wire_len"][i]
            assert abs(float(t) * 1e9 - obs["ts_ns"][i]) < 2000


def wait_for_records(path: Path, n: int, timeout: float = 10.0) -> None:
    """Until tcpdump has written ``n`` records (on a loaded machine it may lag well behind the sender)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(read_capture(path)) >= n:
                return
        except CaptureError:
            pass  # header or first record not written yet
        time.sleep(0.05)


def _wait_listening(proc: subprocess.Popen) -> None:
    """tcpdump prints 'listening on ...' once its socket is open."""
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    buf = b""
    deadline = time.monotonic() + 10
    while b"listening on" not in buf:
        assert time.monotonic() < deadline and proc.poll() is None, buf
        buf += proc.stderr.read() or b""
        time.sleep(0.05)


def test_scapy_written_pcapng_is_read(tmp_path):
    """Cross-check against another writer: scapy's PcapNgWriter."""
    from scapy.utils import PcapNgWriter

    pkts = [eth() / CORPUS[k] for k in ("echo-request-tagged", "ike-500-tagged", "esp-raw")]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i / 4
    path = tmp_path / "scapy.pcapng"
    with PcapNgWriter(str(path)) as w:
        for p in pkts:
            w.write(p)
    fo = observe_file(path)
    assert fo.obs["cls"].tolist() == [PacketClass.ECHO_REQUEST, PacketClass.IKE, PacketClass.ESP]
    assert fo.obs["tag_kind"].tolist() == [ProbeKind.PING, ProbeKind.IKE, 0]
    assert [int(t) for t in fo.obs["ts_ns"]] == [1_700_000_000_000_000_000 + i * 250_000_000 for i in range(3)]
    _ = IP  # scapy layer import keeps the corpus' bindings loaded


@pytest.mark.parametrize(("opts", "message"), [
    ({"tsresol": 0x7F}, "impossible timestamp resolution (if_tsresol 0x7f"),
    ({"tsresol": 0xFF}, "impossible timestamp resolution (if_tsresol 0xff"),
    ({"tsresol": 20}, "impossible timestamp resolution (if_tsresol 0x14"),
    ({"tsoffset": 1 << 62}, f"shifts its timestamps by {1 << 62} s"),
])
def test_implausible_clock_options_are_one_line_errors(tmp_path, opts, message):
    # Found by mutating real captures: these once raised OverflowError (a traceback, exit 1).
    ether = frames()[0][1]
    path = _write(tmp_path / "bad.pcapng", shb("<") + idb("<", 1, "a:eth0", **opts) + epb("<", 0, 1, ether))
    with pytest.raises(CaptureError) as e:
        read_capture(path)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("scan_words", [1 << 20, 5, 64])
@pytest.mark.parametrize("sixes", [3, 1])
def test_pcapng_walk_equals_one_block_at_a_time(monkeypatch, scan_words, sixes) -> None:
    """The numpy walk over runs of EPBs takes exactly the steps of the plain loop, also where
    EPB-typed words sit in payloads, lengths are zero or absurd, and blocks overrun the end;
    with chunks of any size, in chunks walked with numpy and in chunks too full of EPB-typed
    words for it (``sixes``: how often the EPB type is drawn)."""
    import tracer.capture.pcapfile as pcapfile
    from tracer.capture.pcapfile import _walk_pcapng

    monkeypatch.setattr(pcapfile, "_SCAN_WORDS", scan_words)

    def one_at_a_time(w: np.ndarray, i: int, end: int) -> tuple[list[int], int]:
        starts = []
        while i <= end - 2:
            starts.append(i)
            i += (int(w[i + 1]) >> 2) or 3
        return starts, i

    rng = np.random.default_rng(7)
    values = np.array([0, 1, 3, *[6] * sixes, 8, 12, 16, 24, 28, 32, 40, 0x0A0D0D0A, 0xFFFFFFFC], np.uint32)
    for _ in range(500):
        w = rng.choice(values, int(rng.integers(0, 300))).astype(np.uint32)
        for start in range(min(len(w), 3)):
            want, stop = one_at_a_time(w, start, len(w))
            got, got_stop = _walk_pcapng(w, start, len(w))
            assert (got.tolist(), got_stop) == (want, stop)


def test_payloads_full_of_epb_typed_words_cost_no_more_than_plain_ones(tmp_path: Path) -> None:
    """Every aligned payload word equal to 6 (the EPB type) is a candidate block start for the
    numpy walk; a file of such payloads must not make the reader hold candidate arrays the
    file's size (it once peaked at 6x the file: 195 MB for 31 MB)."""
    import tracemalloc

    from tracer.capture.pcapng_writer import write_pcapng

    frame = (6).to_bytes(4, "little") * 375
    path = tmp_path / "sixes.pcapng"
    write_pcapng(path, ((10**18 + i * 1000, frame, len(frame)) for i in range(5000)), if_name="a:eth0", linktype=1)
    tracemalloc.start()
    try:
        cap = read_capture(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cap) == 5000 and cap.caplen.tolist() == [1500] * 5000
    assert peak < path.stat().st_size / 2, (peak, path.stat().st_size)


def test_merged_columns_are_built_once(tmp_path: Path) -> None:
    """observe_files extracts each file straight into the merged columns: the peak allocation is
    the merged rows plus one file's worth, not every file's columns plus their merged copy
    (which was 2x). Also: the merge equals concatenating the files observed one by one."""
    import tracemalloc

    from tracer.capture.pcapng_writer import write_pcapng
    from tracer.model.observations import COLUMNS

    frame = bytes.fromhex("020000000002020000000001080045000054000040004001f6b3c000020ac6336400"
                          "0800f7ff00010001") + bytes(56)
    files = []
    for k in range(8):
        path = tmp_path / f"p{k}.pcapng"
        write_pcapng(path, ((10**18 + i * 1000 + k, frame, len(frame)) for i in range(10_000)),
                     if_name=f"n{k}:eth0", linktype=1)
        files.append((path, None))
    one_by_one = [observe_file(p).obs for p, _ in files]
    want = {k: np.concatenate([o[k] for o in one_by_one]) for k in COLUMNS if k not in ("point", "file")}
    del one_by_one
    tracemalloc.start()
    try:
        obs = observe_files(files).obs
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    row_bytes = sum(dt.itemsize for dt in COLUMNS.values())
    assert len(obs) == 80_000 and obs.points == [f"n{k}:eth0" for k in range(8)]
    assert obs["point"].tolist() == [k for k in range(8) for _ in range(10_000)]
    assert obs["file"].tolist() == obs["point"].tolist()
    assert all(np.array_equal(obs[k], v) for k, v in want.items())
    assert peak < 1.5 * row_bytes * len(obs), peak / (row_bytes * len(obs))
