"""A node's IPv4 neighbour (ARP) table for ``tracer check`` (``ip -4 -j neigh show`` in its
namespace or on its SSH host): a static entry with a wrong link-layer address sends every frame
for that neighbour to nobody. The parsing (:func:`parse`) is pure."""

from __future__ import annotations

import json
from typing import Any

from tracer.evidence import nodecmd
from tracer.model.checkstate import Neighbour, Unavailable
from tracer.model.topology import Node


def read(node: Node, topo_source: str = "") -> tuple[Neighbour, ...] | Unavailable:
    try:
        out = nodecmd.output(node, ["ip", "-4", "-j", "neigh", "show"], topo_source)
    except nodecmd.Unavailable as e:
        return Unavailable(str(e))
    try:
        return parse(json.loads(out.stdout or "[]"))
    except (ValueError, TypeError, KeyError) as e:
        return Unavailable(f"unexpected 'ip -j neigh' output ({type(e).__name__}: {e})")


def parse(doc: list[dict[str, Any]]) -> tuple[Neighbour, ...]:
    """``[{"dst": "198.18.2.1", "dev": "eth1", "lladdr": "..", "state": ["PERMANENT"]}]`` → entries."""
    return tuple(Neighbour(str(e["dst"]), str(e["dev"]), e.get("lladdr"), tuple(str(x) for x in e.get("state", [])))
                 for e in doc if isinstance(e, dict))
