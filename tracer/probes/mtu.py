"""MTU probes: tagged ICMP echoes with Don't Fragment set (guide 3.6). By default a
tracepath-like search for the exact path MTU (tracer.send.mtu); with ``--sizes``, a fixed
ladder of sizes."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tracer.errors import BadInput
from tracer.model.tag import ECHO_OVERHEAD, TAG_LEN, ProbeKind
from tracer.probes import ProbeType, register
from tracer.probes.ping import send_echoes

if TYPE_CHECKING:
    from tracer.model.probe import Endpoints, ProbeReport, SentProbe

# An example ladder for --sizes: steps where tunnels and small links usually cut (1280 is
# IPv6's minimum MTU and a common WAN setting; ESP adds 50–80 bytes).
LADDER = (576, 1200, 1280, 1400, 1500)


class Mtu(ProbeType):
    code = ProbeKind.MTU
    name = "mtu"
    nouns = ("large echo requests", "large echo replies")
    help = "path MTU to the byte: which hop limits it, who sent 'fragmentation needed', the ESP overhead"
    description = (
        "Find the exact path MTU with tagged ICMP echoes with Don't Fragment set, one at a time, "
        "while every capture point of the path records: each size is chosen from what the last "
        "met (halve the gap; jump to the next-hop MTU a 'fragmentation needed' quoting that very "
        "probe announced; confirm the size above the answer), so a 1500-byte path takes a handful "
        "of probes. Probes bypass the kernel's path-MTU cache (IP_PMTUDISC_PROBE; the source "
        "namespace's cache is flushed too). Reports the path MTU, the hop that limits it and how "
        "(ICMP from whom, or a PMTUD blackhole), and the tunnel's overhead (ESP-in-UDP or raw ESP, "
        "with its padding block). Exit 0 when the path MTU is found and larger probes are refused "
        "with 'fragmentation needed'; 1 when they vanish silently (blackhole) or probes are lost; "
        "3 when some vanish silently where the same limit's 'fragmentation needed' about another "
        "probe did reach the source (rate-limited ICMP, or a second limit: the packets can't tell). "
        "--sizes sends a fixed ladder instead. FreeS/WAN guide 3.6."
    )
    epilog = (
        "examples:\n"
        "  tracer mtu west east\n"
        "  tracer lab fault mtu-blackhole && tracer mtu west east\n"
        "  tracer mtu west east --sizes 1200,1300,1400   # a fixed ladder, --count probes of each\n"
    )
    default_count = 1
    default_interval = 0.1

    def check(self, args: argparse.Namespace) -> None:
        if args.sizes is None and args.count != 1:
            raise BadInput("--count applies to --sizes (probes of each size); the search picks its own sizes")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sizes", type=parse_sizes, default=None,
                            help="instead of searching, send these comma-separated IP packet sizes in bytes "
                            f"(e.g. {','.join(map(str, LADDER))}); --count probes of each size")

    def planned(self, args: argparse.Namespace) -> int:
        if args.sizes:
            return len(args.sizes) * args.count
        from tracer.send.mtu import MAX_PROBES

        return MAX_PROBES  # the search's bound; its report says how many it sent

    def send(self, ends: Endpoints, run: int, args: argparse.Namespace,
             on_probe: Callable[[SentProbe], None] | None = None) -> ProbeReport:
        if args.sizes:
            payloads = [s - ECHO_OVERHEAD for s in args.sizes for _ in range(args.count)]
            return send_echoes(self, ends, run, args, payloads, True,
                               {"sizes": list(args.sizes), "per_size": args.count, "interval": args.interval},
                               bypass_cache=True, on_probe=on_probe)
        return _search(self, ends, run, args, on_probe)

    def spec_fields(self, report: ProbeReport) -> dict[str, object]:
        # The report holds echo payload bytes; the analysis speaks of IP packet sizes. A search
        # sends as many probes as it needs: the report's count is the run's.
        fields: dict[str, object] = {"sizes": {s.seq: s.size + ECHO_OVERHEAD for s in report.sent if s.size is not None}}
        if report.options.get("mode") == "search":
            fields["count"] = len(report.sent)
            fields["interface_mtu"] = report.options.get("interface_mtu")
        return fields


def _search(kind: ProbeType, ends: Endpoints, run: int, args: argparse.Namespace,
            on_probe: Callable[[SentProbe], None] | None = None) -> ProbeReport:
    from tracer.model.probe import ProbeReport, SentProbe
    from tracer.send.mtu import Attempt, search_path_mtu
    from tracer.send.pacer import Interrupted

    def sent_probe(a: Attempt) -> SentProbe:
        return SentProbe(a.seq, a.sent_ns, a.size - ECHO_OVERHEAD, a.rtt_ms, a.error,
                         _answer(a.icmp, a.icmp_from, a.next_hop_mtu), {"next_hop_mtu": a.next_hop_mtu})

    t0 = time.monotonic()
    try:
        attempts, iface_mtu = search_path_mtu(ends.src_node.netns, ends.dst, run, args.timeout, ends.src, kind.code,
                                              on_result=None if on_probe is None else lambda a: on_probe(sent_probe(a)))
        interrupted = False
    except Interrupted as stop:  # Ctrl-C: report what left, no more
        (attempts, iface_mtu), interrupted = (stop.records, None), True
    sent = tuple(sent_probe(a) for a in attempts)
    return ProbeReport(kind.name, len(sent), sent, interrupted, options={
        "mode": "search", "interface_mtu": iface_mtu, "timeout": args.timeout,
        "search_s": round(time.monotonic() - t0, 3)})


def _answer(icmp: str | None, sender: str | None, mtu: int | None) -> str | None:
    if icmp is None:
        return None
    return f"ICMP {icmp} from {sender}" + (f", next-hop MTU {mtu}" if mtu else "")


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise BadInput(f"--sizes {text}: expected comma-separated integers like 1200,1300,1400") from None
    if not sizes or sizes[0] < ECHO_OVERHEAD + TAG_LEN or sizes[-1] > 65535:
        raise BadInput(f"--sizes {text}: sizes must be {ECHO_OVERHEAD + TAG_LEN} to 65535 bytes")
    return sizes


MTU = register(Mtu())
