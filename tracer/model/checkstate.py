"""What ``tracer check`` reads on a node besides its addresses and routes (pure data, no I/O).

One record per source, each filled by its module in ``tracer/evidence`` (``sysctl``,
``sockets``, ``nft``, ``strongswan``, ``neigh``, ``remoteclock``) and judged by
``tracer.analysis.checks``. A source that could not be read on a node is an
:class:`Unavailable` carrying the one-line reason, never an exception: the check that
needed it says "not checked" and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Unavailable:
    """A source that could not be read on a node; ``why`` is one line."""

    why: str


@dataclass(frozen=True)
class Sysctls:
    """``net.ipv4`` sysctls of one namespace or host, by dotted name
    (``net.ipv4.ip_forward``, ``net.ipv4.conf.wan0.rp_filter``) → integer value."""

    values: dict[str, int] = field(default_factory=dict)

    def get(self, key: str) -> int | None:
        return self.values.get(key)

    def conf(self, iface: str, key: str) -> int | None:
        return self.values.get(f"net.ipv4.conf.{iface}.{key}")

    def rp_filter(self, iface: str) -> int | None:
        """The value the kernel uses: the larger of ``conf.all`` and ``conf.<iface>`` (None: unknown)."""
        own, every = self.conf(iface, "rp_filter"), self.conf("all", "rp_filter")
        if own is None and every is None:
            return None
        return max(own or 0, every or 0)


@dataclass(frozen=True)
class Neighbour:
    """One neighbour (ARP) entry as ``ip -j neigh`` shows it."""

    address: str  # "198.18.2.1"
    dev: str
    lladdr: str | None  # "02:00:5e:00:53:99"; None: not resolved
    states: tuple[str, ...] = ()  # ("PERMANENT",), ("REACHABLE",), ...

    @property
    def static(self) -> bool:
        return "PERMANENT" in self.states


@dataclass(frozen=True)
class UdpSocket:
    """One listening UDP socket as ``ss -uln`` (with ``-p``) shows it."""

    address: str  # "0.0.0.0", "198.18.1.1", "::", "*"
    port: int
    process: str | None = None  # "charon"; None: ss did not say (no privilege)
    pid: int | None = None


@dataclass(frozen=True)
class NftChain:
    family: str
    table: str
    name: str
    hook: str | None = None  # None: a regular chain (reached by jump/goto only)
    policy: str = "accept"
    priority: int = 0


@dataclass(frozen=True)
class NftRule:
    """One nftables rule: where it is, its expressions as ``nft -j`` gives them, and its text
    as ``nft list ruleset`` prints it (statistics removed)."""

    family: str
    table: str
    chain: str
    handle: int
    expr: tuple[Any, ...] = field(default=(), compare=False)  # the JSON expressions, in order (not hashed)
    text: str = ""
    comment: str | None = None

    def where(self) -> str:
        return f"{self.family} {self.table} {self.chain}"


@dataclass(frozen=True)
class NftRuleset:
    chains: tuple[NftChain, ...] = ()
    rules: tuple[NftRule, ...] = ()

    def chain(self, family: str, table: str, name: str) -> NftChain | None:
        return next((c for c in self.chains if (c.family, c.table, c.name) == (family, table, name)), None)

    def rules_of(self, chain: NftChain) -> list[NftRule]:
        return [r for r in self.rules if (r.family, r.table, r.chain) == (chain.family, chain.table, chain.name)]


@dataclass(frozen=True)
class ChildSa:
    name: str
    state: str  # "INSTALLED", "REKEYING", ...
    spi_in: int | None
    spi_out: int | None
    protocol: str = "ESP"
    encap: bool = False
    encryption: str | None = None
    local_ts: tuple[str, ...] = ()
    remote_ts: tuple[str, ...] = ()


@dataclass(frozen=True)
class IkeSa:
    name: str
    state: str  # "ESTABLISHED", "CONNECTING", ...
    local: str | None = None  # address
    remote: str | None = None
    children: tuple[ChildSa, ...] = ()
    initiator: bool = False  # this end initiated the IKE_SA


@dataclass(frozen=True)
class IkeState:
    """The IKE daemon's SAs as it reports them (strongSwan through vici), and how it was reached."""

    sas: tuple[IkeSa, ...] = ()
    via: str = ""  # "unix:///run/tracer/lab-lab/west-gw/charon.vici"


@dataclass(frozen=True)
class ClockOffset:
    """A remote host's clock minus this host's, from one ``date`` over SSH; ``rtt`` bounds the error."""

    offset: float
    rtt: float


@dataclass(frozen=True)
class NodeEvidence:
    """Everything ``tracer check`` read on one node (None: not read, because no check needed it)."""

    sysctl: Sysctls | Unavailable | None = None
    sockets: tuple[UdpSocket, ...] | Unavailable | None = None
    nft: NftRuleset | Unavailable | None = None
    ike: IkeState | Unavailable | None = None
    clock: ClockOffset | Unavailable | None = None
    neigh: tuple[Neighbour, ...] | Unavailable | None = None
