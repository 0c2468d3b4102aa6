"""ICMP errors as evidence: the network saying why (unreachable, fragmentation needed,
TTL exceeded), tied to the probes or to the tunnel's ESP carriers they quote."""

from __future__ import annotations

from ipaddress import IPv4Address

import numpy as np

from tracer.model.observations import Observations, PacketClass
from tracer.model.path import ExpectedPath
from tracer.model.probe import ProbeSpec
from tracer.model.tag import icmp_id_for

_ICMP_NAMES = {
    (3, 0): "net unreachable", (3, 1): "host unreachable", (3, 3): "port unreachable",
    (3, 4): "fragmentation needed", (3, 13): "administratively prohibited",
    (11, 0): "TTL exceeded", (3, 10): "host prohibited",
}


def icmp_name(icmp_type: int, code: int) -> str:
    return _ICMP_NAMES.get((icmp_type, code), f"type {icmp_type} code {code}")


def icmp_errors(obs: Observations, spec: ProbeSpec, paths: dict[str, ExpectedPath]) -> list[str]:
    """ICMP errors quoting the probes or the tunnel's ESP carriers: the network saying why."""
    err = obs["cls"] == PacketClass.ICMP_ERROR
    if not err.any():
        return []
    pairs = {(int(spec.src), int(spec.dst)), (int(spec.dst), int(spec.src))}
    for p in paths.values():
        pairs |= {(int(h.esp.src), int(h.esp.dst)) for h in p.hops if h.esp}
    out = []
    rows = np.flatnonzero(err)
    # Vectorised (a run can hold thousands of errors about other traffic): about our pairs, not
    # about another ping's echo, then the first of each (type, code, sender, point), in row order.
    isrc, idst = obs["inner_src"][rows], obs["inner_dst"][rows]
    ours = np.zeros(len(rows), bool)
    for a, b in pairs:
        ours |= (isrc == a) & (idst == b)
    ours &= ~((obs["inner_proto"][rows] == 1) & (obs["inner_id"][rows] != icmp_id_for(spec.run)))
    rows = rows[ours]
    u64 = np.uint64
    point = (obs["point"][rows].astype(np.int64) & 0xFFFF).astype(u64)  # a point may be -1 (unmapped)
    key = ((obs["icmp_type"][rows].astype(u64) << u64(56)) | (obs["icmp_code"][rows].astype(u64) << u64(48))
           | (obs["src"][rows].astype(u64) << u64(16)) | point)
    _, first = np.unique(key, return_index=True)
    for i in rows[np.sort(first)].tolist():
        pair = (int(obs["inner_src"][i]), int(obs["inner_dst"][i]))
        t, c = int(obs["icmp_type"][i]), int(obs["icmp_code"][i])
        name = icmp_name(t, c)
        mtu = f", next-hop MTU {int(obs['mtu'][i])}" if (t, c) == (3, 4) else ""
        about = "ESP" if pair not in {(int(spec.src), int(spec.dst)), (int(spec.dst), int(spec.src))} else "the probe"
        out.append(f"ICMP {name} from {IPv4Address(int(obs['src'][i]))} about {about}{mtu}, "
                   f"seen at {obs.points[int(obs['point'][i])]}")
    return out
