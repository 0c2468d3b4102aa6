"""Probe tags: the bytes on the wire, written out by hand from the format in tracer/model/tag.py's
docstring, decode to the tag; near-misses are rejected."""

from __future__ import annotations

import pytest

from tracer.model.tag import ProbeKind, ProbeTag, decode, decode_ike_spi, icmp_id_for

# ProbeTag(run 0xDEADBEEF, MTU, seq 70000):
#   "TRC1" 54 52 43 31 | kind 03 | flags 00 | run de ad be ef | seq 00 01 11 70 | check
# check: 0x5452 + 0x4331 + 0x0300 + 0xdead + 0xbeef + 0x0001 + 0x1170 = 0x24990 → 0x4990 ^ 0x5a5a = 0x13ca
MTU_TAG = bytes.fromhex("54524331 03 00 deadbeef 00011170 13ca")
# ProbeTag(1, PING, 2): 0x5452 + 0x4331 + 0x0100 + 0 + 1 + 0 + 2 = 0x9886 → ^ 0x5a5a = 0xc2dc
PING_TAG = bytes.fromhex("54524331 01 00 00000001 00000002 c2dc")
# IKE SPI: d7 | kind 03 | run de ad be ef | seq & 0xffff 11 70
MTU_IKE_SPI = bytes.fromhex("d7 03 deadbeef 1170")


def test_encode_is_the_documented_layout() -> None:
    assert ProbeTag(0xDEADBEEF, ProbeKind.MTU, 70000).encode() == MTU_TAG
    assert ProbeTag(1, ProbeKind.PING, 2).encode() == PING_TAG
    assert ProbeTag(0xDEADBEEF, ProbeKind.MTU, 70000).ike_spi() == MTU_IKE_SPI


def test_decode_the_documented_bytes() -> None:
    assert decode(MTU_TAG + b"pad") == ProbeTag(0xDEADBEEF, ProbeKind.MTU, 70000)
    assert decode(PING_TAG) == ProbeTag(1, ProbeKind.PING, 2)
    assert decode_ike_spi(MTU_IKE_SPI) == ProbeTag(0xDEADBEEF, ProbeKind.MTU, 0x1170)
    # An IKE tag: kind 02, run 0x5eed0001, seq 3.
    assert decode_ike_spi(bytes.fromhex("d7 02 5eed0001 0003")) == ProbeTag(0x5EED0001, ProbeKind.IKE, 3)


@pytest.mark.parametrize(
    "raw",
    [
        PING_TAG[:9] + b"\x00" + PING_TAG[10:],  # one run byte changed, check left as it was
        PING_TAG[:15] + b"\xdd",  # check word off by one
        b"TRC2" + PING_TAG[4:],  # another magic
        bytes.fromhex("54524331 00 00 00000001 00000002 cddc"),  # kind 0, its check right: never a probe
        b"TRC1" + bytes(12),  # magic, then zeros (the check of that head would be 0xcdd9)
        PING_TAG[:15],  # 15 bytes: too short
        b"",
    ],
    ids=["run-byte", "check", "magic", "kind", "zeros", "short", "empty"],
)
def test_rejects_near_misses(raw: bytes) -> None:
    assert decode(raw) is None


def test_rejects_near_miss_ike_spis() -> None:
    assert decode_ike_spi(bytes(8)) is None
    assert decode_ike_spi(bytes.fromhex("d6 03 deadbeef 1170")) is None  # another magic byte
    assert decode_ike_spi(bytes.fromhex("d7 00 deadbeef 1170")) is None  # kind 0: never a probe
    assert decode_ike_spi(MTU_IKE_SPI[:7]) is None


def test_kinds_beyond_the_builtin_ones_decode_as_their_byte() -> None:
    # Kind 9, check right (0x5452 + 0x4331 + 0x0900 + 1 + 2 = 0xa086, xor 0x5a5a = 0xfadc): a kind
    # some module may register (tracer.probes); the tag itself does not know the registry.
    assert decode(bytes.fromhex("54524331 09 00 00000001 00000002 fadc")) == ProbeTag(1, 9, 2)
    assert decode_ike_spi(bytes.fromhex("d7 07 deadbeef 1170")) == ProbeTag(0xDEADBEEF, 7, 0x1170)


def test_icmp_id_folds_the_run() -> None:
    # (run ^ run >> 16) & 0xffff: 0xdeadbeef → 0xbeef ^ 0xdead = 0x6042
    assert icmp_id_for(0xDEADBEEF) == 0x6042
    assert icmp_id_for(0x5EED0001) == 0x5EEC
