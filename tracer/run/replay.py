"""Replay: capture files (or a run directory) + topology → verdicts.

This is the only way captures become verdicts; a live trace records a run
directory and then calls :func:`replay_run` on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from tracer.analysis.analyze import analyze, find_runs
from tracer.analysis.plausible import implausible
from tracer.analysis.relevant import relevant_rows
from tracer.errors import BadInput, NoTraffic
from tracer.model.direction import Direction
from tracer.model.evidence import Evidence
from tracer.model.observations import Observations
from tracer.model.point import CapturePoint
from tracer.model.probe import DecryptedTags, ProbeIdentity, ProbeReport, ProbeSpec
from tracer.model.tag import ProbeKind
from tracer.model.topology import Topology
from tracer.model.verdict import Verdict
from tracer.probes import spec_from_report
from tracer.run.capturemap import MANIFEST_RULE, Mapped, Source, map_captures, stem
from tracer.run.manifest import (
    MANIFEST,
    PROBE_JOURNAL,
    RUN_PCAPNG,
    CaptureEntry,
    Manifest,
    read_evidence,
    read_manifest,
    read_netstate,
    read_probe_report,
)
from tracer.topofile import load_topology

if TYPE_CHECKING:
    from tracer.analysis.identity import Flow
    from tracer.model.netstate import NodeState


@dataclass
class LoadedRun:
    """Everything a replay reads from its inputs, before the analysis."""

    topology: Topology
    observations: Observations
    drops: dict[str, int]
    warnings: list[str]
    manifest: Manifest | None
    report: ProbeReport | None = None  # what the prober sent (run directories of live traces)
    damaged: dict[str, str] = field(default_factory=dict)  # point → why its capture cannot prove absence
    netstate: dict[str, NodeState] = field(default_factory=dict)  # live state per node when the run started
    evidence: Evidence = field(default_factory=Evidence)  # counter and daemon snapshots, before and after
    mapping: list[Mapped] = field(default_factory=list)  # which file (interface) became which point, and how
    kept_at: dict[str, str] = field(default_factory=dict)  # columns file → host:path where its capture stayed

    @property
    def mapping_shown(self) -> bool:
        """Worth printing: some file was placed by a rule, not by the run directory's manifest."""
        return any(m.how != MANIFEST_RULE for m in self.mapping)


@dataclass
class _Inputs:
    """What the user pointed at, before anything is read: capture files with their points
    (None: to be found), and the run directory's manifest and report if there is one."""

    files: list[Source]
    topology: Path | None = None
    manifest: Manifest | None = None
    report: ProbeReport | None = None
    run_dir: Path | None = None


def load_run(inputs: list[Path], topology: Path | None = None,
             points: list[tuple[str, Path]] | None = None, *, verdicts_only: bool = False,
             run: int | None = None) -> LoadedRun:
    """A run directory (with manifest) or a list of capture files; ``points``: (point, file)
    the user mapped explicitly (--point, --points), files that need not be in ``inputs``.

    ``verdicts_only``: the observations serve only :func:`replay_run` (no --flow, no merged
    capture written); for the manifest's tagged run (``run`` None or its id) rows its analysis
    does not read are then left out while reading (:mod:`tracer.analysis.relevant`)."""
    found = _inputs(inputs, points or [])
    topology = topology or found.topology
    if topology is None:
        raise BadInput("no topology: pass --topology FILE (run directories carry their own)")
    topo = load_topology(topology)
    slim = verdicts_only and _manifest_run(found.manifest, run)
    mapped = map_captures(found.files, topo, relevant_rows(topo) if slim else None)
    seen = mapped.seen
    obs, drops, warnings = seen.obs, seen.drops, seen.warnings
    damaged = dict(seen.damaged)
    for c in found.manifest.captures if found.manifest else []:
        if c.point and c.drops:
            drops[c.point] = max(drops.get(c.point) or 0, c.drops)
        if (cut := _lost_its_end(found.run_dir, c, seen.drops)) is not None and c.point is not None:
            damaged.setdefault(c.point, cut)
            warnings.append(f"{c.file}: {cut}")
        if c.point and c.ended_early is not None:
            # Killed or crashed mid-run: the rest of the run is silence, not loss. Like a damaged
            # file, the whole point is unreliable (when exactly it died is known only roughly).
            damaged[c.point] = why = c.ended_early.note(c.point, c.backend)
            warnings.append(why)
    remote = {c.point for c in found.manifest.captures if c.remote and c.point} if found.manifest else set()
    for point, why in implausible(obs, remote, _started_ns(found.manifest)).items():
        damaged.setdefault(point, why)
        files = ", ".join(m.label for m in mapped.mapping if m.point == point) or point
        warnings.append(f"{files} ({point}): {why}")
    # An interface the topology lacks on a node it has: a live trace captured it because the
    # node really has it (witness capture); its packets are sightings off the expected paths.
    warnings += [f"{p} is not in the topology: used as a witness only" for p in obs.points if topo.interface(p) is None]
    warnings += [f"{m.label}: not used: {m.why}" for m in mapped.unused if m.candidates]
    states: dict[str, NodeState] = {}
    evidence = Evidence()
    if found.manifest is not None and found.run_dir is not None:
        states, notes = read_netstate(found.run_dir, found.manifest, topo.nodes)
        evidence, ev_notes = read_evidence(found.run_dir, found.manifest)
        notes += ev_notes
        # First among the warnings: a stale topology changes how every other line reads.
        if states:  # topocheck (and the live-state model) only for runs that recorded live state
            from tracer.analysis.topocheck import compare

            notes = [f"topology differs from the live network: {d.text}" for d in compare(topo, states)] + notes
        warnings = notes + warnings
        if (cut := interrupted_note(found.manifest, found.report)) is not None:
            warnings.insert(0, cut)
    kept_at = dict(mapped.kept_at)  # as the columns say, or as the manifest recorded it
    if found.manifest is not None and found.run_dir is not None:
        kept_at |= {str(found.run_dir / c.file): c.kept_at for c in found.manifest.captures if c.kept_at}
    return LoadedRun(topo, obs, {k: v for k, v in drops.items() if v}, warnings, found.manifest, found.report,
                     damaged, states, evidence, mapped.mapping, kept_at)


def _lost_its_end(run_dir: Path | None, c: CaptureEntry, file_drops: dict[str, int | None]) -> str | None:
    """Why a pcapng the manifest gives drops for but that ends without its statistics block (which
    the sniffer writes when it stops, and which carries those drops) has lost its end; else None.
    Cut down to its header it still reads, as a capture that saw nothing: issue 13's silent verdict."""
    if run_dir is None or c.drops is None or c.point is None or file_drops.get(c.point, 0) is not None:
        return None
    try:
        with open(run_dir / c.file, "rb") as f:
            if f.read(4) != b"\x0a\x0d\x0d\x0a":  # classic pcap: no statistics block to miss
                return None
    except OSError:
        return None
    return "ends without the statistics block its sniffer writes when it stops (the manifest gives its drops): " \
        "cut short, so what it lacks proves nothing"


def _started_ns(m: Manifest | None) -> int | None:
    """When the run started (the manifest's ``started``, an ISO time with its zone), in ns; None if not said."""
    text = m.extra.get("started") if m is not None else None
    try:
        t = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return int(t.timestamp() * 1e9) if t is not None and t.tzinfo is not None else None


def check_endpoints(topo: Topology, src: IPv4Address | None, dst: IPv4Address | None) -> None:
    """``--src``/``--dst`` must be addresses of the topology's nodes, as for a live trace: a probe
    from or to an address no node has would be "lost" by construction, an invented finding."""
    for flag, addr in (("--src", src), ("--dst", dst)):
        if addr is not None and topo.owner(addr) is None:
            raise BadInput(f"{flag} {addr}: no node of the topology {topo.source} has this address "
                           f"(nodes: {', '.join(topo.nodes)})")


def interrupted_note(m: Manifest, report: ProbeReport | None) -> str | None:
    """What an interrupted run's verdict covers: the probes that left, never the planned rest."""
    if not (m.interrupted or (report is not None and report.interrupted)):
        return None
    sent = len(report.sent) if report is not None else m.count or 0
    planned = report.planned if report is not None else m.planned
    return (f"run interrupted: {sent} of {planned if planned is not None else '?'} planned probes were sent; "
            f"the verdict covers those {sent}")


def _inputs(inputs: list[Path], points: list[tuple[str, Path]]) -> _Inputs:
    explicit: list[Source] = []
    at: dict[Path, str] = {}  # file → its point: one file is one point
    for p, f in points:
        if (real := f.resolve()) in at and at[real] == p:
            continue  # the same mapping twice (a mapping file may list it 10^5 times: checked once)
        if f.is_dir():
            raise BadInput(f"{f}: a directory, not a capture file (--point {p}={f})")
        if not f.exists():  # a FIFO or device is refused when read, saying what it is
            raise BadInput(f"{f}: no such capture file (--point {p}={f})")
        if at.setdefault(real, p) != p:
            raise BadInput(f"{f}: mapped to two capture points ({at[real]} and {p}); a file is one point")
        explicit.append(Source(f, p))
    if not inputs and not explicit:
        raise BadInput("nothing to replay: give a run directory or capture files")
    if len(inputs) == 1 and inputs[0].is_dir():
        found = _run_dir(inputs[0])
        if explicit:  # --point overrides what the directory says about the same file
            named = {s.path.resolve() for s in explicit}
            found.files = [s for s in found.files if s.path.resolve() not in named] + explicit
        return found
    for p in inputs:
        if p.is_dir():
            raise BadInput(f"{p}: a directory can only be replayed on its own")
        if not p.exists():
            raise BadInput(f"{p}: no such capture file")
    named = {s.path.resolve() for s in explicit}
    # A file named twice (``*.pcapng other/*.pcapng``) is read once.
    loose: dict[Path, Path] = {}
    for p in inputs:
        if p.resolve() not in named:
            loose.setdefault(p.resolve(), p)
    return _Inputs([Source(p) for p in loose.values()] + explicit)


def _run_dir(run_dir: Path) -> _Inputs:
    """A run directory: its manifest says which file is which point; without one, every capture
    in it (mapped like loose files), with its topology.toml if there is one."""
    if not (run_dir / MANIFEST).exists():
        # Here only: tracer.subprocs brings subprocess, which a complete run's replay never uses.
        from tracer.subprocs import RUN_FILE

        if (run_dir / PROBE_JOURNAL).exists() or (run_dir / RUN_FILE).exists():
            raise BadInput(f"{run_dir}: incomplete run directory: the trace was killed before writing {MANIFEST} "
                           f"({_journalled(run_dir / PROBE_JOURNAL)}); its raw captures are kept but not replayed")
        files = [Source(p) for p in sorted(run_dir.iterdir()) if p.is_file() and stem(p) != p.name
                 and p.name != RUN_PCAPNG]
        if not files:
            raise BadInput(f"{run_dir}: no {MANIFEST} and no .pcap/.pcapng files")
        topology = run_dir / "topology.toml"  # a folder of hand-made captures beside their topology
        return _Inputs(files, topology if topology.is_file() else None)
    manifest = read_manifest(run_dir)
    return _Inputs([Source(run_dir / c.file, c.point, MANIFEST_RULE) for c in manifest.captures],
                   run_dir / manifest.topology if manifest.topology else None,
                   manifest, read_probe_report(run_dir, manifest), run_dir)


def _journalled(journal: Path) -> str:
    """How many probes the journal of a killed run says left (a bounded read)."""
    try:
        with open(journal, "rb") as f:
            text = f.read(64 << 20)
    except OSError:
        return "no probe was sent"
    sent = text.count(b'"event": "sent"')
    return f"{sent} probe{'s' if sent != 1 else ''} sent, see {PROBE_JOURNAL}" if sent else "no probe was sent"


def replay_run(
    loaded: LoadedRun,
    run: int | None = None,
    src: IPv4Address | None = None,
    dst: IPv4Address | None = None,
    esp_keys: Path | None = None,
    flow: str | None = None,
) -> list[Verdict]:
    """One verdict per probe run found (or the one asked for). With ``esp_keys`` (an SA file
    in Wireshark's esp_sa format) ESP is decrypted and the probe tags inside identify it.
    Captures without tracer probes give one verdict per untagged flow (analysis/identity.py):
    every ICMP echo flow between two nodes, or what the ``flow`` filter (model/flowfilter.py)
    selects; none at all is :class:`NoTraffic`."""
    m = loaded.manifest
    notes: dict[int, tuple[str, ...]] = {}  # run → warnings of its own (untagged flows)
    flows: list[Flow] = []
    if flow is None and _manifest_run(m, run):
        specs = [_spec_from_manifest(loaded, m, src, dst)]
    else:
        runs = find_runs(loaded.observations) if flow is None else []
        if runs:
            specs = [ProbeSpec(r, k, src, dst) for r, k, _ in runs]
        else:
            flows = _untagged(loaded, flow, src, dst)
            specs = [ProbeSpec(f.run, f.kind, f.src, f.dst, flow=f.text(), notes=f.nat) for f in flows]
            notes = {f.run: (f"packets of the flow left out: {f.ambiguous} identities were each shared by several "
                             "packets (same addresses, IP ID, ports and first bytes, or ICMP identifier and sequence)",)
                     for f in flows if f.ambiguous}
        if run is not None:
            specs = [s for s in specs if s.run == run]
            if not specs:
                raise BadInput(f"run {run:#x} not found in the captures")
    decrypted = _decrypt(loaded, esp_keys, flows) if esp_keys else None
    return [analyze(loaded.topology, loaded.observations, s, loaded.drops, (*loaded.warnings, *notes.get(s.run, ())),
                    decrypted, loaded.damaged, loaded.evidence, loaded.netstate) for s in specs]


def _manifest_run(m: Manifest | None, run: int | None) -> bool:
    """The run analysed is the manifest's own (tagged, its kind known), not one found in the captures."""
    return m is not None and m.run is not None and m.kind is not None and run in (None, m.run)


def _untagged(loaded: LoadedRun, flow: str | None, src: IPv4Address | None, dst: IPv4Address | None) -> list[Flow]:
    """No tracer probe (or ``--flow``): every untagged flow the filter selects, or every ICMP echo
    flow between two nodes, as a synthetic run. The observations take the flows' synthetic tags
    (so --dissect and plots find their packets like tagged probes')."""
    # Here only: a run of tracer's own probes needs neither the untagged pairing nor --flow's language.
    from tracer.analysis.identity import untagged_flows
    from tracer.model import flowfilter

    expr = flowfilter.parse(flow) if flow is not None else None
    loaded.observations, flows = untagged_flows(loaded.observations, loaded.topology, expr)
    flows = [f for f in flows if src in (None, f.src, f.dst) and dst in (None, f.src, f.dst)]  # --src/--dst pick flows
    if not flows:
        what = f"nothing that --flow '{flow}' selects" if flow is not None else \
            "no tracer probe and no ICMP echo between two nodes of the topology"
        ends = "".join(f" {w} {a}" for w, a in (("from", src), ("to", dst)) if a is not None)
        raise NoTraffic(f"no traffic of interest in the captures: {what}{ends} (pick other traffic with --flow, "
                        "e.g. --flow 'udp and host A and host B')")
    return flows


def _spec_from_manifest(loaded: LoadedRun, m: Manifest, src: IPv4Address | None, dst: IPv4Address | None) -> ProbeSpec:
    assert m.run is not None and m.kind is not None
    # Points another host captured (over SSH): analysis estimates that host's clock offset.
    remote = tuple(dict.fromkeys(CapturePoint.parse(c.point).node for c in m.captures if c.remote and c.point))
    report = loaded.report
    # An interrupted run counts the probes that left, whatever else the manifest says.
    count = len(report.sent) if report is not None and report.interrupted else m.count
    base = ProbeSpec(m.run, m.kind, src or m.src, dst or m.dst, m.origin, count, remote_nodes=remote)
    return spec_from_report(report, base) if report is not None else base


def _decrypt(loaded: LoadedRun, esp_keys: Path, flows: list[Flow]) -> DecryptedTags:
    """Decrypt the captures' ESP with the SAs in ``esp_keys``: for every packet opened, the
    probe it carries (None: other traffic). Packets that failed are left out. An untagged echo
    flow's packets are known inside by addresses, identifier and sequence; where a UDP/TCP flow
    is traced, an inner packet that is no echo cannot be told (the inner ports are not read) and
    is left out too, so no hop is called a miss on its account."""
    from tracer.esp import read_esp_sa_file
    from tracer.esp.confirm import confirm

    conf = confirm(loaded.observations, read_esp_sa_file(esp_keys))
    echo_dir = {8: Direction.REQUEST, 0: Direction.REPLY}
    echo_runs = {(str(f.src), str(f.dst), f.ident): f.run for f in flows if f.ident is not None}
    other_flows = any(f.ident is None for f in flows)
    carriers: dict[tuple[int, int], ProbeIdentity | None] = {}
    for key, (tag, icmp_type) in conf.tags.items():
        inner = conf.inner.get(key)
        if tag is not None and icmp_type in echo_dir:
            carriers[key] = ProbeIdentity(tag.run, tag.kind, tag.seq, echo_dir[icmp_type])
        elif inner is not None and icmp_type in echo_dir and inner.icmp_seq is not None:
            ends = (inner.src, inner.dst) if icmp_type == 8 else (inner.dst, inner.src)
            r = echo_runs.get((*ends, inner.icmp_id))
            carriers[key] = None if r is None else ProbeIdentity(r, ProbeKind.PING, inner.icmp_seq, echo_dir[icmp_type])
        elif not other_flows or inner is None or inner.proto == 1:
            carriers[key] = None
    return DecryptedTags(carriers, (conf.summary(),))


__all__ = ["LoadedRun", "load_run", "replay_run"]
