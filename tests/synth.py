"""Synthetic scenarios for end-to-end replay tests on the 5-node site-to-site topology.

Packets are built with scapy and placed hop by hop along hand-written hop
lists (deliberately not computed by tracer.model.path, so the tests check the
path code instead of reusing it). A scenario says where a probe dies, which
capture points are missing, which sniffer dropped packets and which single
packets a sniffer failed to record (capture gaps), which node answers a probe
with an ICMP error (and where that error is captured on its way back), and any
hand-built packets to add.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import checksum

from tracer.model.tag import ProbeKind, ProbeTag, icmp_id_for

TOPOLOGY = Path(__file__).parent / "data" / "site2site.toml"
WEST, EAST = "192.0.2.10", "198.51.100.10"
WEST_GW_WAN, EAST_GW_WAN = "198.18.1.1", "198.18.2.1"
SPI_WE, SPI_EW = 0xC0000001, 0xC0000002

# (capture point, form): form "clear" or "esp"; raw-IP links are the TUN devices.
REQUEST_HOPS = [
    ("west:eth0", "clear"), ("west-gw:lan0", "clear"), ("west-gw:ipsec0", "clear"),
    ("west-gw:wan0", "esp"), ("router:eth0", "esp"), ("router:eth1", "esp"),
    ("east-gw:wan0", "esp"), ("east-gw:ipsec0", "clear"), ("east-gw:lan0", "clear"), ("east:eth0", "clear"),
]
REPLY_HOPS = [
    ("east:eth0", "clear"), ("east-gw:lan0", "clear"), ("east-gw:ipsec0", "clear"),
    ("east-gw:wan0", "esp"), ("router:eth1", "esp"), ("router:eth0", "esp"),
    ("west-gw:wan0", "esp"), ("west-gw:ipsec0", "clear"), ("west-gw:lan0", "clear"), ("west:eth0", "clear"),
]
POINTS = [p for p, _ in REQUEST_HOPS]
ICMP_QUOTE = 548  # bytes of the offending packet an ICMP error quotes: Linux fills 576 bytes (RFC 1812)


@dataclass(frozen=True)
class IcmpError:
    """A node answers a probe with an ICMP error: about the packet as it was when last captured
    at ``at`` going ``direction`` (the cleartext probe, or its ESP carrier on an ESP hop). The
    error quotes that packet's first :data:`ICMP_QUOTE` bytes, goes from ``sender`` to the quoted
    packet's source, and is captured at each point of ``seen_at`` in turn (40 µs apart)."""

    direction: str
    at: str
    sender: str
    type: int
    code: int
    seen_at: tuple[str, ...]
    mtu: int = 0  # next-hop MTU (type 3 code 4)
    seqs: frozenset[int] | None = None  # the probes answered; None: all


def icmp_error_bytes(sender: str, to: str, type_: int, code: int, quoted: bytes, mtu: int = 0) -> bytes:
    """An IPv4 ICMP error written field by field: type, code, checksum, unused (or, for
    fragmentation needed, 16 unused bits and the next-hop MTU), the quote."""
    body = struct.pack(">BBHHH", type_, code, 0, 0, mtu) + quoted
    body = body[:2] + struct.pack(">H", checksum(body)) + body[4:]
    return bytes(IP(src=sender, dst=to, proto=1, ttl=64, id=0) / body)


@dataclass
class Scenario:
    count: int = 3
    run: int = 0x5EED0001
    # Drop a probe after it was seen at this point: {(direction, point): seqs or None for all}.
    drop_after: dict[tuple[str, str], set[int] | None] = field(default_factory=dict)
    # The probe never leaves the source (direction → seqs or None).
    drop_at_source: dict[str, set[int] | None] = field(default_factory=dict)
    # Encrypted (its ESP sequence number used), then lost before the first ESP capture point.
    esp_lost: dict[str, set[int] | None] = field(default_factory=dict)
    spacing_ns: int = 200_000_000  # between probes (and their background)
    gaps: set[tuple[str, str, int]] = field(default_factory=set)  # (direction, point, seq) not recorded
    omit: set[str] = field(default_factory=set)  # capture points with no file
    sniffer_drops: dict[str, int] = field(default_factory=dict)
    raw_esp: bool = False  # ESP as IP protocol 50 instead of UDP 4500
    background: int = 0  # untagged packets per probe in the SA, both directions
    # When background packets leave, relative to their probe: long before (the default) is
    # unambiguous; within the gateway's encap time (e.g. +20 µs) makes ESP association ambiguous.
    background_offset_ns: int = -30_000_000
    leak: bool = False  # no SA: probes cross the untrusted net in the clear
    send_errors: dict[int, str] = field(default_factory=dict)  # seq → the sender's local error
    esp_key: bytes | None = None  # real AES-GCM-16 ESP with this 20-byte key (+salt); else random bytes
    kind: int = ProbeKind.PING  # tag kind of the echo probes (any kind registered in tracer.probes)
    kind_name: str = ""  # its name for the manifest ("": the built-in kind's own name)
    sizes: dict[int, int] = field(default_factory=dict)  # seq → ICMP payload bytes (default 56, as ping)
    df: bool = False  # Don't Fragment on the probes
    icmp_errors: list[IcmpError] = field(default_factory=list)
    # Hand-built IP packets to add: (capture point, ns after the first probe left, packet bytes).
    extra: list[tuple[str, int, bytes]] = field(default_factory=list)
    # Untagged traffic instead of tagged probes: "echo" (a plain ping: identifier UNTAGGED_ID, ICMP
    # sequence from 1, payload a timestamp and ping's pattern) or "udp" (a query from port 40000
    # to 53 and its answer, IP ID ``udp_ipid`` or random).
    untagged: str = ""
    udp_ipid: int | None = None
    udp_payload: bytes | None = None  # the same payload in every query and answer (default: numbered)


def _hit(table: dict, key: object, seq: int) -> bool:
    if key not in table:
        return False
    seqs = table[key]
    return seqs is None or seq in seqs


def build(sc: Scenario, out: Path) -> Path:
    """Write a run directory for ``sc`` into ``out``; return it."""
    from tracer.capture.pcapng_writer import write_pcapng

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(sc.run)
    frames: dict[str, list[tuple[int, bytes, int]]] = {p: [] for p in POINTS}
    esp_seq = {"request": 0, "reply": 0}
    t0 = 1_700_000_000_000_000_000

    def record(point: str, ts: int, ip: bytes) -> None:
        # ipsec0 is a TUN device (raw IP); the others are Ethernet.
        frame = ip if point.endswith("ipsec0") else \
            bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800) / ip)
        frames[point].append((ts, frame, len(frame)))

    def emit(direction: str, inner: IP, t: int, seq: int | None) -> bool:
        """Carry ``inner`` along the direction's hops; return True if it arrived."""
        hops = REQUEST_HOPS if direction == "request" else REPLY_HOPS
        if seq is not None and _hit(sc.drop_at_source, direction, seq):
            return False
        spi = SPI_WE if direction == "request" else SPI_EW
        outer_src, outer_dst = (WEST_GW_WAN, EAST_GW_WAN) if direction == "request" else (EAST_GW_WAN, WEST_GW_WAN)
        my_esp = None
        outer: IP | None = None
        for i, (point, form) in enumerate(hops):
            if form == "esp" and not sc.leak and outer is not None:
                pkt = outer  # one ESP packet crosses the untrusted hops: the same bytes at each
            elif form == "esp" and not sc.leak:
                if my_esp is None:
                    esp_seq[direction] += 1
                    my_esp = esp_seq[direction]
                    if seq is not None and _hit(sc.esp_lost, direction, seq):
                        return False
                if sc.esp_key:
                    pkt = _encrypt(inner, spi, my_esp, sc.esp_key, outer_src, outer_dst, sc.raw_esp)
                else:
                    esp = struct.pack(">II", spi, my_esp) + rng.randbytes(len(bytes(inner)) + 18)
                    pkt = IP(src=outer_src, dst=outer_dst, proto=50, id=rng.randrange(65536)) / esp if sc.raw_esp \
                        else IP(src=outer_src, dst=outer_dst, id=rng.randrange(65536)) / UDP(sport=4500, dport=4500) / esp
                outer = pkt
            else:
                pkt = inner
            ts = t + i * 40_000
            if point.endswith("ipsec0") and sc.leak:
                continue  # without an SA nothing goes through the tunnel device
            if seq is None or (direction, point, seq) not in sc.gaps:
                record(point, ts, bytes(pkt))
            for err in sc.icmp_errors:
                if seq is not None and (err.direction, err.at) == (direction, point) \
                        and (err.seqs is None or seq in err.seqs):
                    quoted = bytes(pkt)
                    icmp = icmp_error_bytes(err.sender, IP(quoted).src, err.type, err.code, quoted[:ICMP_QUOTE], err.mtu)
                    for k, where in enumerate(err.seen_at):
                        record(where, ts + 10_000 + k * 40_000, icmp)
            if seq is not None and _hit(sc.drop_after, (direction, point), seq):
                return False
        return True

    for seq in range(sc.count):
        t = t0 + seq * sc.spacing_ns
        payload = ProbeTag(sc.run, sc.kind, seq).encode() + bytes(sc.sizes.get(seq, 56) - 16)
        req = IP(src=WEST, dst=EAST, id=rng.randrange(65536), flags="DF" if sc.df else 0) \
            / ICMP(type=8, id=icmp_id_for(sc.run), seq=seq) / payload
        plain = _untagged(sc, seq, t, rng) if sc.untagged else None
        if plain is not None:
            req = plain[0]
        bgs = [IP(src=WEST, dst=EAST) / UDP(sport=5000 + b, dport=9) / bytes(20) for b in range(sc.background)]
        if sc.background_offset_ns < 0:
            for b, bg in enumerate(bgs):
                emit("request", bg, t + sc.background_offset_ns + b * 1_000_000, None)
        arrived = emit("request", req, t, seq)
        if sc.background_offset_ns >= 0:
            for b, bg in enumerate(bgs):
                emit("request", bg, t + sc.background_offset_ns + b * 1_000, None)
        if arrived and plain is not None:
            emit("reply", plain[1], t + 1_000_000, seq)
        elif arrived:
            rep = IP(src=EAST, dst=WEST, id=rng.randrange(65536)) / ICMP(type=0, id=icmp_id_for(sc.run), seq=seq) / payload
            emit("reply", rep, t + 1_000_000, seq)

    for point, offset, packet in sc.extra:
        record(point, t0 + offset, packet)

    captures = []
    for point, recs in frames.items():
        if point in sc.omit:
            continue
        name = point.replace(":", "_") + ".pcapng"
        linktype = 101 if point.endswith("ipsec0") else 1
        write_pcapng(out / name, sorted(recs), if_name=point, linktype=linktype, drops=sc.sniffer_drops.get(point, 0))
        captures.append({"point": point, "file": name, "drops": sc.sniffer_drops.get(point, 0)})
    if sc.esp_key:
        from tracer.esp import EspSA, write_esp_sa_file
        from tracer.esp.keys import GCM16

        write_esp_sa_file(out.parent / f"{out.name}.esp_sa", [
            EspSA(WEST_GW_WAN, EAST_GW_WAN, SPI_WE, GCM16, sc.esp_key),
            EspSA(EAST_GW_WAN, WEST_GW_WAN, SPI_EW, GCM16, sc.esp_key)])
    shutil.copy(TOPOLOGY, out / "topology.toml")
    if sc.kind == ProbeKind.MTU:
        sent = [{"seq": q, "size": sc.sizes.get(q, 56), "error": sc.send_errors.get(q)} for q in range(sc.count)]
    else:
        sent = [{"seq": q, "error": e} for q, e in sc.send_errors.items()]
    manifest = {
        "format": "tracer-run/1", "run": sc.run, "kind": sc.kind_name or ProbeKind(sc.kind).name.lower(),
        "src": WEST, "dst": EAST,
        "origin": "west", "count": sc.count, "topology": "topology.toml", "captures": captures,
        "probe": {"sent": sent},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


UNTAGGED_ID = 0x4242


def _untagged(sc: Scenario, seq: int, t: int, rng: random.Random) -> tuple[IP, IP]:
    """A plain ping's echo request and reply (sequence from 1), or a UDP query and its answer."""
    if sc.untagged == "echo":
        payload = struct.pack("<QQ", t // 10**9, t // 1000 % 10**6) + bytes(range(16, 56))
        return (IP(src=WEST, dst=EAST, id=rng.randrange(65536), flags="DF") / ICMP(type=8, id=UNTAGGED_ID, seq=seq + 1)
                / payload,
                IP(src=EAST, dst=WEST, id=rng.randrange(65536)) / ICMP(type=0, id=UNTAGGED_ID, seq=seq + 1) / payload)
    assert sc.untagged == "udp"
    ipid = rng.randrange(65536) if sc.udp_ipid is None else sc.udp_ipid
    query, answer = (f"query {seq}".encode(), f"answer {seq}".encode()) if sc.udp_payload is None else \
        (sc.udp_payload, sc.udp_payload)
    return (IP(src=WEST, dst=EAST, id=ipid, flags="DF") / UDP(sport=40000, dport=53) / query,
            IP(src=EAST, dst=WEST, id=ipid, flags="DF") / UDP(sport=53, dport=40000) / answer)


def _encrypt(inner: IP, spi: int, seq: int, key: bytes, src: str, dst: str, raw: bool) -> IP:
    """Tunnel-mode ESP as a gateway would send it (scapy's SecurityAssociation)."""
    from scapy.layers.ipsec import ESP, SecurityAssociation

    sa = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key, tunnel_header=IP(src=src, dst=dst),
                             nat_t_header=None if raw else UDP(sport=4500, dport=4500))
    return sa.encrypt(IP(bytes(inner)), seq_num=seq)
