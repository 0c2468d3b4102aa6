"""NodeState: JSON round trip, the refusal of anything else, and the ``ip``-style phrases."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from tracer.model.netstate import (
    FORMAT,
    KERNEL_RULES,
    LinkPeer,
    LiveInterface,
    LiveRoute,
    NextHop,
    NodeState,
    PolicyRule,
)

STATE = NodeState(
    node="east-gw",
    interfaces=(
        LiveInterface("lo", 1, True, True, "UNKNOWN", 65536, (IPv4Interface("127.0.0.1/8"),)),
        LiveInterface("wan0", 2, True, True, "UP", 1500, (IPv4Interface("198.18.2.1/24"),), "veth",
                      LinkPeer(ifindex=3, netnsid=0, netns="trc-ls-router")),
        LiveInterface("lan0", 3, False, False, "DOWN", 1500, (IPv4Interface("198.51.100.1/24"),), "veth",
                      LinkPeer(name="peer0")),
        LiveInterface("ipsec0", 4, True, True, "UNKNOWN", 1400, (), "tun"),
    ),
    routes=(
        LiveRoute("220", IPv4Network("192.0.2.0/24"), dev="ipsec0", proto="static", prefsrc=IPv4Address("198.51.100.1")),
        LiveRoute("main", IPv4Network("0.0.0.0/0"), dev="wan0", via=IPv4Address("198.18.2.254"), metric=10),
        LiveRoute("100", IPv4Network("203.0.113.0/24"), type="blackhole"),
        LiveRoute("main", IPv4Network("198.18.20.0/24"), dev="wan0", via=IPv4Address("198.18.2.7"),
                  nexthops=(NextHop("wan0", IPv4Address("198.18.2.7")), NextHop("wan0", IPv4Address("198.18.2.8")))),
    ),
    rules=(
        *KERNEL_RULES,
        PolicyRule(100, table="100", src=IPv4Network("198.51.100.0/24"), iif="lan0"),
        PolicyRule(101, action="goto", goto=32766, fwmark=5, fwmask=0xFF, invert=True),
        PolicyRule(102, action="prohibit", dst=IPv4Network("203.0.113.0/24"), other=("ipproto=udp",)),
    ),
    netns="trc-ls-eastgw",
    taken="2026-01-01T00:00:00+00:00",
)


def test_round_trip_through_json() -> None:
    doc = json.loads(json.dumps(STATE.to_dict()))
    assert doc["format"] == FORMAT == "tracer-netstate/1"
    assert NodeState.from_dict(doc) == STATE


def test_lookups() -> None:
    assert STATE.interface("wan0").peer.netns == "trc-ls-router"
    assert STATE.by_ifindex(4).name == "ipsec0"
    assert STATE.interface("eth9") is None
    assert [r.dst for r in STATE.table("main")] == [IPv4Network("0.0.0.0/0"), IPv4Network("198.18.20.0/24")]
    assert not STATE.interface("lan0").up and STATE.interface("wan0").up and STATE.interface("lo").loopback


def test_phrases_read_like_ip() -> None:
    assert [r.describe() for r in STATE.rules[3:]] == [
        "100: from 198.51.100.0/24 iif lan0 lookup 100",
        "101: not from all fwmark 0x5/0xff goto 32766",
        "102: from all to 203.0.113.0/24 ipproto udp prohibit",
    ]
    assert KERNEL_RULES[1].describe() == "32766: from all lookup main"
    assert [r.describe() for r in STATE.routes] == [
        "192.0.2.0/24 dev ipsec0",
        "default via 198.18.2.254 dev wan0",
        "blackhole 203.0.113.0/24",
        "198.18.20.0/24 via 198.18.2.7 dev wan0",
    ]
    assert STATE.routes[3].hops()[1] == NextHop("wan0", IPv4Address("198.18.2.8"))
    assert STATE.interface("ipsec0").describe_addresses() == "no address"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], 'not a live network state (expected "format": "tracer-netstate/1")'),
        ({"format": "tracer-run/1"}, 'not a live network state (expected "format": "tracer-netstate/1")'),
        ({"format": FORMAT}, "malformed live network state (KeyError: 'node')"),
        ({"format": FORMAT, "node": "a", "interfaces": [{"name": "eth0", "ifindex": "2", "admin_up": True,
                                                          "carrier": True}]},
         "malformed live network state (TypeError: expected an integer, got str)"),
        ({"format": FORMAT, "node": "a", "routes": [{"table": "main", "dst": "192.0.2.300/24"}]},
         "malformed live network state (AddressValueError: Octet 300 (> 255) not permitted in '192.0.2.300')"),
        ({"format": FORMAT, "node": "a", "rules": [{"priority": 5, "invert": "yes"}]},
         "malformed live network state (TypeError: expected true or false, got str)"),
    ],
)
def test_anything_else_is_refused_with_a_reason(doc: object, message: str) -> None:
    with pytest.raises(ValueError) as e:
        NodeState.from_dict(doc)
    assert str(e.value) == message
