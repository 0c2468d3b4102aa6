"""The pure half of ``tracer topology discover``: live states and SAs in, a topology out.

(The live half, on the real lab, is tests/live/test_discover_lab.py.)"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from tracer.analysis.infer_topology import Seen, infer, node_name
from tracer.model.checkstate import ChildSa, IkeSa, IkeState
from tracer.model.netstate import LinkPeer, LiveInterface, LiveRoute, NextHop, NodeState, PolicyRule
from tracer.model.path import expected_paths
from tracer.model.topology import Topology
from tracer.topofile import topology_to_dict

KERNEL_RULES = (PolicyRule(0, table="local"), PolicyRule(32766, table="main"), PolicyRule(32767, table="default"))


def iface(name: str, ifindex: int, *addrs: str, kind: str | None = "veth", peer: LinkPeer | None = None,
          up: bool = True) -> LiveInterface:
    return LiveInterface(name, ifindex, up, up, "UP" if up else "DOWN", 1500, tuple(IPv4Interface(a) for a in addrs),
                         kind, peer)


def route(dst: str, dev: str, via: str | None = None, table: str = "main", **kw) -> LiveRoute:
    return LiveRoute(table, IPv4Network(dst), dev=dev, via=IPv4Address(via) if via else None, **kw)


def connected(dev: str, net: str) -> LiveRoute:
    return route(net, dev, proto="kernel", scope="link")


def state(name: str, ifaces: list[LiveInterface], routes: list[LiveRoute], rules=KERNEL_RULES) -> NodeState:
    lo = LiveInterface("lo", 1, True, True, "UNKNOWN", 65536, (IPv4Interface("127.0.0.1/8"),))
    fallback = LiveInterface("tunl0", 9, False, False, "DOWN", 1480, (), "ipip")  # what a module adds: not an interface
    return NodeState(name, (lo, *ifaces, fallback), tuple(routes), tuple(rules), netns=f"ns-{name}")


def site() -> list[Seen]:
    """a ── gw1 ══ tunnel ══ gw2 ── b; gw1/gw2 wired directly on 203.0.113.0/24 with peers out of sight."""
    a = state("a", [iface("eth0", 2, "192.0.2.10/24", peer=LinkPeer(5, 0, "ns-gw1"))],
              [connected("eth0", "192.0.2.0/24"), route("0.0.0.0/0", "eth0", "192.0.2.1")])
    gw1 = state("gw1", [iface("lan0", 5, "192.0.2.1/24", peer=LinkPeer(2, 0, "ns-a")),
                        iface("wan0", 6, "203.0.113.1/24", kind=None),  # a real NIC: its peer is not seen
                        iface("ipsec0", 7, kind="tun")],
                [connected("lan0", "192.0.2.0/24"), connected("wan0", "203.0.113.0/24"),
                 route("198.51.100.0/24", "ipsec0", table="220"),
                 route("198.51.100.0/24", "wan0", "203.0.113.2"),  # shadowed by table 220, as the rules order it
                 route("0.0.0.0/0", "wan0", "203.0.113.2"),
                 LiveRoute("main", IPv4Network("10.0.0.0/8"), type="blackhole")],
                rules=(KERNEL_RULES[0], PolicyRule(220, table="220"), *KERNEL_RULES[1:]))
    gw2 = state("gw2", [iface("wan0", 3, "203.0.113.2/24", kind=None), iface("lan0", 4, "198.51.100.1/24",
                                                                             peer=LinkPeer(2, 0, "ns-b")),
                        iface("ipsec0", 8, kind="tun")],
                [connected("wan0", "203.0.113.0/24"), connected("lan0", "198.51.100.0/24"),
                 route("192.0.2.0/24", "ipsec0", table="220"), route("0.0.0.0/0", "wan0", "203.0.113.1"),
                 LiveRoute("main", IPv4Network("172.16.0.0/12"), dev="wan0", via=IPv4Address("203.0.113.1"),
                           nexthops=(NextHop("wan0", IPv4Address("203.0.113.1")), NextHop("lan0", None)))],
                rules=(KERNEL_RULES[0], PolicyRule(220, table="220"), *KERNEL_RULES[1:]))
    b = state("b", [iface("eth0", 2, "198.51.100.10/24", peer=LinkPeer(4, 0, "ns-gw2"))],
              [connected("eth0", "198.51.100.0/24"), route("0.0.0.0/0", "eth0", "198.51.100.1")])
    child = ChildSa("c", "INSTALLED", 0x1234, 0x5678, encap=False, local_ts=("198.51.100.0/24",),
                    remote_ts=("192.0.2.0/24", "2001:db8::/32"))
    responder = IkeState((IkeSa("gw1-gw2", "ESTABLISHED", "203.0.113.2", "203.0.113.1", (child,)),))
    return [Seen("a", a, False, netns="ns-a"), Seen("gw1", gw1, True, None, netns="ns-gw1"),
            Seen("gw2", gw2, True, responder, "unix:///run/gw2.vici", netns="ns-gw2"), Seen("b", b, False, netns="ns-b")]


def test_inferred_site_is_a_topology_that_routes_through_the_tunnel():
    topo, notes = infer("site", site())
    # What it wrote parses back strictly: it is a file a person can keep.
    assert topology_to_dict(Topology.from_dict(topology_to_dict(topo))) == topology_to_dict(topo)
    assert {n: x.role for n, x in topo.nodes.items()} == {"a": "host", "gw1": "gateway", "gw2": "gateway", "b": "host"}
    assert sorted(topo.nodes["gw1"].interfaces) == ["ipsec0", "lan0", "wan0"]  # no lo, no idle tunl0
    assert topo.nodes["gw1"].interfaces["ipsec0"].role == "tunnel" and topo.nodes["gw1"].interfaces["wan0"].role == "wan"
    # veth peers by ifindex in the peer's namespace; the NICs' wire from their shared subnet.
    assert {frozenset((link.a, link.b)) for link in topo.links} == {
        frozenset(("a:eth0", "gw1:lan0")), frozenset(("gw2:lan0", "b:eth0")), frozenset(("gw1:wan0", "gw2:wan0"))}
    # Table 220 comes before main in the rules, so its route wins; specific prefixes first, the default last.
    assert [(str(r.dst), r.dev) for r in topo.nodes["gw1"].routes] == [("198.51.100.0/24", "ipsec0"), ("0.0.0.0/0", "wan0")]
    # The tunnel: the responder reported it; the initiator (gw1) is the left end; IPv6 selectors dropped.
    (t,) = topo.tunnels
    assert (t.name, t.encapsulation, t.left.node, t.left.interface, t.right.node) == ("gw1-gw2", "esp", "gw1", "ipsec0", "gw2")
    assert t.left.subnets == (IPv4Network("192.0.2.0/24"),) and t.right.spi_in is None  # SPIs change at rekey: unsaid
    assert topo.nodes["gw2"].ike_vici == "unix:///run/gw2.vici"
    assert any("blackhole 10.0.0.0/8" in n for n in notes)
    assert any(n.startswith("gw2: multipath route 172.16.0.0/12") for n in notes)
    paths = expected_paths(topo, IPv4Address("192.0.2.10"), IPv4Address("198.51.100.10"))
    assert all(p.delivered for p in paths.values())
    assert [e.value for e in paths["request"].edges] == ["wire", "forward", "encap", "wire", "decap", "forward", "wire"]


def test_a_subnet_shared_by_three_is_a_note_not_a_guess():
    seen = site()
    c = state("c", [iface("eth0", 2, "203.0.113.3/24", kind=None)], [connected("eth0", "203.0.113.0/24")])
    topo, notes = infer("site", [*seen, Seen("c", c, False, netns="ns-c")])
    assert not any("gw1:wan0" in (link.a, link.b) for link in topo.links)
    assert "203.0.113.0/24 is shared by gw1:wan0, gw2:wan0, c:eth0: a topology link joins two interfaces; " \
           "add the links by hand" in notes


def test_a_peer_outside_what_was_read_leaves_the_tunnel_out():
    seen = [s for s in site() if s.name != "gw1"]
    topo, notes = infer("part", seen)
    assert not topo.tunnels
    assert "gw2: IKE_SA gw1-gw2 to 203.0.113.1: the peer is not a node found here, tunnel left out" in notes


def test_node_names_from_namespaces():
    assert node_name("trc-lab-westgw", "trc-lab-") == "westgw"
    assert node_name("trc-lab-", "trc-lab-") == "trc-lab-"  # nothing left: the namespace's own name
