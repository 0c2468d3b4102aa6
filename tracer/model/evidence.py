"""Evidence records: what one source said about one node at one moment (pure data).

A :class:`Snapshot` is the shape every evidence source returns, taken before and after a
trace (or, for event sources, once over its duration): named counters (interface drops,
firewall rule counters, kernel SNMP counters, CHILD_SA bytes and packets), link states,
and lines (a daemon's log during the trace). A node a source could not read has a snapshot
whose ``unavailable`` says why, never an exception. Explain (``tracer.analysis.explain``)
compares the two snapshots of a node; the run directory keeps them as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

BEFORE = "before"
AFTER = "after"
EVENTS = "events"  # one snapshot over the trace's duration (event sources: start, then stop)
PHASES = (BEFORE, AFTER, EVENTS)


@dataclass(frozen=True)
class Counter:
    """One counter of one node.

    ``key``: stable within its source and node (the same counter before and after);
    ``kind``: what explain makes of it — ``rule`` (a firewall rule), ``link`` (an interface
    counter), ``snmp`` (a kernel protocol counter), ``sa`` (a CHILD_SA's bytes or packets);
    ``drop``: growth means packets were discarded (a drop rule, ``rx_dropped``, InNoRoutes);
    ``text``: how a person names it (``nft rule "inet f forward udp dport 4500 drop"``);
    ``iface``: the interface it belongs to; ``spi``: the SA it counts, with ``way`` in/out.
    """

    key: str
    kind: str
    text: str
    value: int
    unit: str = "packets"
    drop: bool = False
    iface: str | None = None
    spi: int | None = None
    way: str | None = None  # "in" | "out" for SA counters

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counter:
        return cls(str(d["key"]), str(d["kind"]), str(d["text"]), int(d["value"]), str(d.get("unit", "packets")),
                   bool(d.get("drop", False)), d.get("iface"), int(d["spi"]) if d.get("spi") is not None else None,
                   d.get("way"))


@dataclass(frozen=True)
class Snapshot:
    """What ``source`` read on ``node`` at ``phase`` (``unavailable``: why it could not)."""

    source: str
    node: str
    phase: str = BEFORE
    counters: tuple[Counter, ...] = ()
    links: dict[str, str] = field(default_factory=dict)  # interface -> operstate ("UP", "DOWN", ...)
    lines: tuple[str, ...] = ()  # log lines written during the trace
    notes: tuple[str, ...] = ()  # what the source could not read in part ("no /proc/net/xfrm_stat")
    unavailable: str | None = None
    taken: str | None = None  # ISO time

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["counters"] = [{k: v for k, v in c.items() if v is not None} for c in d["counters"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        return cls(
            str(d["source"]), str(d["node"]), str(d.get("phase", BEFORE)),
            tuple(Counter.from_dict(c) for c in d.get("counters", [])),
            {str(k): str(v) for k, v in (d.get("links") or {}).items()},
            tuple(str(x) for x in d.get("lines", [])), tuple(str(x) for x in d.get("notes", [])),
            d.get("unavailable"), d.get("taken"),
        )


@dataclass(frozen=True)
class Evidence:
    """Every snapshot of a run: ``(phase, source, node) -> Snapshot``."""

    snapshots: dict[tuple[str, str, str], Snapshot] = field(default_factory=dict)

    @classmethod
    def of(cls, snaps: list[Snapshot]) -> Evidence:
        return cls({(s.phase, s.source, s.node): s for s in snaps})

    def get(self, phase: str, source: str, node: str) -> Snapshot | None:
        return self.snapshots.get((phase, source, node))

    def sources(self, node: str) -> list[str]:
        return list(dict.fromkeys(src for (_, src, n) in self.snapshots if n == node))

    def __bool__(self) -> bool:
        return bool(self.snapshots)
