"""The lab's layout is a model Topology: names, namespaces, and the same network as tests/data/site2site.toml."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tests.synth import TOPOLOGY
from tracer.errors import BadInput
from tracer.lab import GATEWAYS, Lab, layout
from tracer.model.flowgraph import build_flow_graph
from tracer.model.path import expected_path
from tracer.topofile import load_topology


def test_lab_topology_is_in_its_namespaces() -> None:
    topo = layout.topology("t1")
    assert topo.name == "t1" and topo.esp_keys == layout.ESP_SA_FILE
    assert {n: node.netns for n, node in topo.nodes.items()} == Lab("t1").namespaces
    assert topo.nodes["west-gw"].netns == "trc-t1-westgw"
    assert topo.tunnels[0].encapsulation == "udp" and GATEWAYS == ("west-gw", "east-gw")
    assert {"west:eth0", "router:eth1", "east-gw:ipsec0"} <= set(topo.points())
    assert all(node.capture_backend == "local" for node in topo.nodes.values())
    assert layout.NODES["west"].netns is None  # the template itself names no lab


def test_lab_is_the_site2site_network() -> None:
    # The tests' offline topology has the lab's shape: same flow graph, same expected paths.
    lab, file = layout.topology("t1"), load_topology(TOPOLOGY)
    assert sorted(build_flow_graph(lab).edges(keys=True)) == sorted(build_flow_graph(file).edges(keys=True))
    for src, dst in (("192.0.2.10", "198.51.100.10"), ("198.51.100.10", "192.0.2.10")):
        a, b = IPv4Address(src), IPv4Address(dst)
        assert expected_path(lab, a, b) == expected_path(file, a, b)


def test_charon_owns_the_routes_into_the_tunnel() -> None:
    routes = {(n.name, str(r.dst)): layout.by_charon(r) for n in layout.NODES.values() for r in n.routes}
    assert [k for k, v in routes.items() if v] == [("west-gw", "198.51.100.0/24"), ("east-gw", "192.0.2.0/24")]


def test_lab_names_are_checked() -> None:
    for bad in ("", "Lab", "a-b", "x" * 11, "../x"):
        with pytest.raises(BadInput, match="not allowed"):
            Lab(bad)
    assert Lab("t1").namespace("east-gw") == "trc-t1-eastgw"
    with pytest.raises(KeyError):
        Lab("t1").namespace("nowhere")
