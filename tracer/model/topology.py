"""Topology: nodes, interfaces, links, routes and IPsec tunnels (pure data).

Built from a plain dict (what ``tomllib`` returns); every error names the key
path so the user can find it in the file. See docs/topology.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_interface, ip_network
from typing import Any

from tracer.errors import TopologyError
from tracer.model.point import point_name, split_point

# Names become file names, command arguments and namespace paths: one safe set, checked once here.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # nodes, tunnels, namespaces
IFACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,14}")  # Linux interface names: at most 15 bytes
SSH_TARGET_RE = re.compile(r"[A-Za-z0-9_.@\[\]:%-]{1,255}")  # user@host, an ssh_config alias, [v6]
NODE_ROLES = ("host", "gateway", "router")
CAPTURE_BACKENDS = ("local", "ssh")  # local: tcpdump in the node's netns (or here); ssh: tcpdump over SSH
IFACE_ROLES = ("lan", "wan", "tunnel")
ENCAPSULATIONS = ("udp", "esp")
KEYINGS = ("ike", "manual")
SPI_RANGE = (1, 0xFFFFFFFF)  # RFC 4303: 0 is never on the wire (1-255 are reserved, yet manual keying uses them)

# Every key each table of a topology file may hold (docs/topology.md): anything else is a typo to report.
TOP_KEYS = ("name", "esp_keys", "nodes", "links", "tunnels")
NODE_KEYS = ("role", "netns", "capture", "ssh", "ssh_netns", "ssh_key", "ssh_port", "ssh_known_hosts", "ike_vici",
             "ike_log", "interfaces", "routes")
IFACE_KEYS = ("addresses", "role")
ROUTE_KEYS = ("dst", "via", "dev", "onlink")
LINK_KEYS = ("ends", "mtu")
TUNNEL_KEYS = ("name", "encapsulation", "keying", "left", "right")
TUNNEL_END_KEYS = ("node", "address", "interface", "subnets", "spi_in")
# A key written one table too high or too low: where it belongs, for the error's hint.
_BELONGS = {**{k: "nodes.NODE.interfaces.IFACE" for k in IFACE_KEYS if k != "role"},
            **{k: "nodes.NODE.routes[N]" for k in ROUTE_KEYS}, "ends": "links[N]",
            **{k: "tunnels[N].left / right" for k in ("address", "subnets", "spi_in", "interface")}}


@dataclass(frozen=True)
class Interface:
    """A node's network interface and its addresses."""

    node: str
    name: str
    addresses: tuple[IPv4Interface, ...] = ()
    role: str = "lan"

    @property
    def point(self) -> str:
        return point_name(self.node, self.name)


@dataclass(frozen=True)
class Route:
    """A static route of a node: what ``ip route`` would hold."""

    dst: IPv4Network
    dev: str
    via: IPv4Address | None = None
    onlink: bool = False  # the gateway is on the wire of ``dev`` though on no subnet of it (ip route ... onlink)

    def ip_args(self) -> str:
        """What ``ip route add`` takes after the prefix: "via 192.0.2.1 dev eth0 [onlink]"."""
        via = f"via {self.via} " if self.via is not None else ""
        return f"{via}dev {self.dev}" + (" onlink" if self.onlink else "")


@dataclass(frozen=True)
class Node:
    """A host, gateway or router: its interfaces, routes and how to capture on it."""

    name: str
    role: str
    interfaces: dict[str, Interface]
    routes: tuple[Route, ...] = ()
    netns: str | None = None
    ssh: str | None = None  # "user@host" (or a Host alias of ~/.ssh/config) to capture on over SSH
    ssh_netns: str | None = None  # local netns the ssh client runs in (None: this one)
    ssh_key: str | None = None  # identity file; relative paths are relative to the topology file
    ssh_port: int | None = None
    ssh_known_hosts: str | None = None  # known_hosts file to check the host key against
    capture: str | None = None  # "local" | "ssh"; None: ssh if the node has ssh and no netns
    ike_vici: str | None = None  # the IKE daemon's vici socket ("unix:///run/charon.vici"): its SAs as evidence
    ike_log: str | None = None  # the IKE daemon's log file: its lines during a trace as evidence

    @property
    def capture_backend(self) -> str:
        """How this node's points are captured: explicit ``capture``, else by what the node has."""
        if self.capture:
            return self.capture
        return "ssh" if self.ssh and not self.netns else "local"

    def owns(self, addr: IPv4Address) -> bool:
        return any(a.ip == addr for i in self.interfaces.values() for a in i.addresses)

    def lookup(self, dst: IPv4Address) -> Route | None:
        """Longest-prefix match over explicit and connected routes."""
        candidates = list(self.routes) + [
            Route(a.network, i.name) for i in self.interfaces.values() for a in i.addresses
        ]
        matching = [r for r in candidates if dst in r.dst]
        if not matching:
            return None
        # Longest prefix wins; among equals an explicit route beats a connected one
        # (explicit routes come first in the list and max() keeps the first maximum).
        return max(matching, key=lambda r: r.dst.prefixlen)


@dataclass(frozen=True)
class Link:
    """A wire between two capture points."""

    a: str  # capture point "node:iface"
    b: str
    mtu: int | None = None


@dataclass(frozen=True)
class TunnelEnd:
    """One end of an IPsec tunnel: its node, outer address and protected subnets."""

    node: str
    address: IPv4Address
    subnets: tuple[IPv4Network, ...]
    interface: str | None = None  # None: policy-based
    spi_in: int | None = None

    def covers(self, addr: IPv4Address) -> bool:
        return any(addr in s for s in self.subnets)


@dataclass(frozen=True)
class Tunnel:
    """An IPsec tunnel between two nodes."""

    name: str
    left: TunnelEnd
    right: TunnelEnd
    encapsulation: str = "udp"
    keying: str = "ike"  # "ike": an IKE daemon negotiates its SAs; "manual": SAs and policies set by hand

    def ends_from(self, node: str) -> tuple[TunnelEnd, TunnelEnd] | None:
        """(local, remote) ends as seen from ``node``; None if it is not an end."""
        if self.left.node == node:
            return self.left, self.right
        if self.right.node == node:
            return self.right, self.left
        return None


@dataclass(frozen=True)
class Topology:
    """The whole topology file: nodes, links and tunnels."""

    name: str
    nodes: dict[str, Node]
    links: tuple[Link, ...] = ()
    tunnels: tuple[Tunnel, ...] = ()
    source: str = "<topology>"
    esp_keys: str | None = None  # SA file (Wireshark esp_sa format), relative to the topology file
    _peers: dict[str, str] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for link in self.links:
            self._peers[link.a] = link.b
            self._peers[link.b] = link.a

    def peer(self, point: str) -> str | None:
        """The interface at the other end of the link from ``point``."""
        return self._peers.get(point)

    def owner(self, addr: IPv4Address) -> Node | None:
        return next((n for n in self.nodes.values() if n.owns(addr)), None)

    def interface(self, point: str) -> Interface | None:
        node, iface = split_point(point)
        n = self.nodes.get(node)
        return n.interfaces.get(iface) if n else None

    def points(self) -> list[str]:
        return [i.point for n in self.nodes.values() for i in n.interfaces.values()]

    def resolve(self, what: str) -> tuple[Node, IPv4Address]:
        """A node name or an address → (node, address). Node names use the
        address of the interface its default route leaves by (like ping)."""
        if what in self.nodes:
            node = self.nodes[what]
            return node, _primary_address(node, self.source)
        try:
            addr = IPv4Address(what)
        except ValueError:
            raise TopologyError(
                f"{self.source}: '{_shown(what)}' is neither a node ({', '.join(self.nodes)}) nor an IPv4 address"
            ) from None
        node = self.owner(addr)
        if node is None:
            raise TopologyError(f"{self.source}: no node owns address {addr}")
        return node, addr

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<topology>") -> Topology:
        return _Parser(source).topology(data)


def _primary_address(node: Node, source: str) -> IPv4Address:
    default = node.lookup(IPv4Address("0.0.0.0"))
    order = [default.dev] if default else []
    order += [i for i in node.interfaces if i not in order]
    for name in order:
        addrs = node.interfaces[name].addresses
        if addrs:
            return addrs[0].ip
    raise TopologyError(f"{source}: node '{node.name}' has no address")


class _Parser:
    """Turns the TOML dict into a Topology, with key-path error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, msg: str) -> TopologyError:
        return TopologyError(f"{self.source}: {path}: {msg}")

    def table(self, value: Any, path: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """``value`` as a table; with ``keys``, any other key is an error with a did-you-mean."""
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a table, got {type(value).__name__}")
        for key in value if keys is not None else ():
            if key not in keys:
                raise self.fail(_join(path, _shown(key)), _unknown_key(key, keys, path))
        return value

    def integer(self, value: Any, path: str, low: int, high: int, hex_strings: bool = False) -> int:
        """An integer from ``low`` to ``high``; never a boolean or a float (TOML has both)."""
        what = f"an integer from {low} to {high}" + (" (or a string like \"0x1234abcd\")" if hex_strings else "")
        if hex_strings and isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise self.fail(path, f"'{_shown(value)}' is not {what}") from None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"expected {what}, got {_shown(repr(value))}")
        return value

    def array(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected an array, got {type(value).__name__}")
        return value

    def string(self, d: dict[str, Any], key: str, path: str, choices: tuple[str, ...] = (), default: str | None = None) -> str:
        value = d.get(key, default)
        if value is None:
            raise self.fail(f"{path}.{key}", "missing (required)")
        if not isinstance(value, str):
            raise self.fail(f"{path}.{key}", f"expected a string, got {type(value).__name__}")
        if choices and value not in choices:
            raise self.fail(f"{path}.{key}", f"'{_shown(value)}' is not one of {', '.join(choices)}")
        return value

    def convert(self, fn: Any, value: Any, path: str, what: str) -> Any:
        if not isinstance(value, str):  # ipaddress takes integers too: 5 would be 0.0.0.5
            raise self.fail(path, f"expected a string (a {what}), got {type(value).__name__}")
        try:
            return fn(value)
        except (ValueError, TypeError):
            raise self.fail(path, f"'{_shown(str(value))}' is not a valid {what}") from None

    def topology(self, data: dict[str, Any]) -> Topology:
        data = self.table(data, "", TOP_KEYS)
        esp_keys = data.get("esp_keys")
        if esp_keys is not None and (not isinstance(esp_keys, str) or not esp_keys):
            raise self.fail("esp_keys", "expected the path of an SA file (Wireshark esp_sa format)")
        nodes_raw = self.table(data.get("nodes", {}), "nodes")
        if not nodes_raw:
            raise self.fail("nodes", "no nodes defined")
        nodes = {name: self.node(name, raw) for name, raw in nodes_raw.items()}
        links = tuple(self.link(i, raw, nodes) for i, raw in enumerate(self.array(data.get("links", []), "links")))
        tunnels = tuple(
            self.tunnel(i, raw, nodes) for i, raw in enumerate(self.array(data.get("tunnels", []), "tunnels"))
        )
        name = self.string(data, "name", "", default="topology")
        if _CONTROL.search(name):
            raise self.fail("name", "control characters are not allowed")
        self.whole(nodes, links, tunnels)
        return Topology(name, nodes, links, tunnels, self.source, esp_keys)

    def whole(self, nodes: dict[str, Node], links: tuple[Link, ...], tunnels: tuple[Tunnel, ...]) -> None:
        """Rules across tables: links, addresses and gateways that tie the parts together."""
        wired: dict[str, int] = {}
        for k, link in enumerate(links):
            for end in (link.a, link.b):
                if end in wired:
                    raise self.fail(f"links[{k}].ends", f"{end} is already an end of links[{wired[end]}] "
                                                        "(an interface has one link)")
                wired[end] = k
        owners: dict[IPv4Address, str] = {}
        for node in nodes.values():
            for iface in node.interfaces.values():
                for a in iface.addresses:
                    here = f"{node.name}:{iface.name}"
                    if a.ip in owners:
                        raise self.fail(f"nodes.{node.name}.interfaces.{iface.name}.addresses",
                                        f"{a.ip} is also an address of {owners[a.ip]} (duplicate address)")
                    owners[a.ip] = here
        for node in nodes.values():
            for k, r in enumerate(node.routes):
                if r.via is not None:
                    self.gateway(node, k, r)
        names: set[str] = set()
        for k, t in enumerate(tunnels):
            if t.name in names:
                raise self.fail(f"tunnels[{k}].name", f"'{t.name}' names another tunnel too")
            names.add(t.name)
            if t.left.node == t.right.node:
                raise self.fail(f"tunnels[{k}].right.node", f"both ends are on '{t.left.node}'")
        if not links:
            raise self.fail("links", "no links: without them no packet can leave a node "
                                     "(add [[links]] with ends = [\"node:iface\", \"node:iface\"])")

    def gateway(self, node: Node, k: int, r: Route) -> None:
        """A route's ``via`` must be reachable on the route's device, as the kernel demands ("Nexthop has
        invalid gateway"): on a subnet of ``dev``, or covered by a route straight out of ``dev`` (a host route
        to a cloud's gateway), or declared ``onlink``. A gateway no node owns is ``topology check``'s warning."""
        path = f"nodes.{node.name}.routes[{k}].via"
        assert r.via is not None
        if node.owns(r.via):
            raise self.fail(path, f"{r.via} is an address of '{node.name}' itself")
        if r.onlink:
            return
        nets = [a.network for a in node.interfaces[r.dev].addresses]
        direct = [d.dst for d in node.routes if d.dev == r.dev and d.via is None]
        if nets and not any(r.via in n for n in nets + direct):
            raise self.fail(path, f"{r.via} is not on a subnet of {r.dev} ({', '.join(map(str, nets))}): "
                                  "the gateway points to nothing (write onlink = true if it is on that wire)")

    def name(self, value: str, path: str, pattern: re.Pattern[str] = NAME_RE, what: str = "name") -> str:
        if not pattern.fullmatch(value) or value in (".", ".."):
            shown = value.encode("unicode_escape").decode()[:70]
            longest = int(pattern.pattern.rsplit(",", 1)[1].rstrip("}")) + 1
            extra = ", '@'" if "@" in pattern.pattern else ""
            raise self.fail(path, f"'{shown}' is not a valid {what}: 1-{longest} letters, digits, '_', '.', '-'{extra}, "
                            "starting with a letter or digit")
        return value

    def node(self, name: str, raw: Any) -> Node:
        path = f"nodes.{self.name(name, 'nodes', what='node name')}"
        raw = self.table(raw, path, NODE_KEYS)
        role = self.string(raw, "role", path, NODE_ROLES, default="host")
        ifaces_raw = self.table(raw.get("interfaces", {}), f"{path}.interfaces")
        if not ifaces_raw:
            raise self.fail(f"{path}.interfaces", "a node needs at least one interface")
        ifaces: dict[str, Interface] = {}
        for iname, iraw in ifaces_raw.items():
            ipath = f"{path}.interfaces.{self.name(iname, f'{path}.interfaces', IFACE_RE, 'interface name')}"
            iraw = self.table(iraw, ipath, IFACE_KEYS)
            addrs = tuple(
                self.convert(ip_interface, a, f"{ipath}.addresses[{k}]", "address/prefix (like 192.0.2.1/24)")
                for k, a in enumerate(self.array(iraw.get("addresses", []), f"{ipath}.addresses"))
            )
            if any(a.version != 4 for a in addrs):
                raise self.fail(f"{ipath}.addresses", "only IPv4 is supported for now")
            irole = self.string(iraw, "role", ipath, IFACE_ROLES, default="lan")
            ifaces[iname] = Interface(name, iname, addrs, irole)
        routes = []
        for k, rraw in enumerate(self.array(raw.get("routes", []), f"{path}.routes")):
            rpath = f"{path}.routes[{k}]"
            rraw = self.table(rraw, rpath, ROUTE_KEYS)
            dst_s = self.string(rraw, "dst", rpath)
            dst = ip_network("0.0.0.0/0") if dst_s == "default" else self.convert(ip_network, dst_s, f"{rpath}.dst", "prefix")
            if dst.version != 4:
                raise self.fail(f"{rpath}.dst", "only IPv4 is supported for now")
            dev = self.string(rraw, "dev", rpath)
            if dev not in ifaces:
                raise self.fail(f"{rpath}.dev", f"node '{name}' has no interface '{_shown(dev)}' (has {', '.join(ifaces)})")
            via = self.convert(IPv4Address, rraw["via"], f"{rpath}.via", "IPv4 address") if "via" in rraw else None
            onlink = rraw.get("onlink", False)
            if not isinstance(onlink, bool):
                raise self.fail(f"{rpath}.onlink", f"expected true or false, got {_shown(repr(onlink))}")
            if onlink and via is None:
                raise self.fail(f"{rpath}.onlink", "onlink is about a gateway: the route has no via")
            routes.append(Route(dst, dev, via, onlink))
        strings = {k: raw.get(k) for k in ("netns", "ssh", "ssh_netns", "ssh_key", "ssh_known_hosts", "ike_vici",
                                           "ike_log")}
        for key, val in strings.items():
            if val is not None and (not isinstance(val, str) or not val):
                raise self.fail(f"{path}.{key}", "expected a non-empty string")
            if val is not None and _CONTROL.search(val):
                raise self.fail(f"{path}.{key}", "control characters are not allowed")
        for key in ("netns", "ssh_netns"):
            if strings[key] is not None:
                self.name(strings[key], f"{path}.{key}", what="namespace name")
        if strings["ssh"] is not None and (strings["ssh"].startswith("-") or not SSH_TARGET_RE.fullmatch(strings["ssh"])):
            raise self.fail(f"{path}.ssh", "expected user@host or a Host alias (no spaces, not starting with '-')")
        port = raw.get("ssh_port")
        if port is not None:
            port = self.integer(port, f"{path}.ssh_port", 1, 65535)
        capture = self.string(raw, "capture", path, CAPTURE_BACKENDS) if "capture" in raw else None
        if capture == "ssh" and not strings["ssh"]:
            raise self.fail(f"{path}.capture", "'ssh' needs the node's ssh key (like ssh = \"root@192.0.2.50\")")
        return Node(name, role, ifaces, tuple(routes), strings["netns"], strings["ssh"], strings["ssh_netns"],
                    strings["ssh_key"], port, strings["ssh_known_hosts"], capture, strings["ike_vici"],
                    strings["ike_log"])

    def point(self, value: Any, path: str, nodes: dict[str, Node]) -> str:
        if not isinstance(value, str) or ":" not in value:
            raise self.fail(path, f"expected 'node:iface', got {value!r}")
        node, iface = split_point(value)
        if node not in nodes:
            raise self.fail(path, f"unknown node '{_shown(node)}'")
        if iface not in nodes[node].interfaces:
            raise self.fail(path, f"node '{node}' has no interface '{_shown(iface)}' (has {', '.join(nodes[node].interfaces)})")
        return value

    def link(self, k: int, raw: Any, nodes: dict[str, Node]) -> Link:
        path = f"links[{k}]"
        raw = self.table(raw, path, LINK_KEYS)
        ends = self.array(raw.get("ends"), f"{path}.ends") if "ends" in raw else None
        if ends is None or len(ends) != 2:
            raise self.fail(f"{path}.ends", "expected two capture points, like [\"a:eth0\", \"b:eth0\"]")
        a = self.point(ends[0], f"{path}.ends[0]", nodes)
        b = self.point(ends[1], f"{path}.ends[1]", nodes)
        if a == b:
            raise self.fail(f"{path}.ends", f"both ends are {a} (a link joins two interfaces)")
        mtu = raw.get("mtu")
        if mtu is not None:
            mtu = self.integer(mtu, f"{path}.mtu", 68, 65535)
        return Link(a, b, mtu)

    def tunnel(self, k: int, raw: Any, nodes: dict[str, Node]) -> Tunnel:
        path = f"tunnels[{k}]"
        raw = self.table(raw, path, TUNNEL_KEYS)
        name = self.name(self.string(raw, "name", path, default=f"tunnel{k}"), f"{path}.name", what="tunnel name")
        encap = self.string(raw, "encapsulation", path, ENCAPSULATIONS, default="udp")
        keying = self.string(raw, "keying", path, KEYINGS, default="ike")
        left = self.tunnel_end(self.table(raw.get("left"), f"{path}.left", TUNNEL_END_KEYS), f"{path}.left", nodes)
        right = self.tunnel_end(self.table(raw.get("right"), f"{path}.right", TUNNEL_END_KEYS), f"{path}.right", nodes)
        return Tunnel(name, left, right, encap, keying)

    def tunnel_end(self, raw: dict[str, Any], path: str, nodes: dict[str, Node]) -> TunnelEnd:
        node = self.string(raw, "node", path)
        if node not in nodes:
            raise self.fail(f"{path}.node", f"unknown node '{_shown(node)}'")
        address = self.convert(IPv4Address, self.string(raw, "address", path), f"{path}.address", "IPv4 address")
        if not nodes[node].owns(address):
            raise self.fail(f"{path}.address", f"{address} is not an address of node '{node}'")
        iface = self.string(raw, "interface", path) if "interface" in raw else None
        if iface is not None and iface not in nodes[node].interfaces:
            raise self.fail(f"{path}.interface", f"node '{node}' has no interface '{_shown(iface)}'")
        subnets = tuple(
            self.convert(ip_network, s, f"{path}.subnets[{i}]", "prefix")
            for i, s in enumerate(self.array(raw.get("subnets", []), f"{path}.subnets"))
        )
        if not subnets:
            raise self.fail(f"{path}.subnets", "a tunnel end needs at least one subnet")
        if any(n.version != 4 for n in subnets):
            raise self.fail(f"{path}.subnets", "only IPv4 is supported for now")
        spi = raw.get("spi_in")
        spi_in = None if spi is None else self.integer(spi, f"{path}.spi_in", *SPI_RANGE, hex_strings=True)
        return TunnelEnd(node, address, subnets, iface, spi_in)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a newline or NUL in a value breaks one-line errors and C strings


def _shown(text: str) -> str:
    """``text`` safe inside a one-line message: control characters escaped, length bounded."""
    out = text.encode("unicode_escape").decode("ascii") if _CONTROL.search(text) else text
    return out if len(out) <= 70 else out[:67] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(key: str, keys: tuple[str, ...], path: str) -> str:
    """"unknown key; did you mean 'addresses'?" — or where the key belongs, or what the table holds."""
    import difflib  # only for a bad topology file: a valid one's load need not pay for it

    where = f"in {path}" if path else "at the top level"
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if close:
        return f"unknown key {where}; did you mean '{close[0]}'?"
    near = difflib.get_close_matches(key, list(_BELONGS), n=1, cutoff=0.75)
    if near:
        return f"unknown key {where}; '{near[0]}' belongs in {_BELONGS[near[0]]}"
    return f"unknown key {where} (expected {', '.join(keys)})"
