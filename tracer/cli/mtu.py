"""``tracer mtu``: large-packet test — DF probes of increasing size, traced hop by hop."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from tracer.cli.ping import add_common, check_counts, trace_and_report
from tracer.errors import BadInput
from tracer.model.tag import ECHO_OVERHEAD, TAG_LEN

# IP packet sizes: fine steps where tunnels and small links usually cut (1280 is
# IPv6's minimum MTU and a common WAN setting; ESP adds 50–80 bytes).
DEFAULT_SIZES = (576, 1000, 1100, 1150, 1200, 1250, 1280, 1300, 1350, 1400, 1450, 1500)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mtu",
        help="large-packet test: find the size where DF probes start to vanish, and the hop",
        description="Send tagged ICMP echoes with Don't Fragment set, smallest first, while every "
        "capture point of the path records; report the largest size that got through, the smallest "
        "that did not and where it disappeared, the tunnel's ESP overhead, and any ICMP "
        "'fragmentation needed' seen (and who sent it). A size the sender's own kernel refuses "
        "(it already learnt a smaller path MTU) is reported as such. FreeS/WAN guide 3.6.",
        epilog="examples:\n"
        "  tracer mtu west east\n"
        "  tracer lab fault mtu-blackhole && tracer mtu west east --sizes 1100,1200,1250,1300\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p, count=1, interval=0.1)
    p.add_argument("--sizes", type=_sizes, default=DEFAULT_SIZES,
                   help="comma-separated IP packet sizes in bytes (default: "
                   f"{','.join(map(str, DEFAULT_SIZES))}); --count probes of each size")
    p.set_defaults(func=run)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise BadInput(f"--sizes {text}: expected comma-separated integers like 1200,1300,1400") from None
    if not sizes or sizes[0] < ECHO_OVERHEAD + TAG_LEN or sizes[-1] > 65535:
        raise BadInput(f"--sizes {text}: sizes must be {ECHO_OVERHEAD + TAG_LEN} to 65535 bytes")
    return sizes


def run(args: argparse.Namespace) -> int:
    from tracer.model.tag import ProbeKind

    check_counts(args)
    payloads = [s - ECHO_OVERHEAD for s in args.sizes for _ in range(args.count)]
    return trace_and_report(args, ProbeKind.MTU, lambda ends, run: _send(ends, run, args, payloads),
                            total=len(payloads))


def _send(ends, run: int, args: argparse.Namespace, payloads: list[int]) -> dict:
    from tracer.model.tag import ProbeKind
    from tracer.probe.ping import send_probes

    sent = send_probes(ends.src_node.netns, ends.dst, run, len(payloads), args.interval, payloads[0],
                       args.timeout, source=ends.src, kind=ProbeKind.MTU, df=True, sizes=payloads)
    return {"kind": "mtu", "sizes": list(args.sizes), "per_size": args.count, "interval": args.interval,
            "sent": [asdict(s) for s in sent]}
