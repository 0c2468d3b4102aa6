"""Evidence records: what one source said about one node at one moment (pure data).

A :class:`Snapshot` is the shape every evidence source returns, taken before and after a
trace (or, for event sources, once over its duration): named counters (interface drops,
firewall rule counters, kernel SNMP counters, CHILD_SA bytes and packets), link states,
lines (a daemon's log during the trace) and kernel drops of our probes (:class:`Drop`, from the
``skb:kfree_skb`` tracepoint). A node a source could not read has a snapshot
whose ``unavailable`` says why, never an exception. Explain (``tracer.analysis.explain``)
compares the two snapshots of a node; the run directory keeps them as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from ipaddress import IPv4Address
from typing import Any

BEFORE = "before"
AFTER = "after"
EVENTS = "events"  # one snapshot over the trace's duration (event sources: start, then stop)
PHASES = (BEFORE, AFTER, EVENTS)
NAT_T_PORT = 4500


@dataclass(frozen=True, slots=True)
class ProbeMatch:
    """Which packets of a trace are ours: tagged probes of ``run``, ESP of the tunnels' ``spis``
    (what an event source watching packets keeps). ``spis`` None: not known yet (a source
    started before the IKE daemons were asked) — every SPI is watched until they are given."""

    run: int
    spis: frozenset[int] | None = frozenset()
    nat_t_ports: tuple[int, ...] = (NAT_T_PORT,)


@dataclass(frozen=True, slots=True)
class Drop:
    """One of our probes (or its ESP carrier) dropped by the kernel."""

    reason: str  # enum skb_drop_reason without its prefix: "NETFILTER_DROP", "OTHERHOST", ...
    code: int  # its number on this kernel
    function: str  # kernel function that freed it (ksym of the tracepoint's location)
    device: str | None  # skb->dev->name; None: the buffer had no device
    netns_inode: int | None  # network namespace inode; None: neither device nor socket to say
    node: str | None  # topology node whose namespace that is; None: not one of the nodes
    src: IPv4Address
    dst: IPv4Address
    protocol: int  # IP protocol: 1 ICMP (tagged echo), 50 ESP, 17 ESP-in-UDP
    time_ns: int  # wall clock (CLOCK_REALTIME, like capture stamps) of the drop
    run: int | None = None  # tagged echo: the tag
    seq: int | None = None
    kind: int | None = None
    icmp_type: int | None = None  # 8 request, 0 reply
    spi: int | None = None  # ESP: the carrier
    esp_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["src"], d["dst"] = str(self.src), str(self.dst)
        d["kind"] = None if self.kind is None else int(self.kind)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Drop:
        return cls(**{**d, "src": IPv4Address(d["src"]), "dst": IPv4Address(d["dst"])})

    def __str__(self) -> str:
        who = (f"probe {self.run:08x}/{self.seq}" if self.run is not None
               else f"ESP spi 0x{self.spi or 0:08x} seq {self.esp_seq}")
        where = f"{self.node or f'netns {self.netns_inode}'}:{self.device or '-'}"
        return f"{where} {self.reason} in {self.function}: {who} {self.src} → {self.dst}"


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

    def to_dict(self) -> dict[str, Any]:
        """Its fields in order, those that are None left out (what asdict gives, at a fraction of
        its cost: a trace writes thousands of counters)."""
        return {k: v for k in _COUNTER_FIELDS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counter:
        return cls(str(d["key"]), str(d["kind"]), str(d["text"]), int(d["value"]), str(d.get("unit", "packets")),
                   bool(d.get("drop", False)), d.get("iface"), int(d["spi"]) if d.get("spi") is not None else None,
                   d.get("way"))


_COUNTER_FIELDS = tuple(f.name for f in fields(Counter))


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
    drops: tuple[Drop, ...] = ()  # kernel drops of our probes on this node (event source)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "node": self.node, "phase": self.phase,
                "counters": [c.to_dict() for c in self.counters], "links": dict(self.links),
                "lines": list(self.lines), "notes": list(self.notes), "unavailable": self.unavailable,
                "taken": self.taken, "drops": [x.to_dict() for x in self.drops]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        return cls(
            str(d["source"]), str(d["node"]), str(d.get("phase", BEFORE)),
            tuple(Counter.from_dict(c) for c in d.get("counters", [])),
            {str(k): str(v) for k, v in (d.get("links") or {}).items()},
            tuple(str(x) for x in d.get("lines", [])), tuple(str(x) for x in d.get("notes", [])),
            d.get("unavailable"), d.get("taken"), tuple(Drop.from_dict(x) for x in d.get("drops", [])),
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
