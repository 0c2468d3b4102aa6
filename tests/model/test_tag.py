"""Probe tags round-trip, and near-misses are rejected."""

from tracer.model.tag import MAGIC, ProbeKind, ProbeTag, decode, decode_ike_spi


def test_round_trip():
    t = ProbeTag(0xDEADBEEF, ProbeKind.MTU, 70000)
    raw = t.encode()
    assert len(raw) == 16 and raw.startswith(MAGIC)
    assert decode(raw + b"pad") == t
    assert decode_ike_spi(t.ike_spi()) == ProbeTag(0xDEADBEEF, ProbeKind.MTU, 70000 & 0xFFFF)


def test_rejects_corruption():
    raw = bytearray(ProbeTag(1, ProbeKind.PING, 2).encode())
    raw[9] ^= 1
    assert decode(bytes(raw)) is None
    assert decode(b"TRC1" + bytes(12)) is None
    assert decode(b"short") is None
    assert decode_ike_spi(bytes(8)) is None
