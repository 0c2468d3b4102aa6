"""Expected path of one packet: longest-prefix route lookup node by node.

The path is what the topology says *should* happen, computed hop by hop the
way the kernel would: at each node, local delivery, else tunnel selectors
(an SA takes precedence over the main table, as strongSwan's table 220 and
XFRM policies do), else the longest-prefix route; then across the link to
the peer interface. Request and reply paths are computed separately, so
asymmetric routing comes out as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

import networkx as nx

from tracer.errors import TopologyError
from tracer.model.flowgraph import EdgeKind
from tracer.model.topology import Node, Topology, Tunnel, TunnelEnd, point_name

MAX_HOPS = 64


@dataclass(frozen=True)
class Esp:
    """The ESP form of a packet on a hop: which tunnel carries it, in which direction."""

    tunnel: str
    src: IPv4Address  # outer addresses
    dst: IPv4Address
    spi: int | None  # the receiving end's SPI when the topology knows it
    udp: bool  # ESP in UDP 4500


@dataclass(frozen=True)
class Hop:
    point: str
    node: str
    esp: Esp | None = None  # None: the packet is in the clear here

    @property
    def iface(self) -> str:
        return self.point.rpartition(":")[2]


@dataclass(frozen=True)
class ExpectedPath:
    src: IPv4Address
    dst: IPv4Address
    hops: tuple[Hop, ...]
    edges: tuple[EdgeKind, ...]  # edges[i] joins hops[i] and hops[i+1]
    delivered: bool  # False: the topology itself says the packet cannot arrive
    end_note: str  # why the path ends where it ends

    def index(self, point: str) -> int:
        return next((i for i, h in enumerate(self.hops) if h.point == point), -1)

    def describe_edge(self, i: int) -> str:
        """Human phrase for the edge between hops i and i+1."""
        a, b = self.hops[i], self.hops[i + 1]
        kind = self.edges[i]
        if kind == EdgeKind.WIRE:
            return f"on the wire {a.point} → {b.point}"
        extra = ""
        if kind in (EdgeKind.ENCAP, EdgeKind.DECAP):
            esp = b.esp if kind == EdgeKind.ENCAP else a.esp
            if esp is not None:
                extra = f", tunnel {esp.tunnel}"
        return f"inside {a.node} between {a.iface} and {b.iface} ({kind.value}{extra})"


def expected_path(topo: Topology, src: IPv4Address, dst: IPv4Address, origin: Node | None = None) -> ExpectedPath:
    """Path of a packet from ``src`` to ``dst`` starting at ``origin`` (default: the owner of src)."""
    node = origin or topo.owner(src)
    if node is None:
        raise TopologyError(f"{topo.source}: no node owns source address {src}")
    hops: list[Hop] = []
    edges: list[EdgeKind] = []
    esp: Esp | None = None
    ingress: str | None = None  # interface the packet arrived on at `node`
    pending: EdgeKind | None = None  # the kind of the next in-node edge, when not forward
    seen: set[tuple[str, str | None, bool]] = set()

    def add(point: str, nodename: str, kind: EdgeKind | None, esp_form: Esp | None) -> None:
        if hops and hops[-1].point == point:
            return  # hairpin: the same capture point sees it again
        if hops and kind is not None:
            edges.append(kind)
        hops.append(Hop(point, nodename, esp_form))

    for _ in range(MAX_HOPS):
        state = (node.name, ingress, esp is not None)
        if state in seen:
            return ExpectedPath(src, dst, tuple(hops), tuple(edges), False, f"routing loop at {node.name}")
        seen.add(state)
        pkt_dst = esp.dst if esp else dst
        if node.owns(pkt_dst):
            if esp is None:
                return ExpectedPath(src, dst, tuple(hops), tuple(edges), True, f"delivered to {node.name}")
            # ESP for this gateway: decapsulate.
            ends = topo_tunnel_end(topo, esp.tunnel, node.name)
            esp = None
            if ends.interface:
                add(point_name(node.name, ends.interface), node.name, EdgeKind.DECAP, None)
                ingress = ends.interface
            else:
                pending = EdgeKind.DECAP
            seen.clear()
            continue
        inner_tunnel = _tunnel_for(topo, node, src, dst) if esp is None else None
        if inner_tunnel is not None:
            local, remote = inner_tunnel[1], inner_tunnel[2]
            tunnel = inner_tunnel[0]
            if local.interface:
                add(point_name(node.name, local.interface), node.name, pending or EdgeKind.FORWARD, None)
                pending = EdgeKind.ENCAP
            else:
                pending = EdgeKind.ENCAP
            esp = Esp(tunnel.name, local.address, remote.address, remote.spi_in, tunnel.encapsulation == "udp")
            pkt_dst = esp.dst
        route = node.lookup(pkt_dst)
        if route is None:
            return ExpectedPath(src, dst, tuple(hops), tuple(edges), False, f"{node.name} has no route to {pkt_dst}")
        egress = point_name(node.name, route.dev)
        if not hops:
            add(egress, node.name, None, esp)
        else:
            add(egress, node.name, pending or EdgeKind.FORWARD, esp)
        pending = None
        peer = topo.peer(egress)
        if peer is None:
            return ExpectedPath(src, dst, tuple(hops), tuple(edges), False, f"{egress} has no link in the topology")
        peer_node = topo.nodes[peer.rpartition(":")[0]]
        add(peer, peer_node.name, EdgeKind.WIRE, esp)
        node, ingress = peer_node, peer.rpartition(":")[2]
    return ExpectedPath(src, dst, tuple(hops), tuple(edges), False, f"more than {MAX_HOPS} hops")


def _tunnel_for(topo: Topology, node: Node, src: IPv4Address, dst: IPv4Address) -> tuple[Tunnel, TunnelEnd, TunnelEnd] | None:
    for tunnel in topo.tunnels:
        ends = tunnel.ends_from(node.name)
        if ends and ends[0].covers(src) and ends[1].covers(dst):
            return tunnel, ends[0], ends[1]
    return None


def topo_tunnel_end(topo: Topology, name: str, node: str) -> TunnelEnd:
    tunnel = next(t for t in topo.tunnels if t.name == name)
    ends = tunnel.ends_from(node)
    if ends is None:
        raise TopologyError(f"{topo.source}: ESP of tunnel {name} reaches {node}, which is not one of its ends")
    return ends[0]


def check_walk(path: ExpectedPath, graph: nx.MultiDiGraph, source: str) -> None:
    """Every step of the route walk must be an edge of the capture-point flow graph with the
    same kind: both are views of one topology, and a step the graph lacks means the topology
    contradicts itself (a host that forwards, a tunnel end without its interface, ...)."""
    for i, kind in enumerate(path.edges):
        a, b = path.hops[i].point, path.hops[i + 1].point
        if not graph.has_edge(a, b, key=kind):
            hint = " (a host that forwards? give it role = \"router\")" if kind == EdgeKind.FORWARD else ""
            raise TopologyError(f"{source}: the routes send packets {a} → {b} ({kind.value}), "
                                f"which the topology's flow graph does not allow{hint}")
