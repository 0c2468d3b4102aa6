"""Locate: turn per-hop sightings into per-probe outcomes and aggregated findings.

For each probe and direction: the last hop that saw it, the first hop after
that which was captured and did not, and the edge between them. If anything
between those two is unobserved, unreliable (sniffer drops) or an ESP hop
whose identity is unknown, the honest answer is *inconclusive*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

import numpy as np

from tracer.analysis.compare import loop_text
from tracer.analysis.correlate import ELSEWHERE, GAP, LEAKED, MISSED, SEEN, UNKNOWN, SightingMatrix, last_index
from tracer.model.direction import Direction
from tracer.model.flowgraph import EdgeKind
from tracer.model.observed import Form, ObservedProbe, Place
from tracer.model.path import ExpectedPath
from tracer.model.point import CapturePoint, point_name
from tracer.model.topology import Node, Topology
from tracer.model.verdict import OUTCOMES, SIGHTINGS, Finding, Outcome, ProbeTrace, ProbeTraces, Sighting

_DOUBTFUL = (Sighting.UNOBSERVED, Sighting.UNRELIABLE, Sighting.UNKNOWN)


def trace_probes(s: SightingMatrix, path: ExpectedPath, direction: Direction,
                 sent: np.ndarray | list[bool] | None = None) -> ProbeTraces:
    """The traces of one direction's probes, as columns. ``sent[p]`` False means the probe was
    never expected on this path (a reply whose request did not arrive). All numpy: runs can
    hold 100k probes."""
    m = s.codes.shape[1]
    codes = s.codes
    hop = np.arange(m)[None, :]
    last = last_index(codes == SEEN)
    start = last + 1
    missed = (hop >= start[:, None]) & np.isin(codes, (MISSED, GAP))
    first_missed = np.where(missed.any(axis=1), np.argmax(missed, axis=1), -1)
    stop = np.where(first_missed >= 0, first_missed, m - 1)
    doubt_codes = [SIGHTINGS.index(d) for d in _DOUBTFUL]
    doubtful = ((hop >= start[:, None]) & (hop <= stop[:, None]) & np.isin(codes, doubt_codes)).any(axis=1)
    outcome = np.where(doubtful | (first_missed < 0), _INCONCLUSIVE, _LOST)
    outcome = np.where(last == m - 1, _DELIVERED if path.delivered else _LOST, outcome)
    if sent is not None:
        outcome = np.where(~np.asarray(sent, bool) & (last < 0), _NOT_SENT, outcome)
    last = np.where(outcome == _NOT_SENT, -1, last)
    first_missed = np.where(np.isin(outcome, (_LOST, _INCONCLUSIVE)), first_missed, -1)
    return ProbeTraces.direction_rows(direction, s.seqs, codes, s.times, s.esp_keys, outcome, last, first_missed)


_DELIVERED, _LOST, _INCONCLUSIVE, _NOT_SENT = (OUTCOMES.index(o) for o in
                                               (Outcome.DELIVERED, Outcome.LOST, Outcome.INCONCLUSIVE, Outcome.NOT_SENT))


def findings(
    traces: ProbeTraces,
    path: ExpectedPath,
    direction: Direction,
    leaks: list[str] | None = None,
    send_errors: dict[int, str] | None = None,
    detours: dict[int, ObservedFate] | None = None,
    end_blind: tuple[str, ...] = (),
) -> list[Finding]:
    """Group probes of one direction by fate, worst first. ``detours``: seq → where a probe that
    left its expected path really went and died (those are grouped by that, not by hop);
    ``end_blind``: where a path the topology ends undelivered could have gone on, uncaptured."""
    detours = detours or {}
    n = len(traces)
    # One group per (outcome, last seen, first missed, detour), in the order of their first probe.
    number = {f: i + 1 for i, f in enumerate(dict.fromkeys(detours.values()))}  # 0: kept to the expected path
    fates = list(number)
    fate_of = np.zeros(n, np.int64)
    if detours:
        rows = np.flatnonzero(np.isin(traces.seqs, list(detours)))
        fate_of[rows] = [number[detours[q]] for q in traces.seqs[rows].tolist()]
    w = len(path.hops) + 1
    key = ((traces.outcomes.astype(np.int64) * w + traces.last_seen + 1) * w + traces.first_missed + 1) \
        * (len(fates) + 1) + fate_of
    _, first, group = np.unique(key, return_index=True, return_inverse=True)
    by_group = np.argsort(group, kind="stable")  # rows of each group, in trace order
    bounds = np.cumsum(np.bincount(group, minlength=len(first)))
    total = int(traces.sent().sum())
    out = []
    for g in np.argsort(first).tolist():
        rows = by_group[bounds[g - 1] if g else 0:bounds[g]]
        r = int(rows[0])
        outcome = OUTCOMES[traces.outcomes[r]]
        if outcome == Outcome.NOT_SENT:
            continue
        last = int(traces.last_seen[r]) if traces.last_seen[r] >= 0 else None
        missed = int(traces.first_missed[r]) if traces.first_missed[r] >= 0 else None
        seqs = tuple(traces.seqs[rows].tolist())
        if fate_of[r]:
            detour = fates[fate_of[r] - 1]
            out.append(Finding(direction, outcome, len(rows), total, detour.where, detour.last, detour.next,
                               detour.edge, detour.reason, seqs, detour.divergence))
            continue
        hops = path.hops
        if outcome == Outcome.DELIVERED:
            fate = _Fate(f"delivered to {hops[-1].node if hops else '?'}")
        elif outcome == Outcome.INCONCLUSIVE and last == len(hops) - 1 and not path.delivered:
            fate = _Fate(f"somewhere after {hops[last].point}",
                         f"{', '.join(end_blind)} not captured (or with sniffer drops); the topology says {path.end_note}")
        elif outcome == Outcome.INCONCLUSIVE:
            fate = _Fate(*_inconclusive(traces[r], path))
        elif last is None:  # missed at the first hop
            fate = _lost_at_origin(path, direction, seqs, send_errors or {})
        elif missed is None:  # seen at the last hop, where the topology says the path ends undelivered
            # Seen nowhere after, with every way on captured: it died there; the why is the topology's guess.
            fate = _Fate(f"at {hops[last].node}: {path.end_note}", LIKELY + path.end_note)
        else:  # trace_probes: anything doubtful in between makes it inconclusive, so missed == last + 1
            fate = _lost_on_edge(path, last, traces.esp[rows, last], leaks or [])
        out.append(Finding(direction, outcome, len(rows), total, fate.where,
                           hops[last].point if last is not None else None,
                           hops[missed].point if missed is not None else None,
                           fate.edge, fate.reason, seqs))
    return ranked(out)


_RANK = {Outcome.LOST: 0, Outcome.INCONCLUSIVE: 1, Outcome.DELIVERED: 2}


def ranked(found: list[Finding]) -> list[Finding]:
    """Findings in the order a verdict tells them: losses, then the inconclusive, then the delivered; most probes first."""
    return sorted(found, key=lambda f: (_RANK.get(f.outcome, 3), -f.count))


@dataclass(frozen=True)
class ObservedFate:
    """Where a probe that left its expected path went and ended, located on its observed path."""

    outcome: Outcome
    where: str
    divergence: str  # how it left the expected path
    last: str | None = None  # the last capture point that saw it
    next: str | None = None  # the next captured point on the way it was going, which did not
    edge: str | None = None
    reason: str | None = None


def locate_observed(
    topo: Topology, path: ExpectedPath, op: ObservedProbe, delivered: bool, captured: set[str], unreliable: set[str],
    leak_cause: str | None = None, start: str | None = None,
) -> ObservedFate | None:
    """Believe the packets: follow the probe where it really went. None when it did not diverge.
    ``start``: the node the probe left from, when the expected path has no hop to say it."""
    div = op.divergence
    if div is None:
        return None
    # Where the topology gives the probe no way to its destination, only the packets can say it
    # arrived: seen on the destination's node, it did.
    arrived = None if path.delivered else reached(topo, path, op)
    if delivered or arrived:
        end = arrived or path.hops[-1].point
        return ObservedFate(Outcome.DELIVERED, f"delivered to {CapturePoint.parse(end).node}", div.text, end)
    last = op.seen[-1]
    leaked = leak_cause if div.kind == "leak" else None
    if op.loop is not None:  # the loop text cites its ICMP time exceeded itself
        between = " and ".join(op.loop.nodes)
        return ObservedFate(Outcome.LOST, f"in a routing loop {'between' if len(op.loop.nodes) > 1 else 'at'} {between}",
                            div.text, last.point, reason=_join(leaked, loop_text(op.loop)))
    cause = _join(leaked, f"the network said: {'; '.join(op.quoted)}" if op.quoted else None)
    nxt, edge, why = _next_point(topo, path, op, start)
    having = f", having {div.text}"
    if nxt is None and edge == _NO_LINK:
        return ObservedFate(Outcome.INCONCLUSIVE, f"somewhere after {last.point}{having}", div.text, last.point,
                            reason=f"{why}: where it leads was not captured")
    if nxt is None:
        # It arrived at a node and nothing left it: a death inside that node, if every other
        # interface the node has was captured without drops; otherwise we cannot tell.
        node = topo.nodes.get(CapturePoint.parse(last.point).node)
        others = [i.point for i in node.interfaces.values() if i.point != last.point] if node else []
        blind = [p for p in others if p not in captured or p in unreliable]
        where = f"inside {CapturePoint.parse(last.point).node} after arriving on {CapturePoint.parse(last.point).iface}"
        if node is None:
            return ObservedFate(Outcome.INCONCLUSIVE, f"somewhere after {last.point}{having}", div.text, last.point,
                                reason=f"{CapturePoint.parse(last.point).node} is not in the topology: where it "
                                "sends packets, and whether they left it, is not known")
        if blind:
            return ObservedFate(Outcome.INCONCLUSIVE, f"somewhere after {last.point}{having}", div.text, last.point,
                                reason=f"{', '.join(blind)} not captured (or with sniffer drops)")
        return ObservedFate(Outcome.LOST, where + having, div.text, last.point, reason=_join(cause, _likely(why)))
    if nxt not in captured or nxt in unreliable:
        doubt = "was not captured" if nxt not in captured else _DOUBT_TEXT[Sighting.UNRELIABLE]
        return ObservedFate(Outcome.INCONCLUSIVE, f"somewhere between {last.point} and {nxt}{having}", div.text,
                            last.point, nxt, reason=f"{nxt} {doubt}")
    return ObservedFate(Outcome.LOST, (edge or f"between {last.point} and {nxt}") + having, div.text, last.point, nxt,
                        "wire" if edge and edge.startswith("on the wire") else "forward", _join(cause, _likely(why)))


def end_blind(topo: Topology, path: ExpectedPath, captured: set[str], unreliable: set[str]) -> tuple[str, ...]:
    """Where a probe seen at the last hop of a path the topology ends undelivered could have gone
    on without a reliable capture seeing it: the other interfaces of that node, or — when the hop
    leaves by an interface with no link in the topology — wherever that leads."""
    if path.delivered or not path.hops:
        return ()
    last = path.hops[-1]
    node = topo.nodes.get(last.node)
    blind = [i.point for i in (node.interfaces.values() if node else ())
             if i.point != last.point and (i.point not in captured or i.point in unreliable)]
    tunnel_dev = any(e.node == last.node and e.interface == last.iface for t in topo.tunnels for e in (t.left, t.right))
    if topo.peer(last.point) is None and not tunnel_dev and (len(path.hops) == 1 or path.hops[-2].node == last.node):
        blind.append(f"where {last.point} leads (no link in the topology)")
    return tuple(blind)


def reached(topo: Topology, path: ExpectedPath, op: ObservedProbe) -> str | None:
    """The first point that saw the probe in the clear on the node owning its destination (it
    arrived there, whatever the topology's routes say); None: no such sighting."""
    owner = topo.owner(path.dst)
    if owner is None:
        return None
    return next((s.point for s in op.seen if s.form == Form.CLEAR and CapturePoint.parse(s.point).node == owner.name),
                None)


def went_elsewhere(traces: ProbeTraces, path: ExpectedPath,
                   moved: Mapping[int, tuple[ObservedProbe, Outcome]]) -> ProbeTraces:
    """The traces (one direction's) with those of probes that left the expected path rewritten
    (row → its observed path and how it ended): the hops past the divergence that did not see it
    are ELSEWHERE (it was, just not here), not missed or a capture gap; those that saw it in the
    clear where ESP belongs are LEAKED."""
    if not moved:
        return traces
    m = len(path.hops)
    first = {h.point: i for i, h in reversed(list(enumerate(path.hops)))}  # (path.index: the first)
    rows = np.fromiter(moved, np.int64, len(moved))
    after = np.full(len(rows), -1, np.int64)  # the last hop that saw it before it left (-1: none)
    leaked = np.zeros((len(rows), m), bool)
    outcome = np.empty(len(rows), np.int8)
    for i, (op, out) in enumerate(moved.values()):
        if op.divergence and op.divergence.after:
            after[i] = first.get(op.divergence.after, -1)
        for s in op.seen:
            if s.place == Place.LEAK and s.point in first:
                leaked[i, [h for h, hop in enumerate(path.hops) if hop.point == s.point]] = True
        outcome[i] = OUTCOMES.index(out)
    codes = traces.codes[rows]
    bypassed = np.isin(codes, (MISSED, GAP, UNKNOWN)) & (np.arange(m)[None, :] > after[:, None])
    new = {"codes": traces.codes.copy(), "outcomes": traces.outcomes.copy(), "last_seen": traces.last_seen.copy(),
           "first_missed": traces.first_missed.copy()}
    new["codes"][rows] = np.where(leaked, LEAKED, np.where(bypassed, ELSEWHERE, codes))
    new["outcomes"][rows] = outcome
    new["last_seen"][rows] = np.where(outcome == _DELIVERED, m - 1, after)
    new["first_missed"][rows] = -1
    return replace(traces, **new)


def _decap_next(topo: Topology, node: Node, cp: CapturePoint, outer_dst: IPv4Address,
                path: ExpectedPath) -> tuple[str | None, str | None, str | None]:
    """ESP addressed to this gateway: it should come out of its tunnel (device, or the route for
    the cleartext when the tunnel is policy-based)."""
    end = next((e for t in topo.tunnels for e in (t.left, t.right) if e.node == node.name and e.address == outer_dst), None)
    dev = end.interface if end else None
    if dev is None:
        route = node.lookup(path.dst)
        dev = route.dev if route else None
    if dev is None or dev == cp.iface:
        return None, None, f"ESP reached {cp} but {node.name} has nowhere to send what it carries"
    why = (f"ESP arrived at {cp} but nothing came out of {node.name}:{dev}: decapsulation failed (wrong or missing "
           "SA, integrity failure, replay) or a filter before the IPsec stack")
    return point_name(node.name, dev), f"inside {node.name} between {cp.iface} and {dev} (decap)", why


_NO_LINK = "no link"


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None


def _next_point(topo: Topology, path: ExpectedPath, op: ObservedProbe,
                start: str | None = None) -> tuple[str | None, str | None, str | None]:
    """(next point, edge text, why) on the way the probe was going from its last sighting.

    Its last point was an egress if the sighting before it was on the same node (it was moving
    through that node) or it is where the probe started; the next point is then the link's other
    end. Otherwise it had just arrived: the node's route for it (from the topology) says where it
    would have left; no route: it stops there (next None, and why).
    """
    last = op.seen[-1]
    cp = CapturePoint.parse(last.point)
    prev = next((s for s in reversed(op.seen[:-1]) if s.point != last.point), None)
    egress = (prev is not None and CapturePoint.parse(prev.point).node == cp.node) or \
        (prev is None and cp.node == (path.hops[0].node if path.hops else start))
    if egress:
        peer = topo.peer(last.point)
        if peer is None:
            return None, _NO_LINK, f"it left by {last.point}, which has no link in the topology"
        return peer, f"on the wire {last.point} → {peer}", f"left {last.point} but never arrived at {peer}"
    node = topo.nodes.get(cp.node)
    if node is None:
        return None, None, None
    dst = IPv4Address(last.outer[2]) if last.form == Form.ESP and last.outer else path.dst
    if last.form == Form.ESP and node.owns(dst):
        return _decap_next(topo, node, cp, dst, path)
    route = node.lookup(dst)
    if route is None:
        return None, None, f"then {cp.node} dropped it: it has no route to {dst} (by the topology)"
    out = point_name(cp.node, route.dev)
    if out == last.point:
        return None, None, f"{cp.node} would send it back out {cp.iface} (its route to {dst})"
    return out, f"inside {cp.node} between {cp.iface} and {route.dev} (forward)", \
        f"{cp.node} did not forward it from {cp.iface} to {route.dev}: firewall (forward chain), rp_filter or routing"


@dataclass(frozen=True)
class _Fate:
    """Where a group of probes was lost, and why if known."""

    where: str
    reason: str | None = None
    edge: str | None = None


def _lost_on_edge(path: ExpectedPath, last: int, esp_keys: np.ndarray, leaks: list[str]) -> _Fate:
    """Seen at hop ``last``, captured and missing at the next one: lost on the edge between.
    ``esp_keys``: the probes' SPI << 32 | ESP seq there (0: not tied)."""
    tied = esp_keys[esp_keys != 0]
    spi = int(tied[0] >> np.uint64(32)) if len(tied) else None
    return _Fate(path.describe_edge(last), _edge_reason(path, last, leaks, spi), path.edges[last].value)


def _lost_at_origin(path: ExpectedPath, direction: Direction, seqs: tuple[int, ...], send_errors: dict[int, str]) -> _Fate:
    """Not even the first capture point saw it: it never left the node it starts from."""
    first = path.hops[0]
    errors = sorted({send_errors[q] for q in seqs if q in send_errors})
    reason = f"sending failed on {first.node}: {', '.join(errors)}" if errors else _origin_reason(direction, first.node)
    return _Fate(f"at {first.node}, before leaving {first.point}", reason)


def _inconclusive(t: ProbeTrace, path: ExpectedPath) -> tuple[str, str]:
    start = 0 if t.last_seen is None else t.last_seen + 1
    stop = t.first_missed if t.first_missed is not None else len(path.hops) - 1
    doubtful = [(path.hops[h].point, t.sightings[h]) for h in range(start, stop + 1) if t.sightings[h] in _DOUBTFUL]
    a = path.hops[t.last_seen].point if t.last_seen is not None else "the source"
    b = path.hops[t.first_missed].point if t.first_missed is not None else "the destination"
    why = "; ".join(f"{pt} {_DOUBT_TEXT[s]}" for pt, s in doubtful)
    return f"somewhere between {a} and {b}", why


_DOUBT_TEXT = {
    Sighting.UNOBSERVED: "was not captured",
    Sighting.UNRELIABLE: "had sniffer drops or a damaged capture, so its silence proves nothing",
    Sighting.UNKNOWN: "carried ESP that could not be tied to the probe",
}


def _origin_reason(direction: Direction, node: str) -> str:
    if direction == Direction.REPLY:
        return (f"{LIKELY}{node} received the request but no reply left it: check its route back, its firewall, "
                "or whether it answers")
    return f"{LIKELY}the probe never left {node}: check its routes and OUTPUT firewall"


LIKELY = "likely: "  # an inferred cause: what the edge suggests, not what evidence says (explain replaces it)


def _likely(reason: str | None) -> str | None:
    return None if reason is None else LIKELY + reason


def _edge_reason(path: ExpectedPath, i: int, leaks: list[str], spi: int | None) -> str:
    """Why, in the guide's terms, for a loss on the edge after hop i (``spi``: the probe's, when known);
    inferred from the edge, so marked likely."""
    return LIKELY + _edge_guess(path, i, leaks, spi)


def _edge_guess(path: ExpectedPath, i: int, leaks: list[str], spi: int | None) -> str:
    a, b = path.hops[i], path.hops[i + 1]
    kind = path.edges[i]
    leaked_here = [p for p in leaks if p.startswith(f"{a.node}:")]
    enters_tunnel = kind == EdgeKind.ENCAP or (i + 1 < len(path.edges) and path.edges[i + 1] == EdgeKind.ENCAP)
    if leaked_here and enters_tunnel:
        return (f"{a.node} sent it out {CapturePoint.parse(leaked_here[0]).iface} in the clear instead of into the tunnel: "
                f"no SA or policy on {a.node} covers this traffic")
    if kind == EdgeKind.ENCAP:
        return (f"cleartext reached {a.point} but no ESP for it left {b.point}: "
                "no SA or policy for this traffic, or encapsulation failed")
    if kind == EdgeKind.DECAP:
        spi = spi or (a.esp.spi if a.esp else None)
        spi_text = f" (SPI 0x{spi:08x})" if spi else ""
        return (f"ESP{spi_text} arrived at {a.point} but nothing came out of {b.point}: decapsulation failed "
                "(wrong or missing SA, integrity failure, replay) or a filter before the IPsec stack")
    spi_text = f" (SPI 0x{spi:08x})" if spi else ""
    if kind == EdgeKind.FORWARD:
        what = f"the ESP{spi_text}" if a.esp is not None else "it"
        return f"{a.node} did not forward {what} from {a.iface} to {b.iface}: firewall (forward chain), rp_filter or routing"
    if a.esp is not None:
        return (f"ESP{spi_text} left {a.point} but never arrived at {b.point}: filtered on the untrusted path "
                "(UDP 4500 / protocol 50)")
    return f"left {a.point} but never arrived at {b.point}: link down, filtered, or wrong next hop"
