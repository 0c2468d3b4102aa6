"""Benchmark data: a run directory with many capture points — a chain of routers between two
hosts, a tagged ping crossing all of them, one pcapng per point.

    python3 bench/bench_points.py OUT --points 200 --probes 1000 --packets 1000000

``--points K`` (even, at least 4) is ``west:eth0``, then ``eth0`` and ``eth1`` of each of
(K - 2) / 2 routers ``r001``, ``r002``, …, then ``east:eth0``: west is on 192.0.2.0/24, east on
198.51.100.0/24, the routers' links on 198.18.0.0/15. Every probe (seq 1..N, like a live ping)
and its reply are seen at every point, 20 µs a hop, with the TTL one lower past each router
(sent with 255 where 64 would not cross the chain, as `ping -t 255` would); ``--packets``
background packets (bench_replay's, between other hosts and gateways) are spread over the
points. The directory has what `tracer ping` writes: the topology, ``manifest.json`` and
``probes.json``, so `tracer replay OUT` says *delivered*. run.py times replays of it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from ipaddress import IPv4Address
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_extract import _csum, _put16  # noqa: E402
from bench_replay import add_background  # noqa: E402

from tracer.capture.pcapng_writer import write_pcapng  # noqa: E402
from tracer.model.probe import ProbeReport, SentProbe  # noqa: E402
from tracer.model.tag import ProbeKind, ProbeTag  # noqa: E402
from tracer.run.manifest import CaptureEntry, Manifest, write_manifest, write_probe_report  # noqa: E402
from tracer.send.echo import echo_request  # noqa: E402

RUN = 0x0B0B0200  # not bench_extract's run: the background's tagged echoes stay another run's
WEST, EAST = "192.0.2.10", "198.51.100.10"
T0_NS = 1_700_000_000_000_000_000
HOP_NS = 20_000
INTERVAL_NS = 1_000_000
SIZE = 56
ETH = bytes.fromhex("020000000002" "020000000001" "0800")


def routers(points: int) -> list[str]:
    if points < 4 or points % 2:
        raise ValueError(f"--points {points}: an even number, at least 4 (two hosts and a router's two ends)")
    return [f"r{i:03d}" for i in range(1, (points - 2) // 2 + 1)]


def chain_points(points: int) -> list[str]:
    """The capture points from west to east."""
    return ["west:eth0", *(f"{r}:{i}" for r in routers(points) for i in ("eth0", "eth1")), "east:eth0"]


def _link(j: int, m: int) -> tuple[str, str, str]:
    """Link j of the chain (0: west's, m: east's): its /24 prefix, its west end's and east end's addresses."""
    if j == 0:
        return "192.0.2.0/24", WEST, "192.0.2.1"
    if j == m:
        return "198.51.100.0/24", "198.51.100.1", EAST
    net = IPv4Address("198.18.0.0") + 256 * j
    return f"{net}/24", str(net + 1), str(net + 2)


def chain_topology(points: int) -> str:
    """The topology file (TOML) of the chain, with the routes every router needs both ways."""
    rs = routers(points)
    m = len(rs)
    out = [f'name = "bench-chain-{points}"', "",
           '[nodes.west]\nrole = "host"\n'
           f'interfaces.eth0 = {{ addresses = ["{WEST}/24"], role = "lan" }}\n'
           'routes = [{ dst = "0.0.0.0/0", via = "192.0.2.1", dev = "eth0" }]\n',
           '[nodes.east]\nrole = "host"\n'
           f'interfaces.eth0 = {{ addresses = ["{EAST}/24"], role = "lan" }}\n'
           'routes = [{ dst = "0.0.0.0/0", via = "198.51.100.1", dev = "eth0" }]\n']
    for i, r in enumerate(rs, 1):
        left, right = _link(i - 1, m), _link(i, m)
        routes = []
        if i > 1:
            routes.append(f'{{ dst = "192.0.2.0/24", via = "{left[1]}", dev = "eth0" }}')
        if i < m:
            routes.append(f'{{ dst = "198.51.100.0/24", via = "{right[2]}", dev = "eth1" }}')
        out.append(f'[nodes.{r}]\nrole = "router"\n'
                   f'interfaces.eth0 = {{ addresses = ["{left[2]}/24"], role = "wan" }}\n'
                   f'interfaces.eth1 = {{ addresses = ["{right[1]}/24"], role = "wan" }}\n'
                   f'routes = [{", ".join(routes)}]\n')
    ends = ["west:eth0", *(f"{r}:{i}" for r in rs for i in ("eth0", "eth1")), "east:eth0"]
    out += [f'[[links]]\nends = ["{ends[k]}", "{ends[k + 1]}"]\n' for k in range(0, len(ends), 2)]
    return "\n".join(out)


def _echoes(count: int, src: str, dst: str, icmp_type: int) -> np.ndarray:
    """Ethernet frames of the probes seq 1..count (or their replies), one a row, TTL and IP checksum unset."""
    ip = np.frombuffer(bytes([0x45, 0, 0, 20 + 8 + SIZE, 0, 0, 0, 0, 0, 1, 0, 0])
                       + IPv4Address(src).packed + IPv4Address(dst).packed, np.uint8)
    rows = np.empty((count, 14 + 20 + 8 + SIZE), np.uint8)
    rows[:, :14] = np.frombuffer(ETH, np.uint8)
    rows[:, 14:34] = ip
    icmp = [echo_request(ProbeTag(RUN, ProbeKind.PING, seq), SIZE) for seq in range(1, count + 1)]
    rows[:, 34:] = np.frombuffer(b"".join(icmp), np.uint8).reshape(count, -1)
    if icmp_type != 8:  # a reply: type 0, checksum 8 · 256 less (RFC 1624), all else echoed
        rows[:, 34] = icmp_type
        csum = rows[:, 36].astype(np.int64) << 8 | rows[:, 37]
        csum = csum + (8 << 8)
        _put16(rows, 36, (csum & 0xFFFF) + (csum >> 16))
    _put16(rows, 18, np.arange(count, dtype=np.int64) * 7919 & 0xFFFF)  # IP id
    return rows


def _at(frames: np.ndarray, ttl: int) -> np.ndarray:
    """The frames with this TTL and their IP checksum."""
    out = frames.copy()
    out[:, 22] = ttl
    _put16(out, 24, np.zeros(len(out), np.int64))
    _put16(out, 24, _csum(out, 14, 34).astype(np.int64))
    return out


def generate_points_run(out: Path, points: int, probes: int = 1000, packets: int = 0, seed: int = 1) -> None:
    """Write the run directory of the chain with ``points`` capture points into ``out`` (created)."""
    names = chain_points(points)
    m = len(routers(points))
    ttl0 = 64 if m < 60 else 255
    out.mkdir(parents=True)
    (out / "topology.toml").write_text(chain_topology(points))
    request, reply = _echoes(probes, WEST, EAST, 8), _echoes(probes, EAST, WEST, 0)
    sent = T0_NS + np.arange(probes, dtype=np.int64) * INTERVAL_NS
    back = sent + (len(names) + 2) * HOP_NS  # east answers two hops' time after it received
    captures = []
    for h, point in enumerate(names):
        # routers crossed before this point, going east and going west (eth1 is a router's egress east)
        east_routers, west_routers = h // 2, (len(names) - 1 - h) // 2
        frames = np.concatenate([_at(request, ttl0 - east_routers), _at(reply, ttl0 - west_routers)])
        ts = np.concatenate([sent + h * HOP_NS, back + (len(names) - 1 - h) * HOP_NS])
        order = np.argsort(ts, kind="stable")
        name = point.replace(":", "_") + ".pcapng"
        probe_file = out / (name + ".probes")
        write_pcapng(probe_file, ((int(ts[k]), frames[k].tobytes(), frames.shape[1]) for k in order.tolist()),
                     if_name=point, linktype=1, drops=0)
        per_point = packets // points + (1 if h < packets % points else 0)
        if per_point:
            add_background(probe_file, out / name, per_point, seed + h)
            probe_file.unlink()
        else:
            probe_file.rename(out / name)
        captures.append(CaptureEntry(point, name, 0, "tcpdump"))
    rtt_ms = (back[0] + (len(names) - 1) * HOP_NS - sent[0]) / 1e6
    report = ProbeReport("ping", probes, tuple(SentProbe(q, int(sent[q - 1]), SIZE, rtt_ms) for q in range(1, probes + 1)),
                         options={"interval": INTERVAL_NS / 1e9, "size": SIZE, "df": False})
    write_probe_report(out, report)
    write_manifest(out, Manifest(RUN, ProbeKind.PING, IPv4Address(WEST), IPv4Address(EAST), "west", probes,
                                 captures=captures, report="probes.json",
                                 extra={"expected": {"status": "delivered"}}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the run directory to write (must not exist; --force replaces it)")
    ap.add_argument("--points", type=int, default=10, help="capture points: even, at least 4")
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--packets", type=int, default=0, help="background packets over all points")
    ap.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = ap.parse_args(argv)
    if args.force and args.out.exists():
        shutil.rmtree(args.out)
    generate_points_run(args.out, args.points, args.probes, args.packets)
    print(f"wrote {args.out}: {args.points} points, {args.probes:,} probes, {args.packets:,} background packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
