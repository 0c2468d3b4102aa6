"""``tracer extract``: a capture's observation columns on stdout (tracer.columns).

Run by a trace on an SSH host that has tracer (tracer.sniff.ssh), not listed in ``--help``:
the host sends back a few bytes per packet instead of its capture, which stays there.
``--check`` says which column format this tracer writes, and nothing else is imported for
it: a trace asks every host once as it starts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tracer.columns import FORMAT
from tracer.errors import EXIT_DELIVERED, BadInput, EnvironmentProblem


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(  # no help=: not listed, it is tracer talking to itself
        "extract",
        description="Read a capture and write its observation columns (tracer's compact column file) to "
        "stdout; a live trace runs this on SSH hosts that have tracer.",
        epilog="examples:\n"
        "  tracer extract --check                         # the column format this tracer writes\n"
        "  tracer extract r01_eth0.pcap --point r01:eth0 > r01_eth0.cols",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("capture", type=Path, nargs="?", help="pcap or pcapng file")
    p.add_argument("--point", help="capture point name (node:iface) of every packet in it")
    p.add_argument("--kept-at", help="where the capture is kept (host:path), recorded in the columns")
    p.add_argument("--check", action="store_true", help="print the column format and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.check:
        import importlib.util

        # Found, not imported (a host is asked as every trace starts): extraction would need it.
        if importlib.util.find_spec("numpy") is None:
            raise EnvironmentProblem("extract: numpy is not installed for this python")
        print(FORMAT)
        return EXIT_DELIVERED
    if args.capture is None or not args.point:
        raise BadInput("extract: give a capture file and --point NODE:IFACE (or --check)")
    from tracer.capture.observe import observe_file
    from tracer.columns import write_columns

    seen = observe_file(args.capture, args.point)
    write_columns(sys.stdout.buffer, seen.obs.cols, args.point, args.kept_at, seen.warnings,
                  seen.damaged.get(args.point))
    sys.stdout.buffer.flush()
    return EXIT_DELIVERED
