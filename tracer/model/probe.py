"""What a trace sent, as the analysis and the run directory know it.

* :class:`SentProbe` / :class:`ProbeReport`: the prober's own record of one run —
  every probe it sent (when, how big, what came back, the local error if sending
  failed) and whether the run was cut short. Written to the run directory as
  ``probes.json`` (format ``tracer-probes/1``) and read back by replay.
* :class:`ProbeSpec`: what the analysis needs to know about a run, from a report
  or inferred from the captures alone.
* :class:`DecryptedTags`: what ESP decryption found inside each opened packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from tracer.model.direction import Direction
from tracer.model.topology import Node

REPORT_FORMAT = "tracer-probes/1"


@dataclass(frozen=True)
class SentProbe:
    """One probe as the prober saw it."""

    seq: int
    sent_ns: int | None = None  # wall clock when it left (ns since the epoch)
    size: int | None = None  # payload bytes given to the socket (echo payload / IKE message)
    rtt_ms: float | None = None  # round trip of its answer; None: no answer
    error: str | None = None  # the sender's local error (e.g. EMSGSIZE); the probe never left
    answer: str | None = None  # what the responder said, in words (IKE)
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # kind-specific report fields


@dataclass(frozen=True)
class ProbeReport:
    """The prober's record of one run."""

    kind: str  # the probe kind's name (tracer.probes): "ping", "ike", "mtu"
    planned: int  # probes the run meant to send
    sent: tuple[SentProbe, ...] = ()
    interrupted: bool = False  # the run was cut short (Ctrl-C): only ``sent`` left
    options: dict[str, Any] = field(default_factory=dict)  # interval, size, df, port, sizes: what the user asked

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "kind": self.kind,
            "planned": self.planned,
            "interrupted": self.interrupted,
            "options": self.options,
            "sent": [_sent_dict(s) for s in self.sent],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeReport:
        """Raises KeyError/TypeError/ValueError on a malformed document (the reader names the file)."""
        if data.get("format") != REPORT_FORMAT:
            raise ValueError(f"expected \"format\": \"{REPORT_FORMAT}\"")
        return cls(
            kind=str(data["kind"]),
            planned=_int(data["planned"]),
            sent=tuple(_sent(s) for s in data.get("sent", [])),
            interrupted=data.get("interrupted") is True,
            options=dict(data.get("options", {})),
        )

    @classmethod
    def from_legacy(cls, kind: str, count: int | None, probe: dict[str, Any]) -> ProbeReport:
        """The untyped ``probe`` block older manifests carried (recorded scenarios use it)."""
        sent = tuple(_sent(s) for s in probe.get("sent", []) if isinstance(s, dict) and "seq" in s)
        options = {k: v for k, v in probe.items() if k not in ("kind", "count", "sent")}
        return cls(kind, count if count is not None else len(sent), sent, False, options)

    def send_errors(self) -> dict[int, str]:
        return {s.seq: s.error for s in self.sent if s.error}

    def answers(self) -> dict[int, str]:
        return {s.seq: s.answer for s in self.sent if s.answer}


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _sent(d: dict[str, Any]) -> SentProbe:
    def opt(key: str, conv: Any) -> Any:
        v = d.get(key)
        return None if v is None else conv(v)

    details = {k: v for k, v in d.items() if k not in _SENT_FIELDS}
    return SentProbe(_int(d["seq"]), opt("sent_ns", _int), opt("size", _int), opt("rtt_ms", float),
                     opt("error", str), opt("answer", str), details)


_SENT_FIELDS = ("seq", "sent_ns", "size", "rtt_ms", "error", "answer")


def _sent_dict(s: SentProbe) -> dict[str, Any]:
    return {"seq": s.seq, "sent_ns": s.sent_ns, "size": s.size, "rtt_ms": s.rtt_ms, "error": s.error,
            "answer": s.answer} | s.details


@dataclass(frozen=True)
class Endpoints:
    """Where a trace's probes leave from and go to, resolved against the topology."""

    src_node: Node
    src: IPv4Address
    dst_node: Node
    dst: IPv4Address


@dataclass(frozen=True)
class ProbeSpec:
    """What was sent; from a probe report, or inferred from the captures."""

    run: int
    kind: int  # tag kind code (a ProbeKind for the built-in kinds)
    src: IPv4Address | None = None
    dst: IPv4Address | None = None
    origin: str | None = None  # node the probes left from
    count: int | None = None  # probes sent; None: unknown
    sent: tuple[SentProbe, ...] | None = None  # the prober's record (its seqs are the probes); None: no report
    send_errors: dict[int, str] | None = None  # seq → the sender's local error (e.g. EMSGSIZE)
    sizes: dict[int, int] | None = None  # seq → IP packet bytes (MTU probes)
    interface_mtu: int | None = None  # MTU probes: the source interface's MTU (the largest size it can send)
    answers: dict[int, str] | None = None  # IKE: seq → what the responder answered ({}: nothing; None: unknown)
    remote_nodes: tuple[str, ...] = ()  # nodes captured on another host (SSH): their clocks may be offset
    flow: str | None = None  # untagged traffic traced by its invariants: which flow (analysis/identity.py)
    notes: tuple[str, ...] = ()  # said beside the findings (an untagged flow's NAT rewrites)


@dataclass(frozen=True)
class ProbeIdentity:
    """The tracer probe a decrypted ESP packet carried."""

    run: int
    kind: int
    seq: int
    direction: Direction


@dataclass(frozen=True)
class DecryptedTags:
    """Every ESP packet opened with keys, by ``(SPI, ESP seq)``: the probe inside, or None for
    other traffic. Packets that failed to open are not in it."""

    carriers: dict[tuple[int, int], ProbeIdentity | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what decryption has to say (counts, failures; never keys)

    def keys_of(self, run: int, kind: int, direction: Direction) -> dict[int, tuple[int, int]]:
        """Probe seq → (SPI, ESP seq) of the first packet that carried it, for one run and direction."""
        out: dict[int, tuple[int, int]] = {}
        for key, p in self.carriers.items():
            if p is not None and p.run == run and p.kind == kind and p.direction == direction:
                out.setdefault(p.seq, key)
        return out
