"""Benchmark: capture file → identity columns, tracer vs tshark, scapy and dpkt, side by side on one file.

    python bench/bench_extract.py                  # 1,000,000 packets
    python bench/bench_extract.py --packets 200000 --skip-scapy
    python bench/bench_extract.py --keep /tmp/mix.pcap --with-correlate

The capture is generated (seconds, not minutes): ~20 frame templates are built
with scapy once, then tiled into the file with numpy while the per-packet
fields (IP id, echo seq, probe tag seq + check word, ESP seq, IKE tag seq) are
varied and the IP/ICMP checksums recomputed. Timings are wall-clock on this
machine; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracer.analysis.extract import COMPILED, extract
from tracer.capture.pcapfile import read_capture
from tracer.model.tag import ProbeKind, ProbeTag, icmp_id_for

RUN = 0x5EED0B0B
T0_NS = 1_700_000_000_000_000_000
TSHARK_FIELDS = ["frame.time_epoch", "ip.src", "ip.dst", "ip.proto", "ip.id", "icmp.type", "icmp.seq", "esp.spi",
                 "esp.sequence", "udp.srcport", "udp.dstport", "isakmp.ispi"]


# --- generation ---------------------------------------------------------------------------------------

class _Tpl:
    """One frame template plus the per-packet edits to apply to its copies."""

    def __init__(self, frame: bytes, weight: float, l3: int = 14, **edits: int) -> None:
        self.frame, self.weight, self.l3, self.edits = frame, weight, l3, edits


def _templates(gateways: tuple[str, str] = ("198.18.1.1", "198.18.2.1"),
               hosts: tuple[str, str] = ("192.0.2.10", "198.51.100.10")) -> list[_Tpl]:
    from scapy.contrib.ikev2 import IKEv2
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Dot1Q, Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    (a, b), (g1, g2) = hosts, gateways
    iid = icmp_id_for(RUN)
    tag = ProbeTag(RUN, ProbeKind.PING, 0).encode()
    mtu_tag = ProbeTag(RUN, ProbeKind.MTU, 0).encode()

    def esp(spi: int, n: int) -> bytes:
        return struct.pack(">II", spi, 1) + bytes((i * 13) & 0xFF for i in range(n))

    def ike(flags: int) -> bytes:
        return bytes(IKEv2(init_SPI=ProbeTag(RUN, ProbeKind.IKE, 0).ike_spi(), exch_type=34, flags=flags) / bytes(200))

    t: list[_Tpl] = []
    for size, w in ((40, 8), (120, 3)):
        for typ, (s, d) in ((8, (a, b)), (0, (b, a))):
            p = eth / IP(src=s, dst=d) / ICMP(type=typ, id=iid) / (tag + bytes(size))
            t.append(_Tpl(bytes(p), w, echo=1))
    t.append(_Tpl(bytes(eth / IP(src=a, dst=b, flags="DF") / ICMP(type=8, id=iid) / (mtu_tag + bytes(1380))), 1, echo=1))
    t.append(_Tpl(bytes(eth / Dot1Q(vlan=10) / IP(src=a, dst=b) / ICMP(type=8, id=iid) / (tag + bytes(40))), 2, l3=18, echo=1))
    t.append(_Tpl(bytes(eth / IP(src=a, dst=b) / ICMP(type=8, id=777) / bytes(56)), 2, icmp=1))  # plain ping
    for spi, n, w in ((0xC0000001, 100, 8), (0xC0000002, 100, 8), (0xC0000001, 1400, 3)):
        t.append(_Tpl(bytes(eth / IP(src=g1, dst=g2, proto=50) / esp(spi, n)), w, esp=1))
    for spi, n, w in ((0xC1000001, 100, 8), (0xC1000002, 1300, 3)):
        t.append(_Tpl(bytes(eth / IP(src=g1, dst=g2) / UDP(sport=4500, dport=4500, chksum=0) / esp(spi, n)), w, esp=1, udp=1))
    for flags, w in ((0x08, 2), (0x20, 2)):
        t.append(_Tpl(bytes(eth / IP(src=g1, dst=g2) / UDP(sport=500, dport=500, chksum=0) / ike(flags)), w, ike=1))
    t.append(_Tpl(bytes(eth / IP(src=g1, dst=g2) / UDP(sport=4500, dport=4500, chksum=0) / (bytes(4) + ike(0x08))), 1, ike=5))
    t.append(_Tpl(bytes(eth / IP(src=g1, dst=g2) / UDP(sport=4500, dport=4500, chksum=0) / b"\xff"), 1))
    t.append(_Tpl(bytes(eth / IP(src=a, dst="9.9.9.9") / UDP(sport=40000, dport=53, chksum=0) / bytes(40)), 6))
    t.append(_Tpl(bytes(eth / IP(src=a, dst="9.9.9.9") / UDP(sport=40001, dport=123, chksum=0) / bytes(48)), 3))
    t.append(_Tpl(bytes(eth / IP(src=a, dst=b, flags="DF") / TCP(sport=40000, dport=443, flags="A") / bytes(200)), 4))
    quote = bytes(IP(src=g1, dst=g2, proto=50) / esp(0xC0000001, 40))[:28]
    t.append(_Tpl(bytes(eth / IP(src="203.0.113.1", dst=g1) / ICMP(type=3, code=4, nexthopmtu=1400) / quote), 1))
    return t


def _csum(block: np.ndarray, start: int, end: int) -> np.ndarray:
    """Internet checksum over block[:, start:end] (per row), as uint16."""
    part = block[:, start:end]
    if (end - start) % 2:
        part = np.concatenate([part, np.zeros((len(block), 1), np.uint8)], axis=1)
    s = np.ascontiguousarray(part).view(">u2").sum(axis=1, dtype=np.uint64)
    while (s >> np.uint64(16)).any():
        s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
    return (~s.astype(np.uint16)).astype(np.uint16)


def _put16(block: np.ndarray, at: int, v: np.ndarray) -> None:
    block[:, at] = (v >> 8) & 0xFF
    block[:, at + 1] = v & 0xFF


def _put32(block: np.ndarray, at: int, v: np.ndarray) -> None:
    for k in range(4):
        block[:, at + k] = (v >> (24 - 8 * k)) & 0xFF


def generate(path: Path, n: int, seed: int = 1, gateways: tuple[str, str] = ("198.18.1.1", "198.18.2.1"),
             hosts: tuple[str, str] = ("192.0.2.10", "198.51.100.10")) -> dict[str, int]:
    """Write an n-packet classic pcap (µs) of mixed traffic; return packets per template kind.
    ``gateways``: the outer addresses of the ESP, IKE and NAT-T traffic; ``hosts``: of the pings."""
    tpls = _templates(gateways, hosts)
    rng = np.random.default_rng(seed)
    w = np.array([t.weight for t in tpls], float)
    tid = rng.choice(len(tpls), n, p=w / w.sum())
    lens = np.array([len(t.frame) for t in tpls], np.int64)[tid]
    rec_off = 24 + np.concatenate([[0], np.cumsum(16 + lens)[:-1]])
    total = 24 + int((16 + lens).sum())
    buf = np.zeros(total + 2048, np.uint8)
    buf[:24] = np.frombuffer(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1), np.uint8)
    ts_us = T0_NS // 1000 + np.arange(n, dtype=np.int64) * 3 + rng.integers(0, 3, n)
    counts: dict[str, int] = {}
    for k, t in enumerate(tpls):
        rows = np.flatnonzero(tid == k)
        m = len(rows)
        if m == 0:
            continue
        width = 16 + len(t.frame)
        block = np.empty((m, width), np.uint8)
        block[:, 16:] = np.frombuffer(t.frame, np.uint8)
        hdr = np.empty((m, 4), "<u4")
        hdr[:, 0], hdr[:, 1] = ts_us[rows] // 1_000_000, ts_us[rows] % 1_000_000
        hdr[:, 2] = hdr[:, 3] = len(t.frame)
        block[:, :16] = hdr.view(np.uint8)
        l3 = 16 + t.l3
        seq = np.arange(m, dtype=np.int64)
        _put16(block, l3 + 4, rng.integers(0, 65536, m))  # IP id
        if "echo" in t.edits or "icmp" in t.edits:
            icmp = l3 + 20
            _put16(block, icmp + 6, seq & 0xFFFF)
            if "echo" in t.edits:  # tag seq and its check word
                tg = icmp + 8
                _put32(block, tg + 10, seq)
                words = np.ascontiguousarray(block[:, tg : tg + 14]).view(">u2").sum(axis=1) & 0xFFFF
                _put16(block, tg + 14, words ^ 0x5A5A)
            _put16(block, icmp + 2, np.zeros(m, np.int64))
            _put16(block, icmp + 2, _csum(block, icmp, width).astype(np.int64))
            kind = "echo"
        elif "esp" in t.edits:
            _put32(block, l3 + 20 + (8 if "udp" in t.edits else 0) + 4, seq + 1)
            kind = "esp-udp" if "udp" in t.edits else "esp"
        elif "ike" in t.edits:
            _put16(block, l3 + 20 + 8 + (4 if t.edits["ike"] == 5 else 0) + 6, seq & 0xFFFF)  # IKE tag seq
            kind = "ike"
        else:
            kind = "other"
        _put16(block, l3 + 10, np.zeros(m, np.int64))
        _put16(block, l3 + 10, _csum(block, l3, l3 + 20).astype(np.int64))
        # Scatter whole records at once: a void view of the output with a 1-byte stride.
        dst = np.ndarray((len(buf) - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
        dst[rec_off[rows]] = block.view(f"V{width}").ravel()
        counts[kind] = counts.get(kind, 0) + m
    with open(path, "wb") as f:
        f.write(memoryview(buf)[:total])
    return counts


# --- contenders -------------------------------------------------------------------------------------------

def run_tracer(path: Path, compiled: bool | None = None) -> tuple[int, dict[str, float]]:
    """``compiled``: False times extract.py's numpy code alone (an install without a C compiler)."""
    t0 = time.perf_counter()
    cap = read_capture(path)
    t1 = time.perf_counter()
    cols = extract(cap.buf, cap.data_off, cap.caplen, cap.linktypes(), ts_ns=cap.ts_ns, wire_len=cap.wire_len,
                   compiled=compiled)
    t2 = time.perf_counter()
    run_tracer.cols = cols  # type: ignore[attr-defined]  # kept for --with-correlate
    return len(cols["ts_ns"]), {"read_capture": t1 - t0, "extract": t2 - t1}


def run_tshark(path: Path) -> tuple[int, dict[str, float]]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    n = 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as p:
        assert p.stdout is not None
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
            n += chunk.count(b"\n")
    return n, {}


def run_scapy(path: Path, limit: int | None) -> tuple[int, dict[str, float]]:
    from scapy.contrib.ikev2 import IKEv2
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.ipsec import ESP
    from scapy.utils import PcapReader

    n = 0
    rows = []
    with PcapReader(str(path)) as r:
        for pkt in r:
            ip = pkt.getlayer(IP)
            row: tuple = (pkt.time,)
            if ip is not None:
                row = (pkt.time, ip.src, ip.dst, ip.proto, ip.id)
                if ICMP in ip:
                    row += (ip[ICMP].type, ip[ICMP].seq)
                elif ESP in ip:
                    row += (ip[ESP].spi, ip[ESP].seq)
                elif UDP in ip:
                    row += (ip[UDP].sport, ip[UDP].dport)
                    if IKEv2 in ip:
                        row += (ip[IKEv2].init_SPI,)
            rows.append(row)
            n += 1
            if limit is not None and n >= limit:
                break
    return n, {}


def run_dpkt(path: Path) -> tuple[int, dict[str, float]]:
    import dpkt
    from dpkt_fields import row

    with open(path, "rb") as f:
        rows = [row(ts, dpkt.ethernet.Ethernet(frame).data) for ts, frame in dpkt.pcap.Reader(f)]
    return len(rows), {}


def run_correlate(cols: dict[str, np.ndarray], extract_s: float) -> str:
    """Time the whole analysis (expected paths, correlation, localization) on the benchmark's rows.

    The rows are dealt round-robin to the ten capture points of the test topology's request
    path, so correlation does its real per-point work over all of them.
    """
    from tracer.analysis.analyze import analyze
    from tracer.model.observations import Observations
    from tracer.model.probe import ProbeSpec
    from tracer.topofile import load_topology

    topo = load_topology(Path(__file__).resolve().parents[1] / "tests" / "data" / "site2site.toml")
    points = ["west:eth0", "west-gw:lan0", "west-gw:ipsec0", "west-gw:wan0", "router:eth0", "router:eth1",
              "east-gw:wan0", "east-gw:ipsec0", "east-gw:lan0", "east:eth0"]
    n = len(cols["ts_ns"])
    point = (np.arange(n) % len(points)).astype(np.int16)
    lines = []
    # Realistic: one traced run of 1,000 probes inside a million packets of other traffic (the
    # other tagged packets are given another run id); worst case: every echo is its own probe.
    for label, probes in (("a 1,000-probe run", 1000), ("worst case, every echo a probe", None)):
        run = cols["tag_run"].copy()
        if probes is not None:
            run[cols["tag_seq"] >= probes] = RUN ^ 0xFFFF
        obs = Observations(dict(cols, point=point, file=np.zeros(n, np.int16), tag_run=run), points, ["bench"])
        t0 = time.perf_counter()
        verdict = analyze(topo, obs, ProbeSpec(RUN, ProbeKind.PING))
        dt = time.perf_counter() - t0
        lines.append(f"tracer analyze, {label} ({len(verdict.probes):,} probe traces, {len(points)} points, "
                     f"{n:,} rows): {dt * 1e3:.0f} ms; extraction + analysis {n / (extract_s + dt):,.0f} pkts/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the generated pcap here and keep it (reused if it exists)")
    ap.add_argument("--skip-scapy", action="store_true")
    ap.add_argument("--skip-tshark", action="store_true")
    ap.add_argument("--skip-dpkt", action="store_true")
    ap.add_argument("--scapy-budget", type=float, default=60.0, help="seconds scapy may take; it reads a prefix sized to fit")
    ap.add_argument("--with-correlate", action="store_true", help="also time tracer.analysis.correlate, if present")
    ap.add_argument("--repeat", type=int, default=3, help="tracer runs (best is reported)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="tracer-bench-"))
    path = args.keep or tmp / "mix.pcap"
    try:
        if args.keep and path.exists():
            print(f"reusing {path}")
        else:
            t0 = time.perf_counter()
            counts = generate(path, args.packets)
            print(f"generated {args.packets:,} packets ({path.stat().st_size / 1e6:.0f} MB) in "
                  f"{time.perf_counter() - t0:.1f} s: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
        results: dict[str, float] = {}

        def report(name: str, fn: Callable[[], tuple[int, dict[str, float]]], note: str = "") -> None:
            t0 = time.perf_counter()
            n, parts = fn()
            dt = time.perf_counter() - t0
            results[name] = n / dt
            extra = "  (" + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in parts.items()) + ")" if parts else ""
            print(f"{name:<34} {n:>10,} pkts {dt:8.2f} s {n / dt:>14,.0f} pkts/s{extra}{note}", flush=True)

        runs = []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            n, parts = run_tracer(path)
            runs.append((time.perf_counter() - t0, parts))
        dt, parts = min(runs, key=lambda r: r[0])
        results["tracer"] = n / dt
        detail = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in parts.items())
        label = "tracer read_capture+extract" + (" (C)" if COMPILED else "")
        print(f"{label:<34} {n:>10,} pkts {dt:8.2f} s {n / dt:>14,.0f} pkts/s  "
              f"(best of {len(runs)}: {detail}; first run {n / runs[0][0]:,.0f} pkts/s)", flush=True)
        if COMPILED:  # the same, numpy's extraction alone (no C compiler at install)
            report("tracer, numpy extraction only", lambda: run_tracer(path, compiled=False))
        if not args.skip_dpkt:
            report("dpkt pcap.Reader + IP/ICMP/UDP", lambda: run_dpkt(path))
        if not args.skip_tshark and shutil.which("tshark"):
            report("tshark -T fields (12 fields)", lambda: run_tshark(path))
        if not args.skip_scapy:
            rate_guess = 8000.0  # packets/s, refined on a small probe
            t0 = time.perf_counter()
            probe_n, _ = run_scapy(path, 2000)
            rate_guess = probe_n / (time.perf_counter() - t0)
            limit = min(args.packets, int(rate_guess * args.scapy_budget))
            note = f"  [prefix of {limit:,}: the whole file would take ~{args.packets / rate_guess:.0f} s]" \
                if limit < args.packets else ""
            report("scapy PcapReader + layers", lambda: run_scapy(path, limit), note)
        print()
        for name, rate in results.items():
            if name != "tracer":
                print(f"tracer / {name:<32} {results['tracer'] / rate:8.1f}x")
        if args.with_correlate:
            print(run_correlate(run_tracer.cols, args.packets / results["tracer"]))  # type: ignore[attr-defined]
        if args.keep:
            print(f"kept {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
