"""``tracer replay``: verdicts from recorded captures, offline, no root needed."""

from __future__ import annotations

import argparse
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from tracer.errors import EXIT_DELIVERED, BadInput

if TYPE_CHECKING:
    from tracer.run.replay import LoadedRun


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="locate packet loss in recorded captures (run directory or pcap/pcapng files)",
        description="Replay captures through the analysis: for each tracer probe run found, "
        "compute the expected path from the topology, see which capture point saw each probe, "
        "and name the hop where they disappeared. Captures without tracer probes (tcpdump and a "
        "plain ping) work too: each untagged flow is followed by fields no router changes (ICMP echo "
        "identifier and sequence; IP ID, ports and first bytes) and gets a verdict of its own.",
        epilog="examples:\n"
        "  tracer replay captures/gw-forward-drop\n"
        "  tracer replay --topology lab.toml west.pcapng west-gw.pcapng east.pcapng\n"
        "  tracer replay captures/all-delivered --json | jq .status\n"
        "  tracer replay captures/esp-blocked --dissect    # Wireshark's view of the last packet seen\n"
        "  tracer replay captures/esp-blocked --write-pcapng /tmp/run.pcapng   # open it in Wireshark\n"
        "  tracer replay -t captures/plain/topology.toml captures/plain/gw-forward-drop   # tcpdump + plain ping\n"
        "  tracer replay -t lab.toml *.pcap --flow 'udp and host west and host east'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_capture_inputs(p)
    p.add_argument("--src", type=_addr, help="probe source address (default: from manifest or captures)")
    p.add_argument("--dst", type=_addr, help="probe destination address")
    p.add_argument("--json", action="store_true", help="machine-readable verdicts on stdout")
    p.add_argument("--dissect", action="store_true",
                   help="after the verdict, show Wireshark's full dissection (tshark, through pyshark) of each lost "
                   "group's packet at the last capture point that saw it; ESP decrypted with --esp-keys")
    p.add_argument("--write-pcapng", nargs="?", type=Path, const=True, default=None, metavar="FILE",
                   help="also write every capture point's packets, time-ordered and commented with the verdict, "
                   "into one pcapng for Wireshark (default FILE: RUN_DIR/run.pcapng)")
    p.set_defaults(func=run)


def add_capture_inputs(p: argparse.ArgumentParser) -> None:
    """What to replay: shared by replay and plot, so both read captures the same way."""
    p.add_argument("inputs", nargs="*", type=Path, metavar="RUN_DIR|CAPTURE",
                   help="a run directory (with manifest.json) or pcap/pcapng files; each file (each interface "
                   "of a multi-interface pcapng) is mapped to a capture point by --point, its pcapng interface "
                   "name, its file name (node_iface.pcap, node-iface, node__iface, node:iface) or the addresses "
                   "in it (docs/run-directory.md)")
    p.add_argument("--topology", "-t", type=Path, help="topology TOML (run directories carry their own)")
    p.add_argument("--point", action="append", default=[], metavar="NODE:IFACE=FILE",
                   help="this file is that capture point, whatever its name; the file need not be among the "
                   "inputs (repeatable)")
    p.add_argument("--points", type=Path, metavar="MAPFILE",
                   help='capture points of files, a TOML file of lines like "west-gw:lan0" = "gw-lan.pcap"')
    p.add_argument("--run", type=parse_run_id, help="only this run id (hex like 0x1a2b3c4d)")
    p.add_argument("--esp-keys", type=Path, metavar="FILE",
                   help="SAs in Wireshark's esp_sa format (docs/esp-keys.md): decrypt ESP and find the probe tags "
                   "inside; without it, ESP is tied to probes by (SPI, seq)")
    p.add_argument("--flow", metavar="FILTER",
                   help="trace untagged traffic this filter selects, one verdict per flow: icmp, udp, tcp, esp, "
                   "host NODE|ADDR, port N, and, or, not, ( ) — e.g. 'udp and host west and port 53'. Without tracer "
                   "probes in the captures, every ICMP echo flow between two nodes is traced by default")


def _addr(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise BadInput(f"'{text}' is not an IPv4 address") from None


def parse_run_id(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise BadInput(f"run id '{text}' is not a number (like 0x1a2b3c4d)") from None


def run(args: argparse.Namespace) -> int:
    from tracer.cli.progress import Progress
    from tracer.run.replay import check_endpoints, load_run, replay_run

    merged = _merged_path(args)
    if args.esp_keys:  # a bad key file is refused before the captures are read, not after
        from tracer.esp import read_esp_sa_file

        read_esp_sa_file(args.esp_keys)
    progress = Progress()  # on a terminal, for replays that take more than a second
    try:
        progress.stage("reading the captures")
        loaded = load_run(args.inputs, args.topology, explicit_points(args),
                          verdicts_only=args.flow is None and merged is None, run=args.run)
        check_endpoints(loaded.topology, args.src, args.dst)
        if merged is not None:
            _refuse_overwrite(merged, loaded, args)
        progress.stage("analysing")
        verdicts = replay_run(loaded, args.run, args.src, args.dst, args.esp_keys, args.flow)
    finally:
        progress.close()
    mapping = loaded.mapping if loaded.mapping_shown else []
    # Which file became which capture point: one list for the whole replay, beside the runs.
    emit(verdicts, args.json, **({"capture_map": [m.to_dict() for m in mapping]} if mapping else {}))
    if mapping and not args.json:
        print(f"\n{render_mapping(mapping)}")
    if merged is not None:
        _write_merged(merged, loaded, verdicts)
    if args.dissect and not args.json:
        from tracer.run.dissect import dissect_lost

        for v in verdicts:
            for block in dissect_lost(loaded.observations, v, args.esp_keys, loaded.kept_at):
                print(f"\n{block}")
    return max((v.exit_code for v in verdicts), default=EXIT_DELIVERED)


def _merged_path(args: argparse.Namespace) -> Path | None:
    """Where --write-pcapng writes: its FILE, else run.pcapng inside the run directory replayed."""
    if args.write_pcapng is None:
        return None
    if args.write_pcapng is not True:
        path = args.write_pcapng
    elif len(args.inputs) == 1 and args.inputs[0].is_dir():
        from tracer.run.manifest import RUN_PCAPNG

        path = args.inputs[0] / RUN_PCAPNG
    else:
        raise BadInput("--write-pcapng: name the FILE to write when replaying capture files, not a run directory")
    if path.parent and not path.parent.is_dir():
        raise BadInput(f"--write-pcapng {path}: no such directory {path.parent}")
    return path


def _refuse_overwrite(path: Path, loaded: LoadedRun, args: argparse.Namespace) -> None:
    """--write-pcapng may replace a run directory's own run.pcapng, never a file that was read
    (captures, manifest, topology, report, points file) nor any other file of the run directory."""
    from tracer.run.manifest import RUN_PCAPNG

    target = path.resolve()
    read = {Path(m.file).resolve() for m in loaded.mapping} | {Path(loaded.topology.source).resolve()}
    read |= {p.resolve() for p in args.inputs} | ({args.points.resolve()} if args.points else set())
    run_dir = args.inputs[0].resolve() if len(args.inputs) == 1 and args.inputs[0].is_dir() else None
    if target in read or (run_dir is not None and target.parent == run_dir and target.name != RUN_PCAPNG):
        raise BadInput(f"--write-pcapng {path}: would overwrite "
                       f"{'an input' if target in read else 'a file of the run directory'}")


def _write_merged(path: Path, loaded: LoadedRun, verdicts: list) -> None:
    """Write --write-pcapng's file. A failed write is a warning: the verdict stands, with its exit code."""
    from tracer.errors import CaptureError
    from tracer.run.merged import write_run_pcapng

    try:
        n = write_run_pcapng(path, loaded.observations, verdicts, loaded.drops)
    except (OSError, CaptureError) as e:
        print(f"tracer: warning: --write-pcapng {path}: not written: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        return
    print(f"wrote {path} ({n} packets)", file=sys.stderr)
    from tracer.columns import is_columns, kept_note

    for m in loaded.mapping:  # extracted on their hosts: no packet bytes here to write
        if m.point is not None and is_columns(m.file):
            print(f"tracer: note: {m.point}: its packets are not in {path.name}: "
                  f"{kept_note(loaded.kept_at.get(m.file))}", file=sys.stderr)


def explicit_points(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(point, file) pairs from --points MAPFILE then --point (one file mapped to two points is refused)."""
    from tracer.run.capturemap import parse_point_option, read_points_file

    pairs = read_points_file(args.points) if args.points else []
    return pairs + [parse_point_option(t) for t in args.point]


def render_mapping(mapping: list) -> str:
    """Which file became which capture point, and by which rule; unused captures with the reason."""
    width = max(len(m.label) for m in mapping)
    pw = max(len(m.point or "") for m in mapping)
    lines = ["captures → capture points"]
    for m in mapping:
        if m.point is None:
            lines.append(f"  {m.label:<{width}}  unused: {m.why}")
        else:
            lines.append(f"  {m.label:<{width}}  → {m.point:<{pw}}  ({m.how}{': ' + m.why if m.why else ''})")
    return "\n".join(lines)


def emit(verdicts: list, as_json: bool, command: str = "replay", code: int | None = None, **objects: object) -> None:
    """The verdicts on stdout: text, or one JSON document (docs/json.md) with ``objects`` beside
    the runs (text: the caller prints them)."""
    if as_json:
        from tracer.jsondoc import document, write

        if code is None:
            code = max((v.exit_code for v in verdicts), default=EXIT_DELIVERED)
        write(document(command, [v.to_dict() for v in verdicts], code, **objects), sys.stdout)
    else:
        from tracer.cli.render import render_text
        from tracer.cli.style import Style

        style = Style.for_stream(sys.stdout)
        print("\n\n".join(style.verdict(render_text(v), v.status) for v in verdicts))
