"""The IKE daemon's view: strongSwan's SAs with their SPIs, bytes and packets per CHILD_SA, from
``swanctl --list-sas --raw`` against the node's vici socket (the topology's ``ike_vici``).

The socket is a path, the same from every network namespace: swanctl runs here (or on the
node's host over SSH). A node without ``ike_vici`` has this evidence "unavailable".

Two readers over one ``swanctl`` call: :func:`read`, the trace's snapshot source (counters per
CHILD_SA), and :func:`state`, ``tracer check``'s view of the IKE_SAs and CHILD_SAs. The raw
vici rendering is parsed by :mod:`tracer.swanctl_raw` (shared with the lab); the rest is pure.
"""

from __future__ import annotations

from typing import Any

from tracer.evidence import nodecmd
from tracer.model.checkstate import ChildSa, IkeSa, IkeState, Unavailable
from tracer.model.evidence import Counter, Snapshot
from tracer.model.topology import Node, Topology
from tracer.swanctl_raw import list_sas_events

NAME = "strongswan"
NOT_IN_TOPOLOGY = "how to reach its IKE daemon is not in the topology"


def read(topo: Topology, node: Node) -> Snapshot:
    if not node.ike_vici:
        raise nodecmd.Unavailable("no ike_vici for this node in the topology")
    out = nodecmd.run(topo, node, _list_sas(node.ike_vici), in_netns=False)
    return parse(node.name, list_sas_events(out))


def _list_sas(uri: str) -> list[str]:
    return ["swanctl", "--list-sas", "--raw", "--noblock", "--uri", uri]


def vici_uri(value: str) -> str:
    """A socket path or a URI → a vici URI (``unix:///path``, ``tcp://host:port``)."""
    return value if "://" in value else f"unix://{value}"


def state(node: Node, uri: str | None, topo_source: str = "") -> IkeState | Unavailable:
    """The SAs of ``node``'s daemon at ``uri`` for ``tracer check``."""
    if not uri:
        return Unavailable(NOT_IN_TOPOLOGY)
    try:
        out = nodecmd.output(node, _list_sas(uri), topo_source)
    except nodecmd.Unavailable as e:
        return Unavailable(str(e))
    return IkeState(ike_sas(out.stdout), uri)


def ike_sas(text: str) -> tuple[IkeSa, ...]:
    """The IKE_SAs (with their CHILD_SAs) in the output of ``swanctl --list-sas --raw``."""
    return tuple(_ike(sa) for sa in list_sas_events(text))


def _ike(d: dict[str, Any]) -> IkeSa:
    children = tuple(_child(c) for c in (d.get("child-sas") or {}).values() if isinstance(c, dict))
    initiator = d.get("initiator") == "yes"  # vici says "initiator=yes" only on the initiator's side
    return IkeSa(str(d["name"]), str(d.get("state", "")), d.get("local-host"), d.get("remote-host"), children, initiator)


def _child(d: dict[str, Any]) -> ChildSa:
    return ChildSa(str(d.get("name", "")), str(d.get("state", "")), _spi(d.get("spi-in")), _spi(d.get("spi-out")),
                   str(d.get("protocol", "ESP")), d.get("encap") == "yes", d.get("encr-alg"),
                   tuple(_list(d.get("local-ts"))), tuple(_list(d.get("remote-ts"))))


def _spi(value: Any) -> int | None:
    try:
        return int(str(value), 16) if value else None
    except ValueError:
        return None


def _list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []


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
