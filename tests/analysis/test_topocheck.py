"""The stale topology check on hand-built live states of the site-to-site topology
(tests/data/site2site.toml, each node given a namespace name so veth peers resolve).

The healthy states below are what ``ip -j`` says of the built-in lab (same shape), typed by
hand: the gateways' tunnel routes sit in strongSwan's table 220 behind its rule, and the
topology writes them as ordinary routes. Every expected line is written by hand.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from tests.synth import TOPOLOGY
from tracer.analysis.topocheck import (
    ADDRESS,
    DOWN,
    IFACE_EXTRA,
    IFACE_MISSING,
    LINK,
    MTU,
    NO_ROUTE,
    ROUTE,
    RULE,
    Decision,
    Difference,
    KernelRoute,
    compare,
    kernel_decision,
    kernel_route,
    live_interfaces,
)
from tracer.model.netstate import (
    KERNEL_RULES,
    STRONGSWAN_RULE,
    LinkPeer,
    LiveInterface,
    LiveRoute,
    NextHop,
    NodeState,
    PolicyRule,
)
from tracer.model.topology import Link, Topology
from tracer.topofile import load_topology

A = IPv4Address


def _topology() -> Topology:
    t = load_topology(TOPOLOGY)
    nodes = {n: replace(node, netns=f"ns-{n}") for n, node in t.nodes.items()}
    return Topology(t.name, nodes, t.links, t.tunnels, t.source)


TOPO = _topology()
LO = LiveInterface("lo", 1, True, True, "UNKNOWN", 65536, (IPv4Interface("127.0.0.1/8"),))


def veth(name: str, ifindex: int, addr: str | None, peer_ns: str, peer_ifindex: int, **kw: object) -> LiveInterface:
    addrs = (IPv4Interface(addr),) if addr else ()
    fields = {"admin_up": True, "carrier": True, "operstate": "UP", "mtu": 1500} | kw
    return LiveInterface(name, ifindex, addresses=addrs, kind="veth",
                         peer=LinkPeer(ifindex=peer_ifindex, netnsid=0, netns=peer_ns), **fields)  # type: ignore[arg-type]


TUN = LiveInterface("ipsec0", 4, True, True, "UNKNOWN", 1400, (), "tun")


def route(dst: str, dev: str | None = None, via: str | None = None, table: str = "main", **kw: object) -> LiveRoute:
    return LiveRoute(table, IPv4Network(dst), dev=dev, via=A(via) if via else None, **kw)  # type: ignore[arg-type]


def connected(dst: str, dev: str) -> LiveRoute:
    return route(dst, dev, proto="kernel", scope="link")


def local(addr: str, dev: str) -> LiveRoute:
    return route(f"{addr}/32", dev, table="local", type="local", proto="kernel", scope="host")


GW_RULES = (KERNEL_RULES[0], STRONGSWAN_RULE, *KERNEL_RULES[1:])

HEALTHY = {
    "west": NodeState("west", (LO, veth("eth0", 2, "192.0.2.10/24", "ns-west-gw", 2)),
                      (route("0.0.0.0/0", "eth0", "192.0.2.1", proto="boot"), connected("192.0.2.0/24", "eth0"),
                       local("192.0.2.10", "eth0")),
                      KERNEL_RULES, netns="ns-west"),
    "west-gw": NodeState("west-gw",
                         (LO, veth("lan0", 2, "192.0.2.1/24", "ns-west", 2),
                          veth("wan0", 3, "198.18.1.1/24", "ns-router", 2), TUN),
                         (route("198.51.100.0/24", "ipsec0", table="220", proto="static"),
                          route("0.0.0.0/0", "wan0", "198.18.1.254", proto="boot"),
                          connected("192.0.2.0/24", "lan0"), connected("198.18.1.0/24", "wan0"),
                          local("192.0.2.1", "lan0"), local("198.18.1.1", "wan0")),
                         GW_RULES, netns="ns-west-gw"),
    "router": NodeState("router",
                        (LO, veth("eth0", 2, "198.18.1.254/24", "ns-west-gw", 3),
                         veth("eth1", 3, "198.18.2.254/24", "ns-east-gw", 2)),
                        (connected("198.18.1.0/24", "eth0"), connected("198.18.2.0/24", "eth1"),
                         local("198.18.1.254", "eth0"), local("198.18.2.254", "eth1")),
                        KERNEL_RULES, netns="ns-router"),
    "east-gw": NodeState("east-gw",
                         (LO, veth("wan0", 2, "198.18.2.1/24", "ns-router", 3),
                          veth("lan0", 3, "198.51.100.1/24", "ns-east", 2), TUN),
                         (route("192.0.2.0/24", "ipsec0", table="220", proto="static"),
                          route("0.0.0.0/0", "wan0", "198.18.2.254", proto="boot"),
                          connected("198.18.2.0/24", "wan0"), connected("198.51.100.0/24", "lan0"),
                          local("198.18.2.1", "wan0"), local("198.51.100.1", "lan0")),
                         GW_RULES, netns="ns-east-gw"),
    "east": NodeState("east", (LO, veth("eth0", 2, "198.51.100.10/24", "ns-east-gw", 3)),
                      (route("0.0.0.0/0", "eth0", "198.51.100.1", proto="boot"),
                       connected("198.51.100.0/24", "eth0"), local("198.51.100.10", "eth0")),
                      KERNEL_RULES, netns="ns-east"),
}


def changed(node: str, interfaces: tuple[LiveInterface, ...] | None = None, add_routes: tuple[LiveRoute, ...] = (),
            drop_routes: tuple[str, ...] = (), rules: tuple[PolicyRule, ...] | None = None) -> dict[str, NodeState]:
    """The healthy states with one node changed: other interfaces, routes added, routes removed
    (by "table dst"), other rules."""
    s = HEALTHY[node]
    routes = tuple(r for r in s.routes if f"{r.table} {r.dst}" not in drop_routes) + add_routes
    return HEALTHY | {node: replace(s, interfaces=s.interfaces if interfaces is None else interfaces,
                                    routes=routes, rules=s.rules if rules is None else rules)}


def texts(diffs: list[Difference]) -> list[tuple[str, str]]:
    return [(d.kind, d.text) for d in diffs]


def test_the_healthy_lab_shows_no_difference() -> None:
    # Tunnel routes are in table 220 live and ordinary routes in the topology: no difference.
    assert compare(TOPO, HEALTHY) == []


def test_nodes_without_a_state_are_not_compared() -> None:
    assert compare(TOPO, {}) == []
    assert compare(TOPO, {"router": HEALTHY["router"]}) == []


def test_a_new_interface_on_the_router() -> None:
    eth2 = veth("eth2", 4, "198.18.3.254/24", "ns-witness", 2)
    states = changed("router", (*HEALTHY["router"].interfaces, eth2),
                     add_routes=(connected("198.18.3.0/24", "eth2"),))
    assert texts(compare(TOPO, states)) == [
        (IFACE_EXTRA, "router: interface eth2 (198.18.3.254/24) is not in the topology"),
    ]


def test_a_policy_rule_sends_east_lan_traffic_around_the_tunnel() -> None:
    states = changed("east-gw", add_routes=(route("192.0.2.0/24", "wan0", "198.18.2.254", table="100"),),
                     rules=(*GW_RULES, PolicyRule(100, table="100", src=IPv4Network("198.51.100.0/24"))))
    assert texts(compare(TOPO, states)) == [
        (ROUTE, "east-gw: the kernel routes 192.0.2.0/24 via 198.18.2.254 dev wan0 (table 100, rule from "
                "198.51.100.0/24), the topology via ipsec0"),
        (RULE, "east-gw: policy rule 100: from 198.51.100.0/24 lookup 100 is not in the topology"),
    ]


def test_a_rule_on_the_incoming_interface_matches_forwarded_traffic_only() -> None:
    # iif lan0: east's traffic (forwarded, in by lan0) takes table 100; east-gw's own does not.
    states = changed("east-gw", add_routes=(route("192.0.2.0/24", "wan0", "198.18.2.254", table="100"),),
                     rules=(*GW_RULES, PolicyRule(100, table="100", iif="lan0")))
    assert texts(compare(TOPO, states))[0] == (
        ROUTE, "east-gw: the kernel routes 192.0.2.0/24 via 198.18.2.254 dev wan0 (table 100, rule from all iif "
               "lan0), the topology via ipsec0")


def test_no_sa_yet_the_tunnel_route_is_missing_from_table_220() -> None:
    states = changed("west-gw", drop_routes=("220 198.51.100.0/24",))
    assert texts(compare(TOPO, states)) == [
        (ROUTE, "west-gw: the kernel routes 198.51.100.0/24 via 198.18.1.254 dev wan0 (default route, table main), "
                "the topology via ipsec0"),
    ]


def test_no_default_route_live() -> None:
    states = changed("east", drop_routes=("main 0.0.0.0/0",))
    assert texts(compare(TOPO, states)) == [
        (NO_ROUTE, "east: the kernel has no route to 0.0.0.0/0, the topology via 198.51.100.1 dev eth0"),
    ]


def test_the_tunnel_interface_is_missing() -> None:
    s = HEALTHY["west-gw"]
    states = changed("west-gw", s.interfaces[:-1], drop_routes=("220 198.51.100.0/24",))
    assert texts(compare(TOPO, states)) == [
        (IFACE_MISSING, "west-gw: interface ipsec0 of the topology does not exist live"),
        (ROUTE, "west-gw: the kernel routes 198.51.100.0/24 via 198.18.1.254 dev wan0 (default route, table main), "
                "the topology via ipsec0"),
    ]


def test_interface_missing_live_names_its_addresses() -> None:
    states = changed("router", HEALTHY["router"].interfaces[:2])
    assert texts(compare(TOPO, states)) == [
        (IFACE_MISSING, "router: interface eth1 (198.18.2.254/24) of the topology does not exist live"),
    ]


def test_other_address() -> None:
    states = changed("router", (*HEALTHY["router"].interfaces[:2],
                                veth("eth1", 3, "198.18.2.250/24", "ns-east-gw", 2)))
    assert texts(compare(TOPO, states)) == [
        (ADDRESS, "router: eth1 has 198.18.2.250/24 live, the topology 198.18.2.254/24"),
    ]


@pytest.mark.parametrize(
    ("admin_up", "carrier", "operstate", "line"),
    [
        (False, False, "DOWN", "router: eth1 is down (administratively)"),
        (True, False, "LOWERLAYERDOWN", "router: eth1 is up but has no carrier (LOWERLAYERDOWN)"),
    ],
)
def test_link_state_down(admin_up: bool, carrier: bool, operstate: str, line: str) -> None:
    eth1 = veth("eth1", 3, "198.18.2.254/24", "ns-east-gw", 2, admin_up=admin_up, carrier=carrier, operstate=operstate)
    states = changed("router", (*HEALTHY["router"].interfaces[:2], eth1))
    assert texts(compare(TOPO, states)) == [(DOWN, line)]


def test_rewired_link() -> None:
    # router:eth1's veth peer is now east-gw's ifindex 3 (lan0), and east-gw:wan0's is gone elsewhere.
    states = changed("router", (*HEALTHY["router"].interfaces[:2], veth("eth1", 3, "198.18.2.254/24", "ns-east-gw", 3)))
    states = states | {"east-gw": replace(states["east-gw"], interfaces=(
        LO, veth("wan0", 2, "198.18.2.1/24", "ns-lost", 7), *HEALTHY["east-gw"].interfaces[2:]))}
    assert texts(compare(TOPO, states)) == [
        (LINK, "router: eth1 is wired to east-gw:lan0 live, the topology says east-gw:wan0"),
        (LINK, "east-gw: wan0 is wired to namespace ns-lost live (no node of the topology), "
               "the topology says router:eth1"),
    ]


def test_peer_node_without_a_state_is_compared_by_node() -> None:
    states = {"router": HEALTHY["router"]}
    assert compare(TOPO, states) == []
    moved = replace(HEALTHY["router"], interfaces=(LO, veth("eth0", 2, "198.18.1.254/24", "ns-east", 9),
                                                   HEALTHY["router"].interfaces[2]))
    assert texts(compare(TOPO, {"router": moved})) == [
        (LINK, "router: eth0 is wired to east live, the topology says west-gw:wan0"),
    ]


def test_link_mtu() -> None:
    topo = Topology(TOPO.name, TOPO.nodes, (*TOPO.links[:2], Link("router:eth1", "east-gw:wan0", 1500), TOPO.links[3]),
                    TOPO.tunnels, TOPO.source)
    states = changed("router", (*HEALTHY["router"].interfaces[:2],
                                veth("eth1", 3, "198.18.2.254/24", "ns-east-gw", 2, mtu=1280)))
    assert texts(compare(topo, states)) == [
        (MTU, "router: eth1 has MTU 1280 live, the topology's link router:eth1 ↔ east-gw:wan0 says 1500"),
    ]


def test_a_blackhole_route_and_a_prohibit_rule() -> None:
    states = changed("west-gw", drop_routes=("220 198.51.100.0/24",),
                     add_routes=(route("198.51.100.0/24", table="220", type="blackhole"),))
    assert texts(compare(TOPO, states)) == [
        (ROUTE, "west-gw: the kernel drops traffic to 198.51.100.0/24 (blackhole route, table 220), "
                "the topology via ipsec0"),
    ]
    states = changed("west-gw", rules=(*GW_RULES, PolicyRule(50, action="prohibit", dst=IPv4Network("198.51.100.0/24"))))
    assert texts(compare(TOPO, states)) == [
        (ROUTE, "west-gw: the kernel drops traffic to 198.51.100.0/24 (rule 50: from all to 198.51.100.0/24 "
                "prohibit), the topology via ipsec0"),
        (RULE, "west-gw: policy rule 50: from all to 198.51.100.0/24 prohibit is not in the topology"),
    ]


def test_a_live_route_the_topology_lacks() -> None:
    states = changed("router", add_routes=(route("192.0.2.0/24", "eth1", "198.18.2.1", proto="static"),
                                           route("10.0.0.0/8", "eth0", "198.18.1.1", table="77")))
    assert texts(compare(TOPO, states)) == [
        (ROUTE, "router: the live route 192.0.2.0/24 via 198.18.2.1 dev eth1 (table main) is not in the topology"),
    ]


def test_strongswan_routes_to_the_remote_subnets_are_expected_in_table_220() -> None:
    # charon's routes to the tunnel's remote subnet are expected in table 220; here one goes
    # via the WAN and, being longer, wins: the kernel line names the route it takes.
    states = changed("west-gw", add_routes=(route("198.51.100.0/25", "wan0", "198.18.1.254", table="220"),))
    assert texts(compare(TOPO, states)) == [
        (ROUTE, "west-gw: the kernel routes 198.51.100.0/24 via 198.18.1.254 dev wan0 (route 198.51.100.0/25, "
                "table 220), the topology via ipsec0"),
    ]
    states = changed("west-gw", add_routes=(route("203.0.113.0/24", "wan0", "198.18.1.254", table="220"),))
    assert texts(compare(TOPO, states)) == [
        (ROUTE, "west-gw: the live route 203.0.113.0/24 via 198.18.1.254 dev wan0 (table 220) is not in the topology"),
    ]
    states = changed("west-gw", drop_routes=("220 198.51.100.0/24",),
                     add_routes=(route("198.51.100.0/24", "ipsec0", table="220", proto="static", metric=5),))
    assert compare(TOPO, states) == []


def test_the_main_rule_missing() -> None:
    states = changed("west", rules=(KERNEL_RULES[0], KERNEL_RULES[2]))
    assert texts(compare(TOPO, states)) == [
        (NO_ROUTE, "west: the kernel has no route to 0.0.0.0/0, the topology via 192.0.2.1 dev eth0"),
        (RULE, "west: the standard policy rule 32766: from all lookup main is missing live"),
    ]


# -- the kernel's route lookup ----------------------------------------------------------------

GW = HEALTHY["west-gw"]


def test_kernel_route_takes_table_220_before_main() -> None:
    assert kernel_route(GW, A("192.0.2.10"), A("198.51.100.10"), "lan0") == KernelRoute("ipsec0", None, "220")
    assert kernel_route(GW, None, A("198.18.2.1")) == KernelRoute("wan0", A("198.18.1.254"), "main")


def test_kernel_route_delivers_own_addresses_locally() -> None:
    assert kernel_route(GW, A("192.0.2.10"), A("192.0.2.1"), "lan0") == KernelRoute("lan0", None, "local")
    assert kernel_decision(GW, None, A("198.18.1.1")).outcome == "local"


def test_kernel_route_longest_prefix_then_lowest_metric() -> None:
    s = replace(GW, routes=(route("198.18.20.0/24", "wan0", "198.18.1.5", metric=50),
                            route("198.18.20.0/24", "wan0", "198.18.1.6", metric=10),
                            route("198.18.20.128/25", "lan0", "192.0.2.99", metric=100),
                            route("0.0.0.0/0", "wan0", "198.18.1.254")))
    assert kernel_route(s, None, A("198.18.20.1")) == KernelRoute("wan0", A("198.18.1.6"), "main")
    assert kernel_route(s, None, A("198.18.20.200")) == KernelRoute("lan0", A("192.0.2.99"), "main")


@pytest.mark.parametrize(
    ("rule", "src", "iif", "table"),
    [
        (PolicyRule(10, table="100", src=IPv4Network("192.0.2.0/24")), A("192.0.2.10"), "lan0", "100"),
        (PolicyRule(10, table="100", src=IPv4Network("192.0.2.0/24")), None, None, "220"),  # no source: from all only
        (PolicyRule(10, table="100", src=IPv4Network("192.0.2.0/24"), invert=True), None, None, "100"),
        (PolicyRule(10, table="100", iif="lo"), None, None, "100"),  # the node's own traffic comes in by lo
        (PolicyRule(10, table="100", iif="lo"), A("192.0.2.10"), "lan0", "220"),
        (PolicyRule(10, table="100", oif="wan0"), None, None, "220"),  # probes are not bound to a device
        (PolicyRule(10, table="100", fwmark=0x5), None, None, "220"),  # probes carry no mark
        (PolicyRule(10, table="100", fwmark=0x10, fwmask=0x0F), None, None, "100"),  # 0x10 & 0x0f == 0 == mark
        (PolicyRule(10, table="100", other=("ipproto=icmp",)), None, None, "220"),  # not evaluated: not matching
        (PolicyRule(10, table="100", dst=IPv4Network("198.51.100.0/25")), None, None, "100"),
        (PolicyRule(10, table="100", dst=IPv4Network("198.51.100.128/25")), None, None, "220"),
    ],
)
def test_rule_selectors(rule: PolicyRule, src: IPv4Address | None, iif: str | None, table: str) -> None:
    s = replace(GW, routes=(*GW.routes, route("198.51.100.0/24", "wan0", "198.18.1.9", table="100")),
                rules=(*GW.rules, rule))
    got = kernel_route(s, src, A("198.51.100.10"), iif)
    assert got is not None and got.table == table


def test_goto_nop_throw_and_suppress_prefixlength() -> None:
    t100 = (route("198.51.100.0/24", "wan0", "198.18.1.9", table="100"), route("198.51.100.0/25", table="101", type="throw"),
            route("0.0.0.0/0", "wan0", "198.18.1.7", table="102"))
    base = replace(GW, routes=GW.routes + t100)
    jump = (PolicyRule(5, action="goto", goto=300), PolicyRule(100, table="101"), PolicyRule(300, table="100"))
    assert kernel_route(replace(base, rules=(*GW.rules, *jump)), None, A("198.51.100.10")) == KernelRoute(
        "wan0", A("198.18.1.9"), "100")
    # A goto backwards is never resolved by the kernel: skipped, and no loop.
    back = (PolicyRule(200, table="100", src=IPv4Network("203.0.113.0/24")), PolicyRule(300, action="goto", goto=200),
            KERNEL_RULES[1])
    assert kernel_route(replace(base, rules=back), None, A("198.51.100.10")).table == "main"
    # throw in table 101: on to the next rule (220).
    thrown = replace(base, rules=(*GW.rules, PolicyRule(100, table="101")))
    assert kernel_route(thrown, None, A("198.51.100.10")).table == "220"
    # suppress_prefixlength 0: table 102's default route is not good enough (wg-quick's trick).
    suppressed = replace(base, rules=(*GW.rules, PolicyRule(100, table="102", suppress_prefixlen=0)))
    assert kernel_route(suppressed, None, A("203.0.113.1")).table == "main"
    nop = replace(base, rules=(*GW.rules, PolicyRule(100, action="nop")))
    assert kernel_route(nop, None, A("198.51.100.10")).table == "220"


def test_drops_and_no_route() -> None:
    unreachable = replace(GW, rules=(*GW.rules, PolicyRule(100, action="unreachable", src=IPv4Network("192.0.2.0/24"))))
    d = kernel_decision(unreachable, A("192.0.2.10"), A("198.51.100.10"), "lan0")
    assert d == Decision("drop", rule=unreachable.rules[-1])
    assert kernel_route(unreachable, A("192.0.2.10"), A("198.51.100.10"), "lan0") is None
    empty = replace(GW, routes=GW.routes[2:])  # no tunnel route, no default
    assert kernel_decision(empty, None, A("203.0.113.1")) == Decision("none")


def test_multipath_agrees_when_any_hop_does() -> None:
    mp = route("0.0.0.0/0", "wan0", "198.18.1.253",
               nexthops=(NextHop("wan0", A("198.18.1.253")), NextHop("wan0", A("198.18.1.254"))))
    states = changed("west-gw", drop_routes=("main 0.0.0.0/0",), add_routes=(mp,))
    assert compare(TOPO, states) == []


def test_no_rules_in_a_state_means_the_kernel_defaults_and_table_220() -> None:
    s = replace(HEALTHY["west"], rules=())
    assert kernel_route(s, None, A("203.0.113.1")) == KernelRoute("eth0", A("192.0.2.1"), "main")
    assert compare(TOPO, HEALTHY | {"west": s}) == []
    gw = replace(HEALTHY["west-gw"], rules=())
    assert kernel_route(gw, None, A("198.51.100.10")) == KernelRoute("ipsec0", None, "220")
    assert compare(TOPO, HEALTHY | {"west-gw": gw}) == []


# -- witness capture points -------------------------------------------------------------------


def test_live_interfaces_are_every_up_interface_but_lo() -> None:
    assert live_interfaces(TOPO, HEALTHY, list(TOPO.nodes)) == [
        "west:eth0", "west-gw:lan0", "west-gw:wan0", "west-gw:ipsec0", "router:eth0", "router:eth1",
        "east-gw:wan0", "east-gw:lan0", "east-gw:ipsec0", "east:eth0",
    ]


def test_live_interfaces_include_those_the_topology_lacks_and_skip_down_ones() -> None:
    r = HEALTHY["router"]
    states = HEALTHY | {"router": replace(r, interfaces=(
        *r.interfaces,
        veth("eth2", 4, "198.18.3.254/24", "ns-witness", 2),
        veth("eth3", 5, None, "ns-witness", 3, admin_up=False, carrier=False, operstate="DOWN"),
        veth("eth4", 6, None, "ns-witness", 4, carrier=False, operstate="LOWERLAYERDOWN"),
        LiveInterface("tunl0", 7, False, False, "DOWN", 1480, (), "ipip"),
        LiveInterface("bad:name", 8, True, True, "UP", 1500, (), "veth"),
    ))}
    assert live_interfaces(TOPO, states, ["router", "west"]) == ["router:eth0", "router:eth1", "router:eth2", "west:eth0"]
    assert live_interfaces(TOPO, states, ["router", "nowhere"]) == ["router:eth0", "router:eth1", "router:eth2"]
    # eth3 is down with no address (not reported); eth4 is up without carrier; the bad name is reported as it is.
    assert texts(compare(TOPO, states)) == [
        (IFACE_EXTRA, "router: interface eth2 (198.18.3.254/24) is not in the topology"),
        (IFACE_EXTRA, "router: interface eth4 (down) is not in the topology"),
        (IFACE_EXTRA, "router: interface bad:name is not in the topology"),
    ]
