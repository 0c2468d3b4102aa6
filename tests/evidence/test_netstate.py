"""Live network state: ``ip -j`` output parsed (real output of iproute2 6.1, trimmed), and
snapshots of real namespaces of our own (trc-ls-x-*) compared with a matching and a stale
topology. Every expected line is written by hand."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from tests.own_netns import own_namespaces
from tracer import netns
from tracer.analysis.topocheck import (
    ADDRESS,
    DOWN,
    IFACE_MISSING,
    LINK,
    NO_ROUTE,
    ROUTE,
    RULE,
    KernelRoute,
    compare,
    kernel_route,
    live_interfaces,
)
from tracer.evidence.netstate import SnapshotError, _json_stream, parse, snapshot, snapshot_nodes, snapshot_ssh
from tracer.model.netstate import STRONGSWAN_RULE, LinkPeer, LiveRoute, NextHop, PolicyRule
from tracer.model.topology import Topology
from tracer.topofile import load_topology

LINKS = [
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536, "operstate": "UNKNOWN",
     "link_type": "loopback"},
    {"ifindex": 2, "link_index": 2, "ifname": "lan0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
     "mtu": 1500, "operstate": "UP", "link_netnsid": 1, "linkinfo": {"info_kind": "veth"}},
    {"ifindex": 3, "link": "d1", "ifname": "d0", "flags": ["BROADCAST", "MULTICAST"], "mtu": 1500,
     "operstate": "DOWN", "linkinfo": {"info_kind": "veth"}},
    {"ifindex": 4, "ifname": "ipsec0", "flags": ["POINTOPOINT", "MULTICAST", "NOARP", "UP", "LOWER_UP"], "mtu": 1400,
     "operstate": "UNKNOWN", "linkinfo": {"info_kind": "tun", "info_data": {"type": "tun"}}},
    {"ifindex": 5, "link": "lan0", "ifname": "lan0.7", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
     "mtu": 1500, "operstate": "UP", "linkinfo": {"info_kind": "vlan"}},
]
ADDRS = [
    {"ifindex": 1, "ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifindex": 2, "ifname": "lan0", "addr_info": [
        {"family": "inet", "local": "192.0.2.1", "prefixlen": 24, "scope": "global", "label": "lan0"},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
    {"ifindex": 3, "ifname": "d0", "addr_info": [{"family": "inet", "local": "198.18.9.1", "prefixlen": 24}]},
]
ROUTES = [
    {"dst": "198.51.100.0/24", "dev": "ipsec0", "table": "220", "protocol": "static", "prefsrc": "192.0.2.1",
     "flags": []},
    {"dst": "default", "gateway": "198.18.1.254", "dev": "wan0", "flags": []},
    {"dst": "192.0.2.0/24", "dev": "lan0", "protocol": "kernel", "scope": "link", "prefsrc": "192.0.2.1", "flags": []},
    {"type": "throw", "dst": "10.0.0.0/8", "table": "100", "flags": []},
    {"dst": "198.18.20.0/24", "gateway": "198.18.9.5", "dev": "d0", "protocol": "static", "metric": 50, "flags": []},
    {"dst": "203.0.113.0/24", "table": "102", "flags": [], "nexthops": [
        {"gateway": "198.18.9.2", "dev": "d0", "weight": 1, "flags": []},
        {"via": {"family": "inet", "host": "198.18.9.3"}, "dev": "d0", "weight": 1, "flags": []}]},
    {"type": "local", "dst": "192.0.2.1", "dev": "lan0", "table": "local", "protocol": "kernel", "scope": "host",
     "prefsrc": "192.0.2.1", "flags": []},
    {"dst": "fe80::/64", "dev": "d1", "protocol": "kernel", "metric": 256, "flags": [], "pref": "medium"},
]
RULES = [
    {"priority": 0, "src": "all", "table": "local"},
    {"priority": 100, "src": "198.51.100.0", "srclen": 24, "table": "100"},
    {"priority": 101, "src": "all", "dst": "203.0.113.0", "dstlen": 24, "iif": "d0", "table": "101"},
    {"priority": 102, "not": None, "src": "192.0.2.0", "srclen": 24, "fwmark": "0x5", "table": "102"},
    {"priority": 103, "src": "198.18.9.9", "action": "unreachable"},
    {"priority": 104, "src": "all", "oif": "d0", "goto": 32766},
    {"priority": 105, "src": "all", "table": "105", "suppress_prefixlen": 0, "protocol": "static"},
    {"priority": 106, "src": "all", "ipproto": "udp", "dport": 4500, "table": "106"},
    {"priority": 220, "src": "all", "table": "220"},
    {"priority": 32766, "src": "all", "table": "main"},
]


def test_parse_real_ip_json() -> None:
    s = parse("west-gw", LINKS, ADDRS, ROUTES, RULES, [{"nsid": 0, "name": "trc-ls-router"}, {"nsid": 1, "name": "trc-ls-west"}],
              netns="trc-ls-westgw", taken="t")
    assert [(i.name, i.ifindex, i.kind, i.up) for i in s.interfaces] == [
        ("lo", 1, None, True), ("lan0", 2, "veth", True), ("d0", 3, "veth", False), ("ipsec0", 4, "tun", True),
        ("lan0.7", 5, "vlan", True)]
    lan0, d0 = s.interface("lan0"), s.interface("d0")
    assert lan0.addresses == (IPv4Interface("192.0.2.1/24"),)  # IPv6 left out
    assert lan0.peer == LinkPeer(ifindex=2, netnsid=1, netns="trc-ls-west")
    assert d0.peer == LinkPeer(name="d1") and d0.operstate == "DOWN" and not d0.admin_up
    assert s.interface("lan0.7").peer is None  # a VLAN's "link" is its parent, not a peer
    assert s.interface("ipsec0").mtu == 1400 and s.interface("ipsec0").addresses == ()
    assert s.routes[:2] == (
        LiveRoute("220", IPv4Network("198.51.100.0/24"), dev="ipsec0", proto="static", prefsrc=IPv4Address("192.0.2.1")),
        LiveRoute("main", IPv4Network("0.0.0.0/0"), dev="wan0", via=IPv4Address("198.18.1.254")),
    )
    assert s.routes[3].type == "throw" and s.routes[4].metric == 50
    assert s.routes[5].hops() == (NextHop("d0", IPv4Address("198.18.9.2")), NextHop("d0", IPv4Address("198.18.9.3")))
    assert s.routes[6].dst == IPv4Network("192.0.2.1/32") and s.routes[6].type == "local"
    assert len(s.routes) == 7  # the IPv6 route is not ours
    assert [r.describe() for r in s.rules] == [
        "0: from all lookup local",
        "100: from 198.51.100.0/24 lookup 100",
        "101: from all to 203.0.113.0/24 iif d0 lookup 101",
        "102: not from 192.0.2.0/24 fwmark 0x5 lookup 102",
        "103: from 198.18.9.9/32 unreachable",
        "104: from all oif d0 goto 32766",
        "105: from all lookup 105 suppress_prefixlength 0",
        "106: from all dport 4500 ipproto udp lookup 106",
        "220: from all lookup 220",
        "32766: from all lookup main",
    ]
    assert s.rules[8] == STRONGSWAN_RULE and s.rules[3] == PolicyRule(
        102, table="102", src=IPv4Network("192.0.2.0/24"), fwmark=5, invert=True)
    assert (s.node, s.netns, s.host, s.taken) == ("west-gw", "trc-ls-westgw", None, "t")


def test_parse_onlink_routes() -> None:
    """iproute2 6.1's own output for 'ip route add default via 198.18.50.1 dev d0 onlink' (and a multipath one)."""
    routes = [{"dst": "default", "gateway": "198.18.50.1", "dev": "d0", "flags": ["onlink"]},
              {"dst": "198.18.60.0/24", "flags": [], "nexthops": [
                  {"gateway": "198.18.50.1", "dev": "d0", "weight": 1, "flags": ["onlink"]},
                  {"gateway": "198.18.50.2", "dev": "d0", "weight": 1, "flags": ["onlink"]}]},
              {"dst": "198.18.70.0/24", "gateway": "198.18.50.1", "dev": "d0", "flags": []}]
    s = parse("n", [], [], routes, [])
    assert [r.onlink for r in s.routes] == [True, True, False]
    assert LiveRoute.from_dict(s.routes[0].to_dict()) == s.routes[0]


@pytest.mark.parametrize("bad", [{"not": "a list"}, [1, 2], [{"ifindex": 1}]])
def test_parse_refuses_what_ip_does_not_print(bad: object) -> None:
    with pytest.raises((TypeError, KeyError)):
        parse("n", bad, [], [], [])


def test_json_stream_of_a_batch() -> None:
    assert _json_stream('[{"a":1}]\n[]\n [ {"b": 2} ]\n') == [[{"a": 1}], [], [{"b": 2}]]
    assert _json_stream('[1]\nError: nope\n[2]') == [[1]]
    assert _json_stream("") == []


# -- real namespaces ------------------------------------------------------------------------

NS = {"a": "trc-ls-x-a", "b": "trc-ls-x-b", "c": "trc-ls-x-c"}

# a ── b ── c, and a veth pair inside c. b reaches 198.18.12.0/24 through table 220 behind
# strongSwan's rule, the way the lab's gateways reach their tunnels.
MATCHING = """
name = "ls-evidence"
[nodes.a]
netns = "trc-ls-x-a"
interfaces.eth0.addresses = ["198.18.10.1/24"]
routes = [{ dst = "default", via = "198.18.10.254", dev = "eth0" },
          { dst = "198.18.14.0/24", via = "198.18.10.254", dev = "eth0" }]
[nodes.b]
role = "router"
netns = "trc-ls-x-b"
interfaces.eth0.addresses = ["198.18.10.254/24"]
interfaces.eth1.addresses = ["198.18.11.254/24"]
routes = [{ dst = "198.18.12.0/24", via = "198.18.11.1", dev = "eth1" }]
[nodes.c]
netns = "trc-ls-x-c"
interfaces.eth0.addresses = ["198.18.11.1/24"]
interfaces.eth1.addresses = ["198.18.12.1/24"]
interfaces.eth9 = {}
[[links]]
ends = ["a:eth0", "b:eth0"]
[[links]]
ends = ["b:eth1", "c:eth0"]
[[links]]
ends = ["c:eth1", "c:eth9"]
"""

# The same network as someone remembers it: another address on a, an eth2 on b, c's links
# swapped, another gateway for b's route, and a route of c's the kernel does not have.
STALE = """
name = "ls-evidence-stale"
[nodes.a]
netns = "trc-ls-x-a"
interfaces.eth0.addresses = ["198.18.10.2/24"]
routes = [{ dst = "default", via = "198.18.10.254", dev = "eth0" }]
[nodes.b]
role = "router"
netns = "trc-ls-x-b"
interfaces.eth0.addresses = ["198.18.10.254/24"]
interfaces.eth1.addresses = ["198.18.11.254/24"]
interfaces.eth2.addresses = ["198.18.13.254/24"]
routes = [{ dst = "198.18.12.0/24", via = "198.18.11.9", dev = "eth1" }]
[nodes.c]
netns = "trc-ls-x-c"
interfaces.eth0.addresses = ["198.18.11.1/24"]
interfaces.eth1.addresses = ["198.18.12.1/24"]
interfaces.eth9 = {}
routes = [{ dst = "198.18.15.0/24", via = "198.18.11.254", dev = "eth0" }]
[[links]]
ends = ["a:eth0", "b:eth0"]
[[links]]
ends = ["b:eth1", "c:eth1"]
[[links]]
ends = ["c:eth0", "c:eth9"]
"""


@pytest.fixture(scope="module")
def network() -> Iterator[None]:
    with own_namespaces(NS.values(), "needs root (network namespaces)"):
        a, b, c = NS["a"], NS["b"], NS["c"]
        # Every veth is created inside our namespaces (never in the root namespace).
        netns.ip_batch([f"link add eth0 type veth peer name eth0 netns {b}", "addr add 198.18.10.1/24 dev eth0",
                        "link set eth0 up", "link set lo up", "route add default via 198.18.10.254 dev eth0"], ns=a)
        netns.ip_batch([f"link add eth1 type veth peer name eth0 netns {c}", "addr add 198.18.10.254/24 dev eth0",
                        "addr add 198.18.11.254/24 dev eth1", "link set eth0 up", "link set eth1 up", "link set lo up",
                        "rule add pref 220 table 220",
                        "route add 198.18.12.0/24 via 198.18.11.1 dev eth1 table 220"], ns=b)
        netns.ip_batch(["link add eth1 type veth peer name eth9", "addr add 198.18.11.1/24 dev eth0",
                        "addr add 198.18.12.1/24 dev eth1", "link set eth0 up", "link set eth1 up", "link set eth9 up",
                        "link set lo up"], ns=c)
        yield
    assert not any(netns.exists(ns) for ns in NS.values())


def _topology(tmp_path: Path, text: str) -> Topology:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return load_topology(path)


@pytest.mark.lab
def test_snapshot_reads_what_the_kernel_has(network: None, tmp_path: Path) -> None:
    topo = _topology(tmp_path, MATCHING)
    states = {name: snapshot(node) for name, node in topo.nodes.items()}
    a, b, c = states["a"], states["b"], states["c"]
    assert [i.name for i in a.interfaces] == ["lo", "eth0"]
    assert b.interface("eth0").addresses == (IPv4Interface("198.18.10.254/24"),)
    assert b.interface("eth0").peer == LinkPeer(ifindex=a.interface("eth0").ifindex,
                                                netnsid=b.interface("eth0").peer.netnsid, netns="trc-ls-x-a")
    assert c.interface("eth1").peer == LinkPeer(name="eth9") and c.interface("eth9").up
    assert all(i.kind == "veth" and i.mtu == 1500 for i in c.interfaces if not i.loopback)
    assert STRONGSWAN_RULE in b.rules
    assert [r.describe() for r in b.table("220")] == ["198.18.12.0/24 via 198.18.11.1 dev eth1"]
    assert b.netns == "trc-ls-x-b" and b.host is None and b.taken
    assert kernel_route(b, IPv4Address("198.18.10.1"), IPv4Address("198.18.12.1"), "eth0") == KernelRoute(
        "eth1", IPv4Address("198.18.11.1"), "220")
    assert kernel_route(b, None, IPv4Address("198.18.10.1")) == KernelRoute("eth0", None, "main")
    # The matching topology: no difference (b's route is in table 220 live, an ordinary route in the file;
    # a's route to 198.18.14.0/24 is not live, but the kernel sends it the same way by the default route).
    assert compare(topo, states) == []
    assert set(live_interfaces(topo, states, ["a", "b", "c"])) == {
        "a:eth0", "b:eth0", "b:eth1", "c:eth0", "c:eth1", "c:eth9"}


@pytest.mark.lab
def test_a_stale_topology_is_named_line_by_line(network: None, tmp_path: Path) -> None:
    netns.ip_batch(["link set eth9 down"], ns=NS["c"])
    netns.ip_batch(["rule add to 198.18.13.0/24 prohibit pref 150"], ns=NS["b"])
    try:
        topo = _topology(tmp_path, STALE)
        states, unread = snapshot_nodes(topo, topo.nodes)
        assert unread == {}
        assert [(d.kind, d.text) for d in compare(topo, states)] == [
            (ADDRESS, "a: eth0 has 198.18.10.1/24 live, the topology 198.18.10.2/24"),
            (LINK, "b: eth1 is wired to c:eth0 live, the topology says c:eth1"),
            (IFACE_MISSING, "b: interface eth2 (198.18.13.254/24) of the topology does not exist live"),
            (ROUTE, "b: the kernel routes 198.18.12.0/24 via 198.18.11.1 dev eth1 (table 220), "
                    "the topology via 198.18.11.9 dev eth1"),
            (RULE, "b: policy rule 150: from all to 198.18.13.0/24 prohibit is not in the topology"),
            (LINK, "c: eth0 is wired to b:eth1 live, the topology says c:eth9"),
            (DOWN, "c: eth1 is up but has no carrier (LOWERLAYERDOWN)"),
            (LINK, "c: eth1 is wired to c:eth9 live, the topology says b:eth1"),
            (DOWN, "c: eth9 is down (administratively)"),
            (LINK, "c: eth9 is wired to c:eth1 live, the topology says c:eth0"),
            (NO_ROUTE, "c: the kernel has no route to 198.18.15.0/24, the topology via 198.18.11.254 dev eth0"),
        ]
        # Down or without carrier: not a capture point.
        assert live_interfaces(topo, states, ["c"]) == ["c:eth0"]
    finally:
        netns.ip_batch(["link set eth9 up"], ns=NS["c"])
        netns.ip_batch(["rule del pref 150"], ns=NS["b"])


@pytest.mark.lab
def test_what_cannot_be_read_is_a_reason_not_a_traceback(network: None, tmp_path: Path) -> None:
    topo = _topology(tmp_path, MATCHING.replace('netns = "trc-ls-x-a"', 'netns = "trc-ls-x-gone"'))
    states, unread = snapshot_nodes(topo, ["a", "b"])
    assert set(states) == {"b"}
    assert unread["a"] == ("'ip -n trc-ls-x-gone -4 -d -j link show' failed (255): "
                           'Cannot open network namespace "trc-ls-x-gone": No such file or directory')
    with pytest.raises(SnapshotError):
        snapshot(topo.nodes["a"])


@pytest.mark.lab
def test_ssh_to_an_unreachable_host_is_a_reason(network: None, tmp_path: Path) -> None:
    # The ssh client runs inside c, which has no route to 198.18.99.1: it fails at once, and
    # nothing leaves our namespaces.
    text = MATCHING.replace('[nodes.c]\nnetns = "trc-ls-x-c"',
                            '[nodes.c]\nnetns = "trc-ls-x-c"\nssh = "root@198.18.99.1"\nssh_netns = "trc-ls-x-c"\n'
                            'capture = "ssh"')
    topo = _topology(tmp_path, text)
    try:
        subprocess.run(["ssh", "-V"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no OpenSSH client")
    with pytest.raises(SnapshotError) as e:
        snapshot_ssh(topo.nodes["c"], topo.source, timeout=15)
    assert str(e.value) == ("ssh root@198.18.99.1: 'ip -j' answered 0 of 4 queries "
                            "(ssh: connect to host 198.18.99.1 port 22: Network is unreachable)")
    states, unread = snapshot_nodes(topo, ["b", "c"])
    assert set(states) == {"b"} and unread == {"c": str(e.value)}
