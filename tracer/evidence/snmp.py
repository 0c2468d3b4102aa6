"""Kernel protocol counters: ``/proc/net/snmp``, ``/proc/net/netstat`` and ``/proc/net/xfrm_stat``,
read inside the node's namespace (each namespace has its own).

Every counter is kept in the run directory; those whose growth means the kernel discarded
packets (no route, address errors, discards, reverse-path filter, ICMP unreachables sent,
UDP to a closed port, xfrm errors) are marked ``drop`` for explain.
"""

from __future__ import annotations

from tracer.evidence import nodecmd
from tracer.model.evidence import Counter, Snapshot
from tracer.model.topology import Node, Topology

NAME = "snmp"
FILES = ("/proc/net/snmp", "/proc/net/netstat")
XFRM = "/proc/net/xfrm_stat"

# "<group> <name>" of the counters whose growth means packets were discarded.
DROPS = frozenset({
    "Ip InHdrErrors", "Ip InAddrErrors", "Ip InUnknownProtos", "Ip InDiscards", "Ip OutDiscards",
    "Ip OutNoRoutes", "Ip ReasmFails", "Ip FragFails",
    "IpExt InNoRoutes", "IpExt InTruncatedPkts", "IpExt InCsumErrors",
    "Icmp OutDestUnreachs", "Icmp OutTimeExcds",
    "Udp NoPorts", "Udp InErrors", "Udp RcvbufErrors", "Udp SndbufErrors", "Udp InCsumErrors",
    "TcpExt IPReversePathFilter",
})
# What a person reads for the terse kernel names.
MEANING = {
    "Ip InNoRoutes": "no route", "IpExt InNoRoutes": "no route", "Ip OutNoRoutes": "no route for sending",
    "Ip InAddrErrors": "not addressed to it and not forwarded", "Ip InDiscards": "discarded on input",
    "Ip OutDiscards": "discarded on output", "Ip InHdrErrors": "bad IP header", "Ip FragFails": "needed fragmenting, DF set",
    "Icmp OutDestUnreachs": "ICMP unreachable sent", "Icmp OutTimeExcds": "ICMP time exceeded sent",
    "Udp NoPorts": "UDP to a closed port", "TcpExt IPReversePathFilter": "reverse-path filter",
}


def read(topo: Topology, node: Node) -> Snapshot:
    text = nodecmd.run(topo, node, ["cat", *FILES])
    notes: list[str] = []
    try:
        xfrm = nodecmd.run(topo, node, ["cat", XFRM])
    except nodecmd.Unavailable:
        xfrm = ""
        notes.append(f"{XFRM} not present (kernel without xfrm statistics)")
    return parse(node.name, text, xfrm, tuple(notes))


def parse(node: str, text: str, xfrm: str = "", notes: tuple[str, ...] = ()) -> Snapshot:
    """Counters from the header/value line pairs of /proc/net/snmp and netstat, and the
    ``name value`` lines of xfrm_stat."""
    counters: list[Counter] = []
    header: dict[str, list[str]] = {}
    for line in text.splitlines():
        group, _, rest = line.partition(":")
        fields = rest.split()
        if not fields:
            continue
        if group not in header or not fields[0].lstrip("-").isdigit():
            header[group] = fields
            continue
        for name, value in zip(header.pop(group), fields, strict=False):
            counters.append(_counter(group, name, int(value)))
    for line in xfrm.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counters.append(Counter(f"Xfrm {parts[0]}", "snmp", parts[0], int(parts[1]), drop=True))
    return Snapshot(NAME, node, counters=tuple(counters), notes=notes)


def _counter(group: str, name: str, value: int) -> Counter:
    key = f"{group} {name}"
    meaning = MEANING.get(key)
    return Counter(key, "snmp", f"{key} ({meaning})" if meaning else key, value, drop=key in DROPS)
