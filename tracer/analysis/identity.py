"""Identity of untagged traffic: the same packet at every hop by fields no router changes.

Captures taken by hand (tcpdump and a plain ``ping``) carry no tracer tag. Like passive
multi-hop tools (dShark's summary key), a packet is recognised across hops by invariants:

* ICMP echo: addresses, identifier and sequence (a reply answers the request with the same
  identifier and sequence, from the other end);
* any other IP packet: addresses, protocol, IP ID, ports and ``l4_hash`` (the first L4 bytes
  without ports and checksums: TCP sequence and acknowledgement, UDP payload, ESP SPI and
  sequence — see analysis/extract.py).

TTL and checksums are not part of any key: routers change them. Each flow found becomes a
synthetic probe run: its packets get tag columns, as if tracer had sent them, so the one
analysis (correlate, observe, locate, explain) gives each flow its verdict, ESP hops
included (associated by (SPI, seq) or decryption exactly as for tagged probes). An echo
flow is a ``ping`` run whose run id has the echo identifier as :func:`icmp_id_for` (so the
ICMP errors quoting it are read as for tagged pings); any other flow is a ``flow`` run
(tracer.probes.flow) in which every packet is a probe of its own: there-bound packets get
even sequence numbers, packets back odd ones.

A packet that cannot be told apart from another (the same key twice at one capture point
with the same TTL: e.g. IP ID 0 and equal payloads) is left out, and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

import numpy as np

from tracer.model import flowfilter
from tracer.model.distinct import distinct
from tracer.model.observations import Observations, PacketClass
from tracer.model.tag import ProbeKind
from tracer.model.topology import Topology

FLOW_KIND = ProbeKind.FLOW  # tag kind of the synthetic runs of non-echo flows (tracer.probes.flow)
_ECHO = (PacketClass.ECHO_REQUEST, PacketClass.ECHO_REPLY)
_PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 50: "ESP"}


@dataclass(frozen=True)
class Flow:
    """One untagged flow, traced as a synthetic probe run."""

    run: int  # the synthetic run id its packets are tagged with
    kind: int  # ProbeKind.PING (ICMP echo) or FLOW_KIND
    proto: int
    src: IPv4Address  # the end that sent first (the echo requester)
    dst: IPv4Address
    sport: int = 0  # UDP/TCP ports (0 otherwise)
    dport: int = 0
    ident: int | None = None  # ICMP echo identifier
    esp: bool = False  # every packet of it is ESP (raw, or in UDP 4500)
    packets: int = 0  # packets told apart (requests and replies; counted once the NAT sides are joined)
    ambiguous: int = 0  # packets left out: their invariant fields did not tell them apart
    nat: tuple[str, ...] = ()  # rewrites the flow was followed across
    between: bool = True  # both ends are nodes of the topology (else only a candidate for joining across NAT)

    def text(self) -> str:
        if self.ident is not None:
            return f"ICMP echo {self.src} → {self.dst} id {self.ident} (untagged, by identifier and sequence)"
        name = _PROTO_NAMES.get(self.proto, f"protocol {self.proto}")
        if self.esp and self.proto == 17:
            name = "ESP-in-UDP"
        a, b = (f"{self.src}:{self.sport}", f"{self.dst}:{self.dport}") if self.proto in (6, 17) else (self.src, self.dst)
        how = "SPI and sequence" if self.esp else "IP ID, ports and first bytes"
        return f"{name} {a} → {b} (untagged, by {how})"


Addresses = Callable[[str], list[IPv4Address]]


def untagged_flows(obs: Observations, topo: Topology, expr: flowfilter.Expr | None = None,
                   addresses: Addresses | None = None) -> tuple[Observations, list[Flow]]:
    """The flows between two nodes of ``topo`` among the untagged packets, and the observations
    with their synthetic tags. Without ``expr``: every ICMP echo flow; with it, whatever the
    filter selects (ICMP echo still paired by identifier and sequence)."""
    cand = (obs["tag_kind"] == 0) & (obs["ipver"] == 4) & (obs["frag"] == 0) & (obs["cls"] != PacketClass.ICMP_ERROR)
    if expr is not None:
        cand &= flowfilter.mask(expr, obs, addresses or _addresses(topo))
    echo = cand & np.isin(obs["cls"], _ECHO)
    other = cand & ~echo if expr is not None else np.zeros(len(obs), bool)
    kind, run, seq = obs["tag_kind"].copy(), obs["tag_run"].copy(), obs["tag_seq"].copy()
    taken = set(distinct(obs["tag_run"][obs["tag_kind"] > 0]).tolist())
    flows = _echo_flows(obs, topo, np.flatnonzero(echo), kind, run, seq, taken)
    flows += _other_flows(obs, topo, np.flatnonzero(other), kind, run, seq, taken)
    if not flows:
        return obs, []
    flows = [f for f in follow_nat(obs, kind, run, seq, flows) if f.between]
    cols = dict(obs.cols) | {"tag_kind": kind, "tag_run": run, "tag_seq": seq}
    tagged = Observations(cols, obs.points, obs.sources)
    flows = _without_ambiguous(tagged, _counted(tagged, flows))
    return tagged, sorted((f for f in flows if f.packets or f.ambiguous), key=lambda f: (-f.packets, f.run))


def _addresses(topo: Topology) -> Addresses:
    """A host word of the filter: a node's name (all its addresses) or an address."""
    from tracer.errors import BadInput

    def resolve(word: str) -> list[IPv4Address]:
        node = topo.nodes.get(word)
        if node is not None:
            return [a.ip for i in node.interfaces.values() for a in i.addresses]
        try:
            return [IPv4Address(word)]
        except ValueError:
            raise BadInput(f"--flow: host '{word}' is neither a node of the topology nor an IPv4 address") from None

    return resolve


class _Ends:
    """Which node owns each address (memoised: a capture has few addresses, a flow list many)."""

    def __init__(self, topo: Topology) -> None:
        self.topo, self.seen = topo, {}

    def __call__(self, a: int, b: int) -> bool | None:
        """True: two nodes of the topology; False: one end is a node (the other may be the far side
        of a NAT); None: neither end is, or both are one node."""
        na, nb = (self.seen.setdefault(x, self.topo.owner(IPv4Address(x))) for x in (a, b))
        if na is nb or (na is None and nb is None):
            return None
        return na is not None and nb is not None


def _echo_run(taken: set[int], ident: int) -> int:
    """A run id no other run in the captures uses, whose :func:`icmp_id_for` is the echo identifier."""
    hi = 0xE100
    while ((hi << 16) | (ident ^ hi)) in taken:
        hi += 1
    taken.add(run := (hi << 16) | (ident ^ hi))
    return run


def _flow_run(taken: set[int]) -> int:
    run = 0xE2000000 + len(taken)  # past the ids handed out so far (usually)
    while run in taken:
        run += 1
    taken.add(run)
    return run


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique key columns, group index per column) of a (fields × rows) array, like
    ``np.unique(axis=1)`` but by lexsort (several times faster on millions of rows)."""
    n = keys.shape[1]
    if n == 0:
        return keys, np.zeros(0, np.int64)
    order = np.lexsort(keys[::-1])
    k = keys[:, order]
    new = np.ones(n, bool)
    new[1:] = (k[:, 1:] != k[:, :-1]).any(axis=0)
    inv = np.empty(n, np.int64)
    inv[order] = np.cumsum(new) - 1
    return k[:, new], inv


def _echo_flows(obs: Observations, topo: Topology, rows: np.ndarray, kind: np.ndarray, run: np.ndarray,
                seq: np.ndarray, taken: set[int]) -> list[Flow]:
    if not len(rows):
        return []
    req = obs["cls"][rows] == PacketClass.ECHO_REQUEST
    src, dst = obs["src"][rows], obs["dst"][rows]
    a, b = np.where(req, src, dst), np.where(req, dst, src)  # requester, responder
    keys, inv = _groups(np.stack([a, b, obs["icmp_id"][rows].astype(np.uint32)]))
    ends = _Ends(topo)
    between = [ends(int(x), int(y)) for x, y in zip(keys[0].tolist(), keys[1].tolist(), strict=True)]
    runs = np.array([_echo_run(taken, int(i)) if w is not None else 0 for i, w in zip(keys[2].tolist(), between,
                                                                                      strict=True)], np.uint32)
    r = rows[runs[inv] > 0]
    kind[r], run[r], seq[r] = ProbeKind.PING, runs[inv][runs[inv] > 0], obs["icmp_seq"][r]
    # ICMP errors quoting a packet of a flow (either way) carry its identity in their quote.
    by_key = {(int(x), int(y), int(i)): int(q) for x, y, i, q in zip(*keys.tolist(), runs.tolist(), strict=True) if q}
    for e in np.flatnonzero((obs["cls"] == PacketClass.ICMP_ERROR) & (obs["inner_proto"] == 1)
                            & (obs["tag_kind"] == 0)).tolist():
        x, y, i = int(obs["inner_src"][e]), int(obs["inner_dst"][e]), int(obs["inner_id"][e])
        q = by_key.get((x, y, i)) or by_key.get((y, x, i))
        if q:
            kind[e], run[e], seq[e] = ProbeKind.PING, q, obs["inner_seq"][e]
    return [Flow(int(q), ProbeKind.PING, 1, IPv4Address(int(keys[0, f])), IPv4Address(int(keys[1, f])),
                 ident=int(keys[2, f]), between=bool(between[f]))
            for f, q in enumerate(runs.tolist()) if q]


def _other_flows(obs: Observations, topo: Topology, rows: np.ndarray, kind: np.ndarray, run: np.ndarray,
                 seq: np.ndarray, taken: set[int]) -> list[Flow]:
    if not len(rows):
        return []
    src, dst, sp, dp = (obs[c][rows].astype(np.uint32) for c in ("src", "dst", "sport", "dport"))
    proto = obs["proto"][rows].astype(np.uint32)
    low = (src < dst) | ((src == dst) & (sp <= dp))  # the flow's key is the same both ways
    keys, inv = _groups(np.stack([np.where(low, src, dst), np.where(low, sp, dp), np.where(low, dst, src),
                                  np.where(low, dp, sp), proto]))
    ends = _Ends(topo)
    between = [ends(int(x), int(y)) for x, y in zip(keys[0].tolist(), keys[2].tolist(), strict=True)]
    nflows = keys.shape[1]
    ts = obs["ts_ns"][rows]
    # The end that sent first starts the flow: its packets go "there", the others "back".
    by_time = np.lexsort((ts, inv))
    first = by_time[np.searchsorted(inv[by_time], np.arange(nflows))]
    back = ((src != src[first][inv]) | (sp != sp[first][inv])).astype(np.uint32)
    # One packet: the same flow, direction, IP ID and invariant L4 bytes; numbered by first sighting,
    # the k-th there 2k, the k-th back 2k + 1.
    pkeys, pinv = _groups(np.stack([inv.astype(np.uint32), back, obs["ipid"][rows].astype(np.uint32),
                                    obs["l4_hash"][rows]]))
    t_first = np.full(pkeys.shape[1], np.iinfo(np.int64).max)
    np.minimum.at(t_first, pinv, ts)
    order = np.lexsort((t_first, pkeys[1], pkeys[0]))  # by flow, direction, then time
    group = pkeys[0, order].astype(np.int64) * 2 + pkeys[1, order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    numbers = np.empty(len(order), np.uint32)
    numbers[order] = 2 * rank + pkeys[1, order]
    runs = np.array([_flow_run(taken) if w is not None else 0 for w in between], np.uint32)
    ok = runs[inv] > 0
    r = rows[ok]
    kind[r], run[r], seq[r] = FLOW_KIND, runs[inv][ok], numbers[pinv][ok]
    esp = np.ones(nflows, bool)
    np.logical_and.at(esp, inv, obs["cls"][rows] == PacketClass.ESP)
    return [Flow(int(q), FLOW_KIND, int(keys[4, f]), IPv4Address(int(src[first[f]])), IPv4Address(int(dst[first[f]])),
                 int(sp[first[f]]), int(dp[first[f]]), esp=bool(esp[f]), between=bool(between[f]))
            for f, q in enumerate(runs.tolist()) if q]


def _counted(obs: Observations, flows: list[Flow]) -> list[Flow]:
    """Each flow with the number of packets it has (requests and replies told apart), NAT sides joined."""
    m = (obs["tag_kind"] > 0) & np.isin(obs["tag_run"], [f.run for f in flows]) & (obs["cls"] != PacketClass.ICMP_ERROR)
    reply = (obs["cls"][m] == PacketClass.ECHO_REPLY).astype(np.uint32)
    uniq, _ = _groups(np.stack([obs["tag_run"][m], obs["tag_seq"][m], reply]))
    count = dict(zip(*(x.tolist() for x in np.unique(uniq[0], return_counts=True)), strict=True))
    return [replace(f, packets=count.get(f.run, 0)) for f in flows]


def _without_ambiguous(obs: Observations, flows: list[Flow]) -> list[Flow]:
    """Untag the packets whose key repeats at one capture point with one TTL: two packets the
    invariants cannot tell apart (a loop repeats a packet with a falling TTL instead)."""
    m = (obs["tag_kind"] > 0) & np.isin(obs["tag_run"], [f.run for f in flows]) & (obs["cls"] != PacketClass.ICMP_ERROR)
    rows = np.flatnonzero(m)
    if not len(rows):
        return flows
    reply = (obs["cls"][rows] == PacketClass.ECHO_REPLY).astype(np.uint32)
    _, inv = _groups(np.stack([obs["tag_run"][rows], obs["tag_seq"][rows], reply,
                               obs["point"][rows].astype(np.uint32), obs["ttl"][rows].astype(np.uint32)]))
    twice = np.bincount(inv)[inv] > 1
    if not twice.any():
        return flows
    bad = np.unique(np.stack([obs["tag_run"][rows[twice]], obs["tag_seq"][rows[twice]]]), axis=1)
    gone = rows[np.isin((obs["tag_run"][rows].astype(np.uint64) << np.uint64(32)) | obs["tag_seq"][rows],
                        (bad[0].astype(np.uint64) << np.uint64(32)) | bad[1])]
    for c in ("tag_kind", "tag_run", "tag_seq"):
        obs[c][gone] = 0
    lost = {r: int(n) for r, n in zip(*np.unique(bad[0], return_counts=True), strict=True)}
    return [replace(f, packets=max(f.packets - lost.get(f.run, 0), 0), ambiguous=lost.get(f.run, 0)) for f in flows]


NAT_WINDOW_NS = 200_000_000  # longest a node may hold a packet between its two sides


def follow_nat(obs: Observations, kind: np.ndarray, run: np.ndarray, seq: np.ndarray, flows: list[Flow]) -> list[Flow]:
    """Join flows that are one flow seen on both sides of a NAT. A packet crossing a node that
    rewrites its addresses, ports or echo identifier keeps its IP ID, length and its echo
    sequence (any other protocol: ``l4_hash``, which leaves ports and checksums out): the same
    such packet at two interfaces of one node within :data:`NAT_WINDOW_NS`, in two flows, is the
    rewrite, visible on both sides. The flow seen first (its sender's side) takes the other's
    packets; tags are rewritten in ``kind``/``run``/``seq`` in place."""
    by_run = {f.run: f for f in flows}
    rows = np.flatnonzero((kind > 0) & np.isin(run, list(by_run)) & (obs["cls"] != PacketClass.ICMP_ERROR))
    if len(rows) < 2:
        return flows
    node_names = [p.rpartition(":")[0] for p in obs.points]
    node_of = np.unique(np.array(node_names or [""]), return_inverse=True)[1].reshape(-1)
    echo = np.isin(obs["cls"][rows], _ECHO)
    ident = np.where(echo, obs["icmp_seq"][rows].astype(np.uint32), obs["l4_hash"][rows])
    key = np.stack([node_of[obs["point"][rows]].astype(np.uint32), obs["ipid"][rows].astype(np.uint32), ident,
                    obs["ip_len"][rows].astype(np.uint32), obs["cls"][rows].astype(np.uint32)])
    _, inv = _groups(key)
    order = np.lexsort((obs["ts_ns"][rows], inv))
    all_runs = np.array(sorted(by_run), np.uint32)
    t_first = np.full(len(all_runs), np.iinfo(np.int64).max)
    np.minimum.at(t_first, np.searchsorted(all_runs, run[rows]), obs["ts_ns"][rows])
    first_seen = dict(zip(all_runs.tolist(), t_first.tolist(), strict=True))
    merged: dict[int, int] = {}  # later run → the run it joins
    seq_map: dict[tuple[int, int], int] = {}  # (later run, its seq) → seq in the joined run
    where: dict[tuple[int, int], str] = {}
    # Consecutive rows (in time) of one key: the same packet at two points of one node, in two flows.
    a_rows, b_rows = rows[order[:-1]], rows[order[1:]]
    pair = (inv[order][1:] == inv[order][:-1]) & (run[a_rows] != run[b_rows])
    pair &= (obs["point"][a_rows] != obs["point"][b_rows]) & (obs["ts_ns"][b_rows] - obs["ts_ns"][a_rows] <= NAT_WINDOW_NS)
    for a, b in zip(a_rows[pair].tolist(), b_rows[pair].tolist(), strict=True):
        ra, rb = int(run[a]), int(run[b])
        origin, other = (ra, rb) if first_seen[ra] <= first_seen[rb] else (rb, ra)
        r_origin, r_other = (a, b) if origin == ra else (b, a)
        if merged.get(other, origin) != origin or origin in merged or other in merged.values():
            continue  # joined another flow already, or a chain of NATs: never guess
        merged[other] = origin
        seq_map[(other, int(seq[r_other]))] = int(seq[r_origin])
        where.setdefault((origin, other), node_names[int(obs["point"][a])])
    if not merged:
        return flows
    for other, origin in merged.items():
        mine = np.flatnonzero((run == other) & (kind > 0))
        top = int(seq[run == origin].max())
        for q in distinct(seq[mine]).tolist():
            if (other, q) in seq_map:
                continue
            if by_run[origin].kind != FLOW_KIND:
                seq_map[(other, q)] = q  # an echo keeps its sequence across the NAT
                continue
            top += 1 if (top + 1) % 2 == q % 2 else 2  # seen only beyond the NAT: a new number, same way
            seq_map[(other, q)] = top
        new = np.array([seq_map[(other, int(q))] for q in seq[mine]], np.uint32)
        kind[mine], run[mine], seq[mine] = by_run[origin].kind, origin, new
    out = []
    for f in flows:
        if f.run in merged:
            continue
        joined = [by_run[o] for o, r in merged.items() if r == f.run]
        notes = tuple(f"NAT at {where[(f.run, g.run)]}: the flow continues as {g.text().split(' (')[0]} (followed by "
                      f"IP ID and {'echo sequence' if g.ident is not None else 'first bytes'})" for g in joined)
        out.append(replace(f, nat=notes))
    return out
