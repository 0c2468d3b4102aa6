"""Stale topology check: the topology file against the live state of its nodes (pure).

A live trace snapshots every node on its paths (``tracer.evidence.netstate``); here the
snapshot is compared with the file. Each difference is one line a verdict can show:

* interfaces: missing live, missing from the topology, other addresses, down, wired to
  another peer than the topology's link says, another MTU than the link's;
* routes: for each route of the topology, the route the kernel would really take for the
  traffic the topology sends that way — policy rules in priority order, then the longest
  prefix in the table a rule picks (:func:`kernel_decision`) — named when it differs from
  the file's; live routes of the main table and strongSwan's table 220 the file lacks;
* policy rules beyond the kernel's defaults and strongSwan's ``220: from all lookup 220``
  (a topology file has no rules, so any other rule is a difference).

Which traffic a route carries comes from the topology itself: the node's own (no source
address, or one of its addresses), and every address of another node whose expected path
leaves this node by the route's device in the clear, with the interface it came in by
(policy rules select on ``from`` and ``iif``). The lab's gateways get their tunnel routes
from strongSwan in table 220 while the topology writes them as ordinary routes: the
kernel's rules reach table 220 before main, so a healthy lab shows no difference.

:func:`live_interfaces` lists the capture points a node really has, for witness captures.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, NamedTuple

from tracer.errors import TracerError
from tracer.model.netstate import DEFAULT_NET, KERNEL_RULES, STRONGSWAN_RULE, LiveRoute, NodeState, PolicyRule
from tracer.model.path import ExpectedPath, expected_path
from tracer.model.point import point_name
from tracer.model.topology import IFACE_RE, Node, Route, Topology

IFACE_EXTRA = "interface missing from topology"
IFACE_MISSING = "interface missing live"
ADDRESS = "address differs"
DOWN = "link state down"
LINK = "link differs"
MTU = "mtu differs"
ROUTE = "route differs"
NO_ROUTE = "no route live"
RULE = "policy rule"
KINDS = (IFACE_EXTRA, IFACE_MISSING, ADDRESS, DOWN, LINK, MTU, ROUTE, NO_ROUTE, RULE)

# The tables a topology's routes stand for: main, and strongSwan's (its tunnel routes).
TOPOLOGY_TABLES = ("main", STRONGSWAN_RULE.table)
EXPECTED_RULES = (*KERNEL_RULES, STRONGSWAN_RULE)
DROP_TYPES = ("blackhole", "unreachable", "prohibit")
LOCAL_TYPES = ("local", "broadcast", "multicast", "anycast")


@dataclass(frozen=True)
class Difference:
    node: str
    kind: str  # one of KINDS
    text: str  # one line, starting with the node's name

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "kind": self.kind, "text": self.text}


class KernelRoute(NamedTuple):
    dev: str | None
    via: IPv4Address | None
    table: str


@dataclass(frozen=True)
class Decision:
    """What the kernel does with a packet: "forward" (by ``route``), "local" (delivered here),
    "drop" (a drop route or rule), "none" (no table the rules reach has a route)."""

    outcome: str
    route: LiveRoute | None = None
    table: str | None = None
    rule: PolicyRule | None = None  # the rule that decided (None: none matched)


# -- the kernel's route lookup ----------------------------------------------------------------


def kernel_decision(state: NodeState, src: IPv4Address | None, dst: IPv4Address, iif: str | None = None) -> Decision:
    """The route lookup of ``src → dst`` arriving on ``iif`` (None: sent by the node itself) the
    way Linux does it: rules by priority (``from``/``to``/``iif``/``oif``/``fwmark``, ``not``),
    ``goto`` and ``nop``, drop actions, then the longest prefix (lowest metric among equals) in
    the rule's table; ``throw`` and ``suppress_prefixlength`` move on to the next rule. A probe
    carries no firewall mark and no bound output device."""
    # No rules in the snapshot (hand-made, or a host that would not say): the kernel's defaults
    # and strongSwan's table 220, which is empty where no charon runs.
    rules = sorted(state.rules or EXPECTED_RULES, key=lambda r: r.priority)  # stable: equal priorities keep their order
    i = 0
    while i < len(rules):
        rule = rules[i]
        i += 1
        if not _rule_matches(rule, src, dst, iif):
            continue
        if rule.action == "goto":
            target = next((k for k, r in enumerate(rules) if r.priority == rule.goto), None)
            if target is not None and target >= i:  # the kernel only jumps forward; else unresolved, skipped
                i = target
            continue
        if rule.action in DROP_TYPES:
            return Decision("drop", rule=rule)
        if rule.action != "lookup" or rule.table is None:
            continue  # nop, or an action this model does not know
        route = _longest_match(state.table(rule.table), dst)
        if route is None or route.type == "throw":
            continue
        if rule.suppress_prefixlen is not None and route.dst.prefixlen <= rule.suppress_prefixlen:
            continue
        outcome = "local" if route.type in LOCAL_TYPES else "drop" if route.type in DROP_TYPES else "forward"
        return Decision(outcome, route, rule.table, rule)
    return Decision("none")


def kernel_route(
    state: NodeState, src: IPv4Address | None, dst: IPv4Address, iif: str | None = None
) -> KernelRoute | None:
    """(dev, via, table) of the route the kernel would really take; None when it drops the
    packet or has no route. Local delivery is the local table's route (dev of the address)."""
    d = kernel_decision(state, src, dst, iif)
    if d.outcome not in ("forward", "local") or d.route is None or d.table is None:
        return None
    return KernelRoute(d.route.dev, d.route.via, d.table)


def _rule_matches(rule: PolicyRule, src: IPv4Address | None, dst: IPv4Address, iif: str | None) -> bool:
    if rule.other:
        return False  # selectors we cannot evaluate (ipproto, ports, uid, ...): assume not this probe
    match = (
        (rule.src is None or (src or IPv4Address(0)) in rule.src)
        and (rule.dst is None or dst in rule.dst)
        # Locally generated packets have iif lo in the kernel's rule lookup.
        and (rule.iif is None or rule.iif == (iif or "lo"))
        and rule.oif is None  # a probe is not bound to an output device
        and (rule.fwmark is None or rule.fwmark & (0xFFFFFFFF if rule.fwmask is None else rule.fwmask) == 0)
    )
    return match != rule.invert


def _longest_match(routes: tuple[LiveRoute, ...], dst: IPv4Address) -> LiveRoute | None:
    best: LiveRoute | None = None
    for r in routes:
        if dst in r.dst and (best is None or (r.dst.prefixlen, -(r.metric or 0)) > (best.dst.prefixlen, -(best.metric or 0))):
            best = r
    return best


# -- the comparison -------------------------------------------------------------------------

_Paths = dict[tuple[str, IPv4Address, IPv4Address], ExpectedPath | None]  # (origin, src, dst) → walk


def compare(topo: Topology, states: dict[str, NodeState]) -> list[Difference]:
    """Every difference between the topology and the live states given (nodes without a state
    are not compared), node by node in the topology's order."""
    out: list[Difference] = []
    paths: _Paths = {}  # one route walk per (origin, source, destination), shared by every node's routes
    for name, node in topo.nodes.items():
        state = states.get(name)
        if state is None:
            continue
        out += _interfaces(topo, node, state, states)
        out += _routes(topo, node, state, paths)
        out += _rules(node, state)
    return list(dict.fromkeys(out))


def live_interfaces(topo: Topology, states: dict[str, NodeState], nodes: list[str]) -> list[str]:
    """Capture points ("node:iface") the given nodes really have, whether the topology lists
    them or not: every interface that is up (admin up with carrier: a down one carries no
    packet and tcpdump refuses it), except ``lo``; names that cannot be a capture point are skipped."""
    out = []
    for name in dict.fromkeys(nodes):
        state = states.get(name)
        if state is None or name not in topo.nodes:
            continue
        out += [point_name(name, i.name) for i in state.interfaces
                if not i.loopback and i.up and IFACE_RE.fullmatch(i.name)]
    return out


def _addrs(addresses: tuple[IPv4Interface, ...]) -> str:
    return ", ".join(str(a) for a in addresses) or "no address"


def _interfaces(topo: Topology, node: Node, state: NodeState, states: dict[str, NodeState]) -> list[Difference]:
    n = node.name
    out = []
    live = {i.name: i for i in state.interfaces if not i.loopback}
    for iname, iface in node.interfaces.items():
        li = live.get(iname)
        if li is None:
            shown = f" ({_addrs(iface.addresses)})" if iface.addresses else ""
            out.append(Difference(n, IFACE_MISSING, f"{n}: interface {iname}{shown} of the topology does not exist live"))
            continue
        if set(li.addresses) != set(iface.addresses):
            out.append(Difference(n, ADDRESS, f"{n}: {iname} has {_addrs(li.addresses)} live, "
                                              f"the topology {_addrs(iface.addresses)}"))
        if not li.admin_up:
            out.append(Difference(n, DOWN, f"{n}: {iname} is down (administratively)"))
        elif not li.carrier:
            out.append(Difference(n, DOWN, f"{n}: {iname} is up but has no carrier ({li.operstate})"))
        out += _link(topo, n, iname, state, states)
        out += _mtu(topo, n, iname, li.mtu)
    for li in state.interfaces:
        if li.loopback or li.name in node.interfaces:
            continue
        if not li.admin_up and not li.addresses:
            continue  # the fallback devices a tunnel module adds to every namespace (tunl0, gre0, ...)
        shown = f" ({_addrs(li.addresses)})" if li.addresses else ""
        down = " (down)" if not li.up else ""
        out.append(Difference(n, IFACE_EXTRA, f"{n}: interface {li.name}{shown}{down} is not in the topology"))
    return out


def _link(topo: Topology, n: str, iname: str, state: NodeState, states: dict[str, NodeState]) -> list[Difference]:
    """The veth peer the kernel names against the topology's link (only where the peer's
    namespace is known: local namespaces, not SSH hosts)."""
    li = state.interface(iname)
    peer = li.peer if li else None
    if peer is None:
        return []
    point = point_name(n, iname)
    want = topo.peer(point)
    says = f"the topology says {want}" if want else "the topology has no link there"
    if peer.name is not None:  # both ends in this namespace
        got = point_name(n, peer.name)
    elif peer.netns is not None:
        owner = next((m for m in topo.nodes.values() if m.netns == peer.netns), None)
        if owner is None:
            return [Difference(n, LINK, f"{n}: {iname} is wired to namespace {peer.netns} live "
                                        f"(no node of the topology), {says}")]
        other = states.get(owner.name)
        end = other.by_ifindex(peer.ifindex) if other is not None and peer.ifindex is not None else None
        if end is None:  # that node was not read: compare nodes only
            if want is not None and want.rpartition(":")[0] == owner.name:
                return []
            return [Difference(n, LINK, f"{n}: {iname} is wired to {owner.name} live, {says}")]
        got = point_name(owner.name, end.name)
    else:
        return []
    if got == want:
        return []
    return [Difference(n, LINK, f"{n}: {iname} is wired to {got} live, {says}")]


def _mtu(topo: Topology, n: str, iname: str, mtu: int | None) -> list[Difference]:
    point = point_name(n, iname)
    for link in topo.links:
        if link.mtu is not None and point in (link.a, link.b) and mtu is not None and mtu != link.mtu:
            return [Difference(n, MTU, f"{n}: {iname} has MTU {mtu} live, the topology's link "
                                       f"{link.a} ↔ {link.b} says {link.mtu}")]
    return []


def _topology_way(r: Route) -> str:
    return f"via {r.via} dev {r.dev}" if r.via else f"via {r.dev}"


def _live_way(r: LiveRoute) -> str:
    if r.via and r.dev:
        return f"via {r.via} dev {r.dev}"
    return f"via {r.dev or r.via}"


def _where(d: Decision, r: Route) -> str:
    """Where the kernel found its answer: the route's own prefix when it is not the topology's,
    the table, and the rule that led there unless it is a standard one."""
    prefix = ""
    if d.route is not None and d.route.dst != r.dst:
        prefix = "default route, " if d.route.dst == DEFAULT_NET else f"route {d.route.dst}, "
    rule = f", rule {d.rule.selectors()}" if d.rule is not None and d.rule not in EXPECTED_RULES else ""
    return f"{prefix}table {d.table}{rule}"


def _agrees(d: Decision, r: Route) -> bool:
    return d.outcome == "forward" and d.route is not None and any(
        h.dev == r.dev and (r.via is None or h.via == r.via) for h in d.route.hops())


def _describe(n: str, r: Route, d: Decision) -> Difference:
    dst, want = r.dst, f"the topology {_topology_way(r)}"
    if d.outcome == "none":
        return Difference(n, NO_ROUTE, f"{n}: the kernel has no route to {dst}, {want}")
    if d.outcome == "drop" and d.route is None:
        assert d.rule is not None
        return Difference(n, ROUTE, f"{n}: the kernel drops traffic to {dst} (rule {d.rule.describe()}), {want}")
    assert d.route is not None
    if d.outcome == "drop":
        return Difference(n, ROUTE, f"{n}: the kernel drops traffic to {dst} ({d.route.type} route, {_where(d, r)}), {want}")
    if d.outcome == "local":
        return Difference(n, ROUTE, f"{n}: the kernel delivers {dst} locally ({_where(d, r)}), {want}")
    return Difference(n, ROUTE, f"{n}: the kernel routes {dst} {_live_way(d.route)} ({_where(d, r)}), {want}")


def _routes(topo: Topology, node: Node, state: NodeState, paths: _Paths) -> list[Difference]:
    out = []
    for r in node.routes:
        dst = _representative(node, r)
        if dst is None:
            continue  # a route the topology itself shadows everywhere: nothing takes it
        for src, iif in _traffic(topo, node, r, dst, paths):
            d = kernel_decision(state, src, dst, iif)
            if not _agrees(d, r):
                out.append(_describe(node.name, r, d))
    return out + _extra_routes(topo, node, state)


def _representative(node: Node, r: Route) -> IPv4Address | None:
    """An address the topology routes by ``r`` at ``node`` (not shadowed by a longer prefix, not the node's own)."""
    net = r.dst
    candidates = list(net) if net.prefixlen >= 31 else [net.network_address + 1, net.broadcast_address - 1]
    return next((a for a in candidates if node.lookup(a) == r and not node.owns(a)), None)


def _traffic(
    topo: Topology, node: Node, r: Route, dst: IPv4Address, paths: _Paths
) -> list[tuple[IPv4Address | None, str | None]]:
    """(source, incoming interface) of the traffic the topology sends to ``dst`` by ``r`` at ``node``."""
    out: list[tuple[IPv4Address | None, str | None]] = [(None, None)]
    out += [(a.ip, None) for i in node.interfaces.values() for a in i.addresses]
    for other in topo.nodes.values():
        if other.name == node.name:
            continue
        for src in [a.ip for i in other.interfaces.values() for a in i.addresses]:
            key = (other.name, src, dst)
            if key not in paths:
                try:
                    paths[key] = expected_path(topo, src, dst, other)
                except TracerError:
                    paths[key] = None
            path = paths[key]
            if path is None:
                continue
            hops = path.hops
            for j in range(1, len(hops)):
                # Leaving by r.dev in the clear, after coming in by hops[j-1] on the same node.
                if hops[j].node == node.name == hops[j - 1].node and hops[j].iface == r.dev and hops[j].esp is None:
                    out.append((src, hops[j - 1].iface))
                    break
    return list(dict.fromkeys(out))


def _extra_routes(topo: Topology, node: Node, state: NodeState) -> list[Difference]:
    """Live routes of main and table 220 the topology has no route for (connected routes come
    from addresses, compared above; table 220 routes to a tunnel's remote subnets are strongSwan's)."""
    n = node.name
    known = {r.dst for r in node.routes}
    tunnel_remote = {s for t in topo.tunnels if (ends := t.ends_from(n)) for s in ends[1].subnets}
    out = []
    for lr in state.routes:
        if lr.table not in TOPOLOGY_TABLES or lr.proto == "kernel" or lr.dst in known:
            continue
        if lr.table == STRONGSWAN_RULE.table and any(lr.dst.subnet_of(s) for s in tunnel_remote):
            continue
        out.append(Difference(n, ROUTE, f"{n}: the live route {lr.describe()} (table {lr.table}) is not in the topology"))
    return out


def _rules(node: Node, state: NodeState) -> list[Difference]:
    n = node.name
    if not state.rules:
        return []  # a snapshot without rules (hand-made): the kernel's defaults are assumed
    out = [Difference(n, RULE, f"{n}: policy rule {r.describe()} is not in the topology")
           for r in state.rules if r not in EXPECTED_RULES]
    out += [Difference(n, RULE, f"{n}: the standard policy rule {r.describe()} is missing live")
            for r in KERNEL_RULES[:2] if r not in state.rules]
    return out


__all__ = ["Decision", "Difference", "KernelRoute", "compare", "kernel_decision", "kernel_route", "live_interfaces"]
