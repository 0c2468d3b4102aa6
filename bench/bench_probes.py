"""Benchmark: probe-heavy analysis — N tagged pings over the ten capture points of the test
topology, every probe seen where it belongs (cleartext at the hosts and tunnel devices, ESP in
UDP on the wire), analysed in-process: analyze, text rendering and the ``--json`` document
(``Verdict.to_dict`` and ``tracer.jsondoc.dumps``, what ``tracer replay --json`` prints), timed apart.

    python3 bench/bench_probes.py                      # 100, 10,000 and 100,000 probes
    python3 bench/bench_probes.py --probes 100000 --repeat 3      # best of three runs of each step
    python3 bench/bench_probes.py --probes 100000 --profile

The observations are built directly as columns (what extraction would give for such captures;
no files), with the probes 100 µs apart and 10 µs per hop, ESP sequence numbers in step with
the probes, so the keyless ESP association has one candidate each. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracer.analysis.analyze import analyze  # noqa: E402
from tracer.cli.render import render_text  # noqa: E402
from tracer.jsondoc import document, dumps  # noqa: E402
from tracer.model.observations import Observations, PacketClass  # noqa: E402
from tracer.model.probe import ProbeSpec  # noqa: E402
from tracer.model.tag import ProbeKind  # noqa: E402
from tracer.model.topology import Topology  # noqa: E402
from tracer.model.verdict import Verdict  # noqa: E402
from tracer.topofile import load_topology  # noqa: E402

T = TypeVar("T")
RUN = 0x5EED0B0B
TOPOLOGY = ROOT / "tests" / "data" / "site2site.toml"
REQUEST = ["west:eth0", "west-gw:lan0", "west-gw:ipsec0", "west-gw:wan0", "router:eth0", "router:eth1",
           "east-gw:wan0", "east-gw:ipsec0", "east-gw:lan0", "east:eth0"]
ESP_POINTS = {"west-gw:wan0", "router:eth0", "router:eth1", "east-gw:wan0"}
WEST, EAST, WEST_GW, EAST_GW = (int(IPv4Address(a)) for a in ("192.0.2.10", "198.51.100.10", "198.18.1.1", "198.18.2.1"))


def observations(n: int) -> Observations:
    """Rows of n probes and their replies at every point of both paths."""
    points = REQUEST
    parts: list[dict[str, np.ndarray]] = []
    seq = np.arange(n, dtype=np.int64)
    t0 = 1_700_000_000_000_000_000 + seq * 100_000
    for direction, order, (src, dst), (osrc, odst), spi, cls, icmp_type in (
        ("request", REQUEST, (WEST, EAST), (WEST_GW, EAST_GW), 0xC0000001, PacketClass.ECHO_REQUEST, 8),
        ("reply", REQUEST[::-1], (EAST, WEST), (EAST_GW, WEST_GW), 0xC0000002, PacketClass.ECHO_REPLY, 0),
    ):
        start = t0 + (0 if direction == "request" else 50_000)
        for h, point in enumerate(order):
            c = Observations.empty(n).cols
            c["ts_ns"][:] = start + h * 10_000
            c["point"][:] = points.index(point)
            c["ipver"][:] = 4
            if point in ESP_POINTS:
                c["src"][:], c["dst"][:], c["proto"][:] = osrc, odst, 17
                c["sport"][:] = c["dport"][:] = 4500
                c["cls"][:], c["spi"][:], c["esp_seq"][:], c["udp_encap"][:] = PacketClass.ESP, spi, seq + 1, True
            else:
                c["src"][:], c["dst"][:], c["proto"][:], c["cls"][:] = src, dst, 1, cls
                c["icmp_type"][:], c["icmp_id"][:], c["icmp_seq"][:] = icmp_type, 0x4242, (seq + 1) & 0xFFFF
                c["tag_kind"][:], c["tag_run"][:], c["tag_seq"][:] = ProbeKind.PING, RUN, seq
            c["ttl"][:] = 64
            parts.append(c)
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cols["point"], kind="stable")  # one run of rows per point, like one file each
    return Observations({k: v[order] for k, v in cols.items()}, list(points), ["bench"])


def measure(topo: Topology, n: int, repeat: int = 1) -> dict:
    """n probes analysed in-process: seconds for analyze, the text verdict and the ``--json`` document
    (each the best of ``repeat`` runs), and their sizes."""
    obs = observations(n)
    spec = ProbeSpec(RUN, ProbeKind.PING, count=n)
    t_an, v = best(repeat, analyze, topo, obs, spec)
    t_txt, text = best(repeat, render_text, v)
    t_js, js = best(repeat, json_document, v)
    return {"probes": n, "rows": len(obs), "analyze_s": t_an, "text_s": t_txt, "text_lines": len(text.splitlines()),
            "json_s": t_js, "json_mb": len(js.encode()) / 1e6, "summary": v.summary}


def json_document(v: Verdict) -> str:
    """What ``tracer replay --json`` prints for the verdict."""
    return dumps(document("replay", [v.to_dict()], v.exit_code))


def best(repeat: int, step: Callable[..., T], *args: Any) -> tuple[float, T]:
    """The shortest of ``repeat`` timed calls of ``step(*args)``, and what it returned."""
    times = []
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        out = step(*args)
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", default="100,10000,100000", help="comma-separated probe counts")
    ap.add_argument("--repeat", type=int, default=1, help="time each step this many times and print the best (default 1)")
    ap.add_argument("--profile", action="store_true", help="print the top functions of the last analyze")
    args = ap.parse_args(argv)
    topo = load_topology(TOPOLOGY)
    for n in (int(x) for x in args.probes.split(",")):
        r = measure(topo, n, args.repeat)
        print(f"{n:>7,} probes, {r['rows']:>9,} rows: analyze {r['analyze_s'] * 1e3:7.0f} ms  "
              f"text {r['text_s'] * 1e3:5.0f} ms ({r['text_lines']} lines)  "
              f"json {r['json_s'] * 1e3:5.0f} ms ({r['json_mb']:.1f} MB)  [{r['summary']}]", flush=True)
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(analyze, topo, observations(n), ProbeSpec(RUN, ProbeKind.PING, count=n))
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
