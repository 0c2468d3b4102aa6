"""The observed path of a probe: every place it was really seen, in time order, and how that
differs from the expected path. Pure data; tracer.analysis.observed builds it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tracer.model.direction import Direction


class Form(StrEnum):
    CLEAR = "clear"  # the tagged probe itself
    ESP = "esp"  # its ESP carrier, tied by decryption or by (SPI, seq)


class Place(StrEnum):
    EXPECTED = "expected"  # a point of the expected path, in the expected form
    LEAK = "leak"  # a point of the expected path, in the clear where ESP was expected
    OFF_PATH = "off-path"  # a point of the topology the expected path does not cross (or in another form)
    UNMAPPED = "not-in-topology"  # an interface the topology does not have


@dataclass(frozen=True)
class Seen:
    """One sighting of a probe."""

    point: str
    time_ns: int
    form: Form
    place: Place
    ttl: int  # outer IP TTL
    esp: tuple[int, int] | None = None  # (SPI, ESP seq) of an ESP sighting
    outer: tuple[int, int, int, int] | None = None  # ESP sighting: outer (src, sport, dst, dport), for NAT


@dataclass(frozen=True)
class Loop:
    """A probe seen again and again at the same points with falling TTL."""

    nodes: tuple[str, ...]  # nodes whose points saw it repeatedly
    point: str  # the point that saw it most
    count: int  # times seen there
    ttl_first: int
    ttl_last: int
    expired_from: str | None = None  # source of an ICMP time exceeded quoting it


@dataclass(frozen=True)
class Divergence:
    """Where and how a probe left its expected path."""

    kind: str  # "leak" | "off-path" | "not-in-topology" | "loop"
    after: str | None  # the last point of the expected path that saw it before (None: none did)
    at: str  # the first point off the expected path (or where the loop shows)
    text: str  # how, in words: "left west-gw by wan0 in the clear instead of into ipsec0"
    rejoined: str | None = None  # a later point of the expected path that saw it again


@dataclass(frozen=True)
class ObservedProbe:
    """A probe whose sightings do not simply follow its expected path."""

    seq: int
    direction: Direction
    seen: tuple[Seen, ...]  # time order
    divergence: Divergence | None = None
    loop: Loop | None = None
    # ICMP errors quoting it: the network saying where and why ("ICMP net unreachable from 198.18.1.254")
    quoted: tuple[str, ...] = ()

    def path_text(self) -> str:
        """"west:eth0 → west-gw:wan0 [clear, leak] → router:eth0 [clear, leak]"; a loop is shown
        once, up to where it comes round again ("⟲ west-gw:wan0")."""
        parts: list[str] = []
        been: set[str] = set()
        step: str | None = None  # the point of the last step shown
        for s in self.seen:
            if s.point == step:
                continue
            if s.point in been:
                parts.append(f"⟲ {s.point}")
                break
            been.add(s.point)
            step = s.point
            tag = "" if s.place == Place.EXPECTED else f" [{s.form}, {s.place}]"
            parts.append(s.point + tag)
        return " → ".join(parts)
