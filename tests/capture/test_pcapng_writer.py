"""Writing pcapng and converting tcpdump's pcap: round trips through our reader, checked by tshark and capinfos."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP

from tests.analysis.test_extract import CORPUS, eth
from tests.capture.test_pcapfile import _wait_listening, pcap_bytes, wait_for_records
from tracer.capture import convert_pcap_to_pcapng, observe_file, read_capture, write_pcapng
from tracer.errors import CaptureError
from tracer.model.observations import PacketClass
from tracer.model.tag import ProbeKind, ProbeTag, icmp_id_for

T0 = 1_700_000_000_123_456_789
needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="needs tshark")


def _records(n: int = 20) -> list[tuple[int, bytes, int]]:
    frames = [bytes(eth() / p) for p in CORPUS.values()]
    return [(T0 + i * 1_000_003, frames[i % len(frames)], len(frames[i % len(frames)]) + (i % 3)) for i in range(n)]


def tshark_rows(path: Path, *fields: str, options: tuple[str, ...] = ()) -> list[list[str]]:
    """tshark's fields, a row per packet; ``options`` go before the fields (-X, -Y …)."""
    cmd = ["tshark", "-n", "-r", str(path), *options, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    errors = [e for e in res.stderr.splitlines() if "Running as user" not in e]
    assert errors == [], res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


def capinfos(path: Path) -> str:
    return subprocess.run(["capinfos", str(path)], capture_output=True, text=True, check=True).stdout


def test_round_trip(tmp_path):
    recs = _records()
    path = tmp_path / "w.pcapng"
    assert write_pcapng(path, recs, if_name="west-gw:lan0", linktype=1, drops=17, comment="run 1") == len(recs)
    cap = read_capture(path)
    assert [cap.frame(i) for i in range(len(cap))] == [f for _t, f, _w in recs]
    assert cap.ts_ns.tolist() == [t for t, _f, _w in recs]
    assert cap.wire_len.tolist() == [w for _t, _f, w in recs]
    (info,) = cap.interfaces
    assert (info.name, info.linktype, info.tsresol, info.drops, info.snaplen) == ("west-gw:lan0", 1, 9, 17, 262144)
    fo = observe_file(path)
    assert fo.obs.points == ["west-gw:lan0"] and fo.drops == {"west-gw:lan0": 17} and fo.warnings == []


@needs_tshark
def test_tshark_and_capinfos_read_it(tmp_path):
    recs = _records()
    path = tmp_path / "w.pcapng"
    write_pcapng(path, recs, if_name="east-gw:ipsec0", linktype=1, drops=3, comment="tracer run 42")
    rows = tshark_rows(path, "frame.interface_name", "frame.time_epoch", "frame.len", "frame.cap_len", "ip.src")
    assert len(rows) == len(recs)
    for (name, t, flen, clen, _src), (ts, f, w) in zip(rows, recs, strict=True):
        assert name == "east-gw:ipsec0" and int(flen) == w and int(clen) == len(f)
        sec, frac = t.split(".")
        assert int(sec) * 10**9 + int(frac.ljust(9, "0")[:9]) == ts
    info = capinfos(path)
    assert "pcapng" in info and f"Number of packets:   {len(recs)}" in info
    assert "tracer run 42" in subprocess.run(["capinfos", "-k", str(path)], capture_output=True, text=True).stdout


@needs_tshark
def test_statistics_block_is_seen_by_capinfos(tmp_path):
    path = tmp_path / "d.pcapng"
    write_pcapng(path, _records(2), if_name="a:eth0", linktype=1, drops=123)
    info = subprocess.run(["capinfos", "-I", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Name = a:eth0" in info and "Number of stat entries = 1" in info and "Time resolution = 0x09" in info
    assert read_capture(path).interfaces[0].drops == 123


def test_microseconds_snaplen_no_drops(tmp_path):
    recs = [(T0, bytes(eth() / CORPUS["echo-mtu-tagged-big"]), 1500)]
    path = tmp_path / "u.pcapng"
    write_pcapng(path, recs, if_name="x:y", linktype=1, snaplen=96, tsresol_ns=False)
    cap = read_capture(path)
    assert cap.interfaces[0].tsresol == 6 and cap.interfaces[0].drops is None
    assert cap.ts_ns[0] == T0 // 1000 * 1000
    assert cap.caplen[0] == 96 and cap.wire_len[0] == 1500
    assert observe_file(path).obs["tag_kind"][0] == ProbeKind.MTU  # the tag sits well inside 96 bytes


def test_empty_capture_is_valid(tmp_path):
    path = tmp_path / "e.pcapng"
    assert write_pcapng(path, [], if_name="r:eth1", linktype=101, drops=0) == 0
    fo = observe_file(path)
    assert len(fo.obs) == 0 and fo.drops == {"r:eth1": 0}
    if shutil.which("capinfos"):
        assert "Number of packets:   0" in capinfos(path)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_convert(tmp_path, order, nano):
    recs = _records(30)
    src = tmp_path / "src.pcap"
    src.write_bytes(pcap_bytes(recs, order=order, nano=nano))
    res = convert_pcap_to_pcapng(src, tmp_path / "dst.pcapng", "west:eth0", 5)
    assert res.packets == 30 and res.warnings == []
    cap = read_capture(tmp_path / "dst.pcapng")
    assert cap.interfaces[0].name == "west:eth0" and cap.interfaces[0].drops == 5
    res_ns = 1 if nano else 1000
    assert cap.ts_ns.tolist() == [t // res_ns * res_ns for t, _f, _w in recs]
    assert [cap.frame(i) for i in range(len(cap))] == [f for _t, f, _w in recs]
    assert cap.wire_len.tolist() == [w for _t, _f, w in recs]


@needs_tshark
@pytest.mark.parametrize("cut", [1, 7, 16, 40])
def test_convert_survives_a_sniffer_killed_mid_write(tmp_path, cut):
    data = pcap_bytes(_records(10))
    src = tmp_path / "killed.pcap"
    src.write_bytes(data[:-cut])
    dst = tmp_path / "killed.pcapng"
    res = convert_pcap_to_pcapng(src, dst, "west-gw:wan0", 0)
    assert res.packets == 9
    assert len(res.warnings) == 1 and res.warnings[0].startswith(f"{src}: truncated after 9 records")
    assert len(tshark_rows(dst, "frame.number")) == 9
    assert read_capture(dst).warnings == []


def test_convert_bad_sources(tmp_path):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty file"):
        convert_pcap_to_pcapng(empty, tmp_path / "o.pcapng", "a:b")
    res = convert_pcap_to_pcapng(empty, tmp_path / "o.pcapng", "a:b", 0, linktype_if_empty=1)
    assert res.packets == 0 and "no pcap header" in res.warnings[0]
    assert read_capture(tmp_path / "o.pcapng").interfaces[0].linktype == 1
    ng = tmp_path / "x.pcapng"
    write_pcapng(ng, [], if_name="a:b", linktype=1)
    with pytest.raises(CaptureError, match="not a classic pcap file"):
        convert_pcap_to_pcapng(ng, tmp_path / "o2.pcapng", "a:b")
    big = tmp_path / "big.pcap"
    good = pcap_bytes(_records(2))
    big.write_bytes(good + struct.pack("<IIII", 0, 0, 10**6, 10**6) + bytes(100))
    res = convert_pcap_to_pcapng(big, tmp_path / "o3.pcapng", "a:b")
    assert res.packets == 2 and "record 3 claims 1000000 captured bytes" in res.warnings[0]
    with pytest.raises(CaptureError, match="cannot convert"):
        convert_pcap_to_pcapng(tmp_path / "missing.pcap", tmp_path / "o4.pcapng", "a:b")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tcpdump"), reason="needs root and tcpdump")
def test_convert_a_real_nanosecond_tcpdump_capture(tmp_path):
    """What a live sniffer does: tcpdump -w pcap (ns), then convert with the point name and drop count."""
    raw = tmp_path / "lo.pcap"
    run = int.from_bytes(os.urandom(4), "big")
    ident = icmp_id_for(run)
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "--time-stamp-precision=nano",
                             "-w", str(raw), f"icmp and icmp[4:2] = {ident}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(dump)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            for seq in range(3):
                s.sendto(bytes(ICMP(type=8, id=ident, seq=seq) / ProbeTag(run, ProbeKind.PING, seq).encode()), ("127.0.0.1", 0))
        wait_for_records(raw, 6, timeout=3)
    finally:
        dump.terminate()
        dump.wait(5)
    res = convert_pcap_to_pcapng(raw, tmp_path / "host_lo.pcapng", "host:lo", 0)
    assert res.packets == len(read_capture(raw)) >= 2 and res.warnings == []
    fo = observe_file(tmp_path / "host_lo.pcapng")
    assert fo.obs.points == ["host:lo"] and fo.drops == {"host:lo": 0}
    assert set(fo.obs["cls"].tolist()) == {PacketClass.ECHO_REQUEST, PacketClass.ECHO_REPLY}
    assert (fo.obs["tag_run"] == run).all()
    assert (fo.obs["ts_ns"] == read_capture(raw).ts_ns).all()  # nanoseconds survive the conversion
