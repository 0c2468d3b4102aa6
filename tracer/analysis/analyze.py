"""The one analysis code path: observations + topology → verdict per probe run.

Live traces and offline replays both end here. Pure: no files, no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address

import numpy as np

from tracer.analysis.clock import correct_clocks
from tracer.analysis.correlate import correlate, direction_mask
from tracer.analysis.icmp import icmp_errors
from tracer.analysis.locate import findings, trace_probes
from tracer.analysis.mtu import mtu_diagnosis, mtu_report, mtu_summary
from tracer.errors import BadInput
from tracer.model.flowgraph import build_flow_graph
from tracer.model.observations import Observations
from tracer.model.path import ExpectedPath, check_walk, expected_path
from tracer.model.tag import ProbeKind
from tracer.model.topology import Topology
from tracer.model.verdict import Finding, Outcome, Status, Verdict

NOUNS = {
    ProbeKind.PING: ("echo requests", "echo replies"),
    ProbeKind.MTU: ("large echo requests", "large echo replies"),
    ProbeKind.IKE: ("IKE_SA_INIT requests", "IKE responses"),
}

@dataclass(frozen=True)
class ProbeSpec:
    """What was sent; from a run manifest, or inferred from the captures."""

    run: int
    kind: ProbeKind
    src: IPv4Address | None = None
    dst: IPv4Address | None = None
    origin: str | None = None  # node the probes left from
    count: int | None = None  # probes sent (seq 0..count-1); None: unknown
    send_errors: dict[int, str] | None = None  # seq → the sender's local error (e.g. EMSGSIZE)
    sizes: dict[int, int] | None = None  # seq → IP packet bytes (MTU probes)
    answers: dict[int, str] | None = None  # IKE: seq → what the responder answered ({}: nothing; None: unknown)
    remote_nodes: tuple[str, ...] = ()  # nodes captured on another host (SSH): their clocks may be offset


def find_runs(obs: Observations) -> list[tuple[int, ProbeKind, int]]:
    """(run, kind, rows) for every tagged run in the captures, most rows first."""
    m = obs["tag_kind"] > 0
    if not m.any():
        return []
    keys = (obs["tag_run"][m].astype(np.uint64) << np.uint64(8)) | obs["tag_kind"][m].astype(np.uint64)
    uniq, counts = np.unique(keys, return_counts=True)
    out = []
    for k, c in zip(uniq.tolist(), counts.tolist(), strict=True):
        try:
            out.append((k >> 8, ProbeKind(k & 0xFF), c))
        except ValueError:
            continue
    return sorted(out, key=lambda r: -r[2])


def infer_spec(obs: Observations, run: int, kind: ProbeKind) -> ProbeSpec:
    """Source and destination from the first request the captures saw."""
    req = direction_mask(obs, run, kind, "request")
    if not req.any():
        raise BadInput(f"run {run:#010x}: no {kind.name.lower()} request seen in any capture; give --src and --dst")
    i = int(np.flatnonzero(req)[np.argmin(obs["ts_ns"][req])])
    return ProbeSpec(run, kind, IPv4Address(int(obs["src"][i])), IPv4Address(int(obs["dst"][i])))


def analyze(
    topo: Topology,
    obs: Observations,
    spec: ProbeSpec,
    drops: dict[str, int] | None = None,
    warnings: tuple[str, ...] = (),
    decrypted: dict[tuple[int, int], tuple[int, int, int, str] | None] | None = None,
    esp_notes: tuple[str, ...] = (),
) -> Verdict:
    """``decrypted``: every (SPI, ESP seq) opened with keys → (run, kind, seq, direction) of the
    probe inside, or None for other traffic;
    ``esp_notes``: what the decryption edge has to say (counts, failures; never keys)."""
    drops = {k: v for k, v in (drops or {}).items() if v}
    if spec.src is None or spec.dst is None:
        seen = infer_spec(obs, spec.run, spec.kind)
        spec = replace(spec, src=spec.src or seen.src, dst=spec.dst or seen.dst)
    assert spec.src is not None and spec.dst is not None
    origin = topo.nodes.get(spec.origin) if spec.origin else None
    req_path = expected_path(topo, spec.src, spec.dst, origin)
    if not req_path.hops:
        raise BadInput(f"{spec.src} → {spec.dst}: both on {topo.owner(spec.src).name if topo.owner(spec.src) else '?'}; "
                       "the path crosses no capture point")
    reply_origin = topo.owner(spec.dst)
    rep_path = expected_path(topo, spec.dst, spec.src, reply_origin) if reply_origin else None
    graph = build_flow_graph(topo)
    for p in (req_path, rep_path):
        if p is not None:
            check_walk(p, graph, topo.source)
    seqs = _probe_seqs(obs, spec)
    warn = list(warnings)
    if spec.count is None:
        warn.append("no manifest: probes seen in no capture at all are not counted")
    if spec.remote_nodes:
        # Remote capture points are stamped by their host's own clock: estimate each remote
        # node's offset from packets seen at both ends of a wire to it and move its timestamps
        # onto our clock before anything compares times across nodes (analysis/clock.py).
        obs, clock_notes = correct_clocks(obs, topo, [p for p in (req_path, rep_path) if p], spec.remote_nodes)
        warn += clock_notes

    s_req = correlate(obs, topo, req_path, spec.run, spec.kind, "request", seqs, drops, decrypted)
    req_traces = trace_probes(s_req, req_path, "request")
    found = findings(req_traces, req_path, "request", req_path.hops[-1].node if req_path.hops else "?", s_req.leaks,
                     spec.send_errors)
    traces = list(req_traces)
    paths = {"request": req_path}
    leaks = list(s_req.leaks)
    if rep_path is not None:
        # A reply is only expected once the request is known to have arrived.
        sent = [t.outcome == Outcome.DELIVERED for t in req_traces]
        s_rep = correlate(obs, topo, rep_path, spec.run, spec.kind, "reply", seqs, drops, decrypted)
        rep_traces = trace_probes(s_rep, rep_path, "reply", sent)
        found += findings(rep_traces, rep_path, "reply", rep_path.hops[-1].node if rep_path.hops else "?", s_rep.leaks)
        traces += rep_traces
        paths["reply"] = rep_path
        leaks += s_rep.leaks

    all_points = {h.point for p in paths.values() for h in p.hops}
    unobserved = tuple(sorted(p for p in all_points if obs.point_index(p) < 0))
    diagnoses = [f"probe seen in the clear on {pt}, where it should be ESP: traffic leaks unencrypted "
                 "(no SA or policy covers it)" for pt in dict.fromkeys(leaks)]
    diagnoses += icmp_errors(obs, spec, paths)
    diagnoses += list(esp_notes)
    sightings = [s_req] + ([s_rep] if rep_path is not None else [])
    if decrypted is not None:
        confirmed = sum(s.confirmed for s in sightings)
        diagnoses.append(f"ESP decrypted with keys: {confirmed} probe carriers identified by the tag inside")
        if disagreements := sum(s.disagreements for s in sightings):
            diagnoses.append(f"keyless ESP association disagreed with decryption for {disagreements} probes "
                             "(decryption wins; background traffic in the SA?)")
    diagnoses += _answers(spec)
    status = _status(found)
    mtu = mtu_report(obs, spec, req_path, traces, found) if spec.sizes else None
    if mtu is not None:
        diagnoses += mtu_diagnosis(mtu, diagnoses)
    summary = mtu_summary(mtu) if mtu else _summary(found, spec.kind, status, req_path)
    return Verdict(
        run=spec.run,
        kind=spec.kind.name.lower(),
        status=status,
        summary=summary,
        paths=paths,
        findings=tuple(found),
        probes=tuple(traces),
        unobserved=unobserved,
        drops={k: v for k, v in drops.items() if k in all_points},
        diagnoses=tuple(diagnoses),
        warnings=tuple(warn),
        mtu=mtu,
    )


def _probe_seqs(obs: Observations, spec: ProbeSpec) -> np.ndarray:
    if spec.count is not None:
        return np.arange(spec.count, dtype=np.uint32)
    m = (obs["tag_run"] == spec.run) & (obs["tag_kind"] == int(spec.kind))
    return np.unique(obs["tag_seq"][m])


def _status(found: list[Finding]) -> Status:
    outcomes = {f.outcome for f in found}
    if Outcome.LOST in outcomes:
        return Status.LOSS
    if Outcome.INCONCLUSIVE in outcomes or not found:
        return Status.INCONCLUSIVE
    return Status.DELIVERED


def _summary(found: list[Finding], kind: ProbeKind, status: Status, path: ExpectedPath) -> str:
    if not found:
        return "no probes found in the captures"
    nouns = dict(zip(("request", "reply"), NOUNS[kind], strict=True))
    if status == Status.DELIVERED:
        n = max(f.total for f in found)
        return f"{n}/{n} {nouns['request']} delivered and answered ({path.hops[0].node} → {path.hops[-1].node})"
    parts = []
    for direction in ("request", "reply"):
        mine = [f for f in found if f.direction == direction]
        bad = [f for f in mine if f.outcome != Outcome.DELIVERED]
        if not bad:
            if mine and direction == "request":
                parts.append(f"{nouns['request']} delivered")
            continue
        for f in bad:
            verb = "lost" if f.outcome == Outcome.LOST else "inconclusive:"
            parts.append(f"{f.count}/{f.total} {nouns[direction]} {verb} {f.where}")
    return "; ".join(parts)


def _answers(spec: ProbeSpec) -> list[str]:
    """What the IKE responder said, as the prober received it: the capture shows *where*
    responses went, only the answer's content says *why* a tunnel does not come up."""
    if spec.answers is None:
        return []
    total = spec.count if spec.count is not None else len(spec.answers)
    if not spec.answers:
        return [f"responder answered 0/{total}: no IKE answer reached the prober"]
    groups: dict[str, int] = {}
    for seq in sorted(spec.answers):
        groups[spec.answers[seq]] = groups.get(spec.answers[seq], 0) + 1
    if len(groups) == 1:
        return [f"responder answered {len(spec.answers)}/{total}: {next(iter(groups))}"]
    return [f"responder answered {len(spec.answers)}/{total}: " + "; ".join(f"{n}× {a}" for a, n in groups.items())]


