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


def two_homed(routes: list[LiveRoute], rules: tuple[PolicyRule, ...]) -> list[Seen]:
    """r, wired to x by eth0 (198.18.1.0/24) and to y by eth1 (198.18.2.0/24)."""
    r = state("r", [iface("eth0", 2, "198.18.1.1/24", kind=None), iface("eth1", 3, "198.18.2.1/24", kind=None)],
              [connected("eth0", "198.18.1.0/24"), connected("eth1", "198.18.2.0/24"), *routes], rules)
    x = state("x", [iface("eth0", 2, "198.18.1.2/24", kind=None)], [connected("eth0", "198.18.1.0/24")])
    y = state("y", [iface("eth0", 2, "198.18.2.2/24", kind=None)], [connected("eth0", "198.18.2.0/24")])
    return [Seen("r", r, True, netns="ns-r"), Seen("x", x, False, netns="ns-x"), Seen("y", y, False, netns="ns-y")]


def written(topo: Topology, node: str = "r") -> list[tuple[str, str, str]]:
    return [(str(r.dst), r.dev, str(r.via)) for r in topo.nodes[node].routes]


def test_a_table_after_main_fills_only_what_main_lacks():
    """The kernel reads the tables in rule priority order and stops at the first one with a matching route:
    a table after main (pref 40000) is never reached for what main routes, and one before it (220) hides
    main's more specific routes inside its prefixes."""
    rules = (KERNEL_RULES[0], PolicyRule(220, table="220"), KERNEL_RULES[1], PolicyRule(40000, table="100"),
             PolicyRule(100, table="101", src=IPv4Network("198.18.1.0/24")), KERNEL_RULES[2])
    with_default = [route("0.0.0.0/0", "eth0", "198.18.1.2"), route("0.0.0.0/0", "eth1", "198.18.2.2", table="100"),
                    route("203.0.113.0/24", "eth1", "198.18.2.2", table="100")]
    topo, notes = infer("t", two_homed(with_default, rules))
    assert written(topo) == [("0.0.0.0/0", "eth0", "198.18.1.2")]  # main's default answers everything first
    assert "r: policy rule '100: from 198.18.1.0/24 lookup 101' left out: a topology routes by destination only; " \
           "write the paths it makes by hand if they matter" in notes
    without = [route("198.51.100.0/24", "eth0", "198.18.1.2"), route("198.51.100.0/25", "eth0", "198.18.1.2"),
               route("192.0.2.0/24", "eth1", "198.18.2.2", table="220"),
               route("192.0.2.128/25", "eth0", "198.18.1.2"),  # inside 220's /24: never reached
               route("0.0.0.0/0", "eth1", "198.18.2.2", table="100"),
               route("198.51.100.0/26", "eth1", "198.18.2.2", table="100"),  # inside main's /24: never reached
               route("198.18.1.128/25", "eth1", "198.18.2.2", table="100")]  # inside a connected subnet
    topo, notes = infer("t", two_homed(without, rules))
    assert written(topo) == [("198.51.100.0/25", "eth0", "198.18.1.2"), ("192.0.2.0/24", "eth1", "198.18.2.2"),
                             ("198.51.100.0/24", "eth0", "198.18.1.2"), ("0.0.0.0/0", "eth1", "198.18.2.2")]
    # The file's longest-prefix match now takes the kernel's route everywhere.
    r = topo.nodes["r"]
    assert r.lookup(IPv4Address("192.0.2.200")).dev == "eth1" and r.lookup(IPv4Address("198.51.100.20")).dev == "eth0"
    assert r.lookup(IPv4Address("198.18.1.200")).dev == "eth0" and r.lookup(IPv4Address("8.8.8.8")).dev == "eth1"


def test_a_table_before_main_holding_a_connected_subnet_is_a_note():
    rules = (KERNEL_RULES[0], PolicyRule(220, table="220"), *KERNEL_RULES[1:])
    topo, notes = infer("t", two_homed([route("198.18.0.0/16", "eth1", "198.18.2.2", table="220")], rules))
    assert written(topo) == [("198.18.0.0/16", "eth1", "198.18.2.2")]
    assert "r: 198.18.0.0/16 via 198.18.2.2 dev eth1 (table 220) is consulted before the connected 198.18.1.0/24, " \
           "198.18.2.0/24: the file cannot say so, the connected route wins there" in notes


def test_an_onlink_gateway_is_written_so_and_loads():
    """A cloud host: a /32 address, its default route via a gateway on no subnet of it, 'onlink'."""
    h = state("h", [iface("eth0", 2, "198.18.9.5/32", kind=None)],
              [connected("eth0", "198.18.9.5/32"),
               LiveRoute("main", IPv4Network("0.0.0.0/0"), dev="eth0", via=IPv4Address("198.18.9.1"), onlink=True)])
    g = state("g", [iface("eth0", 2, "198.18.9.1/24", kind=None)], [connected("eth0", "198.18.9.0/24")])
    # Their wire cannot be found (no shared subnet, no veth peer): links are the file's business, not this test's.
    topo, _ = infer("cloud", [Seen("h", h, False, netns="ns-h"), Seen("g", g, False, netns="ns-g")])
    (default,) = topo.nodes["h"].routes
    assert default.onlink and default.via == IPv4Address("198.18.9.1")
    d = topology_to_dict(topo)
    assert d["nodes"]["h"]["routes"] == [{"dst": "0.0.0.0/0", "via": "198.18.9.1", "dev": "eth0", "onlink": True}]
    d["links"] = [{"ends": ["h:eth0", "g:eth0"]}]
    assert Topology.from_dict(d).nodes["h"].routes == (default,)


def test_every_installed_child_sa_gives_the_tunnel_subnets():
    """Two CHILD_SAs with other subnet pairs (and one in IPv6 only) under one IKE_SA: the tunnel's ends hold
    the union of the IPv4 selectors, and what cannot be said is a note."""
    seen = site()
    gw2 = seen[2]
    children = (
        ChildSa("c", "INSTALLED", 1, 2, local_ts=("198.51.100.0/24",), remote_ts=("192.0.2.0/24",)),
        ChildSa("d", "INSTALLED", 3, 4, local_ts=("203.0.113.64/26[udp/53]",), remote_ts=("198.18.7.1-198.18.7.6",)),
        ChildSa("v6", "INSTALLED", 5, 6, local_ts=("2001:db8:2::/48",), remote_ts=("2001:db8:1::/48",)),
        ChildSa("old", "REKEYED", 7, 8, local_ts=("198.18.99.0/24",), remote_ts=("198.18.98.0/24",)))
    ike = IkeState((IkeSa("gw1-gw2", "ESTABLISHED", "203.0.113.2", "203.0.113.1", children),))
    seen[2] = Seen(gw2.name, gw2.state, True, ike, gw2.ike_vici, gw2.netns)
    topo, notes = infer("site", seen)
    (t,) = topo.tunnels
    assert t.right.subnets == (IPv4Network("198.51.100.0/24"), IPv4Network("203.0.113.64/26"))
    assert t.left.subnets == (IPv4Network("192.0.2.0/24"), IPv4Network("198.18.7.1/32"),
                              IPv4Network("198.18.7.2/31"), IPv4Network("198.18.7.4/31"), IPv4Network("198.18.7.6/32"))
    assert "gw2: IKE_SA gw1-gw2: CHILD_SA v6 (2001:db8:2::/48 === 2001:db8:1::/48) has no IPv4 selectors on both " \
           "sides: left out of the tunnel" in notes
    assert any(n.startswith("gw2: IKE_SA gw1-gw2: its CHILD_SAs pair the subnets (198.51.100.0/24 === 192.0.2.0/24; "
                            "203.0.113.64/26 === 198.18.7.1/32") for n in notes)
    only_v6 = IkeState((IkeSa("gw1-gw2", "ESTABLISHED", "203.0.113.2", "203.0.113.1", children[2:3]),))
    seen[2] = Seen(gw2.name, gw2.state, True, only_v6, gw2.ike_vici, gw2.netns)
    topo, notes = infer("site", seen)
    assert not topo.tunnels and any("CHILD_SA v6" in n for n in notes)
