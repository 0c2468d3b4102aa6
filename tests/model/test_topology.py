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
        (minimal(color="blue"), "color: unknown key at the top level"),
        # Strictness (issue 11/13): misspelt keys anywhere, with the key path and a did-you-mean.
        ({"nodes": {"west": {"interfaces": {"eth0": {"adresses": ["192.0.2.1/24"]}}}}},
         r"nodes.west.interfaces.eth0.adresses: unknown key in nodes.west.interfaces.eth0; did you mean 'addresses'\?"),
        ({"nodes": {"west": {"adresses": ["192.0.2.1/24"], "interfaces": {"e": {}}}}},
         r"nodes.west.adresses: unknown key in nodes.west; 'addresses' belongs in nodes.NODE.interfaces.IFACE"),
        (minimal(links=[{"ends": ["a:eth0", "a:eth0"], "mut": 1400}]), r"links\[0\].mut: .*did you mean 'mtu'"),
        (minimal(tunnels=[{"left": {"node": "a", "adress": "192.0.2.1"}}]),
         r"tunnels\[0\].left.adress: .*did you mean 'address'"),
        ({"nodes": {"a": {"interfaces": {"e": {}}, "routes": [{"dst": "default", "dev": "e", "gw": "1.2.3.4"}]}}},
         r"nodes.a.routes\[0\].gw: unknown key in nodes.a.routes\[0\] \(expected dst, via, dev\)"),
        (minimal(), "links: no links"),
        (minimal(links=[{"ends": ["a:eth0", "a:eth0"]}]), r"links\[0\].ends: both ends are a:eth0"),
        ({"nodes": {"a": {"interfaces": {"eth0": {"addresses": ["192.0.2.1/24"]}}},
                    "b": {"interfaces": {"eth0": {"addresses": ["192.0.2.1/24"]}}}},
          "links": [{"ends": ["a:eth0", "b:eth0"]}]},
         r"nodes.b.interfaces.eth0.addresses: 192.0.2.1 is also an address of a:eth0 \(duplicate address\)"),
        ({"nodes": {"a": {"interfaces": {"eth0": {"addresses": ["192.0.2.1/24"]}},
                          "routes": [{"dst": "default", "via": "203.0.113.1", "dev": "eth0"}]},
                    "b": {"interfaces": {"eth0": {"addresses": ["192.0.2.2/24"]}}}},
          "links": [{"ends": ["a:eth0", "b:eth0"]}]},
         r"nodes.a.routes\[0\].via: 203.0.113.1 is not on a subnet of eth0 \(192.0.2.0/24\): the gateway points to nothing"),
        ({"nodes": {"a": {"interfaces": {"eth0": {"addresses": ["192.0.2.1/24"]}},
                          "routes": [{"dst": "default", "via": "192.0.2.1", "dev": "eth0"}]}}},
         r"routes\[0\].via: 192.0.2.1 is an address of 'a' itself"),
        (minimal(links=[{"ends": ["a:eth0", "b:eth0"]}]), r"links\[0\].ends\[1\]: unknown node 'b'"),
        (minimal(links=[{"ends": ["a:eth0", "a:eth1"]}, {"ends": ["a:eth0", "a:eth2"]}]),
         r"links\[0\].ends\[1\]: node 'a' has no interface 'eth1'"),
        (minimal(links=[{"ends": ["a:eth0", "a:eth0"]}], mtu=1), "mtu: unknown key at the top level"),
        ({"nodes": {"a": {"interfaces": {"eth0": {"addresses": [5]}}}}},
         r"addresses\[0\]: expected a string"),
        (minimal(name=5), "name: expected a string"),
        ({"nodes": {"a": {"interfaces": {"e": {}}, "ssh_key": "k\x00ey"}}}, "ssh_key: control characters"),
    ],
)
def test_bad_topology_names_key(tmp_path, data, message):
    from tracer.model.topology import Topology

    with pytest.raises(TopologyError, match=message) as e:
        Topology.from_dict(data, source="t.toml")
    assert "\n" not in str(e.value)


def two_nodes(**extra):
    d = {"nodes": {"a": {"interfaces": {"eth0": {"addresses": ["192.0.2.1/24"]}}},
                   "b": {"interfaces": {"eth0": {"addresses": ["192.0.2.2/24"]}}}},
         "links": [{"ends": ["a:eth0", "b:eth0"], **extra.pop("link", {})}]}
    d.update(extra)
    return d


def tunnel(spi):
    return [{"left": {"node": "a", "address": "192.0.2.1", "subnets": ["10.0.0.0/8"], "spi_in": spi},
             "right": {"node": "b", "address": "192.0.2.2", "subnets": ["10.1.0.0/16"]}}]


@pytest.mark.parametrize("spi", [-1, 0, 1.5, True, False, "0x1g", "", 1 << 32, "-1", [1]])
def test_spi_is_a_strict_integer(spi):
    from tracer.model.topology import Topology

    with pytest.raises(TopologyError, match=r"tunnels\[0\].left.spi_in: .*integer from 1 to 4294967295"):
        Topology.from_dict(two_nodes(tunnels=tunnel(spi)))


@pytest.mark.parametrize(("spi", "value"), [(7, 7), ("0xc0ffee01", 0xC0FFEE01), ("4096", 4096), (0xFFFFFFFF, 0xFFFFFFFF)])
def test_spi_accepts_integers_and_hex_strings(spi, value):
    from tracer.model.topology import Topology

    assert Topology.from_dict(two_nodes(tunnels=tunnel(spi))).tunnels[0].left.spi_in == value


@pytest.mark.parametrize("mtu", [True, 1500.0, 67, 65536, "1500"])
def test_link_mtu_is_a_strict_integer(mtu):
    from tracer.model.topology import Topology

    with pytest.raises(TopologyError, match=r"links\[0\].mtu: expected an integer from 68 to 65535"):
        Topology.from_dict(two_nodes(link={"mtu": mtu}))


def test_tunnel_ends_on_one_node_and_twin_names_are_refused():
    from tracer.model.topology import Topology

    t = tunnel(7)
    t[0]["right"]["node"], t[0]["right"]["address"] = "a", "192.0.2.1"
    with pytest.raises(TopologyError, match=r"tunnels\[0\].right.node: both ends are on 'a'"):
        Topology.from_dict(two_nodes(tunnels=t))
    with pytest.raises(TopologyError, match=r"tunnels\[1\].name: 'x' names another tunnel too"):
        Topology.from_dict(two_nodes(tunnels=[{**tunnel(7)[0], "name": "x"}] * 2))


def test_a_gateway_outside_the_topology_loads():
    """A route via a router the file does not describe is a finding of 'topology check', not a load error."""
    from tracer.model.topology import Topology

    d = two_nodes()
    d["nodes"]["a"]["routes"] = [{"dst": "default", "via": "192.0.2.254", "dev": "eth0"}]
    assert Topology.from_dict(d).nodes["a"].routes[0].via is not None


def test_toml_syntax_error_names_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "x"\n[nodes.a\n')
    with pytest.raises(TopologyError, match=r"bad.toml: not valid TOML: .*line 2"):
        load_topology(p)


def test_missing_topology_file(tmp_path):
    with pytest.raises(TopologyError, match="topology file not found"):
        load_topology(tmp_path / "nope.toml")
