"""Verdicts: per-probe traces along the expected path, aggregated findings, overall status.

:meth:`Verdict.to_dict` is one run of the JSON contract (docs/json.md, the schema in
tracer/tracer.schema.json): run ids as hex strings, times as integer µs since the epoch
(exact in every JSON reader, below 2^53), capture points by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Any

from tracer.errors import EXIT_DELIVERED, EXIT_INCONCLUSIVE, EXIT_LOSS
from tracer.model.direction import Direction
from tracer.model.observed import ObservedProbe
from tracer.model.path import ExpectedPath
from tracer.model.probe import SentProbe
from tracer.model.rtt import RttStats, rtt_stats


class Sighting(StrEnum):
    SEEN = "seen"
    MISSED = "missed"  # captured there, and the probe was not in the capture
    UNOBSERVED = "unobserved"  # no capture for that point
    UNRELIABLE = "unreliable"  # captured, but the sniffer dropped packets: absence proves nothing
    UNKNOWN = "unknown"  # ESP hop whose (SPI, seq) could not be associated with the probe
    GAP = "gap"  # missed here but seen further down the path: capture noise, not loss
    ELSEWHERE = "elsewhere"  # not here: it left the expected path before (seen off it, or leaking)
    LEAKED = "leaked"  # here, but in the clear where it should have been ESP


class Outcome(StrEnum):
    DELIVERED = "delivered"
    LOST = "lost"
    INCONCLUSIVE = "inconclusive"
    NOT_SENT = "not-sent"  # reply of a request that never arrived


class Status(StrEnum):
    DELIVERED = "delivered"
    LOSS = "loss"
    INCONCLUSIVE = "inconclusive"

    @property
    def exit_code(self) -> int:
        return {Status.DELIVERED: EXIT_DELIVERED, Status.LOSS: EXIT_LOSS, Status.INCONCLUSIVE: EXIT_INCONCLUSIVE}[self]

    @property
    def word(self) -> str:
        """The word a person scans for at the head of a verdict."""
        return {Status.DELIVERED: "OK", Status.LOSS: "LOSS", Status.INCONCLUSIVE: "INCONCLUSIVE"}[self]


@dataclass(frozen=True)
class ProbeTrace:
    """One probe in one direction along its expected path."""

    seq: int
    direction: Direction
    sightings: tuple[Sighting, ...]  # one per hop of the direction's path
    times_ns: tuple[int | None, ...]  # first time seen per hop
    esp: tuple[tuple[int, int] | None, ...]  # (SPI, ESP seq) per ESP hop when associated
    outcome: Outcome
    last_seen: int | None  # hop index
    first_missed: int | None  # hop index


@dataclass(frozen=True)
class Finding:
    """Probes of one direction that share a fate."""

    direction: Direction
    outcome: Outcome
    count: int
    total: int
    where: str  # human phrase: "inside west-gw between lan0 and ipsec0 (forward)"
    last_seen: str | None = None  # capture point
    first_missed: str | None = None
    edge: str | None = None  # edge kind between them
    reason: str | None = None  # why, when the evidence says
    seqs: tuple[int, ...] = ()
    divergence: str | None = None  # how these probes left the expected path, when they did
    evidence: tuple[str, ...] = ()  # what the network said at the located hop ("router: nft rule ... +3 packets")


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


@dataclass(frozen=True)
class Verdict:
    run: int
    kind: str
    status: Status
    summary: str
    paths: dict[Direction, ExpectedPath]
    findings: tuple[Finding, ...]
    probes: tuple[ProbeTrace, ...]
    unobserved: tuple[str, ...] = ()
    drops: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # point → why its capture file cannot prove absence
    diagnoses: tuple[str, ...] = ()  # what the network said or did: ICMP errors, NAT, the IKE answer, MTU
    warnings: tuple[str, ...] = ()  # why parts of the verdict may be weaker: capture gaps, topology drift
    mtu: MtuReport | None = None
    observed: tuple[ObservedProbe, ...] = ()  # probes whose sightings left the expected path (or looped)
    flow: str | None = None  # untagged traffic: the flow traced (its run id is synthetic)
    notes: tuple[str, ...] = ()  # about tracer's own work (what ESP decryption found), not the network
    sent: tuple[SentProbe, ...] = ()  # the prober's record, when the run has one

    @property
    def rtt(self) -> RttStats | None:
        """The prober's round-trip times (None: no report, or nothing answered)."""
        return rtt_stats(s.rtt_ms for s in self.sent)

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def explanations(self) -> list[str]:
        """The lines under a verdict: why each loss happened, then notes, then warnings."""
        lines = [f"diverged ({f.direction}): {f.divergence}" for f in self.findings if f.divergence]
        for f in self.findings:
            if f.outcome == Outcome.DELIVERED:
                continue
            if f.reason:
                lines.append(f"why ({f.direction}): {f.reason}")
            lines += [f"  evidence: {e}" for e in f.evidence]
        notes = [f"note: {d}" for d in (*self.diagnoses, *self.notes)]
        return lines + notes + [f"warning: {w}" for w in self.warnings]

    def to_dict(self) -> dict[str, Any]:
        """One run of the JSON contract (docs/json.md)."""
        rtt = self.rtt
        return {
            "run": run_hex(self.run),
            "kind": self.kind,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "paths": {str(k): p.to_dict() for k, p in self.paths.items()},
            "findings": [_finding_dict(f) for f in self.findings],
            "probes": [_trace_dict(t, self.paths[t.direction]) for t in self.probes],
            "sent": [_sent_dict(x) for x in self.sent],
            "rtt": None if rtt is None else {"count": rtt.count, "min_ms": rtt.min_ms, "avg_ms": rtt.avg_ms,
                                             "max_ms": rtt.max_ms, "mdev_ms": rtt.mdev_ms},
            "unobserved": list(self.unobserved),
            "drops": dict(self.drops),
            "damaged": dict(self.damaged),
            "diagnoses": list(self.diagnoses),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "ike": _ike_dict(self.sent) if self.kind == "ike" else None,
            "mtu": None if self.mtu is None else _mtu_dict(self.mtu),
            "observed": [_observed_dict(o) for o in self.observed],
            "flow": self.flow,  # untagged traffic: which flow (null: tagged probes)
        }


def run_hex(run: int) -> str:
    """A run id as text and ``--run`` write it: ``0x`` and eight hex digits."""
    return f"{run:#010x}"


def us(ns: int | None) -> int | None:
    """Nanoseconds since the epoch → integer µs (exact in JSON readers that use doubles)."""
    return None if ns is None else ns // 1000


def _point(path: ExpectedPath, hop: int | None) -> str | None:
    return None if hop is None else path.hops[hop].point


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "direction": str(f.direction), "outcome": f.outcome.value, "count": f.count, "total": f.total,
        "where": f.where, "last_seen": f.last_seen, "first_missed": f.first_missed, "edge": f.edge,
        "reason": f.reason, "seqs": list(f.seqs), "divergence": f.divergence, "evidence": list(f.evidence),
    }


def _trace_dict(t: ProbeTrace, path: ExpectedPath) -> dict[str, Any]:
    return {
        "seq": t.seq, "direction": str(t.direction), "outcome": t.outcome.value,
        "last_seen": _point(path, t.last_seen), "first_missed": _point(path, t.first_missed),
        "sightings": [x.value for x in t.sightings],
        "times_us": [us(x) for x in t.times_ns],
        "esp": [None if e is None else {"spi": e[0], "seq": e[1]} for e in t.esp],
    }


def _sent_dict(x: SentProbe) -> dict[str, Any]:
    return {"seq": x.seq, "sent_us": us(x.sent_ns), "size": x.size, "rtt_ms": x.rtt_ms, "error": x.error,
            "answer": x.answer}


def _ike_dict(sent: tuple[SentProbe, ...]) -> dict[str, Any]:
    """What the IKE responder answered, grouped by answer: the structured form of the note."""
    groups: dict[str, dict[str, Any]] = {}
    for x in sent:
        if x.answer is None:
            continue
        g = groups.setdefault(x.answer, {
            "answer": x.answer, "seqs": [],
            "notifies": [str(n) for n in x.details.get("notifies") or []],
            # Recorded by newer probers only: None when the run does not say.
            "errors": _strs(x.details.get("errors")), "chosen": _strs(x.details.get("chosen")),
            "nat": x.details.get("nat"), "peer_nat": x.details.get("peer_nat"),
            "responder_spis": []})
        g["seqs"].append(x.seq)
        if x.details.get("responder_spi"):
            g["responder_spis"].append(str(x.details["responder_spi"]))
    return {"sent": len(sent), "answered": sum(len(g["seqs"]) for g in groups.values()),
            "answers": list(groups.values())}


def _strs(v: Any) -> list[str] | None:
    return [str(x) for x in v] if isinstance(v, list) else None


def _mtu_dict(m: MtuReport) -> dict[str, Any]:
    t = m.tunnel
    return {
        "path_mtu": m.path_mtu, "exact": m.exact, "limit": m.limit, "blackhole": m.blackhole,
        "bottleneck": m.bottleneck, "bottleneck_mtu": m.bottleneck_mtu,
        "largest_delivered": m.largest_delivered, "smallest_lost": m.smallest_lost,
        "esp_overhead": m.esp_overhead, "encap_point": m.encap_point,
        "tunnel": None if t is None else {"point": t.point, "udp": t.udp, "fixed": t.fixed, "block": t.block,
                                          "least": t.least, "most": t.most, "samples": t.samples},
        "frag_needed": [{"sender": x.sender, "node": x.node, "next_hop_mtu": x.next_hop_mtu, "size": x.size,
                         "seq": x.seq, "about": x.about, "seen_at": list(x.seen_at), "reached_source": x.reached_source}
                        for x in m.frag_needed],
        "sizes": [{"size": r.size, "sent": r.sent, "delivered": r.delivered, "where": r.where, "error": r.error,
                   "icmp": r.icmp} for r in m.sizes],
    }


def _observed_dict(o: ObservedProbe) -> dict[str, Any]:
    d, lp = o.divergence, o.loop
    return {
        "seq": o.seq, "direction": str(o.direction),
        "seen": [{"point": s.point, "time_us": us(s.time_ns), "form": s.form.value, "place": s.place.value,
                  "ttl": s.ttl, "esp": None if s.esp is None else {"spi": s.esp[0], "seq": s.esp[1]},
                  "outer": None if s.outer is None else _outer(s.outer)} for s in o.seen],
        "divergence": None if d is None else {"kind": d.kind, "after": d.after, "at": d.at, "text": d.text,
                                              "rejoined": d.rejoined},
        "loop": None if lp is None else {"nodes": list(lp.nodes), "point": lp.point, "count": lp.count,
                                         "ttl_first": lp.ttl_first, "ttl_last": lp.ttl_last,
                                         "expired_from": lp.expired_from},
        "quoted": list(o.quoted),
    }


def _outer(o: tuple[int, int, int, int]) -> dict[str, Any]:
    src, sport, dst, dport = o
    return {"src": str(IPv4Address(src)), "sport": sport, "dst": str(IPv4Address(dst)), "dport": dport}
