"""Live traces: record, then replay.

Start a sniffer on every capture point of the expected request and reply
paths, send tagged probes, stop the sniffers, write the run directory
(one pcapng per point, manifest, topology), then hand it to the same replay
code as ``tracer replay``. Works on any topology whose nodes live in local
network namespaces or are reachable over SSH; the built-in lab is just one
such topology file.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

from tracer.errors import BadInput
from tracer.model.path import expected_path
from tracer.model.tag import ProbeKind
from tracer.model.topology import Node, Topology
from tracer.model.verdict import Verdict
from tracer.netns import ensure_root
from tracer.replay import load_run, replay_run
from tracer.rundir import CaptureEntry, Manifest, write_manifest
from tracer.sniff import CaptureResult, Sniffer, start_all, stop_all
from tracer.sniff.bpf import capture_filter
from tracer.sniff.ssh import SshTcpdumpSniffer
from tracer.sniff.tcpdump import DEFAULT_SNAPLEN, TcpdumpSniffer

SETTLE_S = 0.05


@dataclass
class Endpoints:
    src_node: Node
    src: IPv4Address
    dst_node: Node
    dst: IPv4Address


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


def make_sniffers(topo: Topology, points: list[str], run_dir: Path, snaplen: int = DEFAULT_SNAPLEN) -> list[Sniffer]:
    bpf = capture_filter(topo)
    sniffers: list[Sniffer] = []
    for point in points:
        node_name, _, iface = point.rpartition(":")
        node = topo.nodes[node_name]
        out = run_dir / f"{point.replace(':', '_')}.pcapng"
        if node.capture_backend == "ssh":
            # The node's own tcpdump, reached over SSH (docs/remote-capture.md).
            assert node.ssh is not None  # the topology parser guarantees it for capture = "ssh"
            sniffers.append(SshTcpdumpSniffer(point, node.ssh, iface, out, bpf, ssh_netns=node.ssh_netns,
                                              key=_topo_path(topo, node.ssh_key), port=node.ssh_port,
                                              known_hosts=_topo_path(topo, node.ssh_known_hosts), snaplen=snaplen))
        else:
            sniffers.append(TcpdumpSniffer(point, node.netns, iface, out, bpf, snaplen=snaplen))
    return sniffers


def _topo_path(topo: Topology, value: str | None) -> Path | None:
    """A path from the topology file: ~ expanded, relative to the file's directory."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(topo.source).parent / p


def new_run_dir(base: Path | None, kind: ProbeKind, run: int) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    d = base or Path("runs") / f"{stamp}-{kind.name.lower()}-{run:08x}"
    try:
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise BadInput(f"--out {d}: exists and is not an empty directory")
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"--out {d}: cannot create the run directory ({e.strerror})") from None
    return d


def record(
    topo: Topology,
    topo_path: Path,
    ends: Endpoints,
    kind: ProbeKind,
    run: int,
    run_dir: Path,
    send: Callable[[], dict],
    count: int,
    snaplen: int = DEFAULT_SNAPLEN,
) -> Path:
    """Sniff every point while ``send()`` runs; always leave a valid run directory."""
    ensure_root()
    points = capture_points(topo, ends)
    sniffers = make_sniffers(topo, points, run_dir, snaplen)
    results: list[CaptureResult] = []
    extra: dict = {"started": datetime.now(UTC).isoformat()}
    t0 = time.monotonic()
    try:
        start_all(sniffers)
        extra["sniffers_ready_s"] = round(time.monotonic() - t0, 3)
        extra["probe"] = send()
        # The prober has its last answer, but a sniffer further along may not have
        # pulled that packet from its ring yet; stopping now would record a false loss.
        time.sleep(SETTLE_S)
    finally:
        # Ctrl-C or an error mid-run: stop what was started and keep its packets. If an
        # exception is on its way out, it stays the one reported; stop errors come after.
        started = [s for s in sniffers if s.proc is not None]
        results, stop_errors = stop_all(started)
        backends = {s.point: s.backend for s in started}
        shutil.copy(topo_path, run_dir / "topology.toml")
        manifest = Manifest(
            run=run, kind=kind, src=ends.src, dst=ends.dst, origin=ends.src_node.name, count=count,
            topology="topology.toml",
            # "remote": another host's clock stamped these packets (analysis estimates its offset).
            captures=[CaptureEntry(r.point, r.file.name, r.drops, backends.get(r.point),
                                   remote=backends.get(r.point) == SshTcpdumpSniffer.backend) for r in results],
            extra=extra | {"record_s": round(time.monotonic() - t0, 3)},
        )
        write_manifest(run_dir, manifest)
    if stop_errors:
        raise stop_errors[0]
    return run_dir


def analyse(run_dir: Path, esp_keys: Path | None = None) -> list[Verdict]:
    # Keys are read from their own file at analysis time and never copied into the run directory.
    return replay_run(load_run([run_dir]), esp_keys=esp_keys)
