"""The capture-point graph: every (node, interface) and how packets may move between them.

A networkx MultiDiGraph whose nodes are capture points ``"node:iface"`` and
whose edges carry ``kind`` (also the edge key): ``wire`` between linked
interfaces, ``forward`` between interfaces of one forwarding node, ``encap``
where cleartext enters an SA and leaves as ESP, ``decap`` the other way.
"""

from __future__ import annotations

from enum import StrEnum

import networkx as nx

from tracer.model.topology import Topology, point_name


class EdgeKind(StrEnum):
    WIRE = "wire"
    FORWARD = "forward"
    ENCAP = "encap"
    DECAP = "decap"


def build_flow_graph(topo: Topology) -> nx.MultiDiGraph:
    g = nx.MultiDiGraph(name=topo.name)
    for node in topo.nodes.values():
        for iface in node.interfaces.values():
            g.add_node(iface.point, node=node.name, iface=iface.name, role=iface.role)
    for link in topo.links:
        for a, b in ((link.a, link.b), (link.b, link.a)):
            g.add_edge(a, b, key=EdgeKind.WIRE, kind=EdgeKind.WIRE, mtu=link.mtu)
    for node in topo.nodes.values():
        # Hosts are not assumed to forward; gateways and routers forward between
        # every pair of their interfaces (which pair is used is the routes' job).
        if node.role == "host":
            continue
        names = list(node.interfaces)
        for a in names:
            for b in names:
                if a != b:
                    g.add_edge(point_name(node.name, a), point_name(node.name, b), key=EdgeKind.FORWARD, kind=EdgeKind.FORWARD)
    for tunnel in topo.tunnels:
        for end in (tunnel.left, tunnel.right):
            node = topo.nodes[end.node]
            wan = [i.name for i in node.interfaces.values() if any(a.ip == end.address for a in i.addresses)]
            clear = [end.interface] if end.interface else [i for i in node.interfaces if i not in wan]
            for w in wan:
                for c in clear:
                    cp, wp = point_name(node.name, c), point_name(node.name, w)
                    g.add_edge(cp, wp, key=EdgeKind.ENCAP, kind=EdgeKind.ENCAP, tunnel=tunnel.name)
                    g.add_edge(wp, cp, key=EdgeKind.DECAP, kind=EdgeKind.DECAP, tunnel=tunnel.name)
    return g
