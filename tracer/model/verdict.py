"""Verdicts: per-probe traces along the expected path, aggregated findings, overall status."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from tracer.errors import EXIT_DELIVERED, EXIT_INCONCLUSIVE, EXIT_LOSS
from tracer.model.direction import Direction
from tracer.model.observed import ObservedProbe
from tracer.model.path import ExpectedPath


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
    diagnoses: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    mtu: MtuReport | None = None
    observed: tuple[ObservedProbe, ...] = ()  # probes whose sightings left the expected path (or looped)
    flow: str | None = None  # untagged traffic: the flow traced (its run id is synthetic)

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
        return lines + [f"note: {d}" for d in self.diagnoses] + [f"warning: {w}" for w in self.warnings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (addresses as strings, enums as their values)."""
        doc = asdict(self) | {"paths": {k: p.to_dict() for k, p in self.paths.items()}}
        if self.flow is None:
            del doc["flow"]  # a key of its own only where there is a flow: tagged verdicts keep their shape
        return _jsonable(doc)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, StrEnum):
        return v.value
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)
