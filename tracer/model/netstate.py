"""The live network state of one node, as the kernel reports it (pure data, no I/O).

What ``ip -j addr``, ``ip -j -d link``, ``ip -j route show table all`` and ``ip -j rule``
say inside a node's namespace (or on its host over SSH), at the moment a trace starts:
interfaces with their addresses, state, MTU and veth peer, the routes of every table, and
the policy rules that choose between tables. ``tracer.evidence.netstate`` takes the
snapshot; ``tracer.analysis.topocheck`` compares it with the topology file and resolves
the route the kernel would really take. Stored in a run directory as
``netstate/<node>.json`` (format ``tracer-netstate/1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

FORMAT = "tracer-netstate/1"

DEFAULT_NET = IPv4Network("0.0.0.0/0")


@dataclass(frozen=True)
class LinkPeer:
    """The other end of a veth, as ``ip -j link`` names it: ``link_index`` in the namespace
    ``link_netnsid`` (an id local to this namespace), or ``link`` (a name) when both ends
    share one namespace."""

    ifindex: int | None = None
    netnsid: int | None = None  # None: the same namespace
    netns: str | None = None  # the peer namespace's name, when ``ip netns list-id`` knows it
    name: str | None = None  # the peer's name, when it is in the same namespace

    def to_dict(self) -> dict[str, Any]:
        return {"ifindex": self.ifindex, "netnsid": self.netnsid, "netns": self.netns, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinkPeer:
        return cls(_opt_int(d.get("ifindex")), _opt_int(d.get("netnsid")), _opt_str(d.get("netns")),
                   _opt_str(d.get("name")))


@dataclass(frozen=True)
class LiveInterface:
    name: str
    ifindex: int
    admin_up: bool  # the UP flag: set by ``ip link set ... up``
    carrier: bool  # LOWER_UP: the link below is up (a veth whose peer is down has none)
    operstate: str = "UNKNOWN"
    mtu: int | None = None
    addresses: tuple[IPv4Interface, ...] = ()
    kind: str | None = None  # linkinfo kind: "veth", "tun", "vlan", ...; None: a plain device
    peer: LinkPeer | None = None  # veths only
    mac: str | None = None  # link-layer address ("02:..."); None: none, or not read

    @property
    def up(self) -> bool:
        return self.admin_up and self.carrier

    @property
    def loopback(self) -> bool:
        return self.name == "lo"

    def describe_addresses(self) -> str:
        return ", ".join(str(a) for a in self.addresses) or "no address"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "ifindex": self.ifindex, "kind": self.kind, "admin_up": self.admin_up,
            "carrier": self.carrier, "operstate": self.operstate, "mtu": self.mtu,
            "addresses": [str(a) for a in self.addresses],
            "peer": self.peer.to_dict() if self.peer else None,
        } | ({"mac": self.mac} if self.mac else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LiveInterface:
        peer = d.get("peer")
        return cls(
            name=_str(d["name"]), ifindex=_int(d["ifindex"]), admin_up=_bool(d["admin_up"]),
            carrier=_bool(d["carrier"]), operstate=_str(d.get("operstate", "UNKNOWN")), mtu=_opt_int(d.get("mtu")),
            addresses=tuple(IPv4Interface(_str(a)) for a in d.get("addresses", [])),
            kind=_opt_str(d.get("kind")), peer=LinkPeer.from_dict(peer) if isinstance(peer, dict) else None,
            mac=_opt_str(d.get("mac")),
        )


@dataclass(frozen=True)
class NextHop:
    dev: str | None
    via: IPv4Address | None


@dataclass(frozen=True)
class LiveRoute:
    """One route of one table. ``type`` is the kernel's: "unicast" forwards; "local" and
    "broadcast" deliver here; "blackhole", "unreachable" and "prohibit" drop; "throw" ends
    the lookup in this table so the next policy rule is tried."""

    table: str  # "main", "local", "220", ... as ``ip`` names it
    dst: IPv4Network
    type: str = "unicast"
    dev: str | None = None
    via: IPv4Address | None = None
    proto: str | None = None  # "kernel" (connected), "static", "dhcp", ...; None: boot (ip omits it)
    scope: str | None = None  # None: global
    metric: int | None = None
    prefsrc: IPv4Address | None = None
    nexthops: tuple[NextHop, ...] = ()  # multipath routes: dev/via are the first hop's
    onlink: bool = False  # the (first) gateway is taken to be on dev's wire, on a subnet of it or not

    def hops(self) -> tuple[NextHop, ...]:
        return self.nexthops or (NextHop(self.dev, self.via),)

    def describe(self) -> str:
        """``ip route`` style: "198.51.100.0/24 via 198.18.2.254 dev wan0"."""
        head = ("" if self.type == "unicast" else f"{self.type} ") + (
            "default" if self.dst == DEFAULT_NET else str(self.dst))
        via = f" via {self.via}" if self.via else ""
        dev = f" dev {self.dev}" if self.dev else ""
        return head + via + dev

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"table": self.table, "dst": str(self.dst), "type": self.type, "dev": self.dev,
                             "via": str(self.via) if self.via else None, "proto": self.proto, "scope": self.scope,
                             "metric": self.metric, "prefsrc": str(self.prefsrc) if self.prefsrc else None}
        if self.nexthops:
            d["nexthops"] = [{"dev": h.dev, "via": str(h.via) if h.via else None} for h in self.nexthops]
        if self.onlink:
            d["onlink"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LiveRoute:
        return cls(
            table=_str(d["table"]), dst=IPv4Network(_str(d["dst"])), type=_str(d.get("type", "unicast")),
            dev=_opt_str(d.get("dev")), via=_opt_addr(d.get("via")), proto=_opt_str(d.get("proto")),
            scope=_opt_str(d.get("scope")), metric=_opt_int(d.get("metric")), prefsrc=_opt_addr(d.get("prefsrc")),
            nexthops=tuple(NextHop(_opt_str(h.get("dev")), _opt_addr(h.get("via"))) for h in d.get("nexthops", [])),
            onlink=_bool(d.get("onlink", False)),
        )


@dataclass(frozen=True)
class PolicyRule:
    """One ``ip rule``: selectors (``src``/``dst`` prefixes, ``iif``, ``oif``, ``fwmark``, all
    optional; ``invert`` is ``not``), then an action: "lookup" a table, "goto" a priority,
    "nop", or drop ("blackhole", "unreachable", "prohibit"). ``other`` keeps the selectors this
    model does not evaluate (ipproto, ports, uidrange, ...) as "key=value"; a rule with any of
    them is taken not to match a probe."""

    priority: int
    action: str = "lookup"
    table: str | None = None
    src: IPv4Network | None = None  # None: from all
    dst: IPv4Network | None = None
    iif: str | None = None
    oif: str | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    invert: bool = False
    goto: int | None = None
    suppress_prefixlen: int | None = None
    other: tuple[str, ...] = ()

    def selectors(self) -> str:
        """``ip rule`` style selectors: "from 198.51.100.0/24", "not from all iif lan0"."""
        parts = ["not"] if self.invert else []
        parts.append(f"from {self.src}" if self.src is not None else "from all")
        if self.dst is not None:
            parts.append(f"to {self.dst}")
        if self.iif:
            parts.append(f"iif {self.iif}")
        if self.oif:
            parts.append(f"oif {self.oif}")
        if self.fwmark is not None:
            parts.append(f"fwmark {self.fwmark:#x}" + (f"/{self.fwmask:#x}" if self.fwmask is not None else ""))
        parts += [o.replace("=", " ", 1) for o in self.other]
        return " ".join(parts)

    def describe(self) -> str:
        """"100: from 198.51.100.0/24 lookup 100", like ``ip rule`` prints it."""
        if self.action == "lookup":
            act = f"lookup {self.table}"
        elif self.action == "goto":
            act = f"goto {self.goto}"
        else:
            act = self.action
        extra = f" suppress_prefixlength {self.suppress_prefixlen}" if self.suppress_prefixlen is not None else ""
        return f"{self.priority}: {self.selectors()} {act}{extra}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "priority": self.priority, "action": self.action, "table": self.table,
            "src": str(self.src) if self.src is not None else None, "dst": str(self.dst) if self.dst is not None else None,
            "iif": self.iif, "oif": self.oif, "fwmark": self.fwmark, "fwmask": self.fwmask, "invert": self.invert,
            "goto": self.goto, "suppress_prefixlen": self.suppress_prefixlen, "other": list(self.other),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyRule:
        return cls(
            priority=_int(d["priority"]), action=_str(d.get("action", "lookup")), table=_opt_str(d.get("table")),
            src=_opt_net(d.get("src")), dst=_opt_net(d.get("dst")), iif=_opt_str(d.get("iif")),
            oif=_opt_str(d.get("oif")), fwmark=_opt_int(d.get("fwmark")), fwmask=_opt_int(d.get("fwmask")),
            invert=_bool(d.get("invert", False)), goto=_opt_int(d.get("goto")),
            suppress_prefixlen=_opt_int(d.get("suppress_prefixlen")), other=tuple(_str(o) for o in d.get("other", [])),
        )


# What every Linux namespace starts with; strongSwan adds "220: from all lookup 220" for its routes.
KERNEL_RULES = (
    PolicyRule(0, table="local"),
    PolicyRule(32766, table="main"),
    PolicyRule(32767, table="default"),
)
STRONGSWAN_RULE = PolicyRule(220, table="220")


@dataclass(frozen=True)
class NodeState:
    """One node's live state. ``netns``: the local namespace it was read in; ``host``: the SSH
    target it was read on (neither: this host's own namespace)."""

    node: str
    interfaces: tuple[LiveInterface, ...]
    routes: tuple[LiveRoute, ...]
    rules: tuple[PolicyRule, ...]
    netns: str | None = None
    host: str | None = None
    taken: str | None = None  # ISO 8601 time of the snapshot

    def interface(self, name: str) -> LiveInterface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def by_ifindex(self, ifindex: int) -> LiveInterface | None:
        return next((i for i in self.interfaces if i.ifindex == ifindex), None)

    def table(self, name: str) -> tuple[LiveRoute, ...]:
        return tuple(r for r in self.routes if r.table == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "node": self.node, "netns": self.netns, "host": self.host, "taken": self.taken,
            "interfaces": [i.to_dict() for i in self.interfaces],
            "routes": [r.to_dict() for r in self.routes],
            "rules": [r.to_dict() for r in self.rules],
        }

    @classmethod
    def from_dict(cls, d: Any) -> NodeState:
        """ValueError (naming what is wrong) for anything that is not a netstate document."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f'not a live network state (expected "format": "{FORMAT}")')
        try:
            return cls(
                node=_str(d["node"]),
                interfaces=tuple(LiveInterface.from_dict(i) for i in d.get("interfaces", [])),
                routes=tuple(LiveRoute.from_dict(r) for r in d.get("routes", [])),
                rules=tuple(PolicyRule.from_dict(r) for r in d.get("rules", [])),
                netns=_opt_str(d.get("netns")), host=_opt_str(d.get("host")), taken=_opt_str(d.get("taken")),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"malformed live network state ({type(e).__name__}: {e})") from None


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _opt_str(v: Any) -> str | None:
    return None if v is None else _str(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {type(v).__name__}")
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    return v


def _opt_int(v: Any) -> int | None:
    return None if v is None else _int(v)


def _opt_addr(v: Any) -> IPv4Address | None:
    return None if v is None else IPv4Address(_str(v))


def _opt_net(v: Any) -> IPv4Network | None:
    return None if v is None else IPv4Network(_str(v))
