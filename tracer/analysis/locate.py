"""Locate: turn per-hop sightings into per-probe outcomes and aggregated findings.

For each probe and direction: the last hop that saw it, the first hop after
that which was captured and did not, and the edge between them. If anything
between those two is unobserved, unreliable (sniffer drops) or an ESP hop
whose identity is unknown, the honest answer is *inconclusive*.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tracer.analysis.correlate import GAP, MISSED, SEEN, Sightings, last_index
from tracer.model.flowgraph import EdgeKind
from tracer.model.path import ExpectedPath
from tracer.model.verdict import Finding, Outcome, ProbeTrace, Sighting

_DOUBTFUL = (Sighting.UNOBSERVED, Sighting.UNRELIABLE, Sighting.UNKNOWN)


def trace_probes(s: Sightings, path: ExpectedPath, direction: str, sent: list[bool] | None = None) -> list[ProbeTrace]:
    """One ProbeTrace per probe. ``sent[p]`` False means the probe was never
    expected on this path (a reply whose request did not arrive).

    Outcomes are computed for all probes at once with numpy; the loop only
    builds the result objects (runs can hold many thousands of probes).
    """
    m = s.codes.shape[1]
    codes = s.codes
    hop = np.arange(m)[None, :]
    last = last_index(codes == SEEN)
    start = last + 1
    missed = (hop >= start[:, None]) & np.isin(codes, (MISSED, GAP))
    first_missed = np.where(missed.any(axis=1), np.argmax(missed, axis=1), -1)
    stop = np.where(first_missed >= 0, first_missed, m - 1)
    doubt_codes = [list(Sighting).index(d) for d in _DOUBTFUL]
    doubtful = ((hop >= start[:, None]) & (hop <= stop[:, None]) & np.isin(codes, doubt_codes)).any(axis=1)
    outcome = np.where(doubtful | (first_missed < 0), 2, 1)  # index into _OUTCOMES
    outcome = np.where(last == m - 1, 0 if path.delivered else 1, outcome)
    if sent is not None:
        outcome = np.where(~np.asarray(sent, bool) & (last < 0), 3, outcome)

    names = list(Sighting)
    row_cache: dict[bytes, tuple[Sighting, ...]] = {}  # few distinct rows: share their tuples
    out = []
    for p, (seq, t_row, k_row) in enumerate(zip(s.seqs.tolist(), s.times.tolist(), s.esp_keys.tolist(), strict=True)):
        raw = codes[p].tobytes()
        sightings = row_cache.get(raw) or row_cache.setdefault(raw, tuple(names[c] for c in codes[p].tolist()))
        times = tuple(t if t >= 0 else None for t in t_row)
        esp = tuple((k >> 32, k & 0xFFFFFFFF) if k else None for k in k_row)
        o = _OUTCOMES[outcome[p]]
        lp = int(last[p]) if last[p] >= 0 and o != Outcome.NOT_SENT else None
        fm = int(first_missed[p]) if first_missed[p] >= 0 and o in (Outcome.LOST, Outcome.INCONCLUSIVE) else None
        out.append(ProbeTrace(seq, direction, sightings, times, esp, o, lp, fm))
    return out


_OUTCOMES = (Outcome.DELIVERED, Outcome.LOST, Outcome.INCONCLUSIVE, Outcome.NOT_SENT)


def findings(
    traces: list[ProbeTrace],
    path: ExpectedPath,
    direction: str,
    dst_node: str,
    leaks: list[str] | None = None,
    send_errors: dict[int, str] | None = None,
) -> list[Finding]:
    """Group probes of one direction by fate, worst first."""
    groups: dict[tuple, list[ProbeTrace]] = defaultdict(list)
    for t in traces:
        groups[(t.outcome, t.last_seen, t.first_missed)].append(t)
    total = sum(1 for t in traces if t.outcome != Outcome.NOT_SENT)
    out = []
    for (outcome, last, missed), members in groups.items():
        if outcome == Outcome.NOT_SENT:
            continue
        seqs = tuple(t.seq for t in members)
        hops = path.hops
        last_pt = hops[last].point if last is not None else None
        miss_pt = hops[missed].point if missed is not None else None
        edge = None
        reason = None
        if outcome == Outcome.DELIVERED:
            where = f"delivered to {dst_node}"
        elif outcome == Outcome.LOST and last is not None and missed == last + 1:
            where = path.describe_edge(last)
            edge = path.edges[last].value
            spi = next((t.esp[last][0] for t in members if t.esp[last] is not None), None)
            reason = _edge_reason(path, last, leaks or [], spi)
        elif outcome == Outcome.LOST and last is None and missed == 0:
            where = f"at {hops[0].node}, before leaving {hops[0].point}"
            errors = sorted({send_errors[q] for q in seqs if q in (send_errors or {})})
            reason = (f"sending failed on {hops[0].node}: {', '.join(errors)}" if errors
                      else _origin_reason(direction, hops[0].node))
        elif outcome == Outcome.LOST and last == len(hops) - 1:
            where = f"at {hops[last].node}: {path.end_note}"
            reason = path.end_note
        elif outcome == Outcome.LOST:
            # Missed at `missed` and captured in between as gaps: loss is after last.
            where = f"between {last_pt or 'the source'} and {miss_pt}"
        else:
            where, reason = _inconclusive(traces=members, path=path)
        out.append(Finding(direction, outcome, len(members), total, where, last_pt, miss_pt, edge, reason, seqs))
    rank = {Outcome.LOST: 0, Outcome.INCONCLUSIVE: 1, Outcome.DELIVERED: 2}
    return sorted(out, key=lambda f: (rank.get(f.outcome, 3), -f.count))


def _inconclusive(traces: list[ProbeTrace], path: ExpectedPath) -> tuple[str, str]:
    t = traces[0]
    start = 0 if t.last_seen is None else t.last_seen + 1
    stop = t.first_missed if t.first_missed is not None else len(path.hops) - 1
    doubtful = [(path.hops[h].point, t.sightings[h]) for h in range(start, stop + 1) if t.sightings[h] in _DOUBTFUL]
    a = path.hops[t.last_seen].point if t.last_seen is not None else "the source"
    b = path.hops[t.first_missed].point if t.first_missed is not None else "the destination"
    why = "; ".join(f"{pt} {_DOUBT_TEXT[s]}" for pt, s in doubtful)
    return f"somewhere between {a} and {b}", why


_DOUBT_TEXT = {
    Sighting.UNOBSERVED: "was not captured",
    Sighting.UNRELIABLE: "had sniffer drops, so its silence proves nothing",
    Sighting.UNKNOWN: "carried ESP that could not be tied to the probe",
}


def _origin_reason(direction: str, node: str) -> str:
    if direction == "reply":
        return f"{node} received the request but no reply left it: check its route back, its firewall, or whether it answers"
    return f"the probe never left {node}: check its routes and OUTPUT firewall"


def _edge_reason(path: ExpectedPath, i: int, leaks: list[str], spi: int | None) -> str:
    """Why, in the guide's terms, for a loss on the edge after hop i (``spi``: the probe's, when known)."""
    a, b = path.hops[i], path.hops[i + 1]
    kind = path.edges[i]
    leaked_here = [p for p in leaks if p.startswith(f"{a.node}:")]
    enters_tunnel = kind == EdgeKind.ENCAP or (i + 1 < len(path.edges) and path.edges[i + 1] == EdgeKind.ENCAP)
    if leaked_here and enters_tunnel:
        return (f"{a.node} sent it out {leaked_here[0].rpartition(':')[2]} in the clear instead of into the tunnel: "
                "no SA covers this traffic (is IKE up? see tracer lab status / swanctl --list-sas)")
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
