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
from tracer.model.observations import Observations, PacketClass
from tracer.model.tag import ProbeKind, icmp_id_for
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
    packets: int = 0  # packets told apart (requests and replies)
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
    taken = set(np.unique(obs["tag_run"][obs["tag_kind"] > 0]).tolist())
    flows = _echo_flows(obs, topo, np.flatnonzero(echo), kind, run, seq, taken)
    flows += _other_flows(obs, topo, np.flatnonzero(other), kind, run, seq, taken)
    if not flows:
        return obs, []
    flows = [f for f in follow_nat(obs, kind, run, seq, flows) if f.between]
    cols = dict(obs.cols) | {"tag_kind": kind, "tag_run": run, "tag_seq": seq}
    tagged = Observations(cols, obs.points, obs.sources)
    flows = [_without_ambiguous(tagged, f) for f in flows]
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


def _between_nodes(topo: Topology, a: int, b: int) -> bool | None:
    """True: two nodes of the topology; False: one end is a node (the other side of a NAT, maybe);
    None: neither end is, or both are one node."""
    na, nb = topo.owner(IPv4Address(a)), topo.owner(IPv4Address(b))
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
    run = 0xE2000000
    while run in taken:
        run += 1
    taken.add(run)
    return run


def _echo_flows(obs: Observations, topo: Topology, rows: np.ndarray, kind: np.ndarray, run: np.ndarray,
                seq: np.ndarray, taken: set[int]) -> list[Flow]:
    if not len(rows):
        return []
    req = obs["cls"][rows] == PacketClass.ECHO_REQUEST
    src, dst = obs["src"][rows], obs["dst"][rows]
    a, b = np.where(req, src, dst), np.where(req, dst, src)  # requester, responder
    ident = obs["icmp_id"][rows]
    keys, inv = np.unique(np.stack([a, b, ident.astype(np.uint32)]), axis=1, return_inverse=True)
    inv = inv.reshape(-1)
    flows = []
    errors = np.flatnonzero((obs["cls"] == PacketClass.ICMP_ERROR) & (obs["inner_proto"] == 1) & (obs["tag_kind"] == 0))
    for f in range(keys.shape[1]):
        fa, fb, fid = (int(x) for x in keys[:, f])
        if (between := _between_nodes(topo, fa, fb)) is None:
            continue
        r = rows[inv == f]
        fr = _echo_run(taken, fid)
        assert icmp_id_for(fr) == fid
        kind[r], run[r], seq[r] = ProbeKind.PING, fr, obs["icmp_seq"][r]
        # ICMP errors quoting a packet of the flow (either way) carry its identity in their quote.
        e = errors[(obs["inner_id"][errors] == fid) & (
            ((obs["inner_src"][errors] == fa) & (obs["inner_dst"][errors] == fb))
            | ((obs["inner_src"][errors] == fb) & (obs["inner_dst"][errors] == fa)))]
        kind[e], run[e], seq[e] = ProbeKind.PING, fr, obs["inner_seq"][e]
        n = len(np.unique(np.stack([obs["cls"][r], obs["icmp_seq"][r]]), axis=1)[0])
        flows.append(Flow(fr, ProbeKind.PING, 1, IPv4Address(fa), IPv4Address(fb), ident=fid, packets=n,
                          between=between))
    return flows


def _other_flows(obs: Observations, topo: Topology, rows: np.ndarray, kind: np.ndarray, run: np.ndarray,
                 seq: np.ndarray, taken: set[int]) -> list[Flow]:
    if not len(rows):
        return []
    src, dst, sp, dp = (obs[c][rows].astype(np.uint32) for c in ("src", "dst", "sport", "dport"))
    proto = obs["proto"][rows].astype(np.uint32)
    low = (src < dst) | ((src == dst) & (sp <= dp))  # the flow's key is the same both ways
    ends = np.stack([np.where(low, src, dst), np.where(low, sp, dp), np.where(low, dst, src), np.where(low, dp, sp), proto])
    keys, inv = np.unique(ends, axis=1, return_inverse=True)
    inv = inv.reshape(-1)
    ts = obs["ts_ns"][rows]
    flows = []
    for f in range(keys.shape[1]):
        if (between := _between_nodes(topo, int(keys[0, f]), int(keys[2, f]))) is None:
            continue
        mine = np.flatnonzero(inv == f)
        first = mine[np.argmin(ts[mine])]
        back = (src[mine] != src[first]) | (sp[mine] != sp[first])  # the end that sent first starts the flow
        # One packet: the same direction, IP ID and invariant L4 bytes; numbered by first sighting.
        pk = np.stack([back.astype(np.uint32), obs["ipid"][rows[mine]].astype(np.uint32), obs["l4_hash"][rows[mine]]])
        pkeys, pinv = np.unique(pk, axis=1, return_inverse=True)
        pinv = pinv.reshape(-1)
        t_first = np.full(pkeys.shape[1], np.iinfo(np.int64).max)
        np.minimum.at(t_first, pinv, ts[mine])
        order = np.argsort(t_first, kind="stable")
        is_back = pkeys[0, order] == 1
        numbers = np.empty(len(order), np.uint32)  # k-th packet there: 2k; k-th back: 2k + 1
        numbers[order[~is_back]] = 2 * np.arange((~is_back).sum(), dtype=np.uint32)
        numbers[order[is_back]] = 2 * np.arange(is_back.sum(), dtype=np.uint32) + 1
        fr = _flow_run(taken)
        r = rows[mine]
        kind[r], run[r], seq[r] = FLOW_KIND, fr, numbers[pinv]
        flows.append(Flow(fr, FLOW_KIND, int(keys[4, f]), IPv4Address(int(src[first])), IPv4Address(int(dst[first])),
                          int(sp[first]), int(dp[first]), esp=bool((obs["cls"][r] == PacketClass.ESP).all()),
                          packets=len(order), between=between))
    return flows


def _without_ambiguous(obs: Observations, flow: Flow) -> Flow:
    """Untag the flow's packets whose key repeats at one capture point with one TTL: two packets
    the invariants cannot tell apart (a loop repeats a packet with a falling TTL instead)."""
    m = (obs["tag_run"] == flow.run) & (obs["tag_kind"] == flow.kind) & (obs["cls"] != PacketClass.ICMP_ERROR)
    rows = np.flatnonzero(m)
    if not len(rows):
        return replace(flow, packets=0)
    direction = np.isin(obs["cls"][rows], (PacketClass.ECHO_REPLY,)).astype(np.uint32)
    k = np.stack([obs["tag_seq"][rows], direction, obs["point"][rows].astype(np.uint32), obs["ttl"][rows].astype(np.uint32)])
    _, inv, counts = np.unique(k, axis=1, return_inverse=True, return_counts=True)
    twice = counts[inv.reshape(-1)] > 1
    if not twice.any():
        return flow
    bad = np.unique(obs["tag_seq"][rows[twice]])
    gone = m & np.isin(obs["tag_seq"], bad)
    obs["tag_kind"][gone] = 0
    obs["tag_run"][gone] = 0
    obs["tag_seq"][gone] = 0
    return replace(flow, packets=max(flow.packets - len(bad), 0), ambiguous=len(bad))


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
    _, inv = np.unique(key, axis=1, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.lexsort((obs["ts_ns"][rows], inv))
    first_seen = {f.run: int(obs["ts_ns"][rows[run[rows] == f.run]].min()) for f in flows}
    merged: dict[int, int] = {}  # later run → the run it joins
    seq_map: dict[tuple[int, int], int] = {}  # (later run, its seq) → seq in the joined run
    where: dict[tuple[int, int], str] = {}
    same = inv[order][1:] == inv[order][:-1]
    for i in np.flatnonzero(same).tolist():
        a, b = int(rows[order[i]]), int(rows[order[i + 1]])
        ra, rb = int(run[a]), int(run[b])
        if ra == rb or obs["point"][a] == obs["point"][b] or obs["ts_ns"][b] - obs["ts_ns"][a] > NAT_WINDOW_NS:
            continue
        origin, other = (ra, rb) if first_seen[ra] <= first_seen[rb] else (rb, ra)
        r_origin, r_other = (a, b) if origin == ra else (b, a)
        if merged.get(other, origin) != origin:
            continue  # already joined another flow: never guess between two
        merged[other] = origin
        seq_map[(other, int(seq[r_other]))] = int(seq[r_origin])
        where.setdefault((origin, other), node_names[int(obs["point"][a])])
    if not merged:
        return flows
    for other, origin in merged.items():
        mine = np.flatnonzero((run == other) & (kind > 0))
        top = int(seq[run == origin].max())
        for q in np.unique(seq[mine]).tolist():
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
        out.append(replace(f, packets=f.packets + sum(max(g.packets - f.packets, 0) for g in joined), nat=notes))
    return out
