"""Building the lab's network from its Topology: namespaces, sysctls, veth pairs, addresses, routes.

Everything happens inside the lab's own namespaces: veth ends are created
directly in them under their final names, so nothing ever appears in the root
namespace. The tunnel interface and the routes into it are not built here:
charon creates ``ipsec0`` and routes into it (table 220) once the CHILD_SA is up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tracer import netns
from tracer.errors import EnvironmentProblem, LabError
from tracer.lab import layout
from tracer.model.topology import Node, Topology

# Sysctls for every lab namespace: IPv4 only (the lab uses IPv4 ranges and
# IPv6 link-local chatter would only add capture noise), and no reverse-path
# filter so a fault is never masked by an rp_filter drop we did not ask for.
SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}

TOOLS = (("ip", "iproute2"), ("nft", "nftables"))


def check_tools() -> None:
    for tool, package in TOOLS:
        try:
            netns.ensure_tool(tool, package=package)
        except EnvironmentProblem as err:
            raise LabError(str(err)) from None


def add_namespaces(names: Iterable[str]) -> None:
    names = list(names)
    netns.ip_batch([f"netns add {n}" for n in names])
    for name in names:
        netns.write_sysctls(name, SYSCTLS)


def wire(topo: Topology) -> None:
    """Forwarding, links, addresses and routes of ``topo``, each node in its (existing) namespace."""
    for n in topo.nodes.values():
        if layout.forwards(n):
            netns.write_sysctls(_netns(n), {"net.ipv4.ip_forward": "1"})
    lines = []
    for link in topo.links:
        (a, ai), (b, bi) = layout.veth_ends(link)
        lines.append(f"link add {ai} netns {_netns(topo.nodes[a])} type veth peer name {bi} netns {_netns(topo.nodes[b])}")
    netns.ip_batch(lines)
    for n in topo.nodes.values():
        lines = ["link set lo up"]
        for i in n.interfaces.values():
            if i.name == layout.TUNNEL_IFACE:
                continue  # charon creates it
            lines += [f"addr add {a} dev {i.name}" for a in i.addresses]
            lines.append(f"link set {i.name} up")
        for r in n.routes:
            if not layout.by_charon(r):
                lines.append(f"route add {r.dst} {r.ip_args()}")
        netns.ip_batch(lines, ns=_netns(n))


def routes(ns: str) -> list[str]:
    """IPv4 routes of all tables except local, one ``ip route`` line each."""
    proc = netns.ip(["-4", "-j", "route", "show", "table", "all"], ns=ns, check=False)
    if proc.returncode != 0:
        return []
    out = []
    for r in json.loads(proc.stdout or "[]"):
        if r.get("table") == "local" or r.get("type") in ("local", "broadcast"):
            continue
        parts = [r["dst"]]
        if "gateway" in r:
            parts.append(f"via {r['gateway']}")
        if "dev" in r:
            parts.append(f"dev {r['dev']}")
        if r.get("table") not in (None, "main"):
            parts.append(f"table {r['table']}")
        out.append(" ".join(parts))
    return out


def _netns(n: Node) -> str:
    if not n.netns:
        raise LabError(f"internal error: lab node {n.name} has no namespace")
    return n.netns
