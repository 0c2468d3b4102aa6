"""Ping probes: tagged ICMP echo requests; the echo reply carries the tag back."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from tracer.errors import BadInput
from tracer.model.tag import ProbeKind
from tracer.probes import ProbeType, register

if TYPE_CHECKING:
    from tracer.model.probe import Endpoints, ProbeReport, SentProbe


class Ping(ProbeType):
    code = ProbeKind.PING
    name = "ping"
    nouns = ("echo requests", "echo replies")
    fast_interval = 0.05  # echoes are found by their tag at every clear hop: only ESP needs spacing
    help = "traced ping: capture on every hop of the expected path and name where echoes die"
    description = (
        "Send tagged ICMP echo requests from SRC to DST while a sniffer runs on every "
        "capture point of the expected request and reply paths, then replay the captures and "
        "name the hop where probes disappeared. SRC and DST are node names or addresses of the "
        "topology; its nodes live in local network namespaces or are captured over SSH "
        "(docs/remote-capture.md). Needs root."
    )
    epilog = (
        "examples:\n"
        "  tracer lab up && tracer ping west east\n"
        "  tracer ping west-gw east --source lan0        # test the tunnel from the gateway's private side\n"
        "  tracer ping --topology my-testbed.toml h1 h2 --count 10 --json\n"
        "\nThe run directory (pcapng per capture point + manifest) is kept: replay it any time with\n"
        "  tracer replay RUN_DIR"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--size", "-s", type=int, default=56,
                            help="ICMP payload bytes (default 56, like ping; ≥16 for the tag)")
        parser.add_argument("--df", action="store_true", help="set Don't Fragment (for MTU questions)")

    def check(self, args: argparse.Namespace) -> None:
        if not 16 <= args.size <= 65507:
            raise BadInput(f"--size {args.size}: expected 16 to 65507 bytes")

    def send(self, ends: Endpoints, run: int, args: argparse.Namespace,
             on_probe: Callable[[SentProbe], None] | None = None) -> ProbeReport:
        return send_echoes(self, ends, run, args, [args.size] * args.count, args.df,
                           {"interval": args.interval, "size": args.size, "df": args.df}, on_probe=on_probe)


def send_echoes(kind: ProbeType, ends: Endpoints, run: int, args: argparse.Namespace, payloads: list[int],
                df: bool, options: dict[str, object], bypass_cache: bool = False,
                on_probe: Callable[[SentProbe], None] | None = None) -> ProbeReport:
    """Echo probes of the given payload sizes, seq 1, 2, … in order (shared by ping and mtu)."""
    from tracer.model.probe import ProbeReport, SentProbe
    from tracer.send.echo import send_probes
    from tracer.send.pacer import Interrupted

    try:
        sent = send_probes(ends.src_node.netns, ends.dst, run, len(payloads), args.interval, payloads[0],
                           args.timeout, source=ends.src, kind=kind.code, df=df, sizes=payloads,
                           bypass_cache=bypass_cache,
                           on_result=None if on_probe is None else lambda s: on_probe(SentProbe(**asdict(s))))
        interrupted = False
    except Interrupted as stop:  # Ctrl-C: report what left, no more
        sent, interrupted = stop.records, True
    return ProbeReport(kind.name, len(payloads), tuple(SentProbe(**asdict(s)) for s in sent), interrupted, options)


PING = register(Ping())
