"""The check logic of ``tracer check`` on hand-built snapshots of the lab's layout (no I/O):
a healthy snapshot passes every check; each misconfiguration is one finding naming the node,
the check and the fix; evidence that could not be read is "not checked", never a failure."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from tracer.analysis.checks import (
    FAIL,
    OK,
    UNCHECKED,
    WARN,
    Finding,
    Flow,
    Snapshot,
    esp_overhead,
    evaluate,
    exit_code,
    flows,
    largest_inner,
    run_checks,
)
from tracer.lab import layout
from tracer.model.checkstate import (
    ChildSa,
    ClockOffset,
    IkeSa,
    IkeState,
    Neighbour,
    NftChain,
    NftRule,
    NftRuleset,
    NodeEvidence,
    Sysctls,
    UdpSocket,
    Unavailable,
)
from tracer.model.netstate import KERNEL_RULES, STRONGSWAN_RULE, LiveInterface, LiveRoute, NodeState, PolicyRule
from tracer.model.topology import Topology

TOPO = layout.topology("t")
SPI_W, SPI_E = 0xC1000001, 0xC2000002


def state(topo: Topology, name: str, mtu: dict[str, int] | None = None, table220: bool = True) -> NodeState:
    node = topo.nodes[name]
    ifaces = tuple(LiveInterface(i, k + 2, True, True, "UP", (mtu or {}).get(i, 1400 if i == "ipsec0" else 1500),
                                 iface.addresses) for k, (i, iface) in enumerate(node.interfaces.items()))
    routes = [LiveRoute("main", a.network, dev=i.name, proto="kernel", scope="link")
              for i in node.interfaces.values() for a in i.addresses]
    for r in node.routes:
        table = "220" if r.dev == "ipsec0" else "main"
        if table == "main" or table220:
            routes.append(LiveRoute(table, r.dst, dev=r.dev, via=r.via))
    return NodeState(name, ifaces, tuple(routes), (*KERNEL_RULES, STRONGSWAN_RULE))


def sysctls(node: str, **over: int) -> Sysctls:
    values = {"net.ipv4.ip_forward": 1}
    for i in [*TOPO.nodes[node].interfaces, "all", "default", "lo"]:
        values[f"net.ipv4.conf.{i}.forwarding"] = 1
        values[f"net.ipv4.conf.{i}.rp_filter"] = 0
    values.update({k.replace("__", "."): v for k, v in over.items()})
    return Sysctls(values)


def ike(local: str, spi_in: int, spi_out: int, lts: str, rts: str) -> IkeState:
    child = ChildSa("west-east", "INSTALLED", spi_in, spi_out, "ESP", True, "AES_GCM_16", (lts,), (rts,))
    return IkeState((IkeSa("west-east", "ESTABLISHED", local, None, (child,)),), "unix:///x")


CHARON = (UdpSocket("0.0.0.0", 500, "charon", 7), UdpSocket("0.0.0.0", 4500, "charon", 7))


def healthy() -> Snapshot:
    states = {n: state(TOPO, n) for n in TOPO.nodes}
    ev = {n: NodeEvidence(sysctl=sysctls(n), nft=NftRuleset()) for n in ("west-gw", "router", "east-gw")}
    ev["west-gw"] = replace(ev["west-gw"], sockets=CHARON, ike=ike("198.18.1.1", SPI_W, SPI_E, "192.0.2.0/24",
                                                                    "198.51.100.0/24"))
    ev["east-gw"] = replace(ev["east-gw"], sockets=CHARON, ike=ike("198.18.2.1", SPI_E, SPI_W, "198.51.100.0/24",
                                                                    "192.0.2.0/24"))
    return Snapshot(states, {}, ev)


def with_ev(snap: Snapshot, node: str, **kw: object) -> Snapshot:
    return replace(snap, evidence={**snap.evidence, node: replace(snap.ev(node), **kw)})


def bad(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.node, f.check, f.status) for f in findings if f.status != OK]


def test_healthy_snapshot_passes_every_check() -> None:
    findings = run_checks(TOPO, healthy())
    assert bad(findings) == [] and exit_code(findings) == 0
    checks = {(f.node, f.check) for f in findings}
    assert {("west-gw", c) for c in ("forwarding", "rp_filter", "ike-daemon", "sa", "route", "mtu", "firewall",
                                     "topology")} <= checks
    assert ("router", "forwarding") in checks and ("router", "firewall") in checks
    sa = next(f for f in findings if (f.node, f.check) == ("west-gw", "sa"))
    assert "SPIs in 0xc1000001 out 0xc2000002" in sa.detail
    clock = next(f for f in findings if f.check == "clock")
    assert clock.detail.startswith("not checked: no remote (SSH) nodes")


def test_ip_forward_off_on_the_router() -> None:
    snap = with_ev(healthy(), "router", sysctl=sysctls("router", net__ipv4__ip_forward=0))
    findings = run_checks(TOPO, snap)
    assert bad(findings) == [("router", "forwarding", FAIL)] and exit_code(findings) == 1
    f = next(f for f in findings if f.status == FAIL)
    assert "net.ipv4.ip_forward is 0" in f.detail
    assert f.fix.startswith("ip netns exec trc-t-router sysctl -w net.ipv4.ip_forward=1")


def test_forwarding_off_on_one_interface() -> None:
    snap = with_ev(healthy(), "west-gw", sysctl=sysctls("west-gw", net__ipv4__conf__lan0__forwarding=0))
    f = [f for f in run_checks(TOPO, snap) if f.status == FAIL]
    assert [(x.node, x.check) for x in f] == [("west-gw", "forwarding")] and "on lan0" in f[0].detail


def test_strict_rp_filter_with_return_route_around_the_tunnel() -> None:
    snap = healthy()
    # east-gw lost its table-220 route: the route back to 192.0.2.0/24 leaves by wan0, not ipsec0.
    snap = replace(snap, states={**snap.states, "east-gw": state(TOPO, "east-gw", table220=False)})
    snap = with_ev(snap, "east-gw", sysctl=sysctls("east-gw", net__ipv4__conf__ipsec0__rp_filter=1))
    findings = run_checks(TOPO, snap, ["east-gw"])
    rp = [f for f in findings if f.check == "rp_filter"]
    assert [f.status for f in rp] == [FAIL]
    assert "strict rp_filter (1) on ipsec0" in rp[0].detail and "leaves by wan0" in rp[0].detail
    assert ("east-gw", "route", FAIL) in bad(findings)


def test_loose_rp_filter_passes() -> None:
    snap = with_ev(healthy(), "east-gw", sysctl=sysctls("east-gw", net__ipv4__conf__all__rp_filter=2))
    assert bad(run_checks(TOPO, snap)) == []


def test_no_daemon_listening() -> None:
    snap = with_ev(healthy(), "east-gw", sockets=(UdpSocket("0.0.0.0", 53, "dnsmasq", 3),))
    f = [f for f in run_checks(TOPO, snap) if f.status != OK]
    assert [(x.node, x.check) for x in f] == [("east-gw", "ike-daemon")]
    assert f[0].detail == "no IKE daemon listens on UDP 500 and UDP 4500"


def test_no_sa_and_spi_mismatch() -> None:
    snap = with_ev(healthy(), "east-gw", ike=IkeState((IkeSa("west-east", "CONNECTING"),)))
    f = [f for f in run_checks(TOPO, snap) if f.status != OK]
    assert [(x.node, x.check) for x in f] == [("east-gw", "sa")]
    assert "no CHILD_SA installed for tunnel west-east" in f[0].detail and "CONNECTING" in f[0].detail
    snap = with_ev(healthy(), "east-gw", ike=ike("198.18.2.1", 0x1234, SPI_W, "198.51.100.0/24", "192.0.2.0/24"))
    f = [f for f in run_checks(TOPO, snap) if f.status != OK]
    assert len(f) == 1 and "disagree on SPIs" in f[0].detail


def test_daemon_not_reachable_from_the_topology_is_unchecked() -> None:
    snap = with_ev(healthy(), "west-gw", ike=Unavailable("how to reach its IKE daemon is not in the topology"))
    findings = run_checks(TOPO, snap)
    assert bad(findings) == [("west-gw", "sa", UNCHECKED)] and exit_code(findings) == 3
    f = next(f for f in findings if f.status == UNCHECKED)
    assert f.detail == "tunnel west-east: not checked: how to reach its IKE daemon is not in the topology"


def test_policy_rule_around_the_tunnel() -> None:
    snap = healthy()
    east = snap.states["east-gw"]
    rule = PolicyRule(100, table="100", src=IPv4Network("198.51.100.0/24"), dst=IPv4Network("192.0.2.0/24"),
                      iif="lan0")
    east = replace(east, rules=(*east.rules, rule), routes=(*east.routes, LiveRoute(
        "100", IPv4Network("0.0.0.0/0"), dev="wan0", via=IPv4Address("198.18.2.254"))))
    findings = run_checks(TOPO, replace(snap, states={**snap.states, "east-gw": east}))
    route = [f for f in findings if f.check == "route" and f.status == FAIL]
    assert [f.node for f in route] == ["east-gw"]
    assert route[0].detail.startswith("198.51.100.0/24 → 192.0.2.0/24 arriving on lan0 goes via 198.18.2.254 dev wan0 "
                                      "(table 100, policy rule 100:")
    assert "ip rule del pref 100" in route[0].fix
    assert {(f.node, f.status) for f in findings if f.check == "topology" and f.status != OK} == {("east-gw", WARN)}


def test_mtu_below_esp_overhead_is_named_at_the_narrow_link() -> None:
    snap = healthy()
    states = {**snap.states, "router": state(TOPO, "router", {"eth1": 1280}),
              "east-gw": state(TOPO, "east-gw", {"wan0": 1280})}
    findings = run_checks(TOPO, replace(snap, states=states))
    mtu = [f for f in findings if f.check == "mtu" and f.status == FAIL]
    assert [f.node for f in mtu] == ["router", "east-gw"]
    assert "router:eth1 has MTU 1280, below the 1464 bytes a full 1400-byte packet" in mtu[0].detail
    assert "ip link set ipsec0 mtu 1218" in mtu[0].fix


def test_esp_overhead_arithmetic() -> None:
    # AES-GCM-16: 20 IP + 8 UDP + 8 ESP + 8 IV + pad (to 4) + 2 + 16 ICV.
    assert esp_overhead(1400, udp=True) == 64 and esp_overhead(1400, udp=False) == 56
    assert esp_overhead(1401, udp=True) == 63 and esp_overhead(1403, udp=True) == 65  # padding 0-3
    assert largest_inner(1280, udp=True) == 1218 and 1218 + esp_overhead(1218, True) == 1280
    assert 1219 + esp_overhead(1219, True) > 1280


def rule(chain: str, handle: int, *expr: object, text: str = "") -> NftRule:
    return NftRule("inet", "f", chain, handle, tuple(expr), text)


UDP_DPORT = {"payload": {"protocol": "udp", "field": "dport"}}
DROP = {"drop": None}


def ruleset(*rules: NftRule, policy: str = "accept") -> NftRuleset:
    chains = tuple(NftChain("inet", "f", h, h, policy) for h in ("input", "output", "forward"))
    return NftRuleset(chains, rules)


def test_esp_in_udp_drop_on_the_router() -> None:
    r = rule("forward", 2, {"match": {"op": "==", "left": UDP_DPORT, "right": 4500}},
             {"match": {"op": "!=", "left": {"payload": {"base": "th", "offset": 64, "len": 32}}, "right": 0}},
             {"counter": {"packets": 0, "bytes": 0}}, DROP, text="udp dport 4500 @th,64,32 != 0x0 drop")
    snap = with_ev(healthy(), "router", nft=ruleset(r))
    f = [f for f in run_checks(TOPO, snap) if f.status != OK]
    assert [(x.node, x.check, x.status) for x in f] == [("router", "firewall", FAIL)]
    assert f[0].detail == ('nft rule "inet f forward udp dport 4500 @th,64,32 != 0x0 drop" drops ESP-in-UDP between '
                           "west-gw and east-gw (forwarded eth0 → eth1, forwarded eth1 → eth0)")
    assert "IKE" not in f[0].detail  # IKE on 4500 carries the zero marker: spared


def test_ike_drop_set_and_accept_before_it() -> None:
    drop = rule("forward", 3, {"match": {"op": "==", "left": UDP_DPORT, "right": {"set": [500, 4500]}}}, DROP)
    f = [f for f in run_checks(TOPO, with_ev(healthy(), "router", nft=ruleset(drop))) if f.status != OK]
    assert "drops IKE (UDP 500), IKE on UDP 4500, ESP-in-UDP between west-gw and east-gw" in f[0].detail
    accept = rule("forward", 1, {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                           "right": ["established", "related"]}}, {"accept": None})
    assert bad(run_checks(TOPO, with_ev(healthy(), "router", nft=ruleset(accept, drop)))) == []


def test_policy_drop_and_unknown_selectors() -> None:
    f = [f for f in run_checks(TOPO, with_ev(healthy(), "router", nft=ruleset(policy="drop"))) if f.status != OK]
    assert f[0].status == FAIL and "policy drop" in f[0].detail
    odd = rule("forward", 4, {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}}, DROP)
    f = [f for f in run_checks(TOPO, with_ev(healthy(), "router", nft=ruleset(odd))) if f.status != OK]
    assert [(x.check, x.status) for x in f] == [("firewall", WARN)] and "may drop" in f[0].detail


def test_gateway_forward_drop_into_the_tunnel() -> None:
    r = rule("forward", 5, {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lan0"}},
             {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ipsec0"}}, DROP)
    f = [f for f in run_checks(TOPO, with_ev(healthy(), "west-gw", nft=ruleset(r))) if f.status != OK]
    assert [(x.node, x.check) for x in f] == [("west-gw", "firewall")]
    assert "tunnel traffic 192.0.2.0/24 → 198.51.100.0/24 (forwarded lan0 → ipsec0)" in f[0].detail


def test_flows_through_the_router_and_a_gateway() -> None:
    router = flows(TOPO, "router")
    assert {(f.label, f.iif, f.oif) for f in router} >= {("ESP-in-UDP", "eth0", "eth1"), ("IKE (UDP 500)", "eth1", "eth0")}
    assert all(f.hook == "forward" for f in router)
    hooks = {f.hook for f in flows(TOPO, "west-gw")}
    assert hooks == {"input", "output", "forward"}
    f = Flow("x", "forward", "udp", IPv4Address("198.18.1.1"), IPv4Address("198.18.2.1"), "eth0", "eth1", 500, 500)
    assert evaluate(f, ruleset()) is None


def test_unread_evidence_is_unchecked_not_failed() -> None:
    snap = with_ev(healthy(), "router", sysctl=Unavailable("ssh root@x: no answer within 10 s"), nft=Unavailable("nft gone"))
    findings = run_checks(TOPO, snap)
    assert bad(findings) == [("router", "forwarding", UNCHECKED), ("router", "firewall", UNCHECKED)]
    assert exit_code(findings) == 3


def test_node_filter_and_clock_offsets() -> None:
    findings = run_checks(TOPO, healthy(), ["router"])
    assert {f.node for f in findings} <= {"router", "all"}
    ssh_topo = replace(TOPO, nodes={**TOPO.nodes, "east-gw": replace(TOPO.nodes["east-gw"], ssh="root@203.0.113.2",
                                                                     capture="ssh")})
    snap = with_ev(healthy(), "east-gw", clock=ClockOffset(2.5, 0.1))
    clock = [f for f in run_checks(ssh_topo, snap) if f.check == "clock"]
    assert [(f.node, f.status) for f in clock] == [("east-gw", WARN)] and "+2.500 s" in clock[0].detail


@pytest.mark.parametrize("statuses,code", [((OK,), 0), ((OK, WARN), 0), ((OK, UNCHECKED), 3), ((UNCHECKED, FAIL), 1)])
def test_exit_codes(statuses: tuple[str, ...], code: int) -> None:
    assert exit_code([Finding("n", "mtu", s, "") for s in statuses]) == code


def test_interface_fixture_is_sane() -> None:
    assert state(TOPO, "west-gw").interface("lan0").addresses == (IPv4Interface("192.0.2.1/24"),)


def with_state(snap: Snapshot, node: str, st: NodeState) -> Snapshot:
    return replace(snap, states={**snap.states, node: st})


def test_interface_down_and_its_peer_without_carrier() -> None:
    snap = healthy()
    east = snap.states["east-gw"]
    down = tuple(replace(i, admin_up=False, carrier=False, operstate="DOWN") if i.name == "wan0" else i
                 for i in east.interfaces)
    router = snap.states["router"]
    dark = tuple(replace(i, carrier=False, operstate="LOWERLAYERDOWN") if i.name == "eth1" else i
                 for i in router.interfaces)
    snap = with_state(with_state(snap, "east-gw", replace(east, interfaces=down)), "router",
                      replace(router, interfaces=dark))
    links = [f for f in run_checks(TOPO, snap) if f.check == "link" and f.status == FAIL]
    assert [(f.node, f.detail.split(" (")[0]) for f in links] == [("router", "eth1 is up but has no carrier"),
                                                                  ("east-gw", "wan0 is down")]
    assert links[1].fix.startswith("ip netns exec trc-t-eastgw ip link set wan0 up")


def test_static_neighbour_with_a_wrong_mac() -> None:
    snap = healthy()
    east = snap.states["east-gw"]
    macs = tuple(replace(i, mac="26:3d:c7:d3:de:94") if i.name == "wan0" else i for i in east.interfaces)
    snap = with_state(snap, "east-gw", replace(east, interfaces=macs))
    wrong = (Neighbour("198.18.2.1", "eth1", "02:00:5e:00:53:99", ("PERMANENT",)),
             Neighbour("198.18.1.1", "eth0", "02:00:5e:00:53:98", ("REACHABLE",)))  # learnt: not ours to judge
    f = [f for f in run_checks(TOPO, with_ev(snap, "router", neigh=wrong)) if f.check == "neighbour"]
    assert [(x.node, x.status) for x in f] == [("router", FAIL)]
    assert "but east-gw:wan0 has 26:3d:c7:d3:de:94" in f[0].detail
    right = (Neighbour("198.18.2.1", "eth1", "26:3D:C7:D3:DE:94", ("PERMANENT",)),)
    assert bad(run_checks(TOPO, with_ev(snap, "router", neigh=right))) == []


def test_no_route_to_the_peer() -> None:
    snap = healthy()
    west = snap.states["west-gw"]
    snap = with_state(snap, "west-gw", replace(west, routes=tuple(r for r in west.routes if r.dst.prefixlen)))
    f = [f for f in run_checks(TOPO, snap) if f.check == "peer-route" and f.status == FAIL]
    assert [x.node for x in f] == ["west-gw"] and "no route to east-gw's address 198.18.2.1" in f[0].detail
    assert f[0].fix == "ip netns exec trc-t-westgw ip route replace 0.0.0.0/0 via 198.18.1.254 dev wan0"


def test_strict_rp_filter_drops_what_the_peer_sends_around_the_tunnel() -> None:
    snap = healthy()
    east = snap.states["east-gw"]
    around = PolicyRule(100, table="100", src=IPv4Network("198.51.100.0/24"), dst=IPv4Network("192.0.2.0/24"),
                        iif="lan0")
    snap = with_state(snap, "east-gw", replace(
        east, routes=(*east.routes, LiveRoute("100", IPv4Network("0.0.0.0/0"), dev="wan0",
                                              via=IPv4Address("198.18.2.254"))),
        rules=(*east.rules, around)))
    assert not [f for f in run_checks(TOPO, snap, ["west-gw"]) if f.status == FAIL]  # rp_filter off: delivered
    snap = with_ev(snap, "west-gw", sysctl=sysctls("west-gw", net__ipv4__conf__wan0__rp_filter=1))
    f = [f for f in run_checks(TOPO, snap, ["west-gw"]) if f.status == FAIL]
    assert [(x.node, x.check) for x in f] == [("west-gw", "rp_filter")]
    assert "east-gw sends 198.51.100.0/24 → 192.0.2.0/24 around tunnel west-east" in f[0].detail
