"""Explain: the evidence behind each located loss (pure: snapshots in, evidence lines out).

For every lost finding, only what moved at or beside the located hop counts: the nodes of its
last-seen and first-missed points, their drop counters (firewall rules that drop, interface
drops and errors, kernel SNMP drop counters) that grew in proportion to the probes lost there,
a link of the edge that is down, the CHILD_SA that should have carried the probes and did not
count them, and the IKE daemon's error lines during the trace. The "why" line cites the
strongest of them; a finding without any keeps its edge-derived guess, marked ``likely: ``
by locate. Everything else stays in the run directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from tracer.model.direction import Direction
from tracer.model.evidence import AFTER, BEFORE, EVENTS, Counter, Evidence, Snapshot
from tracer.model.path import ExpectedPath
from tracer.model.point import CapturePoint
from tracer.model.verdict import Finding, Outcome, ProbeTrace

LIKELY = "likely: "
SA_SOURCE = "strongswan"
LOG_SOURCE = "ikelog"
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
    rank: int  # lower: stronger evidence, cited first
    line: str
    cause: str


def explain(
    findings: list[Finding],
    paths: dict[Direction, ExpectedPath],
    traces: list[ProbeTrace],
    evidence: Evidence | None,
) -> list[Finding]:
    """The findings with their evidence lines, and the "why" citing the strongest when there is some."""
    if not evidence:
        return findings
    return [_explain(f, paths.get(f.direction), traces, evidence) if f.outcome == Outcome.LOST else f
            for f in findings]


def _explain(f: Finding, path: ExpectedPath | None, traces: list[ProbeTrace], ev: Evidence) -> Finding:
    points = [CapturePoint.parse(p) for p in (f.last_seen, f.first_missed) if p]
    nodes = list(dict.fromkeys(cp.node for cp in points))
    if not nodes:
        return f
    edge_ifaces = {(cp.node, cp.iface) for cp in points}
    items: list[_Item] = []
    unavailable: list[str] = []
    for node in nodes:
        for source in ev.sources(node):
            before, after = ev.get(BEFORE, source, node), ev.get(AFTER, source, node)
            events = ev.get(EVENTS, source, node)
            for snap in (before, after, events):
                if snap is not None and snap.unavailable and not snap.unavailable.startswith("no ike_"):
                    unavailable.append(f"{node}: {source} unavailable ({snap.unavailable})")
                    break
            if events is not None and not events.unavailable:
                items += _log_items(node, events)
            if before is None or after is None or before.unavailable or after.unavailable:
                continue
            items += _counter_items(node, before, after, f.count)
            items += _link_items(node, after, edge_ifaces)
            if source == SA_SOURCE:
                items += _sa_items(node, f, before, after, path, traces)
    if not items:
        lines = tuple(dict.fromkeys(unavailable))
        return replace(f, evidence=lines) if lines else f
    items.sort(key=lambda i: i.rank)  # stable: within a rank, the order the sources were read
    return replace(f, reason=_cite(f.reason, items[0].cause), evidence=tuple(dict.fromkeys(i.line for i in items)))


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


def _link_items(node: str, after: Snapshot, edge_ifaces: set[tuple[str, str]]) -> list[_Item]:
    out = []
    for iface, state in after.links.items():
        if (node, iface) in edge_ifaces and state in DOWN_STATES:
            line = f"{node}: {iface} is {state}"
            out.append(_Item(1, line, f"{node}:{iface} is {state} (link state)"))
    return out


def _sa_items(node: str, f: Finding, before: Snapshot, after: Snapshot, path: ExpectedPath | None,
              traces: list[ProbeTrace]) -> list[_Item]:
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


def _probe_spi(f: Finding, path: ExpectedPath, traces: list[ProbeTrace]) -> int | None:
    i = path.index(f.last_seen) if f.last_seen else -1
    if i < 0:
        return None
    mine = set(f.seqs)
    for t in traces:
        if t.direction == f.direction and t.seq in mine and i < len(t.esp) and t.esp[i] is not None:
            return t.esp[i][0]
    esp = path.hops[i].esp
    return esp.spi if esp else None


def _log_items(node: str, events: Snapshot) -> list[_Item]:
    lines = [line for line in events.lines if _LOG_TROUBLE.search(line)][-MAX_LOG_LINES:]
    return [_Item(5, f"{node}: IKE daemon logged: {line.strip()}", f"{node}'s IKE daemon logged: {line.strip()}")
            for line in lines]
