"""A topology inferred from what the kernel and the IKE daemons say (pure): ``tracer topology discover``.

Input: per node, its live network state (``ip -j``: interfaces, veth peers, routes of every
table, policy rules), whether it forwards, and its IKE daemon's SAs (strongSwan over vici).
Output: a :class:`Topology` — what a person would have written:

* interfaces: every one but ``lo`` and the idle fallback devices a tunnel module adds to each
  namespace (down, no address); TUN devices (kernel-libipsec's ``ipsec0``) with role ``tunnel``;
* links: veth pairs by the peer's ifindex in the peer's namespace; where the peer cannot be
  seen (a namespace outside the pattern, a real wire), two interfaces alone on one subnet;
* routes: the tables unconditional policy rules look up, in priority order (strongSwan's 220
  before main, a table after main only where main has no route), main's connected routes left
  to the interfaces; a route whose prefix an earlier table already holds whole is never reached
  and not written. Routes and rules the model cannot express (blackhole, multipath, rules on
  source, iif or fwmark) are notes;
* roles: ``host`` when the node does not forward, ``gateway`` when it ends a tunnel, else ``router``;
* tunnels: each established IKE_SA with an installed CHILD_SA whose two ends are nodes found
  here, its subnets the union of all its installed CHILD_SAs' IPv4 selectors, once however many
  ends report it, the initiator on the left; route-based when the end routes the remote
  selectors into a TUN device, else policy-based; ESP-in-UDP when the SA says ``encap``.

SPIs are left out: they change at every rekey, and a stale ``spi_in`` would mislead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, summarize_address_range

from tracer.model.checkstate import IkeSa, IkeState
from tracer.model.netstate import DEFAULT_NET, KERNEL_RULES, LiveInterface, LiveRoute, NodeState
from tracer.model.point import point_name, split_point
from tracer.model.topology import IFACE_RE, NAME_RE, Interface, Link, Node, Route, Topology, Tunnel, TunnelEnd

TUN_KINDS = ("tun", "xfrm", "vti", "ipip")  # devices packets enter to be encapsulated


@dataclass(frozen=True)
class Seen:
    """What discovery read of one node."""

    name: str
    state: NodeState
    forwarding: bool | None = None  # None: unknown (treated as not forwarding)
    ike: IkeState | None = None
    ike_vici: str | None = None  # the vici URI to write into the topology (reachable where it is read)
    netns: str | None = None
    node: Node | None = None  # how an SSH host was reached (its ssh* fields are written as they were given)


def node_name(netns: str, prefix: str) -> str:
    """``trc-lab-westgw`` under the pattern prefix ``trc-lab-`` → ``westgw`` (the namespace name if that is no name)."""
    short = netns.removeprefix(prefix)
    return short if NAME_RE.fullmatch(short) else netns


def infer(name: str, seen: list[Seen]) -> tuple[Topology, list[str]]:
    """The topology, and notes on what could not be expressed or was left out."""
    notes: list[str] = []
    ifaces = {s.name: _interfaces(s) for s in seen}
    links = _links(seen, ifaces, notes)
    owners = {a.ip: s.name for s in seen for i in ifaces[s.name] for a in i.addresses}
    tunnels = _tunnels(seen, ifaces, owners, notes)
    ends = {e.node: e for t in tunnels for e in (t.left, t.right)}
    nodes: dict[str, Node] = {}
    for s in seen:
        routes = _routes(s, {i.name for i in ifaces[s.name]}, notes)
        role = "gateway" if s.name in ends else "router" if s.forwarding else "host"
        tunnel_addrs = {e.address for e in ends.values() if e.node == s.name}
        tunnel_devs = {e.interface for e in ends.values() if e.node == s.name and e.interface}
        interfaces = {}
        for li in ifaces[s.name]:
            irole = ("tunnel" if li.kind in TUN_KINDS or li.name in tunnel_devs
                     else "wan" if any(a.ip in tunnel_addrs for a in li.addresses) else "lan")
            interfaces[li.name] = Interface(s.name, li.name, li.addresses, irole)
        how = s.node
        nodes[s.name] = Node(s.name, role, interfaces, tuple(routes), netns=s.netns, ike_vici=s.ike_vici,
                             **({} if how is None else {
                                 "ssh": how.ssh, "capture": how.capture, "ssh_netns": how.ssh_netns,
                                 "ssh_key": how.ssh_key, "ssh_port": how.ssh_port,
                                 "ssh_known_hosts": how.ssh_known_hosts}))
    return Topology(name, nodes, tuple(links), tuple(tunnels)), notes


def _interfaces(s: Seen) -> list[LiveInterface]:
    return [i for i in s.state.interfaces
            if not i.loopback and (i.admin_up or i.addresses) and IFACE_RE.fullmatch(i.name)]


def _links(seen: list[Seen], ifaces: dict[str, list[LiveInterface]], notes: list[str]) -> list[Link]:
    by_netns = {s.netns: s.name for s in seen if s.netns}
    order = _order(seen)
    out: dict[frozenset[str], Link] = {}
    for s in seen:
        for li in ifaces[s.name]:
            peer = li.peer
            if peer is None:
                continue
            other: str | None = None
            if peer.name is not None:
                other = point_name(s.name, peer.name)
            elif peer.netns in by_netns and peer.ifindex is not None:
                node = by_netns[peer.netns]
                end = next((i for i in ifaces[node] if i.ifindex == peer.ifindex), None)
                other = point_name(node, end.name) if end else None
            if other is not None:
                here = point_name(s.name, li.name)
                out.setdefault(frozenset((here, other)), Link(*sorted((here, other), key=order)))
    wired = {p for link in out.values() for p in (link.a, link.b)}
    # Peers that cannot be seen: two interfaces alone on one subnet are a wire between them.
    subnets: dict[IPv4Network, list[str]] = {}
    for s in seen:
        for li in ifaces[s.name]:
            p = point_name(s.name, li.name)
            if p not in wired:
                for a in li.addresses:
                    subnets.setdefault(a.network, []).append(p)
    for net, points in subnets.items():
        nodes = {split_point(p).node for p in points}
        if len(points) == 2 and len(nodes) == 2:
            out[frozenset(points)] = Link(*points)
        elif len(points) > 2:
            notes.append(f"{net} is shared by {', '.join(points)}: a topology link joins two interfaces; "
                         "add the links by hand")
    return list(out.values())


def _order(seen: list[Seen]) -> Callable[[str], tuple[int, str]]:
    """Sort key for a link's two ends: the node found first comes first (namespace order)."""
    rank = {s.name: k for k, s in enumerate(seen)}
    return lambda p: (rank.get(split_point(p).node, len(rank)), p)


def _routes(s: Seen, names: set[str], notes: list[str]) -> list[Route]:
    state = s.state
    tables = _lookup_order(s, notes)
    # Tables in lookup order: a table is consulted only for destinations no earlier table has a route to, so a
    # route is written only when no earlier route (connected ones included) holds its whole prefix; the
    # file's longest-prefix match then picks what the kernel picks. An earlier route holding part of it is fine.
    chosen: dict[IPv4Network, Route] = {}
    earlier: list[IPv4Network] = []
    for table in tables:
        here: list[IPv4Network] = []
        for r in state.table(table):
            if r.type in ("local", "broadcast"):
                continue
            shadowed = r.dst in here or any(r.dst.subnet_of(e) for e in earlier)
            if r.type != "throw":  # a throw route sends the lookup on to the next table
                here.append(r.dst)
            if shadowed or (table == "main" and r.proto == "kernel"):
                continue
            route = _route(s.name, r, names, notes)
            if route is None:
                continue
            inner = [c for c in _connected(state, names) if c != r.dst and c.subnet_of(r.dst)]
            if table != "main" and inner:  # the file's connected routes would win over it for these
                notes.append(f"{s.name}: {r.describe()} (table {table}) is consulted before the connected "
                             f"{', '.join(map(str, inner))}: the file cannot say so, the connected route wins there")
            chosen[r.dst] = route
        earlier += here
    # The file lists specific prefixes first, the default last.
    return sorted(chosen.values(), key=lambda r: (r.dst == DEFAULT_NET, -r.dst.prefixlen))


def _lookup_order(s: Seen, notes: list[str]) -> list[str]:
    """The tables unconditional ``lookup`` rules reach, by priority (main where its rule is); a note for each
    rule the file cannot express (from/to/iif/oif/fwmark selectors, goto, drops, suppress_prefixlength)."""
    rules = s.state.rules or KERNEL_RULES  # no rules read: what every namespace starts with
    tables: list[str] = []
    for rule in sorted(rules, key=lambda r: r.priority):
        plain = (rule.action == "lookup" and rule.table is not None and rule.src is None and rule.dst is None
                 and rule.iif is None and rule.oif is None and rule.fwmark is None and not rule.other
                 and not rule.invert and rule.suppress_prefixlen is None)
        if plain and rule.table == "local":
            continue  # this node's own addresses and broadcasts: the file's interfaces say them
        if plain:
            if rule.table not in tables:
                tables.append(str(rule.table))
            continue
        notes.append(f"{s.name}: policy rule '{rule.describe()}' left out: a topology routes by destination "
                     "only; write the paths it makes by hand if they matter")
    if "main" not in tables:
        notes.append(f"{s.name}: no policy rule looks up the main table: its routes are left out")
    return tables


def _connected(state: NodeState, names: set[str]) -> list[IPv4Network]:
    """The subnets the written interfaces' addresses give (the file's implicit connected routes)."""
    return [a.network for i in state.interfaces if i.name in names for a in i.addresses]


def _route(node: str, r: LiveRoute, names: set[str], notes: list[str]) -> Route | None:
    if r.type != "unicast":
        notes.append(f"{node}: {r.describe()} (table {r.table}) left out: a topology has no {r.type} routes")
        return None
    if len(r.nexthops) > 1:
        notes.append(f"{node}: multipath route {r.describe()} (table {r.table}): only its first hop is written")
    if r.dev is None or r.dev not in names:
        notes.append(f"{node}: {r.describe()} (table {r.table}) left out: no device of the node")
        return None
    return Route(r.dst, r.dev, r.via, r.onlink and r.via is not None)


def _subnets(selectors: tuple[str, ...]) -> tuple[IPv4Network, ...]:
    """swanctl traffic selectors (``192.0.2.0/24``, ``10.0.0.0/8[udp/53]``, ``192.0.2.1-192.0.2.6``) → IPv4
    prefixes (a range as the prefixes that cover it exactly); IPv6 selectors give none."""
    out: list[IPv4Network] = []
    for ts in selectors:
        text = ts.split("[", 1)[0]
        try:
            if "-" in text:
                low, high = (IPv4Address(x) for x in text.split("-", 1))
                out += summarize_address_range(low, high)
            else:
                out.append(IPv4Network(text, strict=False))
        except ValueError:
            continue  # IPv6
    return tuple(dict.fromkeys(out))


def _tunnels(seen: list[Seen], ifaces: dict[str, list[LiveInterface]], owners: dict[IPv4Address, str],
             notes: list[str]) -> list[Tunnel]:
    out: dict[frozenset[IPv4Address], Tunnel] = {}
    by_name = {s.name: s for s in seen}
    for s in seen:
        for sa in s.ike.sas if s.ike else ():
            t = _tunnel(s, sa, by_name, ifaces, owners, notes)
            if t is not None:
                out.setdefault(frozenset((t.left.address, t.right.address)), t)
    names: set[str] = set()
    result = []
    for t in out.values():
        name, k = t.name, 2
        while name in names:
            name, k = f"{t.name}-{k}", k + 1
        names.add(name)
        result.append(Tunnel(name, t.left, t.right, t.encapsulation, t.keying))
    return result


def _tunnel(s: Seen, sa: IkeSa, by_name: dict[str, Seen], ifaces: dict[str, list[LiveInterface]],
            owners: dict[IPv4Address, str], notes: list[str]) -> Tunnel | None:
    children = [c for c in sa.children if c.state == "INSTALLED" and c.protocol == "ESP"]
    if sa.state != "ESTABLISHED" or not children:
        notes.append(f"{s.name}: IKE_SA {sa.name} is {sa.state or 'in no state'} without an installed ESP "
                     "CHILD_SA: not written as a tunnel")
        return None
    try:
        local, remote = IPv4Address(str(sa.local)), IPv4Address(str(sa.remote))
    except ValueError:
        return None  # IPv6 tunnel: tracer is IPv4 only
    peer = owners.get(remote)
    if owners.get(local) != s.name or peer is None:
        notes.append(f"{s.name}: IKE_SA {sa.name} to {remote}: the peer is not a node found here, tunnel left out")
        return None
    # A topology tunnel has one set of subnets per end: the union of every installed CHILD_SA's selectors.
    pairs = []
    for c in children:
        pair = (_subnets(c.local_ts), _subnets(c.remote_ts))
        if pair[0] and pair[1]:
            pairs.append(pair)
        else:
            notes.append(f"{s.name}: IKE_SA {sa.name}: CHILD_SA {c.name} "
                         f"({' '.join(c.local_ts)} === {' '.join(c.remote_ts)}) has no IPv4 selectors on "
                         "both sides: left out of the tunnel")
    if not pairs:
        return None
    ours = tuple(dict.fromkeys(n for p in pairs for n in p[0]))
    theirs = tuple(dict.fromkeys(n for p in pairs for n in p[1]))
    if len(set(pairs)) > 1 and len(ours) * len(theirs) > len(set(pairs)):
        notes.append(f"{s.name}: IKE_SA {sa.name}: its CHILD_SAs pair the subnets "
                     f"({'; '.join(_pair(p) for p in dict.fromkeys(pairs))}); the tunnel written carries "
                     "every pair of its two ends' subnets")
    encap = any(c.encap for c in children)
    near = TunnelEnd(s.name, local, ours, _tunnel_device(by_name[s.name], theirs, ifaces[s.name]))
    far = TunnelEnd(peer, remote, theirs, _tunnel_device(by_name[peer], ours, ifaces[peer]))
    name = sa.name if NAME_RE.fullmatch(sa.name) else re.sub(r"[^A-Za-z0-9_.-]", "-", sa.name).strip("-.") or "tunnel"
    left, right = (near, far) if sa.initiator else (far, near)  # left: the initiator, as people write it
    return Tunnel(name[:63], left, right, "udp" if encap else "esp", "ike")


def _pair(pair: tuple[tuple[IPv4Network, ...], tuple[IPv4Network, ...]]) -> str:
    return f"{' '.join(map(str, pair[0]))} === {' '.join(map(str, pair[1]))}"


def _tunnel_device(s: Seen, remote: tuple[IPv4Network, ...], ifaces: list[LiveInterface]) -> str | None:
    """The TUN device this end routes the remote selectors into (None: policy-based IPsec)."""
    tuns = {i.name for i in ifaces if i.kind in TUN_KINDS}
    for r in s.state.routes:
        if r.dev in tuns and any(r.dst.overlaps(net) for net in remote):
            return r.dev
    return None


__all__ = ["Seen", "infer", "node_name"]
