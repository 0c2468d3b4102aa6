"""The lab's fixed layout, as the model's own Topology: five nodes, four links, one route-based IPsec tunnel.

::

    west ──── west-gw ═══════ router ═══════ east-gw ──── east
    eth0   lan0   wan0 ipsec0   eth0    eth1   wan0 ipsec0  lan0   eth0
    192.0.2.10  .1   198.18.1.1  .1.254  .2.254  198.18.2.1  198.51.100.1  .10

Only documentation/benchmark address ranges (RFC 5737, RFC 2544) are used and
no lab namespace is connected to the root namespace, so the lab can never
leak onto a real network. This module is pure data plus the naming rules of
lab namespaces; ``topology(lab)`` is what ``topology.toml`` is written from.

Facts of the lab the model does not need stay here as plain constants: the
tunnel interface charon creates and the table it routes into.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from tracer.errors import BadInput
from tracer.model.point import split_point
from tracer.model.topology import Interface, Link, Node, Route, Topology, Tunnel, TunnelEnd

NS_PREFIX = "trc-"
LAB_NAME_RE = re.compile(r"^[a-z0-9]{1,10}$")
TUNNEL_IFACE = "ipsec0"  # the TUN device charon's kernel-libipsec creates
ROUTE_TABLE = 220  # charon installs its tunnel routes (those via TUNNEL_IFACE) here
ESP_SA_FILE = "esp_sa"  # the lab's CHILD_SA keys, Wireshark esp_sa format, beside topology.toml

WEST_LAN = IPv4Network("192.0.2.0/24")
EAST_LAN = IPv4Network("198.51.100.0/24")
DEFAULT = IPv4Network("0.0.0.0/0")


def _node(name: str, role: str, ifaces: tuple[tuple[str, str, str | None], ...], *routes: Route) -> Node:
    """A node from (interface, role, address/prefix or None) rows, in the order they are listed."""
    interfaces = {
        i: Interface(name, i, (IPv4Interface(addr),) if addr else (), irole) for i, irole, addr in ifaces
    }
    return Node(name, role, interfaces, routes)


def _via(dst: IPv4Network, dev: str, gateway: str) -> Route:
    return Route(dst, dev, IPv4Address(gateway))


_NODES = (
    _node("west", "host", (("eth0", "lan", "192.0.2.10/24"),), _via(DEFAULT, "eth0", "192.0.2.1")),
    _node(
        "west-gw", "gateway",
        (("lan0", "lan", "192.0.2.1/24"), ("wan0", "wan", "198.18.1.1/24"), (TUNNEL_IFACE, "tunnel", None)),
        Route(EAST_LAN, TUNNEL_IFACE),
        _via(DEFAULT, "wan0", "198.18.1.254"),
    ),
    _node("router", "router", (("eth0", "wan", "198.18.1.254/24"), ("eth1", "wan", "198.18.2.254/24"))),
    _node(
        "east-gw", "gateway",
        (("wan0", "wan", "198.18.2.1/24"), ("lan0", "lan", "198.51.100.1/24"), (TUNNEL_IFACE, "tunnel", None)),
        Route(WEST_LAN, TUNNEL_IFACE),
        _via(DEFAULT, "wan0", "198.18.2.254"),
    ),
    _node("east", "host", (("eth0", "lan", "198.51.100.10/24"),), _via(DEFAULT, "eth0", "198.51.100.1")),
)

# Nodes without a namespace: ``topology(lab)`` names each lab's.
NODES: dict[str, Node] = {n.name: n for n in _NODES}

# Each link is one veth pair.
LINKS: tuple[Link, ...] = (
    Link("west:eth0", "west-gw:lan0"),
    Link("west-gw:wan0", "router:eth0"),
    Link("router:eth1", "east-gw:wan0"),
    Link("east-gw:lan0", "east:eth0"),
)

TUNNEL = Tunnel(
    name="west-east",
    left=TunnelEnd("west-gw", IPv4Address("198.18.1.1"), (WEST_LAN,), TUNNEL_IFACE),  # the initiator
    right=TunnelEnd("east-gw", IPv4Address("198.18.2.1"), (EAST_LAN,), TUNNEL_IFACE),
    encapsulation="udp",  # kernel-libipsec always sends ESP in UDP 4500
)

GATEWAYS: tuple[str, ...] = (TUNNEL.left.node, TUNNEL.right.node)


def topology(lab: str, node_fields: Mapping[str, Mapping[str, Any]] | None = None) -> Topology:
    """Lab ``lab`` as a Topology, every node in its namespace.

    ``node_fields``: extra Node fields per node (``capture``, ``ssh``, ...) for
    nodes captured over SSH; their ``netns`` stays, probes and faults use it.
    """
    extra = node_fields or {}
    nodes = {
        name: replace(n, netns=netns_name(lab, name), **extra.get(name, {})) for name, n in NODES.items()
    }
    return Topology(lab, nodes, LINKS, (TUNNEL,), source=f"lab {lab}", esp_keys=ESP_SA_FILE)


def node(name: str) -> Node:
    return NODES[name]  # KeyError for a node the lab does not have


def veth_ends(link: Link) -> tuple[tuple[str, str], tuple[str, str]]:
    """((node, iface), (node, iface)) of a link."""
    return split_point(link.a), split_point(link.b)


def by_charon(route: Route) -> bool:
    """Routes into the tunnel are charon's: it installs them in table 220 once the CHILD_SA is up."""
    return route.dev == TUNNEL_IFACE


def forwards(n: Node) -> bool:
    return n.role in ("gateway", "router")


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
