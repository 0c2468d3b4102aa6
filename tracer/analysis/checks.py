"""``tracer check``: a modern ``ipsec verify`` over a topology's nodes (pure: snapshots in, findings out).

Each check judges what the evidence sources read on a node (``tracer.model.checkstate``)
and its live routes (``tracer.model.netstate``) against what the topology's tunnels need,
and says per node: ok, fail (a misconfiguration, with the fix), warn (probably wrong, or
the topology file is stale), or unchecked (the evidence could not be read, and why).

The checks, in output order: ``link`` (every interface of the topology is up, with carrier),
``neighbour`` (a static neighbour entry for a node of the topology carries that node's real
link-layer address), ``forwarding`` (ip_forward and per-interface forwarding on
gateways and routers), ``rp_filter`` (strict reverse-path filtering where the route back
leaves by another interface, including cleartext a peer sends around the tunnel),
``peer-route`` (each tunnel end has a route to its peer's address), ``ike-daemon`` (something listens on UDP 500/4500),
``sa`` (an installed CHILD_SA per tunnel end, its SPIs, both ends agreeing), ``route``
(each tunnel's subnets routed into its device, policy rules and table 220 included),
``mtu`` (the outer path's smallest MTU against a full-size inner packet plus ESP),
``firewall`` (nftables rules that drop IKE, ESP or the tunnel's forwarded traffic),
``topology`` (the stale-topology differences) and ``clock`` (remote hosts' clocks).

nftables rules are evaluated against the concrete packets a tunnel sends through each
node (IKE on 500 and 4500, ESP-in-UDP or raw ESP, the cleartext forwarded into and out of
the tunnel): ``udp``/``th`` ports, ``ip`` addresses and protocol, ``meta l4proto``,
``iifname``/``oifname``, the RFC 3948 non-ESP marker (``@th,64,32``) and ``ct state``
(a running tunnel's packets count as established) are understood; a rule with any other
selector is "may drop" (warn), never a certain failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any

from tracer.analysis.topocheck import EXPECTED_RULES, compare, kernel_decision, kernel_route
from tracer.errors import TracerError
from tracer.model.checkstate import (
    ChildSa,
    IkeState,
    Neighbour,
    NftChain,
    NftRule,
    NftRuleset,
    NodeEvidence,
    Sysctls,
    UdpSocket,
    Unavailable,
)
from tracer.model.netstate import STRONGSWAN_RULE, NodeState
from tracer.model.path import expected_path
from tracer.model.point import split_point
from tracer.model.topology import Node, Topology, Tunnel, TunnelEnd

OK, FAIL, WARN, UNCHECKED = "ok", "fail", "warn", "unchecked"
STATUSES = (OK, FAIL, WARN, UNCHECKED)
CHECKS = ("link", "neighbour", "forwarding", "rp_filter", "peer-route", "ike-daemon", "sa", "route", "mtu", "firewall",
          "topology", "clock")
IKE_PORTS = (500, 4500)
CLOCK_TOLERANCE = 0.5  # seconds of offset beyond the measurement's own uncertainty

# ESP overhead, AES-GCM-16 (RFC 4106): ESP header (SPI, seq) 8, IV 8, ICV 16, pad length and
# next header 2, padding to a multiple of 4; outer IPv4 header 20, UDP 8 when encapsulated.
OUTER_IP, UDP_HDR, ESP_HDR, ESP_IV, ESP_TRAILER, ESP_ICV = 20, 8, 8, 8, 2, 16
ALL = "all"  # the node of findings about no node in particular


@dataclass(frozen=True)
class Finding:
    node: str
    check: str  # one of CHECKS
    status: str  # one of STATUSES
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "check": self.check, "status": self.status, "detail": self.detail,
                "fix": self.fix}


@dataclass(frozen=True)
class Snapshot:
    """Everything read for a check run: live states (and why some nodes could not be read),
    and per node the other evidence."""

    states: dict[str, NodeState] = field(default_factory=dict)
    unread: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, NodeEvidence] = field(default_factory=dict)

    def ev(self, node: str) -> NodeEvidence:
        return self.evidence.get(node) or NodeEvidence()


def exit_code(findings: Iterable[Finding]) -> int:
    """1 when a check failed, else 3 when one could not run, else 0 (warnings do not count)."""
    statuses = {f.status for f in findings}
    return 1 if FAIL in statuses else 3 if UNCHECKED in statuses else 0


def esp_overhead(inner: int, udp: bool) -> int:
    """Bytes an ``inner``-byte packet gains as ESP (AES-GCM-16), in UDP if ``udp``."""
    padded = -(-(inner + ESP_TRAILER) // 4) * 4
    return OUTER_IP + (UDP_HDR if udp else 0) + ESP_HDR + ESP_IV + padded + ESP_ICV - inner


def largest_inner(pmtu: int, udp: bool) -> int:
    """The largest inner packet whose ESP fits in ``pmtu`` bytes."""
    n = pmtu - esp_overhead(0, udp) + 3
    while n > 0 and n + esp_overhead(n, udp) > pmtu:
        n -= 1
    return max(n, 0)


# -- what each node needs read ------------------------------------------------------------------


def tunnel_ends(topo: Topology, node: str) -> list[tuple[Tunnel, TunnelEnd, TunnelEnd]]:
    return [(t, *ends) for t in topo.tunnels if (ends := t.ends_from(node))]


def forwards(node: Node) -> bool:
    return node.role in ("gateway", "router")


def needs(topo: Topology, node: str) -> set[str]:
    """The evidence sources a check run reads on ``node``: neigh, sysctl, sockets, nft, ike, clock."""
    n = topo.nodes[node]
    ends = tunnel_ends(topo, node)
    out = {"neigh"}
    if forwards(n) or ends:
        out |= {"sysctl", "nft"}
    if any(t.keying == "ike" for t, _, _ in ends):
        out |= {"sockets", "ike"}
    if n.capture_backend == "ssh":
        out.add("clock")
    return out


# -- the run ----------------------------------------------------------------------------------


def run_checks(topo: Topology, snap: Snapshot, nodes: Iterable[str] | None = None) -> list[Finding]:
    """Every check over the topology; only the findings about ``nodes`` (None: all), ordered by
    node (the topology's order) and check."""
    out: list[Finding] = []
    for node in topo.nodes.values():
        out += _links(node, snap)
        out += _neighbours(topo, node, snap)
        out += _forwarding(node, snap)
        out += _rp_filter(topo, node, snap)
        out += _peer_routes(topo, node, snap)
        out += _daemon(topo, node, snap)
        out += _routes(topo, node, snap)
        out += _firewall(topo, node, snap)
    for t in topo.tunnels:
        out += _sas(topo, t, snap)
        out += _mtu(topo, t, snap)
    out += _topology(topo, snap)
    out += _clocks(topo, snap)
    wanted = set(nodes) if nodes is not None else None
    order = {n: i for i, n in enumerate(topo.nodes)}
    out = [f for f in out if wanted is None or f.node in wanted or f.node == ALL]
    return sorted(dict.fromkeys(out), key=lambda f: (order.get(f.node, len(order)), CHECKS.index(f.check)))


def _in(node: Node, command: str) -> str:
    """``command`` as typed where the node lives (its namespace, or its SSH host)."""
    if node.capture_backend == "ssh":
        return f"{command} (on {node.ssh})"
    return f"ip netns exec {node.netns} {command}" if node.netns else command


def _unchecked(node: str, check: str, what: str, why: str) -> Finding:
    return Finding(node, check, UNCHECKED, f"not checked: {what} could not be read ({why})")


# -- links and neighbours ------------------------------------------------------------------------


def _links(node: Node, snap: Snapshot) -> list[Finding]:
    """Every interface of the topology is up and has carrier (a veth whose peer is down has none)."""
    state = snap.states.get(node.name)
    if state is None:
        return []  # the topology check says why it was not read
    out = []
    for name in node.interfaces:
        live = state.interface(name)
        if live is None or live.up:
            continue  # a missing interface is the topology check's
        if not live.admin_up:
            out.append(Finding(node.name, "link", FAIL, f"{name} is down (administratively, operstate "
                               f"{live.operstate}): nothing is sent or received on it, and its routes are gone",
                               _in(node, f"ip link set {name} up") + ", then restore its routes"))
        else:
            out.append(Finding(node.name, "link", FAIL, f"{name} is up but has no carrier (operstate "
                               f"{live.operstate}): the link below it, or its peer, is down",
                               "bring the other end of the link up (for a veth: its peer interface)"))
    if out:
        return out
    return [Finding(node.name, "link", OK, f"{', '.join(node.interfaces)} up with carrier")] if node.interfaces else []


def _macs(topo: Topology, snap: Snapshot) -> dict[str, tuple[str, str, str]]:
    """Address → (node, interface, live MAC) of every topology interface whose MAC was read."""
    out = {}
    for n in topo.nodes.values():
        state = snap.states.get(n.name)
        for iface in n.interfaces.values():
            live = state.interface(iface.name) if state else None
            if live is not None and live.mac:
                out |= {str(a.ip): (n.name, iface.name, live.mac.lower()) for a in iface.addresses}
    return out


def _neighbours(topo: Topology, node: Node, snap: Snapshot) -> list[Finding]:
    """A static neighbour entry for an address of the topology must carry that interface's MAC:
    else every frame for it goes to a MAC no one has, and the peer discards it (OTHERHOST)."""
    n, neigh = node.name, snap.ev(node.name).neigh
    if neigh is None:
        return []
    if isinstance(neigh, Unavailable):
        return [_unchecked(n, "neighbour", "its neighbour table", neigh.why)]
    macs = _macs(topo, snap)
    out = []
    static: list[Neighbour] = [e for e in neigh if e.static]
    for e in static:
        owner = macs.get(e.address)
        if owner is None or e.lladdr is None or e.lladdr.lower() == owner[2]:
            continue
        out.append(Finding(n, "neighbour", FAIL, f"static neighbour entry {e.address} lladdr {e.lladdr} on {e.dev}, "
                           f"but {owner[0]}:{owner[1]} has {owner[2]}: frames for {owner[0]} go to a MAC no one has "
                           f"and {owner[0]} discards them", _in(node, f"ip neigh del {e.address} dev {e.dev}")
                           + " (or replace it with the right lladdr)"))
    if out:
        return out
    return [Finding(n, "neighbour", OK, f"{len(static)} static neighbour entries, each with its node's MAC"
                    if static else "no static neighbour entries")]


# -- the route to the peer ------------------------------------------------------------------------


def _peer_routes(topo: Topology, node: Node, snap: Snapshot) -> list[Finding]:
    """Each tunnel end can send to its peer's outer address (else charon: Network is unreachable)."""
    ends = tunnel_ends(topo, node.name)
    state = snap.states.get(node.name)
    if not ends or state is None:
        return []
    out, good = [], []
    for t, local, remote in ends:
        back = kernel_route(state, local.address, remote.address)
        if back is None:
            want = node.lookup(remote.address)  # the topology's route
            add = (f"ip route replace {want.dst} {want.ip_args()}" if want
                   else f"ip route add {remote.address} via NEXT-HOP")
            out.append(Finding(node.name, "peer-route", FAIL, f"no route to {remote.node}'s address {remote.address}: "
                               f"IKE and ESP of tunnel {t.name} cannot be sent (the IKE daemon logs 'Network is "
                               "unreachable')", _in(node, add)))
        else:
            good.append(f"{remote.address} via {back.dev} (table {back.table})")
    return out or [Finding(node.name, "peer-route", OK, "; ".join(good))]


# -- forwarding ---------------------------------------------------------------------------------


def _forwarding(node: Node, snap: Snapshot) -> list[Finding]:
    if not forwards(node):
        return []
    n, sysctl = node.name, snap.ev(node.name).sysctl
    if not isinstance(sysctl, Sysctls):
        return [_unchecked(n, "forwarding", "its sysctls", sysctl.why if sysctl else "not read")]
    if sysctl.get("net.ipv4.ip_forward") == 0:
        return [Finding(n, "forwarding", FAIL, f"net.ipv4.ip_forward is 0: this {node.role} forwards nothing",
                        _in(node, "sysctl -w net.ipv4.ip_forward=1") + ", and persist it in /etc/sysctl.d")]
    off = [i for i in node.interfaces if sysctl.conf(i, "forwarding") == 0]
    if off:
        return [Finding(n, "forwarding", FAIL, f"forwarding is off on {', '.join(off)} "
                        "(net.ipv4.conf.<iface>.forwarding = 0): nothing arriving there is forwarded",
                        "; ".join(_in(node, f"sysctl -w net.ipv4.conf.{i}.forwarding=1") for i in off))]
    if sysctl.get("net.ipv4.ip_forward") is None:
        return [_unchecked(n, "forwarding", "net.ipv4.ip_forward", "not in /proc/sys")]
    return [Finding(n, "forwarding", OK, f"ip_forward 1, forwarding on {', '.join(node.interfaces)}")]


# -- rp_filter ----------------------------------------------------------------------------------


def _host_in(net: IPv4Network, topo: Topology) -> IPv4Address:
    """An address of ``net`` to stand for it: one no node owns, else the first."""
    candidates = [net.network_address] if net.prefixlen >= 31 else [
        net.network_address + 1, net.broadcast_address - 1, net.network_address + 2]
    return next((a for a in candidates if topo.owner(a) is None), candidates[0])


def _arrivals(topo: Topology, node: Node, t: Tunnel, local: TunnelEnd,
              remote: TunnelEnd) -> list[tuple[str, IPv4Network, IPv4Address, IPv4Address]]:
    """(interface, source net, a source, the destination) of what arrives at a tunnel end."""
    out = []
    rsrc, lsrc = [_host_in(s, topo) for s in remote.subnets], [_host_in(s, topo) for s in local.subnets]
    wan = node.lookup(remote.address)
    if local.interface:  # decapsulated traffic comes out of the tunnel device
        out += [(local.interface, net, a, lsrc[0]) for net, a in zip(remote.subnets, rsrc, strict=True)]
    for net, a in zip(local.subnets, lsrc, strict=True):
        lan = node.lookup(a)
        if lan is not None and lan.dev != local.interface:
            out.append((lan.dev, net, a, rsrc[0]))
    if wan is not None:
        out.append((wan.dev, IPv4Network(remote.address), remote.address, local.address))
    return out


def _rp_filter(topo: Topology, node: Node, snap: Snapshot) -> list[Finding]:
    ends = tunnel_ends(topo, node.name)
    if not ends:
        return []
    n, sysctl, state = node.name, snap.ev(node.name).sysctl, snap.states.get(node.name)
    if not isinstance(sysctl, Sysctls):
        return [_unchecked(n, "rp_filter", "its sysctls", sysctl.why if sysctl else "not read")]
    if state is None:
        return [_unchecked(n, "rp_filter", "its routes", snap.unread.get(n, "not read"))]
    out, seen = [], []
    for t, local, remote in ends:
        for iface, net, src, dst in _arrivals(topo, node, t, local, remote):
            mode = sysctl.rp_filter(iface)
            seen.append(f"{iface} {mode}")
            if not mode:
                continue
            # The kernel's reverse-path lookup: to the source, from the destination, as if sent here.
            back = kernel_route(state, dst, src)
            if back is not None and (mode == 2 or back.dev == iface):
                continue
            strict = "strict" if mode == 1 else "loose"
            how = "no route back" if back is None else f"the route back leaves by {back.dev} (table {back.table})"
            out.append(Finding(n, "rp_filter", FAIL,
                               f"{strict} rp_filter ({mode}) on {iface}: tunnel {t.name} traffic from {net} arrives "
                               f"there but {how}, so the kernel drops it as spoofed (asymmetric path)",
                               _in(node, f"sysctl -w net.ipv4.conf.{iface}.rp_filter=2 "
                                         f"net.ipv4.conf.all.rp_filter=2")
                               + f" (loose), or route {net} back via {iface}"))
        out += _rp_around(topo, node, snap, sysctl, state, t, local, remote)
    if out:
        return list(dict.fromkeys(out))
    return [Finding(n, "rp_filter", OK, "rp_filter " + ", ".join(dict.fromkeys(seen))
                    + " (0 off, 1 strict, 2 loose): every return route matches")]


def _rp_around(topo: Topology, node: Node, snap: Snapshot, sysctl: Sysctls, state: NodeState, t: Tunnel,
               local: TunnelEnd, remote: TunnelEnd) -> list[Finding]:
    """The peer routes its subnets' traffic for ours around the tunnel (an asymmetric path): it
    arrives here in the clear on the interface towards the peer, where strict rp_filter drops it
    because this end routes those subnets into the tunnel."""
    peer = snap.states.get(remote.node)
    wan = node.lookup(remote.address)
    if peer is None or wan is None or not remote.interface:
        return []
    out = []
    for rnet, lnet, _, d, into in _tunnel_routes(topo, topo.nodes[remote.node], peer, remote, local):
        if into or d.outcome != "forward" or d.route is None:
            continue  # into the tunnel (or dropped there): nothing arrives here in the clear
        src, dst = _host_in(rnet, topo), _host_in(lnet, topo)
        back = kernel_route(state, dst, src)
        if sysctl.rp_filter(wan.dev) != 1 or back is None or back.dev == wan.dev:
            continue
        out.append(Finding(node.name, "rp_filter", FAIL,
                           f"strict rp_filter (1) on {wan.dev}: {remote.node} sends {rnet} → {lnet} around tunnel "
                           f"{t.name} (see its route check), so it arrives here on {wan.dev} in the clear, while "
                           f"the route back to {rnet} leaves by {back.dev}: the kernel drops it as spoofed",
                           f"fix {remote.node}'s route (the cause); "
                           + _in(node, f"sysctl -w net.ipv4.conf.{wan.dev}.rp_filter=2") + " only hides it"))
    return out


# -- the IKE daemon -------------------------------------------------------------------------------


def _listening(sockets: tuple[UdpSocket, ...], port: int, addresses: set[str]) -> UdpSocket | None:
    return next((s for s in sockets if s.port == port and s.address in addresses), None)


def _daemon(topo: Topology, node: Node, snap: Snapshot) -> list[Finding]:
    ends = [(t, local) for t, local, _ in tunnel_ends(topo, node.name) if t.keying == "ike"]
    if not ends:
        return []
    n, sockets = node.name, snap.ev(node.name).sockets
    if sockets is None or isinstance(sockets, Unavailable):
        return [_unchecked(n, "ike-daemon", "its listening sockets", sockets.why if sockets else "not read")]
    addresses = {"0.0.0.0", "*", "::"} | {str(local.address) for _, local in ends}
    need = (500, 4500) if any(t.encapsulation == "udp" for t, _ in ends) else (500,)
    found = {p: _listening(sockets, p, addresses) for p in need}
    missing = [p for p, s in found.items() if s is None]
    if missing:
        ports = " and ".join(f"UDP {p}" for p in missing)
        what = "no IKE daemon listens on " if len(missing) == len(need) else "nothing listens on "
        why = "" if len(missing) == len(need) else " (NAT traversal and ESP-in-UDP need it)"
        return [Finding(n, "ike-daemon", FAIL, what + ports + why,
                        "start the IKE daemon (strongSwan: charon, or 'systemctl start strongswan') and check its "
                        "log for a port it could not bind")]
    who = {f"{s.process} (pid {s.pid})" if s.process else "a process" for s in found.values() if s}
    return [Finding(n, "ike-daemon", OK, f"{', '.join(sorted(who))} listens on "
                    + " and ".join(f"UDP {p}" for p in need))]


# -- SAs --------------------------------------------------------------------------------------------


def _covers(ts: tuple[str, ...], nets: tuple[IPv4Network, ...]) -> bool:
    parsed = []
    for s in ts:
        try:
            parsed.append(ip_network(s.split("[", 1)[0], strict=False))
        except ValueError:
            continue
    return all(any(n.version == p.version and n.subnet_of(p) for p in parsed) for n in nets)  # type: ignore[arg-type]


def _child_for(ike: IkeState, t: Tunnel, local: TunnelEnd, remote: TunnelEnd) -> tuple[ChildSa | None, str]:
    """The installed CHILD_SA carrying ``t`` at ``local`` (None: none), and the IKE_SA states seen."""
    states = []
    for sa in ike.sas:
        states.append(f"IKE_SA {sa.name} {sa.state}")
        if sa.state != "ESTABLISHED":
            continue
        for c in sa.children:
            if c.state not in ("INSTALLED", "REKEYING", "REKEYED"):
                continue
            if c.name == t.name or (_covers(c.local_ts, local.subnets) and _covers(c.remote_ts, remote.subnets)):
                return c, ""
    return None, ", ".join(states)


def _spi(v: int | None) -> str:
    return "?" if v is None else f"0x{v:08x}"


def _sas(topo: Topology, t: Tunnel, snap: Snapshot) -> list[Finding]:
    if t.keying != "ike":
        return []
    out, found = [], {}
    for local, remote in ((t.left, t.right), (t.right, t.left)):
        n, ike = local.node, snap.ev(local.node).ike
        if not isinstance(ike, IkeState):
            why = ike.why if ike else "not read"
            detail = f"not checked: {why}" if why.startswith("how to reach") else \
                f"not checked: the IKE daemon's SAs could not be read ({why})"
            fix = "give the node ike_vici (its vici socket) in the topology" if why.startswith("how to reach") else ""
            out.append(Finding(n, "sa", UNCHECKED, f"tunnel {t.name}: {detail}", fix))
            continue
        child, states = _child_for(ike, t, local, remote)
        sel = f"{', '.join(map(str, local.subnets))} ↔ {', '.join(map(str, remote.subnets))}"
        if child is None:
            seen = f"; the daemon has {states}" if states else "; the daemon has no IKE_SA at all"
            out.append(Finding(n, "sa", FAIL, f"no CHILD_SA installed for tunnel {t.name} ({sel}){seen}",
                               f"initiate it (swanctl --initiate --child {t.name}) and read the daemon's log for why it "
                               f"does not come up: IKE (UDP 500/4500) must reach {remote.address}"))
            continue
        found[n] = child
        carrier = "ESP in UDP" if child.encap else child.protocol
        out.append(Finding(n, "sa", OK, f"CHILD_SA {child.name} {child.state} for {sel}: SPIs in "
                           f"{_spi(child.spi_in)} out {_spi(child.spi_out)} ({carrier}"
                           + (f", {child.encryption})" if child.encryption else ")")))
    a, b = found.get(t.left.node), found.get(t.right.node)
    if a is not None and b is not None and (a.spi_in != b.spi_out or a.spi_out != b.spi_in):
        out.append(Finding(t.right.node, "sa", FAIL,
                           f"tunnel {t.name}: the ends disagree on SPIs ({t.left.node} in {_spi(a.spi_in)} out "
                           f"{_spi(a.spi_out)}, {t.right.node} in {_spi(b.spi_in)} out {_spi(b.spi_out)}): "
                           "ESP from one is not decrypted by the other",
                           f"re-establish the SA (swanctl --terminate --ike {t.name}; swanctl --initiate "
                           f"--child {t.name})"))
    return out


# -- routes into the tunnel ---------------------------------------------------------------------------


def _routes(topo: Topology, node: Node, snap: Snapshot) -> list[Finding]:
    ends = tunnel_ends(topo, node.name)
    if not ends:
        return []
    n, state = node.name, snap.states.get(node.name)
    if state is None:
        return [_unchecked(n, "route", "its routes", snap.unread.get(n, "not read"))]
    out, good = [], []
    for t, local, remote in ends:
        if not local.interface:
            out.append(Finding(n, "route", OK, f"tunnel {t.name} is policy-based here: its traffic is chosen by "
                                               "IPsec policy, not by a route (xfrm policies are not read)"))
            continue
        for lnet, rnet, iif, d, into in _tunnel_routes(topo, node, state, local, remote):
            if into:
                good.append(f"{lnet} → {rnet} via {local.interface} (table {d.table})")
                continue
            out.append(_route_finding(node, snap, t, local, lnet, rnet, iif, d))
    if out:
        return out
    return [Finding(n, "route", OK, "; ".join(good))]


def _tunnel_routes(topo: Topology, node: Node, state: NodeState, local: TunnelEnd,
                   remote: TunnelEnd) -> Iterator[tuple[IPv4Network, IPv4Network, str | None, Any, bool]]:
    """How ``node`` (the ``local`` end) routes its subnets' traffic for the remote's, arriving on
    its LAN: (local net, remote net, iif, the kernel's decision, whether it goes into the tunnel)."""
    for lnet in local.subnets:
        src = _host_in(lnet, topo)
        lan = node.lookup(src)
        iif = lan.dev if lan is not None and lan.dev != local.interface else None
        for rnet in remote.subnets:
            d = kernel_decision(state, src, _host_in(rnet, topo), iif)
            into = d.outcome == "forward" and d.route is not None and any(
                h.dev == local.interface for h in d.route.hops())
            yield lnet, rnet, iif, d, into


def _route_finding(node: Node, snap: Snapshot, t: Tunnel, local: TunnelEnd, lnet: IPv4Network,
                   rnet: IPv4Network, iif: str | None, d: Any) -> Finding:
    came = f" arriving on {iif}" if iif else ""
    head = f"{lnet} → {rnet}{came} "
    dev = local.interface
    if d.outcome == "none":
        how = "has no route at all"
    elif d.outcome == "drop":
        how = "is dropped (" + (f"{d.route.type} route, table {d.table}" if d.route else f"rule {d.rule.describe()}") + ")"
    elif d.outcome == "local":
        how = f"is delivered locally (table {d.table})"
    else:
        way = " ".join(x for x in (f"via {d.route.via}" if d.route.via else "",
                                   f"dev {d.route.dev}" if d.route.dev else "") if x)
        how = f"goes {way} (table {d.table}"
        how += f", policy rule {d.rule.describe()})" if d.rule is not None and d.rule not in EXPECTED_RULES else ")"
    detail = f"{head}{how}, not into {dev}: around tunnel {t.name}"
    if d.rule is not None and d.rule not in EXPECTED_RULES:
        fix = (f"delete or narrow the policy rule ({_in(node, f'ip rule del pref {d.rule.priority}')}) so "
               f"strongSwan's table {STRONGSWAN_RULE.table} decides")
    elif t.keying == "ike" and not any(r.dev == dev for r in (snap.states[node.name].table(STRONGSWAN_RULE.table))):
        fix = (f"table {STRONGSWAN_RULE.table} has no route into {dev}: strongSwan installs it with the CHILD_SA — "
               f"bring the SA up (see the sa check), or add one ({_in(node, f'ip route add {rnet} dev {dev}')})")
    else:
        fix = f"route {rnet} into the tunnel ({_in(node, f'ip route replace {rnet} dev {dev}')})"
    return Finding(node.name, "route", FAIL, detail, fix)


# -- MTU ---------------------------------------------------------------------------------------------------


def _mtu(topo: Topology, t: Tunnel, snap: Snapshot) -> list[Finding]:
    out = []
    udp = t.encapsulation == "udp"
    for a, b in ((t.left, t.right), (t.right, t.left)):
        try:
            path = expected_path(topo, a.address, b.address, topo.nodes[a.node])
        except TracerError as e:
            out.append(Finding(a.node, "mtu", UNCHECKED, f"tunnel {t.name}: not checked: no outer path ({e})"))
            continue
        hops: list[tuple[str, str, int]] = []
        missing = []
        for hop in path.hops:
            node, iface = split_point(hop.point)
            st = snap.states.get(node)
            li = st.interface(iface) if st is not None else None
            if li is None or li.mtu is None:
                missing.append(hop.point)
            else:
                hops.append((node, hop.point, li.mtu))
        a_state = snap.states.get(a.node)
        inner_dev = a.interface or (topo.nodes[a.node].lookup(_host_in(a.subnets[0], topo)) or None)
        inner_name = inner_dev if isinstance(inner_dev, str) else (inner_dev.dev if inner_dev else None)
        inner_if = a_state.interface(inner_name) if a_state is not None and inner_name else None
        if not hops or inner_if is None or inner_if.mtu is None:
            why = ", ".join(missing) or f"{a.node}:{inner_name}"
            out.append(Finding(a.node, "mtu", UNCHECKED, f"tunnel {t.name} {a.node} → {b.node}: not checked: no live "
                                                         f"MTU for {why}"))
            continue
        inner = inner_if.mtu
        outer = inner + esp_overhead(inner, udp)
        pmtu = min(m for _, _, m in hops)
        where_node, where_point, _ = next(h for h in hops if h[2] == pmtu)
        carrier = "ESP-in-UDP" if udp else "ESP"
        unknown = f" (MTU unknown at {', '.join(missing)})" if missing else ""
        if outer <= pmtu:
            out.append(Finding(a.node, "mtu", OK, f"tunnel {t.name} {a.node} → {b.node}: path MTU {pmtu} carries a "
                               f"full {inner}-byte packet from {a.node}:{inner_name} as {outer} bytes of {carrier} "
                               f"(+{outer - inner}){unknown}"))
            continue
        fit = largest_inner(pmtu, udp)
        out.append(Finding(
            where_node, "mtu", FAIL,
            f"tunnel {t.name} {a.node} → {b.node}: {where_point} has MTU {pmtu}, below the {outer} bytes a full "
            f"{inner}-byte packet from {a.node}:{inner_name} becomes as {carrier} (AES-GCM-16, +{outer - inner}): "
            f"larger packets are dropped there (a PMTUD blackhole if its ICMP 'fragmentation needed' is lost){unknown}",
            f"lower {a.node}'s {inner_name} MTU to {fit} ({_in(topo.nodes[a.node], f'ip link set {inner_name} mtu {fit}')}"
            + ("; strongSwan kernel-libipsec: charon.plugins.kernel-libipsec.mtu" if a.interface else "")
            + f") or raise the path's MTU to {outer}"))
    return out


# -- firewall -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """One packet a tunnel sends through a node, as a firewall hook sees it."""

    label: str  # "IKE (UDP 500)", "ESP-in-UDP", ...
    hook: str  # input, output, forward
    proto: str  # "udp", "esp", "any" (cleartext tunnel traffic)
    src: IPv4Address
    dst: IPv4Address
    iif: str | None = None
    oif: str | None = None
    sport: int | None = None
    dport: int | None = None
    marker_zero: bool | None = None  # UDP 4500: the RFC 3948 non-ESP marker (IKE) or an SPI (ESP)


def _outer_flows(t: Tunnel, src: IPv4Address, dst: IPv4Address, hook: str, iif: str | None,
                 oif: str | None) -> list[Flow]:
    out = []
    if t.keying == "ike":
        out.append(Flow("IKE (UDP 500)", hook, "udp", src, dst, iif, oif, 500, 500))
        if t.encapsulation == "udp":
            out.append(Flow("IKE on UDP 4500", hook, "udp", src, dst, iif, oif, 4500, 4500, True))
    if t.encapsulation == "udp":
        out.append(Flow("ESP-in-UDP", hook, "udp", src, dst, iif, oif, 4500, 4500, False))
    else:
        out.append(Flow("ESP", hook, "esp", src, dst, iif, oif))
    return out


def flows(topo: Topology, node: str) -> list[Flow]:
    """What every tunnel sends through ``node``: IKE and ESP in and out at its ends, forwarded
    on the outer path between them, and the cleartext forwarded into and out of the tunnel."""
    n = topo.nodes[node]
    out: list[Flow] = []
    for t in topo.tunnels:
        for a, b in ((t.left, t.right), (t.right, t.left)):
            if a.node == node:
                wan = n.lookup(b.address)
                out += _outer_flows(t, a.address, b.address, "output", None, wan.dev if wan else None)
                lsrc, rdst = _host_in(a.subnets[0], topo), _host_in(b.subnets[0], topo)
                lan = n.lookup(lsrc)
                into = a.interface or (wan.dev if wan else None)
                if lan is not None:
                    out.append(Flow(f"tunnel traffic {a.subnets[0]} → {b.subnets[0]}", "forward", "any", lsrc, rdst,
                                    lan.dev, into))
            if b.node == node:
                wan = n.lookup(a.address)
                out += _outer_flows(t, a.address, b.address, "input", wan.dev if wan else None, None)
                lsrc, rdst = _host_in(a.subnets[0], topo), _host_in(b.subnets[0], topo)
                lan = n.lookup(rdst)
                came = b.interface or (wan.dev if wan else None)
                if lan is not None:
                    out.append(Flow(f"tunnel traffic {a.subnets[0]} → {b.subnets[0]}", "forward", "any", lsrc, rdst,
                                    came, lan.dev))
            try:
                path = expected_path(topo, a.address, b.address, topo.nodes[a.node])
            except TracerError:
                continue
            hops = path.hops
            for i in range(1, len(hops) - 1):
                if hops[i].node == node == hops[i + 1].node:
                    iif, oif = split_point(hops[i].point)[1], split_point(hops[i + 1].point)[1]
                    out += _outer_flows(t, a.address, b.address, "forward", iif, oif)
    return list(dict.fromkeys(out))


_Tri = bool | None  # True, False, or None: cannot tell


def _values(right: Any) -> list[Any] | None:
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, list):
        return right
    if isinstance(right, (int, str)) or (isinstance(right, dict) and ("prefix" in right or "range" in right)):
        return [right]
    return None


def _one(value: Any, v: Any) -> _Tri:
    """Does the packet's ``value`` equal or fall into ``v`` (a number, name, prefix or range)?"""
    if isinstance(v, dict) and "range" in v:
        lo, hi = v["range"]
        try:
            return _num(lo) <= _num(value) <= _num(hi)
        except (TypeError, ValueError):
            return None
    if isinstance(v, dict) and "prefix" in v:
        try:
            return IPv4Address(value) in IPv4Network(f"{v['prefix']['addr']}/{v['prefix']['len']}", strict=False)
        except ValueError:
            return None
    if isinstance(value, IPv4Address):
        try:
            return value == IPv4Address(str(v))
        except ValueError:
            return None
    if isinstance(value, str) and isinstance(v, str):
        return value == v or (v.endswith("*") and value.startswith(v[:-1]))
    return value == v


def _num(v: Any) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)


_PROTO_NUM = {"udp": 17, "tcp": 6, "esp": 50, "icmp": 1}


def _field(flow: Flow, left: Any) -> tuple[bool, Any]:
    """(known, value) of what ``left`` reads in ``flow``; known False: cannot tell; value None: the
    packet has no such header (so the match fails)."""
    if not isinstance(left, dict):
        return False, None
    if "meta" in left:
        key = left["meta"].get("key")
        if key in ("iifname", "iif"):
            return (True, flow.iif) if flow.iif is not None or flow.hook == "output" else (False, None)
        if key in ("oifname", "oif"):
            return (True, flow.oif) if flow.oif is not None or flow.hook == "input" else (False, None)
        if key == "l4proto":
            return (True, flow.proto) if flow.proto != "any" else (False, None)
        if key == "nfproto":
            return True, "ipv4"
        if key == "protocol":
            return True, "ip"
        return False, None
    if "payload" in left:
        p = left["payload"]
        proto, fld = p.get("protocol"), p.get("field")
        if p.get("base") == "th" and p.get("offset") == 64 and p.get("len") == 32:
            if flow.proto == "udp" and flow.marker_zero is not None:
                return True, 0 if flow.marker_zero else 1  # "non-zero" stands for any SPI
            return (True, None) if flow.proto == "esp" else (False, None)
        if proto == "ip":
            if fld == "saddr":
                return True, flow.src
            if fld == "daddr":
                return True, flow.dst
            if fld == "protocol":
                return (True, flow.proto) if flow.proto != "any" else (False, None)
            return False, None
        if proto in ("udp", "th") and fld in ("sport", "dport"):
            if flow.proto == "udp":
                return True, flow.sport if fld == "sport" else flow.dport
            if flow.proto == "esp":
                return (True, None) if proto == "udp" else (False, None)
            return False, None
        if proto in ("tcp", "icmp", "icmpv6", "ip6", "sctp", "dccp", "udplite"):
            return (True, None) if flow.proto != "any" else (False, None)
        if proto == "esp":
            return (False, None) if flow.proto == "esp" else ((True, None) if flow.proto != "any" else (False, None))
        return False, None
    if "ct" in left and left["ct"].get("key") == "state":
        return True, "established"  # a running tunnel's packets are established ones
    return False, None


def _match(flow: Flow, m: dict[str, Any]) -> _Tri:
    known, value = _field(flow, m.get("left"))
    if not known:
        return None
    op = m.get("op", "==")
    values = _values(m.get("right"))
    if values is None:
        return None
    if value is None:
        hit: _Tri = False
    else:
        if isinstance(value, str) and value in _PROTO_NUM:
            values = [_PROTO_NUM[value] if isinstance(v, int) else v for v in values]
        if value == "established" and values:  # ct state: flags, "established,related" style
            flat = {str(x) for v in values for x in (v if isinstance(v, list) else [v])}
            hit = "established" in flat
        else:
            results = [_one(value, v) for v in values]
            hit = True if True in results else None if None in results else False
    if op in ("==", "in"):
        return hit
    if op == "!=":
        return None if hit is None else (not hit if value is not None else True)
    if op == "&" or op not in ("==", "!=", "in"):
        return None
    return None


_TERMINAL = ("accept", "drop", "reject", "jump", "goto", "return", "queue")


def _rule(flow: Flow, rule: NftRule) -> tuple[_Tri, str | None, Any]:
    """(does it match, its verdict, the verdict's argument)."""
    result: _Tri = True
    verdict, arg = None, None
    for e in rule.expr:
        if not isinstance(e, dict) or not e:
            continue
        key = next(iter(e))
        if key == "match":
            r = _match(flow, e["match"])
            if r is False:
                return False, None, None
            if r is None:
                result = None
        elif key in _TERMINAL:
            verdict, arg = key, e[key]
        elif key in ("xt", "lookup", "vmap"):
            result = None  # iptables-nft compat matches, set lookups, verdict maps: cannot tell
    return result, verdict, arg


@dataclass(frozen=True)
class _Outcome:
    drop: bool
    certain: bool
    rule: NftRule | None = None  # None: the chain's policy
    chain: NftChain | None = None


def _chain(flow: Flow, ruleset: NftRuleset, chain: NftChain, certain: bool = True,
           depth: int = 0) -> _Outcome | None:
    """The verdict ``chain`` gives ``flow`` (None: it falls through / returns)."""
    if depth > 16:
        return None
    for rule in ruleset.rules_of(chain):
        hit, verdict, arg = _rule(flow, rule)
        if hit is False or verdict is None or verdict == "queue":
            continue
        sure = certain and hit is True
        if verdict in ("drop", "reject"):
            if hit is None and not certain:
                continue
            return _Outcome(True, sure, rule, chain)
        if verdict == "accept":
            if hit is True:
                return _Outcome(False, certain, rule, chain)
            certain = False  # it may have accepted: a later drop is only a "may"
            continue
        if verdict == "return":
            if hit is True:
                return None
            certain = False
            continue
        target = arg.get("target") if isinstance(arg, dict) else None
        sub = ruleset.chain(chain.family, chain.table, target) if target else None
        if sub is None:
            continue
        res = _chain(flow, ruleset, sub, sure, depth + 1)
        if res is not None and (res.drop or hit is True):
            return res
        if verdict == "goto" and hit is True:
            return None
    return None


def evaluate(flow: Flow, ruleset: NftRuleset) -> _Outcome | None:
    """What the node's base chains at ``flow``'s hook do to it: the first drop (certain ones first), else None."""
    drops = []
    for chain in sorted(ruleset.chains, key=lambda c: c.priority):
        if chain.hook != flow.hook or chain.family not in ("inet", "ip"):
            continue
        res = _chain(flow, ruleset, chain)
        if res is None and chain.policy == "drop":
            res = _Outcome(True, True, None, chain)
        if res is not None and res.drop:
            drops.append(res)
    return max(drops, key=lambda r: r.certain) if drops else None


def _firewall(topo: Topology, node: Node, snap: Snapshot) -> list[Finding]:
    fl = flows(topo, node.name)
    if not fl:
        return []
    n, nft = node.name, snap.ev(node.name).nft
    if not isinstance(nft, NftRuleset):
        why = nft.why if nft else "not read"
        return [_unchecked(n, "firewall", "its nftables ruleset", why)]
    hits: dict[tuple[Any, bool], list[Flow]] = {}
    for f in fl:
        res = evaluate(f, nft)
        if res is not None:
            key = (res.rule if res.rule is not None else res.chain, res.certain)
            hits.setdefault(key, []).append(f)
    out = []
    for (what, certain), fs in hits.items():
        labels = _describe_flows(topo, fs)
        if isinstance(what, NftRule):
            text = what.text or f"handle {what.handle}"
            subject = f'nft rule "{what.where()} {text}"'
            fix = f"remove or narrow it ({_in(node, f'nft delete rule {what.where()} handle {what.handle}')})"
        else:
            subject = f"nft chain {what.family} {what.table} {what.name} (hook {what.hook}, policy drop)"
            fix = "add a rule that accepts them ahead of the policy"
        verb = "drops" if certain else "may drop"
        out.append(Finding(n, "firewall", FAIL if certain else WARN, f"{subject} {verb} {labels}",
                           fix if certain else fix + "; check whether its other selectors spare them"))
    if out:
        return out
    rules = len(nft.rules)
    return [Finding(n, "firewall", OK, f"no nftables rule drops IKE, ESP or the tunnels' forwarded traffic "
                    f"({rules} rule{'s' if rules != 1 else ''} read)")]


def _describe_flows(topo: Topology, fs: list[Flow]) -> str:
    """"IKE (UDP 500), ESP-in-UDP between west-gw and east-gw (forwarded eth0 → eth1, eth1 → eth0)"."""
    groups: dict[str, tuple[list[str], list[str]]] = {}  # who → (labels, wheres)
    for f in fs:
        if f.proto == "any":
            who, where = "", f"forwarded {f.iif} → {f.oif}"
        else:
            a, b = topo.owner(f.src), topo.owner(f.dst)
            ends = sorted([a.name if a else str(f.src), b.name if b else str(f.dst)],
                          key=lambda x: list(topo.nodes).index(x) if x in topo.nodes else 0)
            who = " between " + " and ".join(ends)
            where = {"forward": f"forwarded {f.iif} → {f.oif}", "input": f"arriving on {f.iif}",
                     "output": f"leaving by {f.oif}"}[f.hook]
        labels, wheres = groups.setdefault(who, ([], []))
        labels.append(f.label)
        wheres.append(where)
    return "; ".join(f"{', '.join(dict.fromkeys(labels))}{who} ({', '.join(dict.fromkeys(wheres))})"
                     for who, (labels, wheres) in groups.items())


# -- the topology file, clocks ------------------------------------------------------------------------


def _topology(topo: Topology, snap: Snapshot) -> list[Finding]:
    out = [Finding(n, "topology", UNCHECKED, f"not checked: live state could not be read ({why})")
           for n, why in snap.unread.items()]
    diffs = compare(topo, snap.states)
    for d in diffs:
        text = d.text.removeprefix(f"{d.node}: ")
        out.append(Finding(d.node, "topology", WARN, f"{d.kind}: {text}",
                           "update the topology file if this is intended, else restore the node"))
    differing = {d.node for d in diffs}
    out += [Finding(n, "topology", OK, "interfaces, addresses, links, routes and policy rules match the topology")
            for n in snap.states if n not in differing]
    return out


def _clocks(topo: Topology, snap: Snapshot) -> list[Finding]:
    remote = [n for n in topo.nodes.values() if n.capture_backend == "ssh"]
    if not remote:
        return [Finding(ALL, "clock", OK, "not checked: no remote (SSH) nodes; every node shares this host's clock")]
    out = []
    for node in remote:
        c = snap.ev(node.name).clock
        if c is None or isinstance(c, Unavailable):
            out.append(_unchecked(node.name, "clock", f"the clock of {node.ssh}", c.why if c else "not read"))
            continue
        margin = c.rtt / 2
        if abs(c.offset) > margin + CLOCK_TOLERANCE:
            out.append(Finding(node.name, "clock", WARN, f"{node.ssh}'s clock is {c.offset:+.3f} s off this host's "
                               f"(± {margin:.3f} s): its capture times are shifted (tracer corrects them from probes "
                               "seen at both ends of a wire, when it can)", "run NTP (chrony) on both hosts"))
        else:
            out.append(Finding(node.name, "clock", OK, f"{node.ssh}'s clock is {c.offset:+.3f} s off this host's "
                               f"(± {margin:.3f} s)"))
    return out


__all__ = ["CHECKS", "STATUSES", "Finding", "Flow", "Snapshot", "esp_overhead", "evaluate", "exit_code", "flows",
           "largest_inner", "needs", "run_checks"]
