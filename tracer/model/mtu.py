"""What a run of MTU probes (growing sizes) found: per size, the ICMP 'fragmentation needed'
errors, the tunnel's overhead and the path MTU. Its own module: only MTU runs build these, so a
plain replay does not pay for defining them (:attr:`tracer.model.verdict.Verdict.mtu`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SizeResult:
    """MTU probes of one size (IP packet bytes)."""

    size: int
    sent: int
    delivered: int  # request and reply both arrived
    where: str | None = None  # where the lost ones disappeared
    error: str | None = None  # the sender's local error (EMSGSIZE: larger than its interface MTU)
    icmp: str | None = None  # the ICMP error quoting these probes that reached the source, in words
    seqs: tuple[int, ...] = ()  # the probes of this size (figures label them by size, not by seq)


@dataclass(frozen=True)
class FragNeeded:
    """An ICMP 'fragmentation needed' quoting one of the run's probes (or its ESP carrier)."""

    sender: str  # address
    node: str | None  # topology node owning that address
    next_hop_mtu: int
    size: int  # IP bytes of the probe it quotes
    seq: int
    about: str  # "probe" or "esp" (the quote is the tunnel's ESP packet carrying the probe)
    seen_at: tuple[str, ...]  # capture points that saw the error
    reached_source: bool  # seen at the probes' first capture point


@dataclass(frozen=True)
class TunnelOverhead:
    """What the tunnel adds to a probe, measured at its encapsulation point."""

    point: str  # the capture point where the probe enters the tunnel
    udp: bool  # ESP-in-UDP (NAT-T) rather than raw ESP (IP protocol 50)
    fixed: int | None  # outer IP + (UDP) + ESP header + IV + ICV: bytes every packet gets (None: block unknown)
    block: int | None  # ESP pads payload + 2-byte trailer to this many bytes (None: too few sizes to tell)
    least: int  # smallest and largest total overhead measured (fixed + trailer + padding)
    most: int
    samples: int


@dataclass(frozen=True)
class MtuReport:
    """What a run of probes of growing sizes found out about the path MTU."""

    sizes: tuple[SizeResult, ...]
    largest_delivered: int | None
    smallest_lost: int | None
    esp_overhead: int | None = None  # bytes the tunnel added to the largest delivered probe
    encap_point: str | None = None
    path_mtu: int | None = None  # the largest IP packet that crosses the path (exact or not: see ``exact``)
    exact: bool = False  # measured to the byte: path_mtu passed and path_mtu + 1 did not (or is the interface MTU)
    limit: str | None = None  # where the smallest larger probe stopped ("inside router between eth0 and eth1 …")
    blackhole: bool = False  # larger probes vanished without an ICMP 'fragmentation needed' reaching the source
    frag_needed: tuple[FragNeeded, ...] = ()
    tunnel: TunnelOverhead | None = None
    bottleneck: str | None = None  # the first capture point the smallest larger probe did not reach
    bottleneck_mtu: int | None = None  # that interface's MTU in the live state read at the start of the run

    def to_dict(self) -> dict[str, Any]:
        """The ``mtu`` object of a run in the JSON contract (docs/json.md)."""
        t = self.tunnel
        return {
            "path_mtu": self.path_mtu, "exact": self.exact, "limit": self.limit, "blackhole": self.blackhole,
            "bottleneck": self.bottleneck, "bottleneck_mtu": self.bottleneck_mtu,
            "largest_delivered": self.largest_delivered, "smallest_lost": self.smallest_lost,
            "esp_overhead": self.esp_overhead, "encap_point": self.encap_point,
            "tunnel": None if t is None else {"point": t.point, "udp": t.udp, "fixed": t.fixed, "block": t.block,
                                              "least": t.least, "most": t.most, "samples": t.samples},
            "frag_needed": [{"sender": x.sender, "node": x.node, "next_hop_mtu": x.next_hop_mtu, "size": x.size,
                             "seq": x.seq, "about": x.about, "seen_at": list(x.seen_at), "reached_source": x.reached_source}
                            for x in self.frag_needed],
            "sizes": [{"size": r.size, "sent": r.sent, "delivered": r.delivered, "where": r.where, "error": r.error,
                       "icmp": r.icmp} for r in self.sizes],
        }
