"""The --flow filter language: parsing (precedence, errors) and the rows it selects."""

from __future__ import annotations

from ipaddress import IPv4Address

import numpy as np
import pytest

from tracer.errors import BadInput
from tracer.model.flowfilter import Not, Op, Prim, mask, parse
from tracer.model.observations import Observations, PacketClass

A, B, C = (IPv4Address(x) for x in ("192.0.2.10", "198.51.100.10", "198.18.1.1"))


def test_and_binds_tighter_than_or():
    assert parse("icmp or udp and port 53") == Op("or", Prim("icmp"), Op("and", Prim("udp"), Prim("port", "53")))
    assert parse("(icmp or udp) and not host west") == Op(
        "and", Op("or", Prim("icmp"), Prim("udp")), Not(Prim("host", "west")))
    assert parse("ICMP && HOST a || !tcp") == Op("or", Op("and", Prim("icmp"), Prim("host", "a")), Not(Prim("tcp")))


@pytest.mark.parametrize(("text", "what"), [
    ("", "empty filter"),
    ("icmp and", "ends too early"),
    ("icmp host", "unexpected 'host'"),
    ("(icmp", "ends too early"),
    ("port http", "port 'http' is not a number from 1 to 65535"),
    ("port 0", "port '0' is not a number"),
    ("sctp", "unknown word 'sctp'"),
])
def test_errors_are_one_line_bad_input(text, what):
    with pytest.raises(BadInput, match=what):
        parse(text)


def rows() -> Observations:
    """An echo A→B, UDP A:40000→B:53, TCP B:22→C:5000, ESP-in-UDP C→B, and one IPv6 row."""
    o = Observations.empty(5)
    for k, v in {"ipver": [4, 4, 4, 4, 6], "proto": [1, 17, 6, 17, 0],
                 "cls": [PacketClass.ECHO_REQUEST, PacketClass.UDP, PacketClass.TCP, PacketClass.ESP, 0],
                 "src": [int(A), int(A), int(B), int(C), 0], "dst": [int(B), int(B), int(C), int(B), 0],
                 "sport": [0, 40000, 22, 4500, 0], "dport": [0, 53, 5000, 4500, 0]}.items():
        o.cols[k][:] = v
    return o


def sel(text: str) -> list[int]:
    nodes = {"west": [A], "east": [B]}
    return np.flatnonzero(mask(parse(text), rows(), lambda w: nodes.get(w) or [IPv4Address(w)])).tolist()


def test_rows_selected():
    assert sel("icmp") == [0]
    assert sel("udp") == [1, 3]  # ESP-in-UDP is UDP too, as in pcap-filter
    assert sel("esp") == [3]
    assert sel("tcp or port 53") == [1, 2]
    assert sel("host west and host east") == [0, 1]
    assert sel("host 198.18.1.1") == [2, 3]
    assert sel("not icmp") == [1, 2, 3]  # never the IPv6 row: the filter speaks IPv4
    assert sel("port 4500 and not esp") == []
