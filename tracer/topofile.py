"""Topology files (TOML): reading them into the Topology model, and writing a Topology back out.

``topology_to_dict`` is the exact inverse of ``Topology.from_dict``: what it
returns parses back into an equal Topology. Optional fields that are unset are
left out, so a written file holds only what was said.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from tracer.errors import TopologyError
from tracer.model.topology import Interface, Link, Node, Route, Topology, Tunnel, TunnelEnd
from tracer.textfile import read_text


def load_topology(path: str | Path) -> Topology:
    p = Path(path)
    try:
        text = read_text(p, "topology file")
    except FileNotFoundError:
        raise TopologyError(f"{p}: topology file not found") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib puts "(at line N, column M)" in the message: keep it, it is the useful part.
        raise TopologyError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:
        raise TopologyError(f"{p}: not a topology (arrays or tables nested too deep)") from None
    return Topology.from_dict(data, source=str(p))


def dump_topology(topo: Topology, header: str = "") -> str:
    """The topology as TOML text; ``header`` (lines without '#') goes first as comments."""
    import tomli_w  # writing only: a replay reads topologies

    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comments + ("\n" if comments else "") + tomli_w.dumps(topology_to_dict(topo))


def save_topology(topo: Topology, path: str | Path, header: str = "") -> None:
    """Write the topology file atomically: a reader never sees half a file."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(dump_topology(topo, header), encoding="utf-8")
    tmp.replace(p)


def topology_to_dict(topo: Topology) -> dict[str, Any]:
    """The dict ``Topology.from_dict`` reads (docs/topology.md); ``source`` is where it is read from, not data."""
    doc: dict[str, Any] = {"name": topo.name}
    if topo.esp_keys is not None:
        doc["esp_keys"] = topo.esp_keys
    doc["nodes"] = {name: _node(n) for name, n in topo.nodes.items()}
    if topo.links:
        doc["links"] = [_link(link) for link in topo.links]
    if topo.tunnels:
        doc["tunnels"] = [_tunnel(t) for t in topo.tunnels]
    return doc


# Node keys that are plain optional values, in the order docs/topology.md shows them.
_NODE_OPTIONAL = ("netns", "capture", "ssh", "ssh_netns", "ssh_key", "ssh_port", "ssh_known_hosts", "ike_vici",
                  "ike_log")


def _node(n: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"role": n.role}
    out.update({key: getattr(n, key) for key in _NODE_OPTIONAL if getattr(n, key) is not None})
    out["interfaces"] = {name: _interface(i) for name, i in n.interfaces.items()}
    if n.routes:
        out["routes"] = [_route(r) for r in n.routes]
    return out


def _interface(i: Interface) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if i.addresses:
        out["addresses"] = [str(a) for a in i.addresses]
    out["role"] = i.role
    return out


def _route(r: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": str(r.dst)}
    if r.via is not None:
        out["via"] = str(r.via)
    out["dev"] = r.dev
    if r.onlink:
        out["onlink"] = True
    return out


def _link(link: Link) -> dict[str, Any]:
    out: dict[str, Any] = {"ends": [link.a, link.b]}
    if link.mtu is not None:
        out["mtu"] = link.mtu
    return out


def _tunnel(t: Tunnel) -> dict[str, Any]:
    keying = {"keying": t.keying} if t.keying != "ike" else {}  # the default stays unsaid, as in hand-written files
    return {"name": t.name, "encapsulation": t.encapsulation, **keying, "left": _tunnel_end(t.left),
            "right": _tunnel_end(t.right)}


def _tunnel_end(e: TunnelEnd) -> dict[str, Any]:
    out: dict[str, Any] = {"node": e.node, "address": str(e.address)}
    if e.interface is not None:
        out["interface"] = e.interface
    out["subnets"] = [str(s) for s in e.subnets]
    if e.spi_in is not None:
        out["spi_in"] = f"0x{e.spi_in:08x}"  # as docs/topology.md writes SPIs
    return out
