"""MTU probes: tagged ICMP echoes with Don't Fragment set, in increasing sizes (guide 3.6)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tracer.errors import BadInput
from tracer.model.tag import ECHO_OVERHEAD, TAG_LEN, ProbeKind
from tracer.probes import ProbeType, register
from tracer.probes.ping import send_echoes

if TYPE_CHECKING:
    from tracer.model.probe import Endpoints, ProbeReport

# IP packet sizes: fine steps where tunnels and small links usually cut (1280 is
# IPv6's minimum MTU and a common WAN setting; ESP adds 50–80 bytes).
DEFAULT_SIZES = (576, 1000, 1100, 1150, 1200, 1250, 1280, 1300, 1350, 1400, 1450, 1500)


class Mtu(ProbeType):
    code = ProbeKind.MTU
    name = "mtu"
    nouns = ("large echo requests", "large echo replies")
    help = "large-packet test: find the size where DF probes start to vanish, and the hop"
    description = (
        "Send tagged ICMP echoes with Don't Fragment set, smallest first, while every "
        "capture point of the path records; report the largest size that got through, the smallest "
        "that did not and where it disappeared, the tunnel's ESP overhead, and any ICMP "
        "'fragmentation needed' seen (and who sent it). A size the sender's own kernel refuses "
        "(it already learnt a smaller path MTU) is reported as such. FreeS/WAN guide 3.6."
    )
    epilog = (
        "examples:\n"
        "  tracer mtu west east\n"
        "  tracer lab fault mtu-blackhole && tracer mtu west east --sizes 1100,1200,1250,1300\n"
    )
    default_count = 1
    default_interval = 0.1

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES,
                            help="comma-separated IP packet sizes in bytes (default: "
                            f"{','.join(map(str, DEFAULT_SIZES))}); --count probes of each size")

    def planned(self, args: argparse.Namespace) -> int:
        return len(args.sizes) * args.count

    def send(self, ends: Endpoints, run: int, args: argparse.Namespace) -> ProbeReport:
        payloads = [s - ECHO_OVERHEAD for s in args.sizes for _ in range(args.count)]
        return send_echoes(self, ends, run, args, payloads, True,
                           {"sizes": list(args.sizes), "per_size": args.count, "interval": args.interval})

    def spec_fields(self, report: ProbeReport) -> dict[str, object]:
        # The report holds echo payload bytes; the analysis speaks of IP packet sizes.
        return {"sizes": {s.seq: s.size + ECHO_OVERHEAD for s in report.sent if s.size is not None}}


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise BadInput(f"--sizes {text}: expected comma-separated integers like 1200,1300,1400") from None
    if not sizes or sizes[0] < ECHO_OVERHEAD + TAG_LEN or sizes[-1] > 65535:
        raise BadInput(f"--sizes {text}: sizes must be {ECHO_OVERHEAD + TAG_LEN} to 65535 bytes")
    return sizes


MTU = register(Mtu())
