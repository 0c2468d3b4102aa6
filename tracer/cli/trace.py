"""Live trace subcommands, one per registered probe kind (``tracer ping``, ``tracer ike``,
``tracer mtu``, …): the options every kind shares, then record a run directory, replay it
and print the verdict. What differs per kind lives in its module under tracer/probes/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tracer.errors import EXIT_INTERRUPTED, BadInput, EnvironmentProblem, Interrupted, TracerError
from tracer.interrupts import sigterm_as_interrupt
from tracer.probes import ProbeType

if TYPE_CHECKING:
    from tracer.model.evidence import Snapshot
    from tracer.model.probe import ProbeReport
    from tracer.model.topology import Topology


def add_parser(sub: argparse._SubParsersAction, ptype: ProbeType) -> None:
    p = sub.add_parser(ptype.name, help=ptype.help, description=ptype.description, epilog=ptype.epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p, ptype.default_count, ptype.default_interval, {dest: (mv, text) for dest, mv, text in ptype.labels},
               fast=ptype.fast_interval)
    ptype.add_arguments(p)
    p.set_defaults(func=lambda args: run(args, ptype))


def add_common(p: argparse.ArgumentParser, count: int = 3, interval: float = 0.2,
               labels: dict[str, tuple[str, str]] | None = None, fast: float | None = None) -> None:
    """``labels``: dest → (metavar, help) where a kind names the endpoints its own way (GW_A, GW_B);
    ``fast``: the kind's spacing when no probe needs telling apart by time (see :func:`spacing`)."""
    words = {"src": ("SRC", "source node name or address"), "dst": ("DST", "destination node name or address"),
             "source": (None, "source address or interface on SRC, like ping -I")} | (labels or {})
    p.add_argument("src", metavar=words["src"][0], help=words["src"][1])
    p.add_argument("dst", metavar=words["dst"][0], help=words["dst"][1])
    add_topology_options(p)
    p.add_argument("--count", "-c", type=int, default=count, help=f"probes to send (default {count})")
    if fast is None:
        p.add_argument("--interval", "-i", type=float, default=interval, help=f"seconds between probes (default {interval})")
    else:
        p.add_argument("--interval", "-i", type=float, default=None,
                       help=f"seconds between probes (default {interval}; {fast} when the topology has no tunnel, "
                            "or when every tunnel end's IKE daemon reports SAs, ESP keys are at hand for all of them "
                            "and a probe fits whole in the snaplen: each ESP carrier is then known by decryption, not "
                            "told from the next probe's by time)")
    p.add_argument("--timeout", "-W", type=float, default=1.0,
                   help="seconds to wait for replies after the last probe (default 1)")
    p.add_argument("--source", "-I", metavar=words["source"][0], help=words["source"][1])
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", "-o", type=Path,
                     help="run directory to write (default: <runs dir>/<time>-<kind>-<run>)")
    out.add_argument("--runs-dir", type=Path, metavar="DIR",
                     help="where run directories go (default: $XDG_DATA_HOME/tracer/runs, else "
                     "~/.local/share/tracer/runs; '--runs-dir runs' for ./runs); written owner-only")
    p.add_argument("--json", action="store_true", help="machine-readable verdict on stdout (docs/json.md)")
    p.add_argument("--quiet", "-q", action="store_true", help="print the verdict only, no line per probe")
    p.add_argument("--version", "-V", action="version", version=_version())
    p.add_argument("--snaplen", type=int, default=2048, metavar="BYTES",
                   help="bytes kept per packet (default 2048: a 1500-byte MTU plus headers, so ESP can be decrypted; "
                   "raise it for jumbo frames; 128 keeps every header and tag the analysis reads)")
    p.add_argument("--plot", type=Path, metavar="FILE", help="also draw the verdict to FILE.png/.svg")
    p.add_argument("--all-points", action="store_true",
                   help="capture every interface of every node of the topology, not only the paths' nodes "
                   "(to see where probes go when they leave the expected path far away)")
    p.add_argument("--drop-reasons-wait", type=float, default=20.0, metavar="SECONDS",
                   help="how long, once the sniffers listen, the first probe waits for the kernel drop-reason "
                   "tracer (bpftrace compiles its script for 1-3 s) (default 20: every probe covered); "
                   "less makes the trace faster: the tracer keeps starting meanwhile, and the evidence says "
                   "when it attached and that drops of probes sent before then are not seen")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--esp-keys", type=Path, metavar="FILE",
                      help="SAs (Wireshark esp_sa format) to decrypt ESP and confirm the probe tags inside "
                      "(default: the topology's esp_keys file, which the built-in lab keeps current)")
    keys.add_argument("--no-decrypt", action="store_true", help="tie ESP to probes by (SPI, seq) only, even with keys")


def _version() -> str:
    from tracer import __version__

    return f"tracer {__version__}"


def add_topology_options(p: argparse.ArgumentParser) -> None:
    """--topology, or --lab: which topology a live command works on (shared with check)."""
    p.add_argument("--topology", "-t", type=Path,
                   help="topology TOML (default: the topology of the lab --lab names)")
    p.add_argument("--lab", metavar="NAME",
                   help="use the built-in lab NAME's topology (default: $TRACER_LAB, else 'lab'), as "
                   "'tracer lab up --name NAME' wrote it")


def default_lab() -> str:
    """The lab a command means when none is named: $TRACER_LAB, else 'lab'."""
    return os.environ.get("TRACER_LAB") or "lab"


def topology_path(args: argparse.Namespace) -> Path:
    from tracer.lab import Lab

    if args.topology is not None:
        if not args.topology.exists():
            raise BadInput(f"{args.topology}: topology file not found")
        return args.topology
    name = getattr(args, "lab", None) or default_lab()
    path = Lab(name).topology_path
    if not path.exists():
        # The environment, not the input: the lab the command needs is not there (exit 4).
        how = "tracer lab up" + ("" if name == "lab" else f" --name {name}")
        raise EnvironmentProblem(f"no topology given and lab '{name}' is not up: run '{how}' or pass --topology")
    return path


def esp_keys_for(args: argparse.Namespace, topo: Topology, tpath: Path) -> Path | None:
    """The SA file to decrypt with: --esp-keys, else the topology's (if it exists yet)."""
    if args.no_decrypt:
        return None
    if args.esp_keys:
        if not args.esp_keys.is_file():
            raise BadInput(f"--esp-keys {args.esp_keys}: no such file")
        from tracer.esp import read_esp_sa_file

        read_esp_sa_file(args.esp_keys)  # parsed now: a bad key file is refused before any capture
        return args.esp_keys
    if topo.esp_keys:
        path = tpath.parent / topo.esp_keys
        return path if path.is_file() else None
    return None


def check_common(args: argparse.Namespace) -> None:
    if not 96 <= args.snaplen <= 262144:
        raise BadInput(f"--snaplen {args.snaplen}: expected 96 to 262144 bytes (headers and tags need 96)")
    if not 1 <= args.count <= 100000:
        raise BadInput(f"--count {args.count}: expected 1 to 100000")
    if args.interval is not None and not 0.001 <= args.interval <= 60:
        raise BadInput(f"--interval {args.interval}: expected 0.001 to 60 seconds")
    if not 0.05 <= args.timeout <= 60:
        raise BadInput(f"--timeout {args.timeout}: expected 0.05 to 60 seconds")
    if not 0 <= args.drop_reasons_wait <= 60:
        raise BadInput(f"--drop-reasons-wait {args.drop_reasons_wait}: expected 0 to 60 seconds")


def run(args: argparse.Namespace, ptype: ProbeType) -> int:
    """Record a run directory (a line per probe as it happens), replay it, print the verdict;
    SIGTERM (kill, a service manager) stops it like Ctrl-C: sniffers stopped, manifest written,
    verdict for the probes sent."""
    with sigterm_as_interrupt():
        return _run(args, ptype)


def _run(args: argparse.Namespace, ptype: ProbeType) -> int:
    from tracer.cli.live import ProbeLines, statistics, where_lost
    from tracer.cli.progress import Progress
    from tracer.cli.style import Style
    from tracer.netns import ensure_root
    from tracer.run.record import new_run_dir, record, replay_recorded, resolve_endpoints
    from tracer.send.echo import random_run_id
    from tracer.topofile import load_topology

    check_common(args)
    ptype.check(args)
    if args.plot:
        from tracer.plot.figure import check_output

        check_output(args.plot)  # a bad name fails now, not after the capture
    tpath = topology_path(args)
    topo = load_topology(tpath)
    ptype.prepare(topo, args)
    ends = resolve_endpoints(topo, args.src, args.dst, args.source)
    keys = esp_keys_for(args, topo, tpath)
    auto = args.interval is None  # chosen once the SAs are known (spacing), before the first probe
    if auto:
        args.interval = ptype.default_interval
    ensure_root()  # before anything is created: a non-root run leaves nothing behind
    # Captured traffic is private: the run directory 0700 and every file in it 0600, the
    # sniffers' included (they inherit the mask).
    os.umask(0o077)
    run_id = random_run_id()
    run_dir = new_run_dir(args.out, ptype, run_id, args.runs_dir)
    live = not (args.json or args.quiet)
    style = Style.for_stream(sys.stdout)
    progress = Progress()
    lines = ProbeLines(ptype.name, ends, style, progress)
    if live:
        search = ptype.name == "mtu" and getattr(args, "sizes", None) is None  # sizes chosen as it goes
        lines.header(None if search else ptype.planned(args),
                     getattr(args, "size", None) if ptype.name == "ping" else None, run_id)
    sent_at: list[float] = []

    def send() -> ProbeReport:
        sent_at.append(time.monotonic())
        report = ptype.send(ends, run_id, args, lines if live else None)
        sent_at.append(time.monotonic())
        warming.start()  # the analysis imports while the sniffers stop and the evidence after is read
        return report

    warming = threading.Thread(target=_import_analysis, name="import-analysis", daemon=True)

    def pace(snaps: list[Snapshot]) -> None:
        # Decryption needs each carrier whole: the probe, its ESP overhead and headers within
        # the snaplen (ESP-in-UDP over Ethernet with AES-GCM adds ~100 bytes to the IP packet).
        whole = not topo.tunnels or getattr(args, "size", 0) + 28 + 128 <= args.snaplen
        if auto and ptype.fast_interval is not None and whole and spacing(topo, snaps, keys):
            args.interval = ptype.fast_interval

    try:
        try:
            interrupted = record(topo, tpath, ends, ptype, run_id, run_dir, send, ptype.planned(args), args.snaplen,
                                 args.all_points, events_wait=args.drop_reasons_wait, on_evidence=pace,
                                 progress=lambda text: progress.clear() if text is None else progress.stage(text))
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted before any probe was sent; run directory: {run_dir}") from None
        progress.stage("analysing the captures")
        if warming.is_alive():
            warming.join()  # the analysis below imports the same modules: let that thread finish them
        verdicts = replay_recorded(run_dir, keys)
    finally:
        progress.close()
    from tracer.cli.render import render_text
    from tracer.cli.replay import emit

    code = EXIT_INTERRUPTED if interrupted else max(v.exit_code for v in verdicts)
    trace = {"run_dir": str(run_dir), "interrupted": interrupted}
    (run_dir / "verdict.json").write_text(_document(ptype, verdicts, code, trace) + "\n")
    if args.json:
        emit(verdicts, True, ptype.name, code, trace=trace)
    else:
        if live:
            print()
        print("\n\n".join(style.verdict(render_text(v), v.status) for v in verdicts))
        if live:
            for v in verdicts:
                if lost := where_lost(v):
                    print("\n" + "\n".join(lost))
                elapsed = sent_at[1] - sent_at[0] if len(sent_at) == 2 else 0.0
                print("\n" + "\n".join(statistics(v, v.sent, str(ends.dst), elapsed)))
            print(f"\nrun directory: {run_dir}  (tracer replay {run_dir})")
    if args.plot:
        from tracer.cli.plot import plot_verdict_to

        plot_verdict_to(args.plot, verdicts[0])
    if interrupted:  # the verdict above covers the probes that left; the exit code says it was cut short
        print(f"tracer: interrupted; the verdict covers the probes sent (run directory: {run_dir})", file=sys.stderr)
        return EXIT_INTERRUPTED
    return max(v.exit_code for v in verdicts)


def spacing(topo: Topology, snaps: list[Snapshot], keys: Path | None) -> bool:
    """Whether probes may leave closer together than the time within which a gateway may hold
    a packet (tracer.analysis.correlate.ENCAP_WINDOW_NS): when no probe's ESP carrier has to be
    told from the next one's by time. So with no tunnel in the topology, or when the IKE daemon
    on every node that ends a tunnel reported an SA before the first probe (``snaps``: the
    evidence then; an SA the probes would bring up has no keys yet) and ``keys`` hold every SA
    reported. (Per node, not per tunnel: a node's counters do not say which tunnel an SA is
    of. A tunnel whose SA comes up with the probes then costs an inconclusive carrier, never
    a wrong hop: a carrier two probes claim is kept only where decryption proved it.)"""
    from tracer.run.record import tunnel_spis

    if not topo.tunnels:
        return True
    if keys is None:
        return False
    reporting = {s.node for s in snaps for c in s.counters if c.spi is not None}
    if any(end.node not in reporting for t in topo.tunnels for end in (t.left, t.right)):
        return False
    spis = tunnel_spis(topo, snaps)
    from tracer.esp import read_esp_sa_file

    try:
        have = {sa.spi for sa in read_esp_sa_file(keys)}
    except TracerError:  # changed since it was checked: decryption will say so; pace for no keys
        return False
    return spis <= have


# What a live trace needs only once it has recorded (numpy, the analysis, the renderer): imported
# in a thread while the sniffers stop, not before the first probe. A module that fails to import
# here fails again, with its traceback, where it is used.
AFTER_RECORDING = ("tracer.run.replay", "tracer.run.merged", "tracer.capture.pcapng_writer", "tracer.cli.render",
                   "tracer.cli.replay", "tracer.jsondoc")


def _import_analysis() -> None:
    for name in AFTER_RECORDING:
        try:
            importlib.import_module(name)
        except Exception:
            return


def _document(ptype: ProbeType, verdicts: list, code: int, trace: dict) -> str:
    """verdict.json in the run directory: the same document ``--json`` prints."""
    from tracer.jsondoc import document, dumps

    return dumps(document(ptype.name, [v.to_dict() for v in verdicts], code, trace=trace))
