"""Topology model: parsing, validation errors with key paths, route lookup."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tests.synth import TOPOLOGY
from tracer.errors import TopologyError
from tracer.model.flowgraph import EdgeKind, build_flow_graph
from tracer.topofile import load_topology


def minimal(**extra):
    d = {"nodes": {"a": {"interfaces": {"eth0": {"addresses": ["192.0.2.1/24"]}}}}}
    d.update(extra)
    return d


def test_lab_topology_graph():
    topo = load_topology(TOPOLOGY)
    g = build_flow_graph(topo)
    assert sorted(g.nodes) == ["east-gw:ipsec0", "east-gw:lan0", "east-gw:wan0", "east:eth0", "router:eth0",
                               "router:eth1", "west-gw:ipsec0", "west-gw:lan0", "west-gw:wan0", "west:eth0"]
    assert sorted(topo.points()) == sorted(g.nodes)
    assert g.has_edge("west:eth0", "west-gw:lan0", key=EdgeKind.WIRE)
    assert g.has_edge("west-gw:lan0", "west-gw:ipsec0", key=EdgeKind.FORWARD)
    assert g.has_edge("west-gw:ipsec0", "west-gw:wan0", key=EdgeKind.ENCAP)
    assert g.has_edge("east-gw:wan0", "east-gw:ipsec0", key=EdgeKind.DECAP)
    assert not g.has_edge("west:eth0", "west:eth0")  # hosts do not forward


def test_route_lookup_longest_prefix():
    topo = load_topology(TOPOLOGY)
    gw = topo.nodes["west-gw"]
    assert gw.lookup(IPv4Address("198.51.100.7")).dev == "ipsec0"
    assert gw.lookup(IPv4Address("192.0.2.99")).dev == "lan0"  # connected
    assert gw.lookup(IPv4Address("203.0.113.5")).dev == "wan0"  # default


def test_resolve_names_and_addresses():
    topo = load_topology(TOPOLOGY)
    assert topo.resolve("west") == (topo.nodes["west"], IPv4Address("192.0.2.10"))
    assert topo.resolve("198.51.100.1")[0].name == "east-gw"
    with pytest.raises(TopologyError, match="neither a node"):
        topo.resolve("nowhere")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "nodes: no nodes defined"),
        (minimal(links=[{"ends": ["a:eth0", "a:eth9"]}]), r"links\[0\].ends\[1\]: node 'a' has no interface 'eth9'"),
        (minimal(links=[{"ends": ["a:eth0"]}]), r"links\[0\].ends: expected two capture points"),
        ({"nodes": {"a": {"interfaces": {"eth0": {"addresses": ["300.1.1.1/24"]}}}}},
         r"nodes.a.interfaces.eth0.addresses\[0\]: '300.1.1.1/24' is not a valid address"),
        ({"nodes": {"a": {"role": "switch", "interfaces": {"e": {}}}}}, "nodes.a.role: 'switch' is not one of"),
        ({"nodes": {"a": {"interfaces": {"e": {}}, "routes": [{"dst": "default", "dev": "x"}]}}},
         r"nodes.a.routes\[0\].dev: node 'a' has no interface 'x'"),
        (minimal(tunnels=[{"left": {"node": "a", "address": "192.0.2.9", "subnets": ["10.0.0.0/8"]},
                           "right": {"node": "a", "address": "192.0.2.1", "subnets": ["10.1.0.0/16"]}}]),
         r"tunnels\[0\].left.address: 192.0.2.9 is not an address of node 'a'"),
        (minimal(color="blue"), "color: unknown top-level key"),
    ],
)
def test_bad_topology_names_key(tmp_path, data, message):
    from tracer.model.topology import Topology

    with pytest.raises(TopologyError, match=message):
        Topology.from_dict(data, source="t.toml")


def test_toml_syntax_error_names_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "x"\n[nodes.a\n')
    with pytest.raises(TopologyError, match=r"bad.toml: not valid TOML: .*line 2"):
        load_topology(p)


def test_missing_topology_file(tmp_path):
    with pytest.raises(TopologyError, match="topology file not found"):
        load_topology(tmp_path / "nope.toml")
