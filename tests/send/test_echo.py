"""The echo request is built by hand (no scapy on the live path): it must be byte for byte
what scapy, an independent ICMP implementation, builds, and its checksum must verify."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP

from tracer.model.tag import TAG_LEN, ProbeKind, ProbeTag, icmp_id_for
from tracer.send.echo import echo_request, inet_checksum


@pytest.mark.parametrize("run,seq,size", [(1, 1, 56), (0xDEADBEEF, 65535, 57), (0x12345679, 70000, TAG_LEN), (7, 3, 1472)])
def test_echo_request_matches_scapy(run, seq, size):
    tag = ProbeTag(run, ProbeKind.PING, seq)
    ours = echo_request(tag, size)
    theirs = bytes(ICMP(type=8, id=icmp_id_for(run), seq=seq & 0xFFFF) / (tag.encode() + bytes(size - TAG_LEN)))
    assert ours == theirs
    assert inet_checksum(ours) == 0  # a correct checksum sums to zero over the whole message


def test_checksum_odd_length_pads_with_zero():
    assert inet_checksum(b"\x01") == inet_checksum(b"\x01\x00") == 0xFEFF
