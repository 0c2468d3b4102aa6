"""The lab's fixed layout: five nodes, four links, one route-based IPsec tunnel.

::

    west ──── west-gw ═══════ router ═══════ east-gw ──── east
    eth0   lan0   wan0 ipsec0   eth0    eth1   wan0 ipsec0  lan0   eth0
    192.0.2.10  .1   198.18.1.1  .1.254  .2.254  198.18.2.1  198.51.100.1  .10

Only documentation/benchmark address ranges (RFC 5737, RFC 2544) are used and
no lab namespace is connected to the root namespace, so the lab can never
leak onto a real network. This module is pure data; ``topology_document``
turns it into the dict that ``topology.toml`` is written from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tracer.errors import BadInput

NS_PREFIX = "trc-"
LAB_NAME_RE = re.compile(r"^[a-z0-9]{1,10}$")
TUNNEL_IFACE = "ipsec0"  # the TUN device charon's kernel-libipsec creates
ROUTE_TABLE = 220  # charon installs its tunnel routes here


@dataclass(frozen=True)
class Iface:
    name: str
    addresses: tuple[str, ...]
    role: str  # lan | wan | tunnel


@dataclass(frozen=True)
class Route:
    dst: str
    dev: str
    via: str | None = None
    by_charon: bool = False  # installed by charon into table 220 once the CHILD_SA is up


@dataclass(frozen=True)
class Node:
    name: str
    role: str  # host | gateway | router
    interfaces: tuple[Iface, ...]
    routes: tuple[Route, ...]

    @property
    def forwards(self) -> bool:
        return self.role in ("gateway", "router")


@dataclass(frozen=True)
class TunnelEnd:
    node: str
    address: str
    interface: str
    subnets: tuple[str, ...]


@dataclass(frozen=True)
class Tunnel:
    name: str
    encapsulation: str
    left: TunnelEnd  # the initiator
    right: TunnelEnd


WEST_LAN = "192.0.2.0/24"
EAST_LAN = "198.51.100.0/24"

NODES: tuple[Node, ...] = (
    Node(
        "west",
        "host",
        (Iface("eth0", ("192.0.2.10/24",), "lan"),),
        (Route("0.0.0.0/0", "eth0", "192.0.2.1"),),
    ),
    Node(
        "west-gw",
        "gateway",
        (
            Iface("lan0", ("192.0.2.1/24",), "lan"),
            Iface("wan0", ("198.18.1.1/24",), "wan"),
            Iface(TUNNEL_IFACE, (), "tunnel"),
        ),
        (
            Route(EAST_LAN, TUNNEL_IFACE, by_charon=True),
            Route("0.0.0.0/0", "wan0", "198.18.1.254"),
        ),
    ),
    Node(
        "router",
        "router",
        (
            Iface("eth0", ("198.18.1.254/24",), "wan"),
            Iface("eth1", ("198.18.2.254/24",), "wan"),
        ),
        (),
    ),
    Node(
        "east-gw",
        "gateway",
        (
            Iface("wan0", ("198.18.2.1/24",), "wan"),
            Iface("lan0", ("198.51.100.1/24",), "lan"),
            Iface(TUNNEL_IFACE, (), "tunnel"),
        ),
        (
            Route(WEST_LAN, TUNNEL_IFACE, by_charon=True),
            Route("0.0.0.0/0", "wan0", "198.18.2.254"),
        ),
    ),
    Node(
        "east",
        "host",
        (Iface("eth0", ("198.51.100.10/24",), "lan"),),
        (Route("0.0.0.0/0", "eth0", "198.51.100.1"),),
    ),
)

# (node, iface) pairs joined by a veth pair.
LINKS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("west", "eth0"), ("west-gw", "lan0")),
    (("west-gw", "wan0"), ("router", "eth0")),
    (("router", "eth1"), ("east-gw", "wan0")),
    (("east-gw", "lan0"), ("east", "eth0")),
)

TUNNEL = Tunnel(
    name="west-east",
    encapsulation="udp",  # kernel-libipsec always sends ESP in UDP 4500
    left=TunnelEnd("west-gw", "198.18.1.1", TUNNEL_IFACE, (WEST_LAN,)),
    right=TunnelEnd("east-gw", "198.18.2.1", TUNNEL_IFACE, (EAST_LAN,)),
)

GATEWAYS: tuple[str, ...] = (TUNNEL.left.node, TUNNEL.right.node)


@dataclass(frozen=True)
class Mgmt:
    """The opt-in management link of ``Lab.up(ssh=True)``: a laptop namespace and one gateway's sshd.

    Not part of the topology: it is how tracer reaches the box, not a path
    probes take. The gateway neither forwards from nor into ``gw_iface``.
    """

    node: str  # the management namespace's node name (trc-<lab>-mgmt)
    iface: str
    address: str
    gw: str  # the node that runs sshd, captured over SSH
    gw_iface: str
    gw_address: str


MGMT = Mgmt("mgmt", "eth0", "203.0.113.10/24", "east-gw", "mgmt0", "203.0.113.2/24")


def node(name: str) -> Node:
    for n in NODES:
        if n.name == name:
            return n
    raise KeyError(name)


def check_lab_name(name: str) -> str:
    """Lab names become namespace names and directory names: keep them tame."""
    if not LAB_NAME_RE.match(name):
        raise BadInput(
            f"lab name '{name}' is not allowed: use 1-10 lowercase letters or digits"
        )
    return name


def ns_prefix(lab: str) -> str:
    """Every namespace of lab ``lab`` starts with this (names contain no '-')."""
    return f"{NS_PREFIX}{lab}-"


def netns_name(lab: str, node_name: str) -> str:
    """``trc-lab-westgw``: the node name without dashes, so the prefix stays unambiguous."""
    return ns_prefix(lab) + node_name.replace("-", "")


ESP_SA_FILE = "esp_sa"  # the lab's CHILD_SA keys, Wireshark esp_sa format, beside topology.toml


def topology_document(lab: str, ssh: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The lab as a topology dict in the format of docs/topology.md.

    ``ssh``: extra keys per node (``capture``, ``ssh``, ``ssh_netns``, ...) for
    nodes captured over SSH; their ``netns`` stays, probes and faults use it.
    """
    nodes: dict[str, Any] = {}
    for n in NODES:
        ifaces: dict[str, Any] = {}
        for i in n.interfaces:
            entry: dict[str, Any] = {}
            if i.addresses:
                entry["addresses"] = list(i.addresses)
            entry["role"] = i.role
            ifaces[i.name] = entry
        routes = []
        for r in n.routes:
            route: dict[str, Any] = {"dst": r.dst}
            if r.via:
                route["via"] = r.via
            route["dev"] = r.dev
            routes.append(route)
        nodes[n.name] = {"role": n.role, "netns": netns_name(lab, n.name), **(ssh or {}).get(n.name, {}),
                         "interfaces": ifaces}
        if routes:
            nodes[n.name]["routes"] = routes

    def end(e: TunnelEnd) -> dict[str, Any]:
        return {
            "node": e.node,
            "address": e.address,
            "interface": e.interface,
            "subnets": list(e.subnets),
        }

    return {
        "name": lab,
        "esp_keys": ESP_SA_FILE,
        "nodes": nodes,
        "links": [{"ends": [f"{a}:{ai}", f"{b}:{bi}"]} for (a, ai), (b, bi) in LINKS],
        "tunnels": [
            {
                "name": TUNNEL.name,
                "encapsulation": TUNNEL.encapsulation,
                "left": end(TUNNEL.left),
                "right": end(TUNNEL.right),
            }
        ],
    }
