"""The IKE daemon's view: strongSwan's SAs with their SPIs, bytes and packets per CHILD_SA, from
``swanctl --list-sas --raw`` against the node's vici socket (the topology's ``ike_vici``).

The socket is a path, the same from every network namespace: swanctl runs here (or on the
node's host over SSH). A node without ``ike_vici`` has this evidence "unavailable".
"""

from __future__ import annotations

from typing import Any

from tracer.evidence import nodecmd
from tracer.model.evidence import Counter, Snapshot
from tracer.model.topology import Node, Topology
from tracer.swanctl_raw import list_sas_events

NAME = "strongswan"


def read(topo: Topology, node: Node) -> Snapshot:
    if not node.ike_vici:
        raise nodecmd.Unavailable("no ike_vici for this node in the topology")
    out = nodecmd.run(topo, node, ["swanctl", "--list-sas", "--raw", "--noblock", "--uri", node.ike_vici],
                      in_netns=False)
    return parse(node.name, list_sas_events(out))


def parse(node: str, sas: list[dict[str, Any]]) -> Snapshot:
    """Four counters per installed CHILD_SA (bytes and packets, in and out), keyed by its SPIs."""
    counters: list[Counter] = []
    notes: list[str] = []
    for sa in sas:
        notes.append(f"IKE_SA {sa['name']} {sa.get('state', '?')} {sa.get('local-host')} - {sa.get('remote-host')}")
        for child in (sa.get("child-sas") or {}).values():
            name = str(child.get("name", "?"))
            notes.append(f"CHILD_SA {name} {child.get('state', '?')} in 0x{child.get('spi-in', '')} "
                         f"out 0x{child.get('spi-out', '')}")
            for way in ("in", "out"):
                spi_s = child.get(f"spi-{way}")
                if not spi_s:
                    continue
                spi = int(spi_s, 16)
                for unit in ("bytes", "packets"):
                    value = child.get(f"{unit}-{way}")
                    if value is not None:
                        counters.append(Counter(f"{name} 0x{spi:08x} {unit}-{way}", "sa",
                                                f"CHILD_SA {name} SPI 0x{spi:08x}", int(value), unit=unit,
                                                spi=spi, way=way))
    return Snapshot(NAME, node, counters=tuple(counters), notes=tuple(notes))
