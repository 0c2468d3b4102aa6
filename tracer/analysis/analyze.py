"""The one analysis code path: observations + topology → verdict per probe run.

Live traces and offline replays both end here. Pure: no files, no sockets.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

import numpy as np

from tracer.analysis.compare import leak_cause
from tracer.analysis.correlate import SightingMatrix, correlate, probe_rows
from tracer.analysis.explain import explain, uncaptured
from tracer.analysis.icmp import icmp_errors
from tracer.analysis.locate import (
    ObservedFate,
    end_blind,
    findings,
    locate_observed,
    trace_probes,
    went_elsewhere,
)
from tracer.analysis.observed import carrier_rows, observe, rewrites
from tracer.errors import BadInput
from tracer.model.direction import DIRECTIONS, Direction
from tracer.model.distinct import distinct
from tracer.model.evidence import Evidence
from tracer.model.observations import Observations, PacketClass
from tracer.model.observed import ObservedProbe
from tracer.model.path import ExpectedPath, expected_paths
from tracer.model.probe import DecryptedTags, ProbeSpec
from tracer.model.topology import Topology
from tracer.model.verdict import OUTCOMES, SIGHTINGS, Finding, Outcome, ProbeTraces, Sighting, Status, Verdict
from tracer.probes import ProbeType, is_known, probe_type

if TYPE_CHECKING:
    from tracer.model.mtu import MtuReport
    from tracer.model.netstate import NodeState


def find_runs(obs: Observations) -> list[tuple[int, int, int]]:
    """(run, kind, rows) for every tagged run of a registered probe kind, most rows first."""
    m = obs["tag_kind"] > 0
    if not m.any():
        return []
    keys = (obs["tag_run"][m].astype(np.uint64) << np.uint64(8)) | obs["tag_kind"][m].astype(np.uint64)
    uniq, counts = np.unique(keys, return_counts=True)
    out = [(k >> 8, probe_type(k & 0xFF).code, c)
           for k, c in zip(uniq.tolist(), counts.tolist(), strict=True) if is_known(k & 0xFF)]
    return sorted(out, key=lambda r: -r[2])


def infer_spec(obs: Observations, run: int, kind: int) -> ProbeSpec:
    """Source and destination from the first request the captures saw."""
    req = probe_rows(obs, run, kind, Direction.REQUEST)
    if not req.any():
        raise BadInput(f"run {run:#010x}: no {probe_type(kind).name} request seen in any capture; give --src and --dst")
    i = int(np.flatnonzero(req)[np.argmin(obs["ts_ns"][req])])
    return ProbeSpec(run, kind, IPv4Address(int(obs["src"][i])), IPv4Address(int(obs["dst"][i])))


def analyze(
    topo: Topology,
    obs: Observations,
    spec: ProbeSpec,
    drops: dict[str, int] | None = None,
    warnings: tuple[str, ...] = (),
    decrypted: DecryptedTags | None = None,
    damaged: dict[str, str] | None = None,
    evidence: Evidence | None = None,
    netstate: dict[str, NodeState] | None = None,
) -> Verdict:
    """``decrypted``: what ESP decryption with keys found inside each opened packet (None: no keys);
    ``damaged``: capture points whose file is damaged (cut short): like sniffer drops, their
    silence proves nothing; ``evidence``: the snapshots of the evidence sources before and
    after the trace (None: none taken), which explain ties to each located loss."""
    drops = {k: v for k, v in (drops or {}).items() if v}
    damaged = damaged or {}
    suspect = drops | {p: 1 for p in damaged}  # points whose absence proves nothing
    spec = _with_endpoints(obs, spec)
    paths = _expected_paths(topo, spec)
    warn = list(warnings)
    if spec.count is None:
        warn.append("no manifest: probes seen in no capture at all are not counted")
    if spec.remote_nodes:
        # Remote capture points are stamped by their host's own clock: estimate each remote
        # node's offset from packets seen at both ends of a wire to it and move its timestamps
        # onto our clock before anything compares times across nodes (analysis/clock.py).
        from tracer.analysis.clock import correct_clocks  # (only such runs load it)

        obs, clock_notes = correct_clocks(obs, topo, list(paths.values()), spec.remote_nodes)
        warn += clock_notes

    seqs = _probe_seqs(obs, spec)
    ptype = probe_type(spec.kind)
    traces, found, sightings, observed, nat, notes = _trace(obs, topo, spec, paths, seqs, suspect, decrypted, netstate)
    # A point that missed probes which points after it on the same path saw has an incomplete capture
    # (a file cut to its header, a sniffer started late): where probes vanish at it, its silence
    # proves nothing, whichever direction showed it (issue 13: an emptied capture moved the blame).
    blind = _gap_points(traces, paths)
    doubtful = sorted({f.first_missed for f in found if f.outcome == Outcome.LOST} & (blind - suspect.keys()))
    if doubtful:
        suspect = suspect | {p: 1 for p in doubtful}
        traces, found, sightings, observed, nat, notes = _trace(obs, topo, spec, paths, seqs, suspect, decrypted, netstate)
        warn += [f"{p} missed probes that capture points after it saw: its capture is incomplete, so what it did "
                 "not see proves nothing" for p in doubtful]
    warn += notes

    found = explain(found, paths, traces, evidence, netstate)
    warn += uncaptured(evidence)
    diagnoses = [*spec.notes, *dict.fromkeys(nat), *icmp_errors(obs, spec, paths), *_answers(spec)]
    status = _status(found)
    req_path = paths[Direction.REQUEST]
    mtu: MtuReport | None = None
    if spec.sizes:  # an MTU run: only it loads the MTU analysis and model
        from tracer.analysis.mtu import mtu_diagnosis, mtu_report, mtu_status, mtu_summary

        mtu = mtu_report(obs, spec, req_path, traces, found, topo, netstate)
        diagnoses += mtu_diagnosis(mtu)
        status = mtu_status(mtu, status)
        summary = mtu_summary(mtu)
    else:
        summary = _summary(found, ptype, status, _ends(topo, spec))
    all_points = {h.point for p in paths.values() for h in p.hops}
    return Verdict(
        run=spec.run,
        kind=probe_type(spec.kind).name,
        status=status,
        summary=summary,
        paths=dict(paths),
        findings=tuple(found),
        probes=traces,
        unobserved=tuple(sorted(p for p in all_points if obs.point_index(p) < 0)),
        drops={k: v for k, v in drops.items() if k in all_points},
        damaged={k: v for k, v in damaged.items() if k in all_points},
        diagnoses=tuple(diagnoses),
        notes=tuple(_decryption_notes(sightings, decrypted)),
        warnings=tuple(warn),
        sent=spec.sent or (),
        mtu=mtu,
        observed=tuple(observed),
        flow=spec.flow,
    )


def _trace(obs: Observations, topo: Topology, spec: ProbeSpec, paths: dict[Direction, ExpectedPath],
           seqs: np.ndarray, suspect: dict[str, int], decrypted: DecryptedTags | None,
           netstate: dict[str, NodeState] | None,
           ) -> tuple[ProbeTraces, list[Finding], list[SightingMatrix], list[ObservedProbe], list[str], list[str]]:
    """Each direction's probes along its expected path: traces, findings, sightings, off-path probes,
    NAT notes, warnings."""
    ptype = probe_type(spec.kind)
    warn: list[str] = []
    traces: list[ProbeTraces] = []
    found: list[Finding] = []
    sightings: list[SightingMatrix] = []
    arrived: np.ndarray | None = None
    observed: list[ObservedProbe] = []
    nat: list[str] = []
    for direction, path in paths.items():
        # Paired kinds expect a reply for each request that arrived; others say which probes go this way.
        own = ptype.carried(seqs, direction)
        sent = arrived if own is None else own
        if not path.hops:
            # The topology leaves the packet nowhere to go (no route from its first node): only
            # what the captures saw, and where, can say what became of the probes.
            from tracer.analysis.unrouted import unrouted  # (only such topologies load it)

            u = unrouted(obs, topo, path, direction, spec.run, spec.kind, seqs, _start(topo, spec, direction),
                         sent, set(obs.points), set(suspect), netstate)
            found += u.findings
            observed += u.observed
            warn += u.warnings
            arrived = np.asarray(u.delivered, bool)
            continue
        s = correlate(obs, topo, path, spec.run, spec.kind, direction, seqs, suspect, decrypted)
        mine = trace_probes(s, path, direction, sent)
        blind = end_blind(topo, path, set(obs.points), set(suspect))
        if blind:  # seen where the topology ends the path, but it may have gone on unseen
            at_end = mine.outcome_is(Outcome.LOST) & (mine.last_seen == len(path.hops) - 1) & (not path.delivered)
            mine = replace(mine, outcomes=np.where(at_end, OUTCOMES.index(Outcome.INCONCLUSIVE), mine.outcomes))
        carriers = carrier_rows(obs, s)
        off = observe(obs, topo, path, spec.run, spec.kind, direction, s, carriers)
        detours, mine = _detours(obs, topo, path, mine, off, suspect)
        if not path.delivered:
            from tracer.analysis.unrouted import stale

            warn += stale(path, direction, spec.kind, None, _arrivals(detours), int(mine.sent().sum()))
        errors = spec.send_errors if direction == Direction.REQUEST else None
        found += findings(mine, path, direction, s.leaks, errors, detours, blind)
        observed += [off[p] for p in sorted(off)]
        nat += rewrites(obs, s, carriers)
        # A reply is only expected once its request is known to have arrived.
        arrived = mine.outcome_is(Outcome.DELIVERED)
        traces.append(mine)
        sightings.append(s)
    return ProbeTraces.concat(traces), found, sightings, observed, nat, warn


def _detours(obs: Observations, topo: Topology, path: ExpectedPath, traces: ProbeTraces,
             off: dict[int, ObservedProbe], drops: dict[str, int]) -> tuple[dict[int, ObservedFate], ProbeTraces]:
    """Probes that left the expected path: where they really ended (seq → fate), and the traces
    with theirs rewritten so the expected-path table shows them as gone elsewhere, not missed."""
    captured, unreliable = set(obs.points), set(drops)
    leak_causes: dict[str, str | None] = {}  # per point: the same for every probe that leaks there
    delivered = traces.outcome_is(Outcome.DELIVERED)
    out = {}
    moved: dict[int, tuple[ObservedProbe, Outcome]] = {}
    # Probes that went the same way the same way end alike: located once per way (many probes
    # can take one wrong turn). A loop or an ICMP error is the probe's own.
    fates: dict[tuple[object, ...], ObservedFate | None] = {}
    for p, op in off.items():
        if op.divergence is None:  # (seen, so sent: even a reply to a request not seen arriving)
            continue
        cause = None
        if op.divergence.kind == "leak":
            at = op.divergence.at
            if at not in leak_causes:
                leak_causes[at] = leak_cause(topo, path, at, _tunnel_esp_seen(obs, path, at))
            cause = leak_causes[at]
        way = None if op.loop or op.quoted else (
            tuple((s.point, s.form, s.place) for s in op.seen), op.seen[-1].outer, op.divergence, bool(delivered[p]), cause)
        fate = fates.get(way) if way in fates else \
            locate_observed(topo, path, op, bool(delivered[p]), captured, unreliable, cause)
        if way is not None:
            fates[way] = fate
        if fate is not None:
            out[op.seq] = fate
            moved[p] = (op, fate.outcome)
    return out, went_elsewhere(traces, path, moved)


def _gap_points(traces: ProbeTraces, paths: dict[Direction, ExpectedPath]) -> set[str]:
    """Points that missed a probe which points after them on its path saw (capture gaps)."""
    gap = SIGHTINGS.index(Sighting.GAP)
    return {path.hops[h].point for d, path in paths.items()
            for h in np.flatnonzero((traces.in_direction(d).codes == gap).any(axis=0)).tolist()}


def _arrivals(detours: dict[int, ObservedFate]) -> dict[str, int]:
    """Where the probes that went elsewhere and still arrived were seen arriving (point → how many)."""
    out: dict[str, int] = {}
    for fate in detours.values():
        if fate.outcome == Outcome.DELIVERED and fate.last:
            out[fate.last] = out.get(fate.last, 0) + 1
    return out


def _tunnel_esp_seen(obs: Observations, path: ExpectedPath, point: str) -> bool:
    """Whether ESP of the tunnel expected at ``point`` crossed the network at all (either way)."""
    esp = path.esp_at(point)
    if esp is None:
        return False
    a, b = int(esp.src), int(esp.dst)
    m = obs["cls"] == PacketClass.ESP
    return bool((m & (((obs["src"] == a) & (obs["dst"] == b)) | ((obs["src"] == b) & (obs["dst"] == a)))).any())


def _with_endpoints(obs: Observations, spec: ProbeSpec) -> ProbeSpec:
    """Source and destination from the captures where the spec does not say."""
    if spec.src is None or spec.dst is None:
        seen = infer_spec(obs, spec.run, spec.kind)
        spec = replace(spec, src=spec.src or seen.src, dst=spec.dst or seen.dst)
    return spec


def _expected_paths(topo: Topology, spec: ProbeSpec) -> dict[Direction, ExpectedPath]:
    assert spec.src is not None and spec.dst is not None
    return expected_paths(topo, spec.src, spec.dst, topo.nodes.get(spec.origin) if spec.origin else None)


def _start(topo: Topology, spec: ProbeSpec, direction: Direction) -> str | None:
    """The node the packets of ``direction`` leave from."""
    if direction == Direction.REQUEST and spec.origin:
        return spec.origin
    node = topo.owner(spec.src if direction == Direction.REQUEST else spec.dst)  # type: ignore[arg-type]
    return node.name if node else None


def _decryption_notes(sightings: list[SightingMatrix], decrypted: DecryptedTags | None) -> list[str]:
    """What decryption found: about tracer's own work, not the network (so notes, not diagnoses)."""
    if decrypted is None:
        return []
    out = list(decrypted.notes)
    confirmed = sum(s.confirmed for s in sightings)
    out.append(f"ESP decrypted with keys: {confirmed} probe carriers identified by the tag inside")
    if disagreements := sum(s.disagreements for s in sightings):
        out.append(f"keyless ESP association disagreed with decryption for {disagreements} probes "
                   "(decryption wins; background traffic in the SA?)")
    return out


def _probe_seqs(obs: Observations, spec: ProbeSpec) -> np.ndarray:
    """The probes of the run: those the prober says it sent (live runs number them from 1 like
    ping; older recordings from 0), else seqs 0..count-1 of a bare manifest, else what the
    captures show."""
    if spec.sent:
        return distinct(np.array([s.seq for s in spec.sent], dtype=np.uint32))
    if spec.count is not None:
        return np.arange(spec.count, dtype=np.uint32)
    m = (obs["tag_run"] == spec.run) & (obs["tag_kind"] == int(spec.kind))
    return distinct(obs["tag_seq"][m])


def _status(found: list[Finding]) -> Status:
    outcomes = {f.outcome for f in found}
    if Outcome.LOST in outcomes:
        return Status.LOSS
    if Outcome.INCONCLUSIVE in outcomes or not found:
        return Status.INCONCLUSIVE
    return Status.DELIVERED


def _ends(topo: Topology, spec: ProbeSpec) -> tuple[str, str]:
    """The names of the probes' two ends (from the topology's owners, not from a path that may be empty)."""
    dst = topo.owner(spec.dst) if spec.dst is not None else None
    return _start(topo, spec, Direction.REQUEST) or str(spec.src), dst.name if dst else str(spec.dst)


def _summary(found: list[Finding], ptype: ProbeType, status: Status, ends: tuple[str, str]) -> str:
    if not found:
        return "no probes found in the captures"
    if status == Status.DELIVERED and not ptype.paired:  # each packet its own probe, either way
        there, back = (sum(f.count for f in found if f.direction == d) for d in DIRECTIONS)
        return (f"{there + back}/{there + back} packets delivered ({there} there, {back} back; "
                f"{ends[0]} ↔ {ends[1]})")
    if status == Status.DELIVERED:
        n = max(f.total for f in found)
        return f"{n}/{n} {ptype.noun(Direction.REQUEST)} delivered and answered ({ends[0]} → {ends[1]})"
    parts = []
    for direction in DIRECTIONS:
        mine = [f for f in found if f.direction == direction]
        bad = [f for f in mine if f.outcome != Outcome.DELIVERED]
        if not bad:
            if mine and direction == Direction.REQUEST:
                parts.append(f"{ptype.noun(direction)} delivered")
            continue
        for f in bad:
            verb = "lost" if f.outcome == Outcome.LOST else "inconclusive:"
            parts.append(f"{f.count}/{f.total} {ptype.noun(direction)} {verb} {f.where}")
    return "; ".join(parts)


def _answers(spec: ProbeSpec) -> list[str]:
    """What the IKE responder said, as the prober received it: the capture shows *where*
    responses went, only the answer's content says *why* a tunnel does not come up."""
    if spec.answers is None:
        return []
    total = len(spec.sent) if spec.sent else spec.count if spec.count is not None else len(spec.answers)
    if not spec.answers:
        return [f"responder answered 0/{total}: no IKE answer reached the prober"]
    groups: dict[str, int] = {}
    for seq in sorted(spec.answers):
        groups[spec.answers[seq]] = groups.get(spec.answers[seq], 0) + 1
    if len(groups) == 1:
        return [f"responder answered {len(spec.answers)}/{total}: {next(iter(groups))}"]
    return [f"responder answered {len(spec.answers)}/{total}: " + "; ".join(f"{n}× {a}" for a, n in groups.items())]


