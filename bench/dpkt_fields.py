"""The dpkt contender: the same fields as tracer's identity columns, one Python object per layer.

    python3 bench/dpkt_fields.py LIMIT FILE...   # prints how many packets it read (at most LIMIT per file)

Used in-process by bench_extract.py (classic pcap) and as a whole process by bench_replay.py (pcapng).
"""

from __future__ import annotations

import sys

import dpkt


def row(ts: float, ip: object) -> tuple:
    """(time, addresses, protocol, id, then ICMP type/seq, ESP SPI/seq or UDP ports and IKE SPI)."""
    if not isinstance(ip, dpkt.ip.IP):
        return (ts,)
    out: tuple = (ts, ip.src, ip.dst, ip.p, ip.id)
    l4 = ip.data
    if isinstance(l4, dpkt.icmp.ICMP):
        out += (l4.type, getattr(l4.data, "seq", None))
    elif isinstance(l4, dpkt.esp.ESP):
        out += (l4.spi, l4.seq)
    elif isinstance(l4, dpkt.udp.UDP):
        out += (l4.sport, l4.dport)
        if 500 in (l4.sport, l4.dport) or 4500 in (l4.sport, l4.dport):
            pl = l4.data
            out += (pl[4:12] if pl[:4] == b"\0\0\0\0" else pl[:8],)
    return out


def read_pcapng(path: str, limit: int) -> int:
    n = 0
    with open(path, "rb") as f:
        r = dpkt.pcapng.Reader(f)
        raw = r.datalink() in (dpkt.pcap.DLT_RAW, 101)
        for ts, frame in r:
            row(ts, dpkt.ip.IP(frame) if raw else dpkt.ethernet.Ethernet(frame).data)
            n += 1
            if n >= limit:
                break
    return n


if __name__ == "__main__":
    print(sum(read_pcapng(p, int(sys.argv[1])) for p in sys.argv[2:]))
