"""Capture filters: keep the probes, their ESP/NAT-T carriers, IKE, ICMP errors,
and the cleartext that shares the tunnels' SAs.

The SA cleartext matters: every packet in an SA consumes an ESP sequence
number, so the keyless ESP association must see background traffic too to
know when it cannot tell two packets apart.
"""

from __future__ import annotations

from tracer.model.topology import Topology

PROBE_FILTER = "icmp or esp or udp port 500 or udp port 4500"


def capture_filter(topo: Topology) -> str:
    parts = [PROBE_FILTER]
    for t in topo.tunnels:
        for a, b in ((t.left, t.right), (t.right, t.left)):
            src = " or ".join(f"src net {n}" for n in a.subnets)
            dst = " or ".join(f"dst net {n}" for n in b.subnets)
            parts.append(f"(({src}) and ({dst}))")
    return " or ".join(parts)
