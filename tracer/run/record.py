"""Live traces: record, then replay.

Snapshot the live state of every node on the expected request and reply paths
(``netstate/``) and the evidence sources (``evidence/``: counters, firewall rules, IKE SAs),
start a sniffer on every capture point of those paths and on every other
interface those nodes really have (witnesses, including interfaces the topology lacks),
send tagged probes, settle, snapshot the evidence again, stop the sniffers, write the run directory (one pcapng per point, the
manifest, the probe report, the topology), then hand it to the same replay code as
``tracer replay``. Works on any topology whose nodes live in local network namespaces or
are reachable over SSH; the built-in lab is just one such topology file.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from tracer import evidence, ssh_mux, subprocs
from tracer.analysis.topocheck import live_interfaces
from tracer.errors import BadInput, EnvironmentProblem, TracerError
from tracer.evidence.netstate import snapshot_nodes
from tracer.interrupts import deferred
from tracer.model.evidence import EVENTS, ProbeMatch, Snapshot
from tracer.model.netstate import NodeState
from tracer.model.path import expected_path
from tracer.model.point import CapturePoint
from tracer.model.probe import Endpoints, ProbeReport
from tracer.model.topology import Topology
from tracer.netns import ensure_root
from tracer.probes import ProbeType
from tracer.run.manifest import (
    PROBE_JOURNAL,
    PROBE_REPORT,
    RUN_PCAPNG,
    CaptureEntry,
    EarlyEnd,
    Manifest,
    write_evidence,
    write_manifest,
    write_netstate,
    write_probe_report,
)
from tracer.send.pacer import journal_to
from tracer.sniff import Sniffer, request_stop_all, sniffer_for, stop_all, wait_all
from tracer.sniff.bpf import capture_filter
from tracer.sniff.ssh import SshTcpdumpSniffer, remote_columns
from tracer.sniff.tcpdump import DEFAULT_SNAPLEN
from tracer.ssh_client import Connection, connection, topology_relative

if TYPE_CHECKING:
    from tracer.model.verdict import Verdict

SETTLE_S = 0.05
SNIFFER_START_S = 5.0  # every sniffer listening within this long of the first spawn, or it failed
EVENTS_READY_S = 20.0  # at most this long for an event source to attach (bpftrace: ~2 s measured)


def capture_failures(topo: Topology, failed: dict[str, str]) -> list[Snapshot]:
    """One ``capture`` snapshot per node with a point that could not be captured: why (tcpdump's
    own words), so the verdict can say why that point was not observed."""
    from tracer.analysis.explain import CAPTURE_SOURCE  # here: explain imports the analysis (numpy)

    by_node: dict[str, list[str]] = {}
    for point, why in failed.items():
        why = why.split(" did not start: ", 1)[-1]  # "sniffer on P did not start: tcpdump: ..."
        by_node.setdefault(CapturePoint.parse(point).node, []).append(f"{point} not captured: {why}")
    return [Snapshot(CAPTURE_SOURCE, node, EVENTS, notes=tuple(lines)) for node, lines in by_node.items()]


def network_explains(states: dict[str, NodeState], point: str) -> bool:
    """Whether the node's live state explains why ``point`` could not be captured: its interface
    is missing or down (a finding about the network). Anything else — an SSH key refused,
    tcpdump missing — is tracer's environment, and the trace is refused (exit 4)."""
    cp = CapturePoint.parse(point)
    state = states.get(cp.node)
    if state is None:
        return False
    live = state.interface(cp.iface)
    return live is None or not live.up


def tunnel_spis(topo: Topology, snaps: list[Snapshot]) -> frozenset[int]:
    """The ESP SPIs a probe's carrier can have: the SAs the IKE daemons had installed before the
    trace, and those the topology gives."""
    live = {c.spi for s in snaps for c in s.counters if c.spi is not None}
    given = {end.spi_in for t in topo.tunnels for end in (t.left, t.right) if end.spi_in}
    return frozenset(live | given)


def resolve_endpoints(topo: Topology, src: str, dst: str, source: str | None) -> Endpoints:
    """SRC/DST as node names or addresses; ``source`` like ``ping -I`` (address or interface)."""
    src_node, src_addr = topo.resolve(src)
    dst_node, dst_addr = topo.resolve(dst)
    if source:
        if source in src_node.interfaces:
            # The interface's address, not SO_BINDTODEVICE: the point (guide 5.2) is the
            # source address that makes the traffic match the tunnel's selectors.
            addrs = src_node.interfaces[source].addresses
            if not addrs:
                raise BadInput(f"--source {source}: interface has no address on {src_node.name}")
            src_addr = addrs[0].ip
        else:
            try:
                src_addr = IPv4Address(source)
            except ValueError:
                raise BadInput(f"--source {source}: not an address or an interface of {src_node.name}") from None
            if not src_node.owns(src_addr):
                raise BadInput(f"--source {source}: not an address of {src_node.name}")
    if src_node.name == dst_node.name:
        raise BadInput(f"source and destination are both on {src_node.name}: nothing to trace")
    return Endpoints(src_node, src_addr, dst_node, dst_addr)


def capture_points(topo: Topology, ends: Endpoints) -> list[str]:
    req = expected_path(topo, ends.src, ends.dst, ends.src_node)
    rep = expected_path(topo, ends.dst, ends.src, ends.dst_node)
    return list(dict.fromkeys(h.point for p in (req, rep) for h in p.hops))


def witness_points(topo: Topology, states: dict[str, NodeState], points: list[str], nodes: list[str]) -> list[str]:
    """The interfaces ``nodes`` really have besides ``points`` (off the paths, or missing from the
    topology: a router re-wired through a new eth2), captured as witnesses."""
    return [p for p in live_interfaces(topo, states, nodes) if p not in points]


def ssh_connections(topo: Topology, nodes: list[str]) -> list[Connection]:
    """How each SSH-captured node among ``nodes`` is reached (one master each, tracer.ssh_mux)."""
    out = []
    for name in nodes:
        n = topo.nodes[name]
        if n.capture_backend == "ssh" and n.ssh:
            out.append(connection(n.ssh, n.ssh_netns, topology_relative(topo.source, n.ssh_key), n.ssh_port,
                                  topology_relative(topo.source, n.ssh_known_hosts)))
    return out


def make_sniffers(topo: Topology, points: list[str], run_dir: Path, snaplen: int = DEFAULT_SNAPLEN) -> list[Sniffer]:
    bpf = capture_filter(topo)
    out = []
    for point in points:
        cp = CapturePoint.parse(point)
        out.append(sniffer_for(topo, topo.nodes[cp.node], cp.iface, run_dir / f"{cp.node}_{cp.iface}.pcapng", bpf, snaplen))
    return out


def default_runs_dir() -> Path:
    """Where run directories go unless asked: the user's data directory (XDG), never the
    current directory (a trace run from anywhere must not litter it with captures)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tracer" / "runs"


def dir_stamp() -> str:
    """Now, as a run or watch directory's name begins (UTC, sorts by time)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(out: Path | None, kind: ProbeType, run: int, runs_dir: Path | None = None) -> Path:
    """``out`` itself, else ``<runs_dir>/<time>-<kind>-<run>`` (runs_dir: :func:`default_runs_dir`).
    Created owner-only (0700, parents too) whatever the umask: captures are private."""
    return empty_dir(out or (runs_dir or default_runs_dir()) / f"{dir_stamp()}-{kind.name}-{run:08x}", "run directory")


def empty_dir(d: Path, what: str) -> Path:
    """``d``, created owner-only, or refused (BadInput) unless it is an empty directory: never mix runs."""
    try:
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise BadInput(f"--out {d}: exists and is not an empty directory")
        old_mask = os.umask(0o077)
        try:
            d.mkdir(parents=True, exist_ok=True)
        finally:
            os.umask(old_mask)
        d.chmod(0o700)
    except OSError as e:
        raise BadInput(f"--out {d}: cannot create the {what} ({e.strerror})") from None
    return d


def record(
    topo: Topology,
    topo_path: Path,
    ends: Endpoints,
    kind: ProbeType,
    run: int,
    run_dir: Path,
    send: Callable[[], ProbeReport],
    count: int,
    snaplen: int = DEFAULT_SNAPLEN,
    all_points: bool = False,
    progress: Callable[[str | None], None] | None = None,
    events_wait: float = EVENTS_READY_S,
    on_evidence: Callable[[list[Snapshot]], None] | None = None,
) -> bool:
    """Sniff every point while ``send()`` runs; always leave a valid run directory. Witnesses: the
    other interfaces of the nodes on the paths, or with ``all_points`` of every node.
    ``events_wait``: how long the probes wait, once the sniffers listen, for the event sources
    (bpftrace) to attach; one still starting then keeps starting and says what it missed.

    Returns whether the run was interrupted (Ctrl-C or SIGTERM while probing: the manifest and
    the report then count only the probes that left). An interrupt before any probe left, or
    any error, is raised after the run directory is written. Everything after the first
    interrupt runs with further interrupts held (tracer.interrupts). ``progress(stage)``: what is
    being done now, for a progress line (None: sending, be quiet). ``on_evidence(snaps)``: the
    evidence read before the first probe (counters, SAs), told before it is sent."""
    ensure_root()
    stage = progress or (lambda _text: None)
    # Helpers a killed trace left running (its sniffers, bpftrace): stop them before adding ours.
    subprocs.reap_orphans()
    subprocs.record_in(run_dir)
    extra: dict = {"started": datetime.now(UTC).isoformat()}
    t0 = time.monotonic()
    points = capture_points(topo, ends)
    sniffers: list[Sniffer] = []
    witnesses: list[Sniffer] = []
    failed: dict[str, str] = {}  # points that could not capture, and why
    report: ProbeReport | None = None
    netstate: str | None = None
    unread: dict[str, str] = {}
    snaps: list[Snapshot] = []
    events: list = []
    nodes: list[str] = []
    asked_s: list[float] = []  # when the sniffers were first asked to stop, seconds after t0
    written = 0  # snapshots already in the evidence folder
    def finish(interrupted: bool) -> list[EnvironmentProblem]:
        """Stop what was started (keeping its packets), then write the report and the manifest:
        with ``interrupted``, it counts only the probes that left."""
        nonlocal snaps
        started = [s for s in [*sniffers, *witnesses] if s.proc is not None and s.point not in failed]
        asked_s.append(round(time.monotonic() - t0, 1))  # a sniffer that ended on its own had ended by then
        evidence.request_stop(events)  # all wind down at once; collected below
        request_stop_all(started)
        if events:
            snaps += evidence.stop(topo, events)
        stage("stopping sniffers")
        results, stop_errors = stop_all(started)
        # Sessions past the server's MaxSessions connected on their own: they worked, unshared.
        if refused := masters.refused():
            extra.setdefault("ssh_masters", {})["refused"] = refused
            for host, n in refused.items():
                print(f"tracer: note: {host} refused {n} multiplexed sessions (sshd MaxSessions): "
                      "they used their own connections", file=sys.stderr)
        backends = {s.point: s.backend for s in started}
        shutil.copyfile(topo_path, run_dir / "topology.toml")  # not its mode: the run dir is owner-only
        if report is not None:
            write_probe_report(run_dir, report)
        cut = interrupted or report is None  # no report: an error before any probe was sent
        manifest = Manifest(
            run=run, kind=kind.code, src=ends.src, dst=ends.dst, origin=ends.src_node.name,
            # An adaptive kind (the MTU search) plans fewer than its bound: count what it sent.
            count=len(report.sent) if report is not None and (cut or report.planned < count) else 0 if cut else count,
            planned=count if cut else None, interrupted=interrupted,
            topology="topology.toml",
            # "remote": another host's clock stamped these packets (analysis estimates its offset).
            captures=[CaptureEntry(r.point, r.file.name, r.drops, backends.get(r.point),
                                   remote=backends.get(r.point) == SshTcpdumpSniffer.backend,
                                   ended_early=EarlyEnd(r.ended_early, asked_s[0]) if r.ended_early else None,
                                   kept_at=r.kept_at)
                      for r in results],
            report=PROBE_REPORT if report is not None else None,
            netstate=netstate, netstate_unread=unread,
            evidence=write_evidence(run_dir, snaps[written:]) if snaps else None,
            extra=extra | {"record_s": round(time.monotonic() - t0, 3)},
        )
        write_manifest(run_dir, manifest)
        return stop_errors

    masters = ssh_mux.Masters()
    try:
        nodes = list(topo.nodes) if all_points else list(dict.fromkeys(CapturePoint.parse(p).node for p in points))
        # One master connection per SSH host, all at once, before anything reaches them: every
        # later session to a host (state, evidence, sniffers) rides on it (tracer.ssh_mux).
        # While opening, each is asked whether the host has tracer (it then extracts there).
        masters.open(ssh_connections(topo, nodes), probe=remote_columns)
        if masters.open_ or masters.failed:
            extra["ssh_masters"] = {"hosts": len(masters.open_) + len(masters.failed), "opened": len(masters.open_),
                                    "extracting": sum(m.columns for m in masters.open_.values()),
                                    "s": round(time.monotonic() - t0, 3)}
        # Everything before the first probe runs at once, the trace waits for the slowest:
        # the live state of the nodes (compared with the topology; the interfaces they really
        # have become witness points) and the evidence before any probe (counters, rules, SAs)
        # are read in threads while the sniffers on the paths start here, in the main thread
        # (tracer.subprocs: PDEATHSIG follows the thread that spawns). Neither reading depends on
        # the sniffers: a capture changes no counter and no UP/LOWER_UP flag.
        stage(f"reading the state of {len(nodes)} nodes, starting sniffers on {len(points)} capture points")
        # Event sources (kernel drop reasons) start first and compile while everything below
        # runs: the trace waits for the slowest, not for the sum. The tunnel SPIs they keep
        # follow once the IKE daemons have been asked (evidence before).
        events = evidence.start(topo, nodes, ProbeMatch(run, None))
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="snapshot") as pool:
            reading_state = pool.submit(snapshot_nodes, topo, nodes)
            reading_before = pool.submit(evidence.before, topo, nodes)
            t_start = time.monotonic()
            sniffers = make_sniffers(topo, points, run_dir, snaplen)
            for s in sniffers:
                s.start()
            snaps = reading_before.result()
            extra["evidence_before_s"] = round(time.monotonic() - t0, 3)
            evidence.learn(events, ProbeMatch(run, tunnel_spis(topo, snaps)))
            if on_evidence is not None:
                on_evidence(snaps)
            states, unread = reading_state.result()
        netstate = write_netstate(run_dir, states)
        extra["netstate_s"] = round(time.monotonic() - t0, 3)
        witnesses = make_sniffers(topo, witness_points(topo, states, points, nodes), run_dir, snaplen)
        for s in witnesses:
            s.start()
        # A witness that cannot capture costs its own file, never the trace; neither does a
        # path point whose interface is down or gone (a finding: that point is unobserved, and
        # the verdict says why). Any other failure on the path is tracer's environment: exit 4.
        # The witnesses were spawned only now (once the live state named them): they too get
        # SNIFFER_START_S, or a slow state read (SSH hosts) would leave them none.
        failed = wait_all([], (time.monotonic() if witnesses else t_start) + SNIFFER_START_S,
                          optional=[*sniffers, *witnesses])
        if failed:
            extra["sniffers_failed"] = failed
            snaps += capture_failures(topo, failed)
        refused = [why for p, why in failed.items() if p in points and not network_explains(states, p)]
        if refused:  # tracer's own environment (an SSH key, tcpdump, privilege): fix that first
            raise EnvironmentProblem(refused[0])
        extra["sniffers_ready_s"] = round(time.monotonic() - t_start, 3)
        # Written while bpftrace may still be attaching, not after the last probe.
        if snaps:
            write_evidence(run_dir, snaps)
            written = len(snaps)
        evidence.ready(events, time.monotonic() + min(events_wait, EVENTS_READY_S),
                       give_up=events_wait >= EVENTS_READY_S)
        extra["events_ready_s"] = round(time.monotonic() - t_start, 3)
        extra |= {f"{name}_startup_s": t for name, t in evidence.startup_times(events).items()}
        stage(None)
        with journal_to(run_dir / PROBE_JOURNAL):
            report = send()
        interrupted = report.interrupted
        with deferred(raise_after=False) as got, ThreadPoolExecutor(max_workers=1, thread_name_prefix="after") as pool:
            stage("reading counters after the probes")
            t_ev = time.monotonic()
            # The counters are final once the prober has its last answer (or gave up): the
            # packets have passed every hop. They are read at once, while the sniffers settle;
            # after an interrupt, probes may still be in flight: then after the settling, as ever.
            reading_after = None if interrupted else pool.submit(evidence.after, topo, nodes)
            # But a sniffer further along may not have pulled the last packet from its ring
            # yet; stopping now would record a false loss.
            time.sleep(SETTLE_S)
            # The sniffers and event sources wind down while the evidence after is read
            # (stopping a capture moves no counter); finish() collects them.
            started = [s for s in [*sniffers, *witnesses] if s.proc is not None and s.point not in failed]
            asked_s.append(round(time.monotonic() - t0, 1))
            evidence.request_stop(events)
            request_stop_all(started)
            snaps += reading_after.result() if reading_after is not None else evidence.after(topo, nodes)
            extra["evidence_after_s"] = round(time.monotonic() - t_ev, 3)
        interrupted |= bool(got)
    except BaseException as err:
        # Ctrl-C or an error before the probes were all out: stop what was started and keep
        # its packets; a second Ctrl-C meanwhile is held. The exception stays the one reported.
        with deferred(raise_after=False):
            try:
                finish(isinstance(err, KeyboardInterrupt))
            finally:
                masters.close()  # after the sniffers: their sessions ride on the masters
        subprocs.record_in(None)
        raise
    with deferred(raise_after=False) as got:
        try:
            stop_errors = finish(interrupted)
        finally:
            masters.close()
    subprocs.record_in(None)
    if stop_errors:
        raise stop_errors[0]
    return interrupted or bool(got)


# Above this many packets a live trace leaves run.pcapng out: it would double the run
# directory's size and cost a per-packet loop over every capture; replay writes it on demand.
MERGED_MAX_PACKETS = 200_000


def replay_recorded(run_dir: Path, esp_keys: Path | None = None) -> list[Verdict]:
    """The verdicts of a run directory just recorded: exactly what ``tracer replay`` says of it.
    Keys are read from their own file at analysis time and never copied into the run directory."""
    # Imported here: the analysis is not needed to record (the CLI imports it while probing).
    from tracer.run.merged import write_run_pcapng
    from tracer.run.replay import load_run, replay_run

    loaded = load_run([run_dir])
    verdicts = replay_run(loaded, esp_keys=esp_keys)
    if len(loaded.observations) > MERGED_MAX_PACKETS:  # a second copy of every capture, at a Python loop's pace
        print(f"tracer: note: {RUN_PCAPNG} not written: {len(loaded.observations):,} packets (over "
              f"{MERGED_MAX_PACKETS:,}); `tracer replay {run_dir} --write-pcapng` writes it", file=sys.stderr)
        return verdicts
    try:
        write_run_pcapng(run_dir / RUN_PCAPNG, loaded.observations, verdicts, loaded.drops)
    except (OSError, TracerError) as e:  # the verdict stands without the merged file
        print(f"tracer: warning: {RUN_PCAPNG} not written: {e}", file=sys.stderr)
    return verdicts
