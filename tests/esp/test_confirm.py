"""confirm(): observations + keys → the probe tag inside each (SPI, seq); tshark agrees; and on the real lab."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.packet import Packet, raw

from tracer.capture.observe import observe_files
from tracer.capture.pcapng_writer import write_pcapng
from tracer.esp import EspSA
from tracer.esp.confirm import Confirmation, confirm
from tracer.lab import Lab
from tracer.lab.espkeys import sas_from_lab
from tracer.model.observations import PacketClass
from tracer.model.tag import ProbeKind, ProbeTag
from tracer.run.replay import load_run, replay_run
from tracer.wireshark import wireshark_decode

GW_W, GW_E = "198.18.1.1", "198.18.2.1"
HOST_W, HOST_E = "192.0.2.10", "198.51.100.10"
SPI_REQ, SPI_REP, SPI_CBC, SPI_NOKEY = 0xC0000001, 0xC0000002, 0xC0000003, 0xC0000099
RUN = 0x0A4A949F
GCM16 = "AES-GCM with 16 octet ICV [RFC4106]"
K_REQ, K_REP = bytes(range(20)), bytes(range(50, 70))
K_CBC, K_HMAC = bytes(range(100, 116)), bytes(range(200, 232))
T0 = 1_700_000_000_000_000_000

SAS = [
    EspSA(GW_W, GW_E, SPI_REQ, GCM16, K_REQ),
    EspSA(GW_E, GW_W, SPI_REP, GCM16, K_REP),
    EspSA(GW_W, GW_E, SPI_CBC, "AES-CBC [RFC3602]", K_CBC, "HMAC-SHA-256-128 [RFC4868]", K_HMAC),
]


def echo(seq: int, reply: bool = False, run: int = RUN) -> Packet:
    src, dst = (HOST_E, HOST_W) if reply else (HOST_W, HOST_E)
    tag = ProbeTag(run, ProbeKind.PING, seq).encode()
    return IP(src=src, dst=dst) / ICMP(type=0 if reply else 8, id=0x4242, seq=seq + 1) / (tag + bytes(40))


def scapy_sa(spi: int, *, reply: bool = False, udp: bool = True) -> SecurityAssociation:
    src, dst = (GW_E, GW_W) if reply else (GW_W, GW_E)
    common = {"tunnel_header": IP(src=src, dst=dst), "nat_t_header": UDP(sport=4500, dport=4500) if udp else None}
    if spi == SPI_CBC:
        return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=K_CBC, auth_algo="SHA2-256-128",
                                   auth_key=K_HMAC, **common)
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=K_REP if reply else K_REQ, **common)


def frames(pkts: list[Packet]) -> list[tuple[int, bytes, int]]:
    out = []
    for i, p in enumerate(pkts):
        data = raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p)
        out.append((T0 + i * 1_000_000, data, len(data)))
    return out


def mixed_packets() -> list[Packet]:
    req, rep, cbc = scapy_sa(SPI_REQ), scapy_sa(SPI_REP, reply=True), scapy_sa(SPI_CBC, udp=False)
    pkts: list[Packet] = []
    for s in range(3):
        pkts.append(req.encrypt(echo(s), seq_num=s + 1))
        pkts.append(rep.encrypt(echo(s, reply=True), seq_num=s + 1))
    pkts.append(cbc.encrypt(echo(7), seq_num=1))  # raw ESP, proto 50
    tampered = bytearray(raw(req.encrypt(echo(3), seq_num=4)))
    tampered[-20] ^= 0xFF
    pkts.append(IP(bytes(tampered)))
    pkts.append(req.encrypt(IP(src=HOST_W, dst=HOST_E) / UDP(sport=5000, dport=53) / b"dns?", seq_num=5))
    nokey = SecurityAssociation(ESP, spi=SPI_NOKEY, crypt_algo="AES-GCM", crypt_key=bytes(20),
                                tunnel_header=IP(src=GW_W, dst=GW_E), nat_t_header=UDP(sport=4500, dport=4500))
    pkts.append(nokey.encrypt(echo(9), seq_num=1))
    pkts.append(IP(src=GW_W, dst=GW_E) / UDP(sport=4500, dport=4500) / (b"\0\0\0\0" + bytes(28)))  # IKE on 4500
    pkts.append(echo(0))  # cleartext
    return pkts


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.pcapng"
    write_pcapng(path, frames(mixed_packets()), if_name="a:b", linktype=1)
    return path


def no_key_material(text: str) -> bool:
    low = text.lower()
    return not any(k.hex() in low or k.hex(" ") in low or repr(k) in text for k in (K_REQ, K_REP, K_CBC, K_HMAC))


def test_confirm_finds_the_tag_inside_each_esp_packet(mixed: Path) -> None:
    obs = observe_files([(mixed, None)]).obs
    assert obs.points == ["a:b"]
    assert int((obs["cls"] == PacketClass.ESP).sum()) == 10
    conf = confirm(obs, SAS)
    for s in range(3):
        assert conf.tags[(SPI_REQ, s + 1)] == (ProbeTag(RUN, ProbeKind.PING, s), 8)
        assert conf.tags[(SPI_REP, s + 1)] == (ProbeTag(RUN, ProbeKind.PING, s), 0)
        inner = conf.inner[(SPI_REP, s + 1)]
        assert (inner.src, inner.dst, inner.proto, inner.icmp_seq, inner.icmp_id) == (HOST_E, HOST_W, 1, s + 1, 0x4242)
    assert conf.tags[(SPI_CBC, 1)] == (ProbeTag(RUN, ProbeKind.PING, 7), 8)
    assert conf.tags[(SPI_REQ, 5)] == (None, None)  # decrypted fine, but DNS rather than a probe
    assert conf.inner[(SPI_REQ, 5)].proto == 17 and conf.inner[(SPI_REQ, 5)].next_header == 4
    assert conf.failures == {(SPI_REQ, 4): f"SPI 0x{SPI_REQ:08x} seq 4: integrity check failed (AES-GCM tag)"}
    assert conf.spis_without_sa == {SPI_NOKEY}
    assert conf.rows == 9 and conf.decrypted == 8 and conf.failed == 1
    assert conf.tag(SPI_REQ, 2) == ProbeTag(RUN, ProbeKind.PING, 1) and conf.tag(SPI_REQ, 99) is None
    summary = conf.summary()
    assert "8 packets decrypted, 1 failed (integrity check failed (AES-GCM tag))" in summary
    assert f"no key for SPI 0x{SPI_NOKEY:08x}" in summary
    assert no_key_material(repr(conf)) and no_key_material(summary)


def test_confirm_without_matching_keys_or_rows(mixed: Path) -> None:
    obs = observe_files([(mixed, None)]).obs
    conf = confirm(obs, [])
    assert conf.tags == {} and conf.failures == {} and conf.rows == 0
    assert conf.spis_without_sa == {SPI_REQ, SPI_REP, SPI_CBC, SPI_NOKEY}
    assert confirm(obs.select(obs["cls"] != PacketClass.ESP), SAS) == Confirmation()
    wrong = [EspSA("*", "*", SPI_REQ, GCM16, bytes(20))]
    conf = confirm(obs, wrong)
    assert set(conf.failures) == {(SPI_REQ, n) for n in range(1, 6)} and not conf.tags


def test_shared_spi_is_resolved_by_outer_addresses(mixed: Path) -> None:
    # Two SAs with the SPI of the requests: the one whose addresses match is the one that works.
    decoy = EspSA(GW_E, GW_W, SPI_REQ, GCM16, bytes(20))
    obs = observe_files([(mixed, None)]).obs
    conf = confirm(obs, [decoy, *SAS])
    assert conf.tags[(SPI_REQ, 1)][0] == ProbeTag(RUN, ProbeKind.PING, 0)
    assert set(conf.failures) == {(SPI_REQ, 4)}


def test_a_copy_cut_short_at_one_point_is_read_at_another(tmp_path: Path) -> None:
    req = scapy_sa(SPI_REQ)
    recs = frames([req.encrypt(echo(s), seq_num=s + 1) for s in range(3)])
    short, full = tmp_path / "short.pcapng", tmp_path / "full.pcapng"
    write_pcapng(short, recs, if_name="west-gw:wan0", linktype=1, snaplen=64)
    write_pcapng(full, recs[:2], if_name="router:eth0", linktype=1)
    obs = observe_files([(short, None), (full, None)]).obs
    conf = confirm(obs, SAS)
    assert conf.rows == 5
    assert {k: v[0].seq for k, v in conf.tags.items() if v[0]} == {(SPI_REQ, 1): 0, (SPI_REQ, 2): 1}
    assert list(conf.failures) == [(SPI_REQ, 3)]
    assert conf.failures[(SPI_REQ, 3)].startswith("capture truncated at 50 of ")  # Ethernet + 50 = the 64-byte snaplen


def fast_gcm_frame(spi: int, key: bytes, seq: int, inner: bytes) -> bytes:
    """Ethernet/IPv4/UDP 4500/ESP (AES-GCM-16) without scapy: thousands of packets in milliseconds."""
    pad = -(len(inner) + 2) % 4
    iv = struct.pack("!Q", seq)
    head = struct.pack("!II", spi, seq)
    body = AESGCM(key[:-4]).encrypt(key[-4:] + iv, inner + bytes(range(1, pad + 1)) + bytes([pad, 4]), head)
    esp = head + iv + body
    udp = struct.pack("!HHHH", 4500, 4500, 8 + len(esp), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(esp), seq & 0xFFFF, 0, 64, 17, 0,
                     bytes(map(int, GW_W.split("."))), bytes(map(int, GW_E.split("."))))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp + esp


def test_thousands_of_packets(tmp_path: Path) -> None:
    n = 3000
    inner = [raw(echo(s)) for s in range(50)]  # the tag repeats every 50 packets; the ESP sequence does not
    recs = [(T0 + s, f, len(f)) for s in range(n) for f in [fast_gcm_frame(SPI_REQ, K_REQ, s + 1, inner[s % 50])]]
    path = tmp_path / "many.pcapng"
    write_pcapng(path, recs, if_name="router:eth0", linktype=1)
    obs = observe_files([(path, None)]).obs
    t = time.perf_counter()
    conf = confirm(obs, SAS)
    took = time.perf_counter() - t
    print(f"confirm: {n} ESP packets in {took * 1e3:.0f} ms ({took / n * 1e6:.1f} µs/packet)")
    assert conf.decrypted == n and not conf.failures
    assert all(conf.tags[(SPI_REQ, s + 1)][0] == ProbeTag(RUN, ProbeKind.PING, s % 50) for s in range(n))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (apt-get install tshark)")
def test_wireshark_agrees_with_confirm(mixed: Path, tmp_path: Path) -> None:
    ws = wireshark_decode(mixed, SAS)
    obs = observe_files([(mixed, None)]).obs
    conf = confirm(obs, SAS)
    by_key = {(w.spi, w.seq): w for w in ws}
    assert len(ws) == 10  # every ESP packet, IKE and cleartext excluded by the "esp" filter
    for key, inner in conf.inner.items():
        w = by_key[key]
        assert (w.icmp_type, w.icmp_seq, w.tag) == (inner.icmp_type, inner.icmp_seq, inner.tag), key
    assert by_key[(SPI_NOKEY, 1)].icmp_type is None  # no key: Wireshark cannot see inside either
    assert not list(tmp_path.parent.glob("tracer-wireshark-*"))  # the private config dir is gone


# --- the real lab ----------------------------------------------------------------------------------

LAB = "ek"




@pytest.mark.lab
def test_lab_ping_every_esp_packet_carries_its_probe(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "tracer", "ping", "--topology", str(lab.topology_path), "west", "east", "--out", str(out)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = load_run([out])
    assert loaded.manifest is not None
    run, count = loaded.manifest.run, loaded.manifest.count
    sas = sas_from_lab(lab)
    assert len(sas) >= 2 and all(sa.enc == GCM16 and len(sa.enc_key) == 20 for sa in sas)

    conf = confirm(loaded.observations, sas)
    assert not conf.failures and not conf.spis_without_sa, conf.summary()
    obs = loaded.observations
    esp_rows = obs["cls"] == PacketClass.ESP
    assert conf.rows == int(esp_rows.sum()) > 0
    probes = {(v[0].seq, v[1]) for v in conf.tags.values() if v[0] is not None and v[0].run == run}
    seqs = {tag.seq for tag, _ in conf.tags.values() if tag is not None and tag.run == run}
    assert len(seqs) == count and probes == {(s, t) for s in seqs for t in (8, 0)}  # each probe: request and reply

    # The keyless association of the verdict names the very ESP packets that carry each probe.
    verdict = replay_run(loaded)[0]
    checked = 0
    for probe in verdict.probes:
        for esp_id in probe.esp:
            if esp_id is not None:
                tag, icmp_type = conf.tags[esp_id]
                assert tag is not None and (tag.run, tag.seq) == (run, probe.seq), (probe, esp_id)
                assert icmp_type == (8 if probe.direction == "request" else 0)
                checked += 1
    assert checked >= 2 * count

    if shutil.which("tshark"):  # Wireshark, given the same keys, sees the same probes on the untrusted hop
        router = next(c.file for c in loaded.manifest.captures if c.point == "router:eth0")
        for w in wireshark_decode(out / router, sas):
            assert (w.tag, w.icmp_type) == conf.tags[(w.spi, w.seq)], w

    # Nothing tracer wrote to the run directory contains key material, in any spelling.
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert blobs
    for sa in sas:
        for key in (sa.enc_key, sa.enc_key[:16]):
            spellings = [key, key.hex().encode(), key.hex().upper().encode(), key.hex(" ").upper().encode()]
            assert not any(s in blob for s in spellings for blob in blobs), f"key of SPI 0x{sa.spi:08x} leaked"
