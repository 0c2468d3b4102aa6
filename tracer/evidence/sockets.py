"""Listening UDP sockets of a node (``ss -H -ulnp`` in its namespace or on its SSH host):
who listens on the IKE ports. The parsing (:func:`parse`) is pure.

Two readers: :func:`listening`, ``tracer check``'s view (every UDP socket), and :func:`read`,
the trace's snapshot source on tunnel ends (one line per socket on UDP 500 or 4500: none means
no IKE daemon runs in that namespace, which explain cites when IKE probes die there)."""

from __future__ import annotations

import re

from tracer.evidence import nodecmd
from tracer.model.checkstate import UdpSocket, Unavailable
from tracer.model.evidence import Snapshot
from tracer.model.topology import Node, Topology

NAME = "sockets"
IKE_PORTS = (500, 4500)
NOT_A_TUNNEL_END = "not a tunnel end: its IKE sockets are not read"
_PROC = re.compile(r'users:\(\("([^"]+)",pid=(\d+)')


def read(topo: Topology, node: Node) -> Snapshot:
    """The sockets on the IKE ports of a tunnel end, one line each (``udp 0.0.0.0:500 charon pid 7``)."""
    if not any(t.ends_from(node.name) for t in topo.tunnels):
        return Snapshot(NAME, node.name, notes=(NOT_A_TUNNEL_END,))
    socks = parse(nodecmd.run(topo, node, ["ss", "-H", "-u", "-l", "-n", "-p"]))
    return Snapshot(NAME, node.name, lines=tuple(
        f"udp {s.address}:{s.port} {s.process or '?'} pid {s.pid or '?'}" for s in socks if s.port in IKE_PORTS))


def listening(node: Node, topo_source: str = "") -> tuple[UdpSocket, ...] | Unavailable:
    try:
        out = nodecmd.output(node, ["ss", "-H", "-u", "-l", "-n", "-p"], topo_source)
    except nodecmd.Unavailable as e:
        return Unavailable(str(e))
    return parse(out.stdout)


def parse(text: str) -> tuple[UdpSocket, ...]:
    """``UNCONN 0 0 0.0.0.0:500 0.0.0.0:* users:(("charon",pid=13373,fd=13))`` lines → sockets."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        local = fields[3]
        addr, sep, port = local.rpartition(":")
        if not sep or not port.isdigit():
            continue
        addr = addr.strip("[]").split("%", 1)[0]  # [::], 0.0.0.0%lo
        m = _PROC.search(line)
        out.append(UdpSocket(addr, int(port), m.group(1) if m else None, int(m.group(2)) if m else None))
    return tuple(out)
