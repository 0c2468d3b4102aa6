"""Interface counters and link state: ``ip -j -s -s link`` in the node's namespace.

Per interface: rx/tx packets (context), dropped and errors (growth means discarded
packets), and the operational state (a DOWN link on the located hop is evidence by itself).
"""

from __future__ import annotations

import json
from typing import Any

from tracer.evidence import nodecmd
from tracer.model.evidence import Counter, Snapshot
from tracer.model.topology import Node, Topology

NAME = "links"
_COUNTED = (("packets", False), ("dropped", True), ("errors", True))


def read(topo: Topology, node: Node) -> Snapshot:
    return parse(node.name, json.loads(nodecmd.run(topo, node, ["ip", "-j", "-s", "-s", "link", "show"]) or "[]"))


def parse(node: str, doc: Any) -> Snapshot:
    """A snapshot from the decoded JSON of ``ip -j -s -s link show``."""
    counters: list[Counter] = []
    links: dict[str, str] = {}
    for link in doc:
        name = str(link["ifname"])
        links[name] = str(link.get("operstate", "UNKNOWN"))
        stats = link.get("stats64") or link.get("stats") or {}
        for way in ("rx", "tx"):
            for field, drop in _COUNTED:
                value = (stats.get(way) or {}).get(field)
                if value is not None:
                    counters.append(Counter(f"{name}:{way}_{field}", "link", f"{name} {way}_{field}", int(value),
                                            drop=drop, iface=name))
    return Snapshot(NAME, node, counters=tuple(counters), links=links)
