"""``tracer replay``: verdicts from recorded captures, offline, no root needed."""

from __future__ import annotations

import argparse
import json
from ipaddress import IPv4Address
from pathlib import Path

from tracer.errors import EXIT_DELIVERED, BadInput


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
        "  tracer replay -t captures/plain/topology.toml captures/plain/gw-forward-drop/*.pcap   # plain ping, tcpdump\n"
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
    p.set_defaults(func=run)


def add_capture_inputs(p: argparse.ArgumentParser) -> None:
    """What to replay: shared by replay and plot, so both read captures the same way."""
    p.add_argument("inputs", nargs="+", type=Path, metavar="RUN_DIR|CAPTURE",
                   help="a run directory (with manifest.json) or pcap/pcapng files whose "
                   "interfaces are named node:iface")
    p.add_argument("--topology", "-t", type=Path, help="topology TOML (run directories carry their own)")
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
    from tracer.run.replay import check_endpoints, load_run, replay_run

    if args.esp_keys:  # a bad key file is refused before the captures are read, not after
        from tracer.esp import read_esp_sa_file

        read_esp_sa_file(args.esp_keys)
    loaded = load_run(args.inputs, args.topology)
    check_endpoints(loaded.topology, args.src, args.dst)
    verdicts = replay_run(loaded, args.run, args.src, args.dst, args.esp_keys, args.flow)
    emit(verdicts, args.json)
    if args.dissect and not args.json:
        from tracer.run.dissect import dissect_lost

        for v in verdicts:
            for block in dissect_lost(loaded.observations, v, args.esp_keys):
                print(f"\n{block}")
    return max((v.exit_code for v in verdicts), default=EXIT_DELIVERED)


def emit(verdicts: list, as_json: bool) -> None:
    from tracer.cli.render import render_text

    if as_json:
        docs = [v.to_dict() for v in verdicts]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        print("\n\n".join(render_text(v) for v in verdicts))
