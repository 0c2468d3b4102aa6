"""decrypt_esp against scapy's independent ESP implementation: round trips, tampering, wrong keys, ESN."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Packet, raw

from tracer.esp import (
    EspIntegrityError,
    EspMalformed,
    EspSA,
    EspUnsupported,
    decrypt_esp,
    esp_offset,
    open_esp,
)
from tracer.model.tag import ProbeKind, ProbeTag, decode

GW_W, GW_E = "198.18.1.1", "198.18.2.1"
SPI = 0xC1A2B3C4
GCM16 = "AES-GCM with 16 octet ICV [RFC4106]"

# (scapy crypt algo, key length, scapy auth algo, auth key length, scapy ICV override) → (Wireshark enc, Wireshark auth)
ALGOS = {
    "gcm128": (("AES-GCM", 20, None, 0, None), (GCM16, "NULL")),
    "gcm256": (("AES-GCM", 36, None, 0, None), (GCM16, "NULL")),
    "cbc128-sha256": (("AES-CBC", 16, "SHA2-256-128", 32, None), ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]")),
    "cbc256-sha384": (("AES-CBC", 32, "SHA2-384-192", 48, None), ("AES-CBC [RFC3602]", "HMAC-SHA-384-192 [RFC4868]")),
    "cbc192-sha512": (("AES-CBC", 24, "SHA2-512-256", 64, None), ("AES-CBC [RFC3602]", "HMAC-SHA-512-256 [RFC4868]")),
    "ctr128-sha1": (("AES-CTR", 20, "HMAC-SHA1-96", 20, None), ("AES-CTR [RFC3686]", "HMAC-SHA-1-96 [RFC2404]")),
    "null-sha256": (("NULL", 0, "SHA2-256-128", 32, None), ("NULL", "HMAC-SHA-256-128 [RFC4868]")),
    "cbc128-noauth": (("AES-CBC", 16, None, 0, None), ("AES-CBC [RFC3602]", "NULL")),
}


def key_of(n: int, seed: int) -> bytes:
    return bytes((seed * 37 + i * 11) & 0xFF for i in range(n))


def tagged_echo(seq: int, reply: bool = False, size: int = 40) -> Packet:
    src, dst = ("198.51.100.10", "192.0.2.10") if reply else ("192.0.2.10", "198.51.100.10")
    tag = ProbeTag(0x0A4A949F, ProbeKind.PING, seq).encode()
    return IP(src=src, dst=dst, id=seq) / ICMP(type=0 if reply else 8, id=0x1234, seq=seq) / (tag + bytes(size))


def pair(name: str, *, udp: bool = True, tunnel: bool = True, esn: int | None = None) -> tuple[SecurityAssociation, EspSA]:
    (calgo, klen, aalgo, alen, icv), (enc, auth) = ALGOS[name]
    ckey, akey = key_of(klen, 1), key_of(alen, 2)
    scapy_sa = SecurityAssociation(
        ESP, spi=SPI, crypt_algo=calgo, crypt_key=ckey or None, crypt_icv_size=icv,
        auth_algo=aalgo or "NULL", auth_key=akey or None,
        tunnel_header=IP(src=GW_W, dst=GW_E) if tunnel else None,
        nat_t_header=UDP(sport=4500, dport=4500) if udp else None,
        esn_en=esn is not None, esn=esn or 0,
    )
    ours = EspSA(GW_W, GW_E, SPI, enc, ckey, auth, akey, esn=esn is not None, esn_high=esn or 0)
    return scapy_sa, ours


def esp_of(pkt: Packet) -> bytes:
    data = raw(pkt)
    return data[esp_offset(data) :]


@pytest.mark.parametrize("name", list(ALGOS))
@pytest.mark.parametrize("udp", [True, False], ids=["esp-in-udp", "esp"])
def test_round_trip_tunnel_mode(name: str, udp: bool) -> None:
    scapy_sa, sa = pair(name, udp=udp)
    for seq in (1, 2, 77):
        inner = tagged_echo(seq, size=seq)  # varying sizes exercise every padding length
        pkt = scapy_sa.encrypt(inner, seq_num=seq)
        assert (pkt[IP].proto == 17) == udp
        out = open_esp(sa, esp_of(pkt))
        assert out.next_header == 4
        assert out.data == raw(inner)
        assert decode(out.data[28:]) == ProbeTag(0x0A4A949F, ProbeKind.PING, seq)


def gcm_short_icv(inner: bytes, key: bytes, icv: int, seq: int) -> bytes:
    """RFC 4106 with a truncated tag, built by hand: scapy's AESGCM path always appends 16 bytes."""
    pad = -(len(inner) + 2) % 4
    plain = inner + bytes(range(1, pad + 1)) + bytes([pad, 4])
    head, iv = struct.pack("!II", SPI, seq), struct.pack("!Q", seq * 0x1111)
    enc = Cipher(algorithms.AES(key[:-4]), modes.GCM(key[-4:] + iv)).encryptor()
    enc.authenticate_additional_data(head)
    body = enc.update(plain) + enc.finalize()
    return head + iv + body + enc.tag[:icv]


@pytest.mark.parametrize("icv", [8, 12])
def test_gcm_with_short_icv(icv: int) -> None:
    key = key_of(20, 3)
    sa = EspSA(GW_W, GW_E, SPI, f"AES-GCM with {icv} octet ICV [RFC4106]", key)
    inner = raw(tagged_echo(2))
    esp = gcm_short_icv(inner, key, icv, 2)
    assert decrypt_esp(sa, esp) == inner
    bad = bytearray(esp)
    bad[-1] ^= 0x80
    with pytest.raises(EspIntegrityError):
        decrypt_esp(sa, bytes(bad))
    with pytest.raises(EspIntegrityError):  # the same bytes read as a 16-byte ICV do not verify
        decrypt_esp(dataclasses.replace(sa, enc=GCM16), esp)


def test_transport_mode_returns_the_transport_payload() -> None:
    scapy_sa, sa = pair("cbc128-sha256", udp=False, tunnel=False)
    inner = tagged_echo(5)
    out = open_esp(sa, esp_of(scapy_sa.encrypt(inner)))
    assert out.next_header == 1 and out.data == raw(inner[ICMP])


@pytest.mark.parametrize("name", ["gcm128", "cbc128-sha256", "ctr128-sha1", "null-sha256"])
def test_tampering_anywhere_is_an_integrity_error(name: str) -> None:
    scapy_sa, sa = pair(name)
    esp = esp_of(scapy_sa.encrypt(tagged_echo(1), seq_num=9))
    for pos in (5, 7, 12, len(esp) // 2, len(esp) - 1):  # sequence number, IV, body, ICV
        bad = bytearray(esp)
        bad[pos] ^= 0x01
        with pytest.raises(EspIntegrityError, match="integrity check failed"):
            decrypt_esp(sa, bytes(bad))


@pytest.mark.parametrize("name", ["gcm128", "cbc128-sha256", "ctr128-sha1"])
def test_wrong_key_is_an_integrity_error_and_never_shows_a_key(name: str) -> None:
    scapy_sa, sa = pair(name)
    esp = esp_of(scapy_sa.encrypt(tagged_echo(1)))
    wrong = dataclasses.replace(sa, enc_key=bytes(len(sa.enc_key)), auth_key=bytes(len(sa.auth_key)))
    with pytest.raises(EspIntegrityError) as err:
        decrypt_esp(wrong, esp)
    assert "\n" not in str(err.value)
    for key in (sa.enc_key, sa.auth_key, wrong.enc_key):
        if key:
            assert key.hex() not in str(err.value).lower()
    if sa.auth != "NULL":  # a right encryption key with a wrong integrity key fails too
        with pytest.raises(EspIntegrityError):
            decrypt_esp(dataclasses.replace(sa, auth_key=bytes(len(sa.auth_key))), esp)


def test_without_integrity_a_wrong_key_shows_as_bad_padding() -> None:
    scapy_sa, sa = pair("cbc128-noauth")
    esp = esp_of(scapy_sa.encrypt(tagged_echo(3), iv=bytes(16)))
    with pytest.raises(EspMalformed, match="wrong key"):
        decrypt_esp(dataclasses.replace(sa, enc_key=b"\x55" * 16), esp)


@pytest.mark.parametrize("name", ["gcm128", "cbc128-sha256"])
def test_extended_sequence_numbers(name: str) -> None:
    scapy_sa, sa = pair(name, esn=5)
    inner = tagged_echo(4)
    esp = esp_of(scapy_sa.encrypt(inner, seq_num=4))
    assert decrypt_esp(sa, esp) == raw(inner)
    with pytest.raises(EspIntegrityError):  # the high bits are authenticated though never sent
        decrypt_esp(dataclasses.replace(sa, esn_high=6), esp)
    with pytest.raises(EspIntegrityError):
        decrypt_esp(dataclasses.replace(sa, esn=False, esn_high=0), esp)


def test_malformed_packets() -> None:
    scapy_sa, sa = pair("cbc128-sha256")
    esp = esp_of(scapy_sa.encrypt(tagged_echo(1)))
    with pytest.raises(EspMalformed, match="shorter"):
        decrypt_esp(sa, esp[:20])
    with pytest.raises(EspMalformed, match="not the SA's"):
        decrypt_esp(dataclasses.replace(sa, spi=SPI + 1), esp)
    _, null_sa = pair("null-sha256")
    with pytest.raises(EspMalformed):
        decrypt_esp(dataclasses.replace(null_sa, auth="NULL", auth_key=b""), b"\0" * 8 + b"\x05\x04")  # pad 5 > 0 bytes


def test_unsupported_algorithm_is_named() -> None:
    sa = EspSA(GW_W, GW_E, SPI, "TripleDES-CBC [RFC2451]", bytes(24), "HMAC-SHA-1-96 [RFC2404]", bytes(20))
    with pytest.raises(EspUnsupported, match="TripleDES"):
        decrypt_esp(sa, bytes(64))


def test_esp_offset() -> None:
    scapy_sa, _ = pair("gcm128", udp=True)
    data = raw(scapy_sa.encrypt(tagged_echo(1)))
    assert esp_offset(data) == 28
    scapy_sa, _ = pair("gcm128", udp=False)
    assert esp_offset(raw(scapy_sa.encrypt(tagged_echo(1)))) == 20
    ike = raw(IP(src=GW_W, dst=GW_E) / UDP(sport=4500, dport=4500) / (b"\0\0\0\0" + bytes(28)))
    with pytest.raises(EspMalformed, match="IKE"):
        esp_offset(ike)
    with pytest.raises(EspMalformed, match="not ESP"):
        esp_offset(raw(tagged_echo(1)))
    with pytest.raises(EspMalformed, match="fragment"):
        esp_offset(raw(IP(src=GW_W, dst=GW_E, proto=50, frag=10) / bytes(40)))
