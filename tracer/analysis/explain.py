"""Explain: the evidence behind each located loss (pure: snapshots in, evidence lines out).

For every lost finding, only what moved at or beside the located hop counts: the nodes of its
last-seen and first-missed points, the kernel's own drops of these very probes (or of their
ESP carriers) with the drop reason (``skb:kfree_skb``, the strongest evidence there is: the
kernel says which packet, where and why), their drop counters (firewall rules that drop,
interface drops and errors, kernel SNMP drop counters) that grew in proportion to the probes
lost there, a link of the edge that is down (or whose wire peer is), the CHILD_SA that should
have carried the probes and did not count them, and the IKE daemon's error lines during the
trace. The "why" line cites the strongest of them; a finding without any keeps its
edge-derived guess, marked ``likely: `` by locate. Evidence a source could not read is said
once. A probe lost where a point could not be captured because its link is down is lost there,
for that reason, not inconclusive. Everything else stays in the run directory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from tracer.analysis.locate import LIKELY
from tracer.model.direction import Direction
from tracer.model.distinct import distinct
from tracer.model.evidence import AFTER, BEFORE, EVENTS, Counter, Drop, Evidence, Snapshot
from tracer.model.flowgraph import EdgeKind
from tracer.model.path import ExpectedPath
from tracer.model.point import CapturePoint
from tracer.model.verdict import Finding, Outcome, ProbeTrace, ProbeTraces

if TYPE_CHECKING:
    from tracer.model.netstate import NodeState

SA_SOURCE = "strongswan"
LOG_SOURCE = "ikelog"
DROP_SOURCE = "dropreasons"
CAPTURE_SOURCE = "capture"  # the points whose sniffer could not start (notes: why)
LINK_SOURCE = "links"
SOCKET_SOURCE = "sockets"
DOWN_STATES = ("DOWN", "LOWERLAYERDOWN", "NOTPRESENT")
MAX_LOG_LINES = 3
_LOG_TROUBLE = re.compile(
    r"error|fail|unreachable|not permitted|denied|no (?:\S+ )?(?:found|matching)|invalid|discard|drop|refused|timeout",
    re.IGNORECASE)
_IN_PROPORTION_SLACK = 10  # background drops a busy node adds on top of ours


def in_proportion(delta: int, lost: int) -> bool:
    """A drop counter that grew by at least the probes lost, and not by far more (then it counts
    something else too, and cannot say which of its drops were ours)."""
    return lost <= delta <= 2 * lost + _IN_PROPORTION_SLACK


@dataclass(frozen=True)
class _Item:
    """One evidence line and the cause it supports."""

    rank: int  # lower: stronger evidence, cited first
    line: str
    cause: str


def explain(
    findings: list[Finding],
    paths: dict[Direction, ExpectedPath],
    traces: ProbeTraces | Sequence[ProbeTrace],
    evidence: Evidence | None,
    netstate: dict[str, NodeState] | None = None,
) -> list[Finding]:
    """The findings with their evidence lines, and the "why" citing the strongest when there is some.
    ``netstate``: the nodes' live routing state when the run started (a route the kernel lacks)."""
    if not evidence and not netstate:
        return findings
    traces = ProbeTraces.of(traces)
    evidence = evidence or Evidence({})
    out = []
    for f in findings:
        if f.outcome == Outcome.INCONCLUSIVE:
            f = _down_point(f, paths.get(f.direction), evidence)
        out.append(_explain(f, paths.get(f.direction), traces, evidence, netstate or {})
                   if f.outcome == Outcome.LOST else f)
    return out


def uncaptured(evidence: Evidence | None) -> list[str]:
    """Why each point whose sniffer could not start was not captured (one line each)."""
    if not evidence:
        return []
    return [note for (phase, source, _), snap in sorted(evidence.snapshots.items())
            if phase == EVENTS and source == CAPTURE_SOURCE for note in snap.notes]


def _down_point(f: Finding, path: ExpectedPath | None, ev: Evidence) -> Finding:
    """An inconclusive finding whose first unseen point was not captured because its link is
    down: the probes were lost there, and the link state says why."""
    if not f.last_seen or not f.first_missed or path is None:
        return f
    cp = CapturePoint.parse(f.first_missed)
    state = _link_state(ev, cp.node, cp.iface)
    if state not in DOWN_STATES:
        return f
    last = CapturePoint.parse(f.last_seen)
    where = (f"inside {cp.node} between {last.iface} and {cp.iface}" if last.node == cp.node
             else f"on the wire {f.last_seen} → {f.first_missed}")
    return replace(f, outcome=Outcome.LOST, where=where, reason=None)


def _link_state(ev: Evidence, node: str, iface: str) -> str | None:
    for phase in (AFTER, BEFORE):
        snap = ev.get(phase, LINK_SOURCE, node)
        if snap is not None and not snap.unavailable and iface in snap.links:
            return snap.links[iface]
    return None


def _explain(f: Finding, path: ExpectedPath | None, traces: ProbeTraces, ev: Evidence,
             netstate: dict[str, NodeState]) -> Finding:
    points = [CapturePoint.parse(p) for p in (f.last_seen, f.first_missed) if p]
    nodes = list(dict.fromkeys(cp.node for cp in points))
    if not nodes:
        return f
    edge_ifaces = {(cp.node, cp.iface) for cp in points}
    carriers = _carriers(f, traces)
    items: list[_Item] = []
    unavailable: list[str] = []
    for node in nodes:
        for source in ev.sources(node):
            before, after = ev.get(BEFORE, source, node), ev.get(AFTER, source, node)
            events = ev.get(EVENTS, source, node)
            for snap in (before, after, events):
                if snap is not None and snap.unavailable and not snap.unavailable.startswith("no ike_"):
                    unavailable.append(_unavailable_line(node, source, snap.unavailable))
                    break
            if events is not None and not events.unavailable:
                items += _log_items(node, events)
                if source == DROP_SOURCE:
                    items += _drop_items(node, f, events.drops, carriers)
            if before is None or after is None or before.unavailable or after.unavailable:
                continue
            items += _counter_items(node, before, after, f.count)
            items += _link_items(node, after, edge_ifaces, path, ev)
            if source == SOCKET_SOURCE:
                items += _socket_items(node, f, before, after)
            if source == SA_SOURCE:
                items += _sa_items(node, f, before, after, path, traces)
    items += _no_daemon_items(f, path, ev)
    items += _no_route_items(f, path, netstate)
    if not items:
        lines = tuple(dict.fromkeys(unavailable))
        return replace(f, evidence=lines) if lines else f
    items.sort(key=lambda i: i.rank)  # stable: within a rank, the order the sources were read
    cause = items[0].cause
    if items[0].rank == _DROP_RANK and "NETFILTER_DROP" in cause:
        rule = next((i for i in items if i.rank == 0), None)  # the rule whose counter says which
        cause = f"{cause}: {rule.line.split(': ', 1)[1]}" if rule else cause
    lines = [i.line for i in items] + [u for u in unavailable if u.startswith(_DROPS_UNAVAILABLE)]
    return replace(f, reason=_cite(f.reason, cause), evidence=tuple(dict.fromkeys(lines)))


_DROP_RANK = -1  # the kernel's own word on these very packets: above every counter


def _no_route_items(f: Finding, path: ExpectedPath | None, netstate: dict[str, NodeState]) -> list[_Item]:
    """A probe that never left the node it starts from, whose live routing tables had no route
    for it: the kernel consumed the packet without a drop event or a counter, but its routes say why."""
    if path is None or not path.hops or f.last_seen is not None or f.first_missed != path.hops[0].point:
        return []
    node = path.hops[0].node
    state = netstate.get(node)
    if state is None:
        return []
    from tracer.analysis.topocheck import kernel_route  # live state: only in runs that recorded it

    if kernel_route(state, path.src, path.dst) is not None:
        return []
    line = f"{node}: the kernel had no route to {path.dst} (its live routing tables when the run started)"
    return [_Item(0, line, f"{node} has no route to {path.dst} (live routing tables)")]
_DROPS_UNAVAILABLE = "kernel drop reasons unavailable"


def _unavailable_line(node: str, source: str, why: str) -> str:
    """A source that could not be read; drop reasons once per reason (they are read host-wide)."""
    return f"{_DROPS_UNAVAILABLE} ({why})" if source == DROP_SOURCE else f"{node}: {source} unavailable ({why})"


# What a drop reason means, said after the kernel's own words (enum skb_drop_reason names).
_DROP_MEANING = {
    "OTHERHOST": "the frames were not addressed to {node}'s MAC",
    "IP_RPFILTER": "the reverse-path filter (rp_filter) rejected their source on {dev}",
    "IP_NOROUTE": "no route",
    "IP_INNOROUTES": "no route",
    "IP_OUTNOROUTES": "no route",
    "PKT_TOO_BIG": "too big for the next link's MTU",
    "NEIGH_FAILED": "the next hop's link-layer address could not be resolved",
    "XFRM_POLICY": "an IPsec policy refused them",
    "IP_INHDR": "a bad IP header",
    "SOCKET_FILTER": "a socket filter discarded them",
}


def _carriers(f: Finding, traces: ProbeTraces) -> set[tuple[int, int]]:
    """(SPI, ESP seq) of the ESP packets that carried the finding's probes."""
    keys = _finding_rows(f, traces).esp.ravel()
    keys = distinct(keys[keys != 0])
    return set(zip((keys >> np.uint64(32)).tolist(), (keys & np.uint64(0xFFFFFFFF)).tolist(), strict=True))


def _finding_rows(f: Finding, traces: ProbeTraces) -> ProbeTraces:
    """The traces of the finding's probes."""
    mine = traces.in_direction(f.direction)
    return mine.take(np.isin(mine.seqs, np.array(f.seqs, np.int64)))


def _ours(f: Finding, d: Drop, carriers: set[tuple[int, int]]) -> bool:
    if d.seq is not None:  # a tagged echo: request or reply, by the finding's direction
        want = 8 if f.direction == Direction.REQUEST else 0
        return d.seq in f.seqs and (d.icmp_type is None or d.icmp_type == want)
    if d.spi is None or d.esp_seq is None:
        return False
    # Carriers tied to the probes (by keys or by sequence) decide; without any, ESP of the trace's
    # tunnels dropped at the hop is ours (nothing else ran through them while it was recorded).
    return (d.spi, d.esp_seq) in carriers if carriers else True


def _drop_items(node: str, f: Finding, drops: tuple[Drop, ...], carriers: set[tuple[int, int]]) -> list[_Item]:
    """The kernel's drops of these probes at ``node``, grouped by reason, function and device."""
    groups: dict[tuple[str, str, str | None], set[object]] = {}
    for d in drops:
        if _ours(f, d, carriers):
            key = d.seq if d.seq is not None else (d.spi, d.esp_seq)
            groups.setdefault((d.reason, d.function, d.device), set()).add(key)
    out = []
    for (reason, function, dev), keys in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        n = min(len(keys), f.count)
        where = f", dev {dev}" if dev else ""
        line = f"{node}: kernel dropped {n}/{f.count} ({reason} in {function}{where})"
        meaning = _DROP_MEANING.get(reason)
        cause = f"{line}: {meaning.format(node=node, dev=dev or '?')}" if meaning else line
        out.append(_Item(_DROP_RANK, line, cause))
    return out


def _cite(reason: str | None, cause: str) -> str:
    """The why line with the evidence's cause in place of the guess (other observations kept)."""
    if reason is None or reason.startswith(LIKELY):
        return cause
    if f"; {LIKELY}" in reason:
        return f"{reason.split(f'; {LIKELY}')[0]}; {cause}"
    return f"{reason}; {cause}"


def _deltas(before: Snapshot, after: Snapshot) -> list[tuple[Counter, int]]:
    was = {c.key: c.value for c in before.counters}
    return [(c, c.value - was[c.key]) for c in after.counters if c.key in was]


def _counter_items(node: str, before: Snapshot, after: Snapshot, lost: int) -> list[_Item]:
    out = []
    for c, delta in _deltas(before, after):
        if not c.drop or not in_proportion(delta, lost):
            continue
        amount = f"+{delta} {c.unit}" if c.kind == "rule" else f"+{delta}"
        line = f"{node}: {c.text} {amount}"
        if c.kind == "rule":
            out.append(_Item(0, line, f"{node}'s firewall dropped them: {c.text} {amount}"))
        elif c.kind == "snmp":
            out.append(_Item(2, line, f"{node}'s kernel counted them as dropped: {c.text} {amount}"))
        elif c.kind == "link":
            out.append(_Item(3, line, f"{node}:{c.iface} dropped them: {c.text} {amount}"))
    return out


def _link_items(node: str, after: Snapshot, edge_ifaces: set[tuple[str, str]], path: ExpectedPath | None,
                ev: Evidence) -> list[_Item]:
    """A link of the located edge that is down; when it only lost its carrier because its wire
    peer is down, the peer is the cause."""
    out = []
    for iface, state in after.links.items():
        if (node, iface) not in edge_ifaces or state not in DOWN_STATES:
            continue
        line = f"{node}: {iface} is {state}"
        peer = _wire_peer(path, f"{node}:{iface}")
        peer_state = _link_state(ev, *peer.split(":", 1)) if peer else None
        if peer and peer_state in DOWN_STATES and peer.split(":", 1)[0] != node:
            out.append(_Item(1, line, f"{peer} is down (operstate {peer_state}): {node}:{iface}, "
                                      f"its link peer, is {state}"))
            out.append(_Item(1, f"{peer.replace(':', ': ', 1)} is {peer_state}", ""))
        else:
            out.append(_Item(1, line, f"{node}:{iface} is down (operstate {state})"))
    return out


def _socket_items(node: str, f: Finding, before: Snapshot, after: Snapshot) -> list[_Item]:
    """A tunnel end where IKE probes died and nothing listens on UDP 500 or 4500: no IKE daemon."""
    if before.notes or before.lines or after.lines:
        return []
    ike = f.edge is None or f.direction == Direction.REPLY  # an IKE response that was never sent
    if not ike:
        return []
    line = f"{node}: nothing listens on UDP 500 or 4500 in its namespace (ss -ulnp)"
    return [_Item(_DROP_RANK, line, f"{node}'s IKE daemon is not running: nothing listens on UDP 500 or 4500 "
                                    "in its namespace")]


def _no_daemon_items(f: Finding, path: ExpectedPath | None, ev: Evidence) -> list[_Item]:
    """Probes that left a gateway in the clear where the tunnel should carry them (no SA), while
    a tunnel end on their path has no IKE daemon: that is why there is no SA, wherever the
    cleartext then died."""
    if path is None or not f.divergence or " in the clear instead of into " not in f.divergence:
        return []
    out = []
    for node in dict.fromkeys(h.node for h in path.hops):
        snap = ev.get(BEFORE, SOCKET_SOURCE, node)
        if snap is None or snap.unavailable or snap.notes or snap.lines:
            continue
        line = f"{node}: nothing listens on UDP 500 or 4500 in its namespace (ss -ulnp)"
        out.append(_Item(_DROP_RANK - 1, line, f"{node}'s IKE daemon is not running (nothing listens on UDP 500 "
                                                "or 4500 in its namespace): no SA can be negotiated"))
    return out


def _wire_peer(path: ExpectedPath | None, point: str) -> str | None:
    """The point at the other end of ``point``'s wire on the path."""
    if path is None:
        return None
    i = path.index(point)
    if i < 0:
        return None
    if i + 1 < len(path.hops) and i < len(path.edges) and path.edges[i] == EdgeKind.WIRE:
        return path.hops[i + 1].point
    if i > 0 and path.edges[i - 1] == EdgeKind.WIRE:
        return path.hops[i - 1].point
    return None


def _sa_items(node: str, f: Finding, before: Snapshot, after: Snapshot, path: ExpectedPath | None,
              traces: ProbeTraces) -> list[_Item]:
    """ESP arrived at ``node`` and nothing came out (decap), or cleartext went in and no ESP left
    (encap): the CHILD_SA that should have counted the probes, and did not."""
    if f.edge not in ("decap", "encap") or path is None:
        return []
    way, what = ("in", "ESP arrived") if f.edge == "decap" else ("out", "cleartext arrived")
    sa = [(c, d) for c, d in _deltas(before, after) if c.kind == "sa" and c.way == way]
    if not [c for c in after.counters if c.kind == "sa"]:
        return [_Item(4, f"{node}: no CHILD_SA installed (IKE daemon)", f"{node} has no CHILD_SA (IKE daemon)")]
    spi = _probe_spi(f, path, traces) if way == "in" else None
    if spi is not None and any(c.spi == spi for c, _ in sa):
        sa = [(c, d) for c, d in sa if c.spi == spi]
    packets = {c.spi: d for c, d in sa if c.unit == "packets"}
    out = []
    for c, delta in sa:
        if c.unit == "bytes" and packets.get(c.spi, 0) < f.count:
            line = f"{node}: {c.text} bytes {way} +{delta} while {what}"
            out.append(_Item(4, line, f"{node}'s IKE daemon counted none of it: {c.text} bytes {way} +{delta}"))
    return out


def _probe_spi(f: Finding, path: ExpectedPath, traces: ProbeTraces) -> int | None:
    i = path.index(f.last_seen) if f.last_seen else -1
    if i < 0:
        return None
    keys = _finding_rows(f, traces).esp
    tied = keys[:, i][keys[:, i] != 0] if i < keys.shape[1] else ()
    if len(tied):
        return int(tied[0] >> np.uint64(32))
    esp = path.hops[i].esp
    return esp.spi if esp else None


def _log_items(node: str, events: Snapshot) -> list[_Item]:
    lines = [line for line in events.lines if _LOG_TROUBLE.search(line)][-MAX_LOG_LINES:]
    return [_Item(5, f"{node}: IKE daemon logged: {line.strip()}", f"{node}'s IKE daemon logged: {line.strip()}")
            for line in lines]
