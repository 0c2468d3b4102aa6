"""The capture-point graph: every (node, interface) and how packets may move between them.

Capture points ``"node:iface"`` and edges of a ``kind``: ``wire`` between linked
interfaces, ``forward`` between interfaces of one forwarding node, ``encap`` where
cleartext enters an SA and leaves as ESP, ``decap`` the other way. :func:`flow_edges` is
plain data (what the analysis checks walks against, without importing networkx);
:func:`build_flow_graph` is the same as a networkx MultiDiGraph (the edge key is the kind).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tracer.model.topology import Topology, point_name

if TYPE_CHECKING:
    import networkx as nx

# (from point, to point, kind) -> the edge's attributes beyond its kind
FlowEdges = dict[tuple[str, str, "EdgeKind"], dict[str, object]]


class EdgeKind(StrEnum):
    WIRE = "wire"
    FORWARD = "forward"
    ENCAP = "encap"
    DECAP = "decap"


def flow_edges(topo: Topology) -> FlowEdges:
    edges: FlowEdges = {}
    for link in topo.links:
        for a, b in ((link.a, link.b), (link.b, link.a)):
            edges[a, b, EdgeKind.WIRE] = {"mtu": link.mtu}
    for node in topo.nodes.values():
        # Hosts are not assumed to forward; gateways and routers forward between
        # every pair of their interfaces (which pair is used is the routes' job).
        if node.role == "host":
            continue
        names = list(node.interfaces)
        for a in names:
            for b in names:
                if a != b:
                    edges[point_name(node.name, a), point_name(node.name, b), EdgeKind.FORWARD] = {}
    for tunnel in topo.tunnels:
        for end in (tunnel.left, tunnel.right):
            node = topo.nodes[end.node]
            wan = [i.name for i in node.interfaces.values() if any(a.ip == end.address for a in i.addresses)]
            clear = [end.interface] if end.interface else [i for i in node.interfaces if i not in wan]
            for w in wan:
                for c in clear:
                    cp, wp = point_name(node.name, c), point_name(node.name, w)
                    edges[cp, wp, EdgeKind.ENCAP] = {"tunnel": tunnel.name}
                    edges[wp, cp, EdgeKind.DECAP] = {"tunnel": tunnel.name}
    return edges


def build_flow_graph(topo: Topology) -> nx.MultiDiGraph:
    import networkx as nx  # only for the plots and notebooks; the analysis uses flow_edges

    g = nx.MultiDiGraph(name=topo.name)
    for node in topo.nodes.values():
        for iface in node.interfaces.values():
            g.add_node(iface.point, node=node.name, iface=iface.name, role=iface.role)
    for (a, b, kind), attrs in flow_edges(topo).items():
        g.add_edge(a, b, key=kind, kind=kind, **attrs)
    return g
