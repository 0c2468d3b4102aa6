"""Listening UDP sockets of a node (``ss -H -ulnp`` in its namespace or on its SSH host):
who listens on the IKE ports. The parsing (:func:`parse`) is pure."""

from __future__ import annotations

import re

from tracer.evidence import noderun
from tracer.model.checkstate import UdpSocket, Unavailable
from tracer.model.topology import Node

_PROC = re.compile(r'users:\(\("([^"]+)",pid=(\d+)')


def read(node: Node, topo_source: str = "") -> tuple[UdpSocket, ...] | Unavailable:
    try:
        out = noderun.run(node, ["ss", "-H", "-u", "-l", "-n", "-p"], topo_source)
    except noderun.Unreadable as e:
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
