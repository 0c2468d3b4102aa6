"""What a topology file implies, judged before any packet is sent (pure): ``tracer topology check``.

Loading (:meth:`Topology.from_dict`) already refuses what cannot be a network (unknown keys,
no links, duplicate addresses, gateways off their subnet, ...). What loads can still be a
network that cannot do what it is for; each such fact is a :class:`Lint`:

* ``error`` — a path the routes walk that the flow graph forbids (a host that forwards):
  every verdict over that path would be refused, so the file is invalid;
* ``warning`` — a host that cannot reach another host, or cannot answer it (no route back:
  a verdict would say so, "east has no route back to 192.0.2.10"); a tunnel selector that
  holds no address of the topology; a route via a gateway no node owns (a router beyond
  the file, or a typo);
* ``note`` — an interface with addresses and no link (packets routed out of it leave the
  topology, and a capture of it is a witness only).

The endpoints judged are the hosts (``role = "host"``), or every node when there are fewer
than two hosts; each host by its primary address (the one ``tracer ping NODE`` uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from itertools import permutations
from typing import Any

from tracer.errors import EXIT_BAD_INPUT, EXIT_DELIVERED, TopologyError
from tracer.model.direction import Direction
from tracer.model.path import ExpectedPath, expected_paths
from tracer.model.point import point_name
from tracer.model.topology import Node, Topology

ERROR, WARNING, NOTE = "error", "warning", "note"


@dataclass(frozen=True)
class Lint:
    level: str  # ERROR | WARNING | NOTE
    text: str  # one line

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "text": self.text}


@dataclass(frozen=True)
class PointInfo:
    """One capture point and what the topology says of it."""

    point: str
    addresses: tuple[str, ...]
    peer: str | None  # the other end of its link
    tunnel: str | None  # the tunnel whose device it is

    def describe(self) -> str:
        parts = [", ".join(self.addresses)] if self.addresses else []
        if self.peer:
            parts.append(f"↔ {self.peer}")
        if self.tunnel:
            parts.append(f"tunnel device of {self.tunnel}")
        if not self.peer and not self.tunnel:
            parts.append("no link")
        return "  ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"point": self.point, "addresses": list(self.addresses), "peer": self.peer, "tunnel": self.tunnel}


def capture_points(topo: Topology) -> list[PointInfo]:
    """Every interface of every node, in file order: where tracer captures (and nothing else)."""
    devices = {(e.node, e.interface): t.name for t in topo.tunnels for e in (t.left, t.right) if e.interface}
    return [PointInfo(i.point, tuple(str(a) for a in i.addresses), topo.peer(i.point), devices.get((n.name, i.name)))
            for n in topo.nodes.values() for i in n.interfaces.values()]


def endpoints(topo: Topology) -> list[tuple[Node, IPv4Address]]:
    """The nodes whose traffic the topology is for, with the address they send from."""
    hosts = [n for n in topo.nodes.values() if n.role == "host"]
    out = []
    for n in hosts if len(hosts) >= 2 else list(topo.nodes.values()):
        try:
            out.append(topo.resolve(n.name))
        except TopologyError:
            continue  # a node without an address sends nothing
    return out


def lint(topo: Topology) -> list[Lint]:
    out = _pairs(topo) + _selectors(topo) + _gateways(topo) + _loose_interfaces(topo)
    return list(dict.fromkeys(out))


def _pairs(topo: Topology) -> list[Lint]:
    out = []
    for (a, a_addr), (b, b_addr) in permutations(endpoints(topo), 2):
        try:
            paths = expected_paths(topo, a_addr, b_addr, a)
        except TopologyError as e:
            out.append(Lint(ERROR, f"{a.name} → {b.name}: {_without_source(str(e), topo)}"))
            continue
        req, rep = paths[Direction.REQUEST], paths.get(Direction.REPLY)
        if not req.delivered:
            out.append(Lint(WARNING, f"{a.name} ({a_addr}) cannot reach {b.name} ({b_addr}): {req.end_note}"))
        elif rep is not None and not rep.delivered:
            out.append(Lint(WARNING, _no_way_back(a.name, a_addr, b.name, rep)))
    return out


def _no_way_back(a: str, a_addr: IPv4Address, b: str, rep: ExpectedPath) -> str:
    if rep.end_note == f"{b} has no route to {a_addr}":
        return f"{b} has no route back to {a_addr} ({a}): its replies to {a} go nowhere"
    return f"{b} cannot answer {a}: replies to {a_addr} end where the topology says {rep.end_note}"


def _without_source(msg: str, topo: Topology) -> str:
    return msg.removeprefix(f"{topo.source}: ")


def _selectors(topo: Topology) -> list[Lint]:
    addrs = [a.ip for n in topo.nodes.values() for i in n.interfaces.values() for a in i.addresses]
    out = []
    for t in topo.tunnels:
        for side, end in (("left", t.left), ("right", t.right)):
            for net in end.subnets:
                if not any(a in net for a in addrs):
                    out.append(Lint(WARNING, f"tunnel {t.name}: {side} subnet {net} ({end.node}) holds no address "
                                             "of the topology: nothing here sends or answers through it"))
    return out


def _gateways(topo: Topology) -> list[Lint]:
    out = []
    for n in topo.nodes.values():
        for r in n.routes:
            if r.via is not None and topo.owner(r.via) is None:
                peer = topo.peer(point_name(n.name, r.dev))
                beyond = f"; packets go to {peer}, the other end of {r.dev}'s link" if peer else ""
                out.append(Lint(WARNING, f"{n.name}: route {r.dst} via {r.via}: no node of the topology has "
                                         f"that address{beyond}"))
    return out


def _loose_interfaces(topo: Topology) -> list[Lint]:
    return [Lint(NOTE, f"{p.point} ({', '.join(p.addresses)}) has no link: packets routed out of it leave the "
                       "topology, and a capture of it is only a witness")
            for p in capture_points(topo) if p.peer is None and p.tunnel is None and p.addresses]


def exit_code(lints: list[Lint]) -> int:
    """2 (bad input) when a verdict over this topology would be refused, else 0: warnings are findings."""
    return EXIT_BAD_INPUT if any(x.level == ERROR for x in lints) else EXIT_DELIVERED


__all__ = ["ERROR", "NOTE", "WARNING", "Lint", "PointInfo", "capture_points", "endpoints", "exit_code", "lint"]
