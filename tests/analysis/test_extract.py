"""extract(): every column of every packet kind, on every link type, against scapy's own dissection.

Pure: frames are built with scapy and laid into a numpy buffer here; no files.
The corpus and the scapy reference are reused by tests/capture.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import numpy as np
import pytest
from scapy.contrib.ikev2 import IKEv2
from scapy.layers.inet import ICMP, IP, TCP, UDP, ICMPerror, IPerror, IPOption_RR, UDPerror
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet

from tracer.analysis.extract import EXTRACTED, LINKTYPES, PAD, extract
from tracer.model import tag
from tracer.model.observations import COLUMNS, PacketClass
from tracer.model.tag import ProbeKind, ProbeTag

RUN = 0x5EED1234
A, B, GW1, GW2, R = "192.0.2.10", "198.51.100.10", "198.18.1.1", "198.18.2.1", "203.0.113.1"


def eth(**kw: object) -> Ether:
    """An Ethernet header with fixed addresses (without them scapy would try to resolve MACs)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **kw)


def _echo(typ: int, seq: int, payload: bytes, **ip: object) -> Packet:
    return IP(src=A, dst=B, id=100 + seq, **ip) / ICMP(type=typ, id=tag.icmp_id_for(RUN), seq=seq) / payload


def _tagged(seq: int, kind: ProbeKind = ProbeKind.PING) -> bytes:
    return ProbeTag(RUN, kind, seq).encode() + bytes(range(40))


def _bad_check(seq: int) -> bytes:
    t = bytearray(ProbeTag(RUN, ProbeKind.PING, seq).encode())
    t[15] ^= 1
    return bytes(t) + bytes(20)


def _bad_kind(seq: int) -> bytes:
    head = b"TRC1" + struct.pack(">BBII", 0, 0, RUN, seq)  # kind 0: never a probe
    return head + struct.pack(">H", _ref_check(head)) + bytes(8)


# The tag format (tracer/model/tag.py's docstring), decoded here independently of tracer's own
# decoders so that the reference does not share their mistakes; tests/model/test_tag.py pins
# the bytes by hand.
def _ref_check(head14: bytes) -> int:
    """The seven big-endian 16-bit words before the check, summed mod 2**16, xor 0x5A5A."""
    return (sum(struct.unpack(">7H", head14)) & 0xFFFF) ^ 0x5A5A


def _ref_tag(payload: bytes) -> tuple[int, int, int] | None:
    """(kind, run, seq) of the 16-byte ICMP payload tag, or None."""
    if len(payload) < 16 or payload[:4] != b"TRC1":
        return None
    kind, _flags, run, seq, check = struct.unpack(">BBIIH", payload[4:16])
    if check != _ref_check(payload[:14]) or kind == 0:  # any registered kind: 1-255
        return None
    return kind, run, seq


def _ref_ike_tag(spi: bytes) -> tuple[int, int, int] | None:
    """(kind, run, seq) of the IKE initiator SPI tag (0xD7, kind, run, 16-bit seq), or None."""
    if len(spi) != 8 or spi[0] != 0xD7 or spi[1] == 0:
        return None
    _magic, kind, run, seq = struct.unpack(">BBIH", spi)
    return kind, run, seq


def _ike(spi_i: bytes, flags: int = 0x08, exch: int = 34, resp: bytes = bytes(8)) -> IKEv2:
    return IKEv2(init_SPI=spi_i, resp_SPI=resp, exch_type=exch, flags=flags) / bytes(32)


def _esp_bytes(spi: int, seq: int, n: int = 48) -> bytes:
    return struct.pack(">II", spi, seq) + bytes((i * 7) & 0xFF for i in range(n))


IKE_TAG = ProbeTag(RUN, ProbeKind.IKE, 3).ike_spi()
INNER_ECHO = _echo(8, 7, _tagged(7))
INNER_ESP = IP(src=GW1, dst=GW2, proto=50) / _esp_bytes(0xC0000001, 42)


def _corpus() -> dict[str, Packet]:
    frag_src = IP(src=A, dst=B, id=777) / UDP(sport=1234, dport=53) / bytes(200)
    f1 = IP(bytes(frag_src))
    first = IP(src=A, dst=B, id=777, flags="MF", frag=0, proto=17) / bytes(f1[UDP])[:96]
    second = IP(src=A, dst=B, id=777, flags=0, frag=12, proto=17) / bytes(f1[UDP])[96:]
    return {
        "echo-request-tagged": _echo(8, 5, _tagged(5), flags="DF"),
        "echo-reply-tagged": IP(src=B, dst=A, id=9) / ICMP(type=0, id=tag.icmp_id_for(RUN), seq=5) / _tagged(5),
        "echo-mtu-tagged-big": _echo(8, 6, ProbeTag(RUN, ProbeKind.MTU, 6).encode() + bytes(1372), flags="DF"),
        "echo-untagged": _echo(8, 1, b"abcdefghijklmnopqrstuvwxyz0123456789"),
        "echo-empty": _echo(8, 2, b""),
        "echo-bad-check": _echo(8, 3, _bad_check(3)),
        "echo-bad-kind": _echo(8, 4, _bad_kind(4)),
        "echo-tag-cut": _echo(8, 8, _tagged(8)[:15]),
        "esp-raw": INNER_ESP,
        "esp-udp4500": IP(src=GW1, dst=GW2) / UDP(sport=4500, dport=4500) / _esp_bytes(0xC0000002, 7),
        "esp-udp4500-natport": IP(src=GW1, dst=GW2) / UDP(sport=31000, dport=4500) / _esp_bytes(0xC0000003, 8),
        "ike-500-tagged": IP(src=GW1, dst=GW2) / UDP(sport=500, dport=500) / _ike(IKE_TAG),
        "ike-500-reply-tagged": IP(src=GW2, dst=GW1) / UDP(sport=500, dport=500) / _ike(IKE_TAG, 0x20, resp=b"\x11" * 8),
        "ike-500-untagged": IP(src=GW1, dst=GW2) / UDP(sport=500, dport=500) / _ike(b"\x12\x34\x56\x78\x9a\xbc\xde\xf0"),
        "ike-500-bad-kind": IP(src=GW1, dst=GW2) / UDP(sport=500, dport=500) / _ike(b"\xd7\x00\x00\x00\x00\x01\x00\x02"),
        "ike-4500-marker-tagged": IP(src=GW1, dst=GW2) / UDP(sport=4500, dport=4500)
        / (bytes(4) + bytes(_ike(IKE_TAG, 0x08, 35))),
        "udp-500-short": IP(src=GW1, dst=GW2) / UDP(sport=500, dport=500) / bytes(10),
        "nat-keepalive": IP(src=GW1, dst=GW2) / UDP(sport=4500, dport=4500) / b"\xff",
        "icmp-frag-needed-esp": IP(src=R, dst=GW1) / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(INNER_ESP)[:28],
        "icmp-frag-needed-echo": IP(src=R, dst=A) / ICMP(type=3, code=4, nexthopmtu=1280) / bytes(INNER_ECHO),
        "icmp-frag-needed-echo-8": IP(src=R, dst=A) / ICMP(type=3, code=4, nexthopmtu=1280) / bytes(INNER_ECHO)[:28],
        "icmp-ttl-udp": IP(src=R, dst=A) / ICMP(type=11, code=0)
        / bytes(IP(src=A, dst=B) / UDP(sport=33434, dport=33435) / bytes(12)),
        "icmp-port-unreach-ike": IP(src=GW2, dst=GW1) / ICMP(type=3, code=3)
        / bytes(IP(src=GW1, dst=GW2) / UDP(sport=500, dport=500) / _ike(IKE_TAG)),
        "icmp-unreach-esp-udp": IP(src=R, dst=GW1) / ICMP(type=3, code=1)
        / bytes(IP(src=GW1, dst=GW2) / UDP(sport=4500, dport=4500) / _esp_bytes(0xC0000004, 99)),
        "icmp-param-problem-options": IP(src=R, dst=A) / ICMP(type=12, code=0)
        / bytes(IP(src=A, dst=B, options=[IPOption_RR(routers=["1.1.1.1", "2.2.2.2"])]) / ICMP(type=8, id=1, seq=2) / _tagged(9)),
        "icmp-timestamp": IP(src=A, dst=B) / ICMP(type=13, id=5, seq=6) / bytes(12),
        "fragment-first": first,
        "fragment-second": second,
        "tcp-syn": IP(src=A, dst=B, flags="DF") / TCP(sport=40000, dport=443, flags="S"),
        "udp-dns": IP(src=A, dst=B) / UDP(sport=5353, dport=53) / bytes(30),
        "gre": IP(src=GW1, dst=GW2, proto=47) / bytes(24),
        "ip-options-echo-tagged": _echo(8, 10, _tagged(10), options=[IPOption_RR(routers=["10.0.0.1"] * 3)]),
    }


CORPUS = {k: IP(bytes(p)) for k, p in _corpus().items()}


def _zero() -> dict[str, int]:
    return {k: 0 for k in EXTRACTED if k not in ("ts_ns", "wire_len", "l3_off")}


def _ip(a: str) -> int:
    return int(IPv4Address(a))


def reference(l3: bytes) -> dict[str, int]:
    """The expected columns of one IPv4 packet, from scapy's dissection (tags by the test's own decoders)."""
    e = _zero()
    p = IP(l3)
    e.update(ipver=4, src=_ip(p.src), dst=_ip(p.dst), proto=p.proto, ip_len=p.len, ipid=p.id, ttl=p.ttl,
             df=int("DF" in p.flags), mf=int("MF" in p.flags), frag=p.frag)
    if p.frag:
        e["cls"] = PacketClass.FRAGMENT
        return e
    e["l4_hash"] = _ref_l4_hash(p.proto, bytes(p)[p.ihl * 4: p.len])
    if ICMP in p:
        ic = p[ICMP]
        e.update(icmp_type=ic.type, icmp_code=ic.code, cls=PacketClass.OTHER)
        if ic.type in (0, 8):
            e.update(cls=PacketClass.ECHO_REQUEST if ic.type == 8 else PacketClass.ECHO_REPLY, icmp_id=ic.id, icmp_seq=ic.seq)
            _put_tag(e, _ref_tag(bytes(ic.payload)))
        elif ic.type in (3, 11, 12):
            e["cls"] = PacketClass.ICMP_ERROR
            if (ic.type, ic.code) == (3, 4):
                e["mtu"] = ic.nexthopmtu
            if IPerror in p:
                q = p[IPerror]
                e.update(inner_src=_ip(q.src), inner_dst=_ip(q.dst), inner_proto=q.proto)
                if ICMPerror in q and q[ICMPerror].type in (0, 8) and len(bytes(q[ICMPerror])) >= 8:
                    e.update(inner_id=q[ICMPerror].id, inner_seq=q[ICMPerror].seq)
                    _put_tag(e, _ref_tag(bytes(q[ICMPerror].payload)))
                elif UDPerror in q:
                    u = q[UDPerror]
                    e.update(inner_id=u.sport, inner_seq=u.dport)
                    _udp_payload(e, u.sport, u.dport, u.len - 8, bytes(u.payload), inner=True)
                elif q.proto == 50:
                    spi, seq = struct.unpack(">II", bytes(q.payload)[:8])
                    e.update(spi=spi, esp_seq=seq)
    elif UDP in p:
        u = p[UDP]
        e.update(sport=u.sport, dport=u.dport, cls=PacketClass.UDP)
        _udp_payload(e, u.sport, u.dport, u.len - 8, bytes(u.payload), inner=False)
    elif ESP in p:
        e.update(cls=PacketClass.ESP, spi=p[ESP].spi, esp_seq=p[ESP].seq)
    elif TCP in p:
        e.update(cls=PacketClass.TCP, sport=p[TCP].sport, dport=p[TCP].dport)
    return e


def _ref_l4_hash(proto: int, l4: bytes) -> int:
    """The invariant-bytes hash, written from its definition: the first 16 L4 bytes without ports
    and checksums, word by word, bytes past the packet's end counting as 0."""
    b = bytearray(l4[:16])
    for lo, hi in {6: [(0, 4)], 17: [(0, 4), (6, 8)], 1: [(2, 4)]}.get(proto, []):
        b[lo:hi] = bytes(min(hi, len(b)) - min(lo, len(b)))
    b += bytes(16 - len(b))
    h = 0
    for i, k in enumerate((0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F)):
        h ^= (int.from_bytes(b[4 * i: 4 * i + 4], "big") * k) & 0xFFFFFFFF
    return h ^ (h >> 16)


def _udp_payload(e: dict[str, int], sport: int, dport: int, plen: int, pl: bytes, *, inner: bool) -> None:
    cls = None
    if 4500 in (sport, dport):
        if plen == 1 and pl[:1] == b"\xff":
            cls = PacketClass.NAT_KEEPALIVE
        elif plen >= 32 and pl[:4] == bytes(4):
            cls = PacketClass.IKE
            _ike_ref(e, pl[4:])
        elif plen >= 8 and pl[:4] != bytes(4):
            cls = PacketClass.ESP
            spi, seq = struct.unpack(">II", pl[:8])
            e.update(spi=spi, esp_seq=seq, udp_encap=1)
    elif 500 in (sport, dport) and plen >= 28:
        cls = PacketClass.IKE
        _ike_ref(e, pl)
    if cls is not None and not inner:
        e["cls"] = cls


def _ike_ref(e: dict[str, int], pl: bytes) -> None:
    ike = IKEv2(pl)
    e.update(ike_spi_i=int.from_bytes(ike.init_SPI, "big"), ike_spi_r=int.from_bytes(ike.resp_SPI, "big"),
             ike_exch=ike.exch_type, ike_flags=int(ike.flags))
    _put_tag(e, _ref_ike_tag(ike.init_SPI))


def _put_tag(e: dict[str, int], t: tuple[int, int, int] | None) -> None:
    if t is not None:
        e.update(tag_kind=t[0], tag_run=t[1], tag_seq=t[2])


# --- link layers ----------------------------------------------------------------------------------

def _null(order: str) -> object:
    return lambda l3, et: struct.pack(order + "I", 2 if et == 0x0800 else 10) + l3


WRAP = {  # name → (linktype, builder(l3 bytes, ethertype) → frame, L2 length)
    "ethernet": (1, lambda l3, et: bytes(eth(type=et) / l3), 14),
    "vlan": (1, lambda l3, et: bytes(eth() / Dot1Q(vlan=7, type=et) / l3), 18),
    "qinq": (1, lambda l3, et: bytes(eth() / Dot1AD(vlan=100) / Dot1Q(vlan=7, type=et) / l3), 22),
    "raw101": (101, lambda l3, et: l3, 0),
    "raw12": (12, lambda l3, et: l3, 0),
    "raw14": (14, lambda l3, et: l3, 0),
    "ipv4-228": (228, lambda l3, et: l3, 0),
    "sll": (113, lambda l3, et: bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02" * 8, proto=et) / l3), 16),
    "sll2": (276, lambda l3, et: bytes(CookedLinuxV2(proto=et, ifindex=3, pkttype=4) / l3), 20),
    "null-le": (0, _null("<"), 4),
    "null-be": (0, _null(">"), 4),
    "loop": (108, _null(">"), 4),
}


def pack(frames: list[bytes], caplens: list[int] | None = None, junk: int = 0xAA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay frames into one buffer with 16 junk bytes between them (like record headers) and PAD zeros at the end."""
    caplens = caplens if caplens is not None else [len(f) for f in frames]
    parts, offs, o = [], [], 0
    for f, c in zip(frames, caplens, strict=True):
        parts += [bytes([junk]) * 16, f[:c]]
        offs.append(o + 16)
        o += 16 + c
    parts.append(bytes([junk]) * 64)  # junk right after the last frame too: nothing may read past caplen
    buf = np.frombuffer(b"".join(parts) + bytes(PAD), np.uint8)
    return buf, np.array(offs, np.int64), np.array(caplens, np.uint32)


def _row(cols: dict[str, np.ndarray], i: int) -> dict[str, int]:
    return {k: int(cols[k][i]) for k in _zero()}


# --- tests ------------------------------------------------------------------------------------------

def test_columns_are_exactly_the_model_columns():
    buf, off, cap = pack([bytes(CORPUS["udp-dns"])])
    cols = extract(buf, off, cap, 101)
    assert set(cols) == set(COLUMNS) - {"point", "file", "rec"}
    for k, v in cols.items():
        assert v.dtype == COLUMNS[k], k


def test_reference_sanity():
    """The reference itself says what the brief says, so comparing against it means something."""
    e = reference(bytes(CORPUS["echo-request-tagged"]))
    assert (e["cls"], e["tag_kind"], e["tag_run"], e["tag_seq"], e["df"]) == (PacketClass.ECHO_REQUEST, 1, RUN, 5, 1)
    assert reference(bytes(CORPUS["echo-bad-check"]))["tag_kind"] == 0
    assert reference(bytes(CORPUS["ike-4500-marker-tagged"]))["tag_kind"] == ProbeKind.IKE
    e = reference(bytes(CORPUS["icmp-frag-needed-esp"]))
    assert (e["cls"], e["mtu"], e["inner_proto"], e["spi"], e["esp_seq"]) == (PacketClass.ICMP_ERROR, 1400, 50, 0xC0000001, 42)
    e = reference(bytes(CORPUS["nat-keepalive"]))
    assert e["cls"] == PacketClass.NAT_KEEPALIVE


@pytest.mark.parametrize("wrap", list(WRAP))
def test_every_packet_kind_on_every_link_type(wrap):
    linktype, build, l2 = WRAP[wrap]
    names = list(CORPUS)
    frames = [build(bytes(CORPUS[k]), 0x0800) for k in names]
    buf, off, cap = pack(frames)
    ts = np.arange(len(frames), dtype=np.int64) * 1000 + 1_700_000_000_000_000_000
    cols = extract(buf, off, cap, linktype, ts_ns=ts, wire_len=cap + 4)
    for i, k in enumerate(names):
        got, want = _row(cols, i), reference(bytes(CORPUS[k]))
        assert got == want, (wrap, k, {c: (got[c], want[c]) for c in want if got[c] != want[c]})
        assert cols["l3_off"][i] == off[i] + l2
    assert (cols["ts_ns"] == ts).all()
    assert (cols["wire_len"] == cap + 4).all()


def test_per_record_link_types_mixed():
    names = list(CORPUS)
    frames, lts, l2s = [], [], []
    wraps = list(WRAP.values())
    for i, k in enumerate(names):
        lt, build, l2 = wraps[i % len(wraps)]
        frames.append(build(bytes(CORPUS[k]), 0x0800))
        lts.append(lt)
        l2s.append(l2)
    buf, off, cap = pack(frames)
    cols = extract(buf, off, cap, np.array(lts))
    for i, k in enumerate(names):
        assert _row(cols, i) == reference(bytes(CORPUS[k])), k
    assert (cols["l3_off"] == off + np.array(l2s)).all()


def test_non_ip_and_ipv6():
    v6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=1, seq=2) / _tagged(1))
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.1"))
    frames = [
        bytes(eth(type=0x86DD) / v6), arp, v6, bytes(CookedLinuxV2(proto=0x86DD) / v6),
        struct.pack("<I", 24) + v6,  # NULL with an OpenBSD AF_INET6
        bytes(eth(type=0x0800)) + bytes(CORPUS["udp-dns"])[:10],  # IPv4 ethertype, header cut
        bytes(eth(type=0x0800)) + b"\x65" + bytes(CORPUS["udp-dns"])[1:],  # version 6 behind an IPv4 ethertype
        b"\x45" * 10,  # garbage on a raw link
    ]
    lts = [1, 1, 101, 276, 0, 1, 1, 101]
    buf, off, cap = pack(frames)
    cols = extract(buf, off, cap, np.array(lts))
    assert cols["ipver"].tolist() == [6, 0, 6, 6, 6, 0, 0, 0]
    assert (cols["cls"] == PacketClass.OTHER).all()
    assert (cols["tag_kind"] == 0).all()
    assert cols["l3_off"].tolist() == [off[0] + 14, 0, off[2], off[3] + 20, off[4] + 4, 0, 0, 0]


def test_unknown_link_type_gives_non_ip_rows():
    buf, off, cap = pack([bytes(CORPUS["udp-dns"])])
    cols = extract(buf, off, cap, 147)
    assert cols["ipver"][0] == 0 and cols["src"][0] == 0
    assert 147 not in LINKTYPES


def test_ethernet_padding_is_not_payload():
    # A 29-byte keepalive and a 28-byte empty echo are padded to 60 bytes on Ethernet.
    # Non-zero padding (some NICs do that) must not be read as a keepalive byte or a tag.
    frames = [bytes(eth() / CORPUS[k]) for k in ("nat-keepalive", "echo-empty")]
    frames = [f + b"\xff" * (60 - len(f)) for f in frames]
    frames.append(bytes(eth() / CORPUS["echo-empty"]) + ProbeTag(RUN, ProbeKind.PING, 1).encode())
    buf, off, cap = pack(frames)
    cols = extract(buf, off, cap, 1)
    assert cols["cls"].tolist() == [PacketClass.NAT_KEEPALIVE, PacketClass.ECHO_REQUEST, PacketClass.ECHO_REQUEST]
    assert cols["ip_len"].tolist() == [29, 28, 28]
    assert cols["tag_kind"].tolist() == [0, 0, 0]


@pytest.mark.parametrize("name", ["echo-request-tagged", "esp-udp4500", "ike-4500-marker-tagged", "ike-500-tagged",
                                  "icmp-frag-needed-echo", "icmp-port-unreach-ike", "ip-options-echo-tagged",
                                  "esp-raw", "tcp-syn", "nat-keepalive", "icmp-unreach-esp-udp"])
@pytest.mark.parametrize("wrap", ["ethernet", "vlan", "raw101", "sll2"])
def test_truncated_snapshots_never_produce_garbage(name, wrap):
    """Cut the frame at every length, with junk after the cut: every field is its true value or 0."""
    linktype, build, l2 = WRAP[wrap]
    frame = build(bytes(CORPUS[name]), 0x0800)
    full = reference(bytes(CORPUS[name]))
    cuts = list(range(len(frame) + 1))
    buf, off, cap = pack([frame] * len(cuts), cuts)
    cols = extract(buf, off, cap, linktype)
    for i, c in enumerate(cuts):
        got = _row(cols, i)
        for k, v in got.items():
            if k == "cls":
                continue
            assert v in (0, full[k]), (name, wrap, c, k, v, full[k])
        if c >= l2 + 4 * CORPUS[name].ihl:
            assert got["src"] == full["src"] and got["ipver"] == 4
        else:
            assert got["ipver"] == 0
    assert _row(cols, len(cuts) - 1) == full


def test_tag_needs_all_16_bytes():
    frame = bytes(eth() / CORPUS["echo-request-tagged"])
    need = 14 + 20 + 8 + 16
    buf, off, cap = pack([frame, frame], [need - 1, need])
    cols = extract(buf, off, cap, 1)
    assert cols["tag_kind"].tolist() == [0, ProbeKind.PING]
    assert cols["tag_seq"].tolist() == [0, 5]
    assert cols["icmp_seq"].tolist() == [5, 5]


def test_many_random_tag_payloads_are_never_tagged():
    rng = np.random.default_rng(7)
    frames = []
    for i in range(2000):
        pl = b"TRC1" + rng.integers(0, 256, 40, dtype=np.uint8).tobytes()  # magic, random rest
        frames.append(bytes(_echo(8, i & 0xFFFF, pl)))
    buf, off, cap = pack(frames)
    cols = extract(buf, off, cap, 101)
    want = [_ref_tag(bytes(IP(f)[ICMP].payload)) is not None for f in frames]
    assert (cols["tag_kind"] > 0).tolist() == want


def test_empty_input():
    cols = extract(np.zeros(PAD, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.uint32), 1)
    assert all(len(v) == 0 for v in cols.values())


def test_unpadded_buffer_is_padded_internally():
    frame = bytes(CORPUS["ike-4500-marker-tagged"])
    buf = np.frombuffer(frame, np.uint8)  # no padding at all
    cols = extract(buf, np.array([0]), np.array([len(frame)]), 101)
    assert _row(cols, 0) == reference(frame)


def test_frames_near_the_end_of_an_unpadded_buffer_in_any_order():
    """Records ending within PAD bytes of the buffer end take a separate path; order must not matter."""
    names = ["ike-4500-marker-tagged", "icmp-frag-needed-echo", "echo-request-tagged", "esp-udp4500"]
    frames = [bytes(CORPUS[k]) for k in names]
    buf, off, cap = pack(frames)
    buf = buf[: int(off[-1] + cap[-1])]  # cut the padding and trailing junk away
    order = np.array([3, 0, 2, 1])  # the last frame of the buffer first
    cols = extract(buf, off[order], cap[order], 101)
    for i, j in enumerate(order):
        assert _row(cols, i) == reference(frames[j]), names[j]
        assert cols["l3_off"][i] == off[j]
    cols = extract(buf, off, cap + 100, 101)  # caplen claiming bytes past the buffer: cut, never out of range
    assert _row(cols, 3)["spi"] == reference(frames[3])["spi"]


def test_linktype_table_matches_parser():
    from tracer.analysis.extract import _L2

    assert set(_L2) == set(LINKTYPES)
