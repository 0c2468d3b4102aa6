"""``tracer ping``: a traced ping — sniff every hop, send tagged echoes, locate loss."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tracer.errors import BadInput


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ping",
        help="traced ping: capture on every hop of the expected path and name where echoes die",
        description="Send tagged ICMP echo requests from SRC to DST while a sniffer runs on every "
        "capture point of the expected request and reply paths, then replay the captures and "
        "name the hop where probes disappeared. SRC and DST are node names or addresses of the "
        "topology; its nodes live in local network namespaces or are captured over SSH "
        "(docs/remote-capture.md). Needs root.",
        epilog="examples:\n"
        "  tracer lab up && tracer ping west east\n"
        "  tracer ping west-gw east --source lan0        # test the tunnel from the gateway's private side\n"
        "  tracer ping --topology my-testbed.toml h1 h2 --count 10 --json\n"
        "\nThe run directory (pcapng per capture point + manifest) is kept: replay it any time with\n"
        "  tracer replay RUN_DIR",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("--size", type=int, default=56, help="ICMP payload bytes (default 56, like ping; ≥16 for the tag)")
    p.add_argument("--df", action="store_true", help="set Don't Fragment (for MTU questions)")
    p.set_defaults(func=run)


def add_common(p: argparse.ArgumentParser, count: int = 3, interval: float = 0.2) -> None:
    p.add_argument("src", metavar="SRC", help="source node name or address")
    p.add_argument("dst", metavar="DST", help="destination node name or address")
    p.add_argument("--topology", "-t", type=Path,
                   help="topology TOML (default: the built-in lab's, written by 'tracer lab up')")
    p.add_argument("--count", "-c", type=int, default=count, help=f"probes to send (default {count})")
    p.add_argument("--interval", "-i", type=float, default=interval, help=f"seconds between probes (default {interval})")
    p.add_argument("--timeout", "-W", type=float, default=1.0,
                   help="seconds to wait for replies after the last probe (default 1)")
    p.add_argument("--source", "-I", help="source address or interface on SRC, like ping -I")
    p.add_argument("--out", "-o", type=Path, help="run directory to write (default runs/<time>-<kind>-<run>)")
    p.add_argument("--json", action="store_true", help="machine-readable verdict on stdout")
    p.add_argument("--snaplen", type=int, default=2048, metavar="BYTES",
                   help="bytes kept per packet (default 2048: a 1500-byte MTU plus headers, so ESP can be decrypted; "
                   "raise it for jumbo frames; 128 keeps every header and tag the analysis reads)")
    p.add_argument("--plot", type=Path, metavar="FILE", help="also draw the verdict to FILE.png/.svg")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--esp-keys", type=Path, metavar="FILE",
                      help="SAs (Wireshark esp_sa format) to decrypt ESP and confirm the probe tags inside "
                      "(default: the topology's esp_keys file, which the built-in lab keeps current)")
    keys.add_argument("--no-decrypt", action="store_true", help="tie ESP to probes by (SPI, seq) only, even with keys")


def topology_path(args: argparse.Namespace) -> Path:
    from tracer.lab import Lab

    path = args.topology or Lab().topology_path
    if not path.exists():
        if args.topology is None:
            raise BadInput("no topology given and the built-in lab is not up: run 'tracer lab up' or pass --topology")
        raise BadInput(f"{path}: topology file not found")
    return path


def esp_keys_for(args: argparse.Namespace, topo, tpath: Path) -> Path | None:
    """The SA file to decrypt with: --esp-keys, else the topology's (if it exists yet)."""
    if args.no_decrypt:
        return None
    if args.esp_keys:
        if not args.esp_keys.is_file():
            raise BadInput(f"--esp-keys {args.esp_keys}: no such file")
        return args.esp_keys
    if topo.esp_keys:
        path = tpath.parent / topo.esp_keys
        return path if path.is_file() else None
    return None


def check_counts(args: argparse.Namespace) -> None:
    if not 96 <= args.snaplen <= 262144:
        raise BadInput(f"--snaplen {args.snaplen}: expected 96 to 262144 bytes (headers and tags need 96)")
    if not 1 <= args.count <= 100000:
        raise BadInput(f"--count {args.count}: expected 1 to 100000")
    if not 0.001 <= args.interval <= 60:
        raise BadInput(f"--interval {args.interval}: expected 0.001 to 60 seconds")
    if not 0.05 <= args.timeout <= 60:
        raise BadInput(f"--timeout {args.timeout}: expected 0.05 to 60 seconds")


def run(args: argparse.Namespace) -> int:
    from tracer.model.tag import ProbeKind

    check_counts(args)
    if not 16 <= args.size <= 65507:
        raise BadInput(f"--size {args.size}: expected 16 to 65507 bytes")
    return trace_and_report(args, ProbeKind.PING, lambda ends, run: _send_echo(ends, run, args, args.size, args.df))


def _send_echo(ends, run: int, args: argparse.Namespace, size: int, df: bool) -> dict:
    from tracer.probe.ping import send_probes

    sent = send_probes(ends.src_node.netns, ends.dst, run, args.count, args.interval, size,
                       args.timeout, source=ends.src, df=df)
    return {"kind": "ping", "count": args.count, "interval": args.interval, "size": size, "df": df,
            "sent": [asdict(s) for s in sent]}


def trace_and_report(args: argparse.Namespace, kind, sender, total: int | None = None, prepare=None) -> int:
    """Shared by ping, mtu and ike: record a run directory, replay it, print the verdict.
    ``sender(ends, run)`` sends the probes and returns the manifest's ``probe`` block;
    ``prepare(topo, args)`` may rewrite the endpoints from the topology first."""
    from tracer.cli.replay import emit
    from tracer.live import analyse, new_run_dir, record, resolve_endpoints
    from tracer.netns import ensure_root
    from tracer.probe.ping import random_run_id
    from tracer.topofile import load_topology

    if args.plot:
        from tracer.plot.figure import check_output

        check_output(args.plot)  # a bad name fails now, not after the capture
    tpath = topology_path(args)
    topo = load_topology(tpath)
    if prepare is not None:
        prepare(topo, args)
    ends = resolve_endpoints(topo, args.src, args.dst, args.source)
    ensure_root()  # before anything is created: a non-root run leaves nothing behind
    run_id = random_run_id()
    run_dir = new_run_dir(args.out, kind, run_id)
    record(topo, tpath, ends, kind, run_id, run_dir, lambda: sender(ends, run_id), total or args.count, args.snaplen)
    verdicts = analyse(run_dir, esp_keys_for(args, topo, tpath))
    (run_dir / "verdict.json").write_text(json.dumps([v.to_dict() for v in verdicts], indent=2) + "\n")
    emit(verdicts, args.json)
    if not args.json:
        print(f"\nrun directory: {run_dir}  (tracer replay {run_dir})")
    if args.plot:
        from tracer.cli.plot import plot_verdict_to

        plot_verdict_to(args.plot, verdicts[0])
    return max(v.exit_code for v in verdicts)
