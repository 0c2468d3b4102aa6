"""Expected paths by route lookup: tunnels, gateways' own traffic, asymmetry, dead ends."""

from __future__ import annotations

import tomllib
from ipaddress import IPv4Address as A

from tests.synth import REPLY_HOPS, REQUEST_HOPS, TOPOLOGY
from tracer.model.path import expected_path
from tracer.model.topology import Topology
from tracer.topofile import load_topology


def hops(p):
    return [(h.point, "esp" if h.esp else "clear") for h in p.hops]


def test_request_and_reply_through_tunnel():
    topo = load_topology(TOPOLOGY)
    req = expected_path(topo, A("192.0.2.10"), A("198.51.100.10"))
    rep = expected_path(topo, A("198.51.100.10"), A("192.0.2.10"))
    assert hops(req) == REQUEST_HOPS and hops(rep) == REPLY_HOPS
    assert [e.value for e in req.edges] == [
        "wire", "forward", "encap", "wire", "forward", "wire", "decap", "forward", "wire"]
    assert req.hops[3].esp.src == A("198.18.1.1") and req.hops[3].esp.udp


def test_gateway_private_side_source_goes_through_tunnel():
    # The guide's 5.2: ping from the gateway's private address tests the tunnel.
    topo = load_topology(TOPOLOGY)
    p = expected_path(topo, A("192.0.2.1"), A("198.51.100.10"), topo.nodes["west-gw"])
    assert p.hops[0].point == "west-gw:ipsec0" and p.hops[1].esp is not None


def test_gateway_to_gateway_is_not_tunnelled():
    topo = load_topology(TOPOLOGY)
    p = expected_path(topo, A("198.18.1.1"), A("198.18.2.1"))
    assert [h.point for h in p.hops] == ["west-gw:wan0", "router:eth0", "router:eth1", "east-gw:wan0"]
    assert all(h.esp is None for h in p.hops)


def data():
    return tomllib.loads(TOPOLOGY.read_text())


def test_asymmetric_return_path():
    # A second router between the sites; east-gw sends replies through it.
    d = data()
    d["nodes"]["router2"] = {"role": "router", "interfaces": {
        "eth0": {"addresses": ["198.18.3.254/24"]}, "eth1": {"addresses": ["198.18.4.254/24"]}}}
    d["nodes"]["west-gw"]["interfaces"]["wan1"] = {"addresses": ["198.18.3.1/24"]}
    d["nodes"]["east-gw"]["interfaces"]["wan1"] = {"addresses": ["198.18.4.1/24"]}
    d["links"] += [{"ends": ["router2:eth0", "west-gw:wan1"]}, {"ends": ["router2:eth1", "east-gw:wan1"]}]
    d["nodes"]["east-gw"]["routes"].insert(0, {"dst": "198.18.1.0/24", "via": "198.18.4.254", "dev": "wan1"})
    d["nodes"]["router2"]["routes"] = [{"dst": "198.18.1.0/24", "via": "198.18.3.1", "dev": "eth0"}]
    topo = Topology.from_dict(d)
    req = expected_path(topo, A("192.0.2.10"), A("198.51.100.10"))
    rep = expected_path(topo, A("198.51.100.10"), A("192.0.2.10"))
    assert "router:eth0" in [h.point for h in req.hops]
    assert [h.point for h in rep.hops][3:6] == ["east-gw:wan1", "router2:eth1", "router2:eth0"]
    assert rep.hops[-1].point == "west:eth0" and rep.delivered


def test_no_route_ends_path():
    d = data()
    d["nodes"]["east"]["routes"] = []
    topo = Topology.from_dict(d)
    rep = expected_path(topo, A("198.51.100.10"), A("192.0.2.10"))
    assert not rep.delivered and rep.end_note == "east has no route to 192.0.2.10" and rep.hops == ()


def test_policy_based_tunnel_encap_on_wan():
    d = data()
    for end in ("left", "right"):
        del d["tunnels"][0][end]["interface"]
    d["tunnels"][0]["encapsulation"] = "esp"
    topo = Topology.from_dict(d)
    p = expected_path(topo, A("192.0.2.10"), A("198.51.100.10"))
    assert [h.point for h in p.hops] == [
        "west:eth0", "west-gw:lan0", "west-gw:wan0", "router:eth0", "router:eth1", "east-gw:wan0",
        "east-gw:lan0", "east:eth0"]
    assert [e.value for e in p.edges][1] == "encap" and [e.value for e in p.edges][5] == "decap"
    assert not p.hops[2].esp.udp


def test_routing_loop_detected():
    d = data()
    d["nodes"]["router"]["routes"] = [{"dst": "198.18.2.0/24", "via": "198.18.1.1", "dev": "eth0"}]
    d["nodes"]["router"]["interfaces"]["eth1"]["addresses"] = ["198.18.9.254/24"]
    topo = Topology.from_dict(d)
    p = expected_path(topo, A("192.0.2.10"), A("198.51.100.10"))
    # The router sends the ESP for 198.18.2.1 back out eth0 to west-gw, whose default route
    # returns it: the walk stops when it comes back to the router.
    assert not p.delivered and p.end_note == "routing loop at router"
    assert [h.point for h in p.hops] == ["west:eth0", "west-gw:lan0", "west-gw:ipsec0", "west-gw:wan0", "router:eth0",
                                         "west-gw:wan0", "router:eth0"]


# Each path of the site-to-site topology as (from, to, edge kind) steps, written out by hand.
WALKS = {
    ("192.0.2.10", "198.51.100.10"): [
        ("west:eth0", "west-gw:lan0", "wire"), ("west-gw:lan0", "west-gw:ipsec0", "forward"),
        ("west-gw:ipsec0", "west-gw:wan0", "encap"), ("west-gw:wan0", "router:eth0", "wire"),
        ("router:eth0", "router:eth1", "forward"), ("router:eth1", "east-gw:wan0", "wire"),
        ("east-gw:wan0", "east-gw:ipsec0", "decap"), ("east-gw:ipsec0", "east-gw:lan0", "forward"),
        ("east-gw:lan0", "east:eth0", "wire")],
    ("198.51.100.10", "192.0.2.10"): [
        ("east:eth0", "east-gw:lan0", "wire"), ("east-gw:lan0", "east-gw:ipsec0", "forward"),
        ("east-gw:ipsec0", "east-gw:wan0", "encap"), ("east-gw:wan0", "router:eth1", "wire"),
        ("router:eth1", "router:eth0", "forward"), ("router:eth0", "west-gw:wan0", "wire"),
        ("west-gw:wan0", "west-gw:ipsec0", "decap"), ("west-gw:ipsec0", "west-gw:lan0", "forward"),
        ("west-gw:lan0", "west:eth0", "wire")],
    ("198.18.1.1", "198.18.2.1"): [
        ("west-gw:wan0", "router:eth0", "wire"), ("router:eth0", "router:eth1", "forward"),
        ("router:eth1", "east-gw:wan0", "wire")],
}


def test_every_path_is_a_walk_in_the_flow_graph():
    from tracer.model.flowgraph import build_flow_graph, flow_edges
    from tracer.model.path import check_walk

    topo = load_topology(TOPOLOGY)
    graph = build_flow_graph(topo)
    edges = flow_edges(topo)
    for (src, dst), steps in WALKS.items():
        path = expected_path(topo, A(src), A(dst))
        walk = [(a.point, b.point, e.value) for a, b, e in zip(path.hops[:-1], path.hops[1:], path.edges, strict=True)]
        assert walk == steps, (src, dst)
        for a, b, kind in steps:
            assert graph.edges[a, b, kind]["kind"] == kind
        assert check_walk(path, edges, "t") is None  # raises TopologyError on a step the graph lacks


def test_flow_graph_edges_of_a_gateway():
    from tracer.model.flowgraph import build_flow_graph

    graph = build_flow_graph(load_topology(TOPOLOGY))
    out = {p: sorted((b, k) for _, b, k in graph.out_edges(p, keys=True))
           for p in ("west-gw:lan0", "west-gw:ipsec0", "west-gw:wan0", "west:eth0")}
    assert out == {
        "west-gw:lan0": [("west-gw:ipsec0", "forward"), ("west-gw:wan0", "forward"), ("west:eth0", "wire")],
        "west-gw:ipsec0": [("west-gw:lan0", "forward"), ("west-gw:wan0", "encap"), ("west-gw:wan0", "forward")],
        "west-gw:wan0": [("router:eth0", "wire"), ("west-gw:ipsec0", "decap"), ("west-gw:ipsec0", "forward"),
                         ("west-gw:lan0", "forward")],
        "west:eth0": [("west-gw:lan0", "wire")],  # a host does not forward
    }
    assert graph.edges["west-gw:ipsec0", "west-gw:wan0", "encap"]["tunnel"] == "west-east"


def test_forwarding_host_contradicts_the_flow_graph():
    import pytest

    from tracer.errors import TopologyError
    from tracer.model.flowgraph import flow_edges
    from tracer.model.path import check_walk

    d = data()
    d["nodes"]["router"]["role"] = "host"  # but its routes still forward between eth0 and eth1
    topo = Topology.from_dict(d, "t.toml")
    path = expected_path(topo, A("192.0.2.10"), A("198.51.100.10"))
    with pytest.raises(TopologyError, match=r"router:eth0 → router:eth1 \(forward\), which the topology's flow graph"):
        check_walk(path, flow_edges(topo), "t.toml")


def test_no_fixed_hop_limit():
    """A chain of 100 routers (202 capture points on the path) is walked to the end: the walk
    stops on delivery or a loop, not at a hop count."""
    n = 100
    nodes = {
        "a": {"role": "host", "interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}},
              "routes": [{"dst": "default", "via": "192.0.2.1", "dev": "eth0"}]},
        "b": {"role": "host", "interfaces": {"eth0": {"addresses": ["198.51.100.10/24"]}},
              "routes": [{"dst": "default", "via": "198.51.100.1", "dev": "eth0"}]},
    }
    links = [{"ends": ["a:eth0", "r0:left"]}, {"ends": [f"r{n - 1}:right", "b:eth0"]}]
    for i in range(n):
        left = "192.0.2.1/24" if i == 0 else f"198.18.{i - 1}.2/24"
        right = "198.51.100.1/24" if i == n - 1 else f"198.18.{i}.1/24"
        routes = []
        if i < n - 1:
            routes.append({"dst": "198.51.100.0/24", "via": f"198.18.{i}.2", "dev": "right"})
        if i > 0:
            routes.append({"dst": "192.0.2.0/24", "via": f"198.18.{i - 1}.1", "dev": "left"})
            links.append({"ends": [f"r{i - 1}:right", f"r{i}:left"]})
        nodes[f"r{i}"] = {"role": "router", "interfaces": {"left": {"addresses": [left]}, "right": {"addresses": [right]}},
                          "routes": routes}
    topo = Topology.from_dict({"name": "chain", "nodes": nodes, "links": links})
    for src, dst, last in (("192.0.2.10", "198.51.100.10", "b:eth0"), ("198.51.100.10", "192.0.2.10", "a:eth0")):
        path = expected_path(topo, A(src), A(dst))
        assert path.delivered, path.end_note
        assert len(path.hops) == 2 * n + 2 and path.hops[-1].point == last
