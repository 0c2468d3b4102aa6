"""Observed paths: every sighting of each probe anywhere in the captures — in the clear by
its tag, as ESP by its carrier's (SPI, seq) — in time order, and what that says beside the
expected path: a leak, a detour, a point the topology lacks, a loop.

Built for the probes whose sightings do not simply follow the expected path (finding them
is vectorised; objects are made only for those), so a run that went as expected costs
almost nothing here.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import TYPE_CHECKING

import numpy as np

from tracer.analysis.compare import divergence
from tracer.analysis.correlate import SightingMatrix, probe_rows
from tracer.analysis.icmp import icmp_name
from tracer.model.direction import Direction
from tracer.model.distinct import distinct
from tracer.model.observations import Observations, PacketClass
from tracer.model.observed import Divergence, Form, Loop, ObservedProbe, Place, Seen
from tracer.model.path import ExpectedPath
from tracer.model.point import CapturePoint
from tracer.model.topology import Topology

if TYPE_CHECKING:
    import networkx as nx

_PLACES = list(Place)
_EXPECTED, _LEAK, _OFF, _UNMAPPED = (np.int8(_PLACES.index(p)) for p in _PLACES)
ICMP_TIME_EXCEEDED = 11


def observe(obs: Observations, topo: Topology, path: ExpectedPath, run: int, kind: int, direction: Direction,
            m: SightingMatrix, carriers: tuple[np.ndarray, np.ndarray] | None = None) -> dict[int, ObservedProbe]:
    """Probe index (row of ``m``) → its observed path, for probes that left the expected path,
    were seen where the topology has no interface, or looped. ``carriers``: :func:`carrier_rows`
    of ``m`` when the caller has them."""
    exp_form = np.zeros(max(len(obs.points), 1), np.int8)  # per point: 0 off the path, 1 clear, 2 ESP
    for hop in path.hops:
        i = obs.point_index(hop.point)
        if i >= 0:
            exp_form[i] = 2 if hop.esp else 1
    in_topo = np.array([topo.interface(p) is not None for p in obs.points] or [False])

    clear = _clear_rows(obs, run, kind, direction, m.seqs)
    esp = carrier_rows(obs, m) if carriers is None else carriers
    rows = np.concatenate([clear[0], esp[0]])
    probe = np.concatenate([clear[1], esp[1]])
    form = np.concatenate([np.zeros(len(clear[0]), np.int8), np.ones(len(esp[0]), np.int8)])
    pt = obs["point"][rows]
    want = np.where(form == 0, 1, 2)
    place = np.where(exp_form[pt] == want, _EXPECTED,
                     np.where((form == 0) & (exp_form[pt] == 2), _LEAK, np.where(in_topo[pt], _OFF, _UNMAPPED)))
    interesting = set(distinct(probe[place != _EXPECTED]).tolist()) | _looping(probe, pt, obs["ttl"][rows], form)
    if not interesting:
        return {}
    # The interesting probes' sightings, grouped by probe and in time order within each, cut into
    # one slice per probe. Equal times (microsecond captures of fast hops, e.g. both ends of a
    # veth) follow the expected path's order; beyond that (stable) clear comes before ESP.
    hop_of = np.full(max(len(obs.points), 1), len(path.hops), np.int32)
    for h, hop in reversed(list(enumerate(path.hops))):
        if (i := obs.point_index(hop.point)) >= 0:
            hop_of[i] = h
    pick = np.flatnonzero(np.isin(probe, list(interesting)))
    pick = pick[np.lexsort((hop_of[pt[pick]], obs["ts_ns"][rows[pick]], probe[pick]))]
    cuts = np.flatnonzero(np.diff(probe[pick])) + 1
    quoting = _quoting(obs, run, kind)
    out = {}
    ways: dict[tuple[tuple[str, Form, Place], ...], Divergence | None] = {}  # without a loop: one per way taken
    for part in np.split(pick, cuts):
        p = int(probe[part[0]])
        seen = tuple(_seen(obs, int(r), Form.CLEAR if f == 0 else Form.ESP, _PLACES[int(pl)])
                     for r, f, pl in zip(rows[part].tolist(), form[part].tolist(), place[part].tolist(), strict=True))
        seq = int(m.seqs[p])
        errors = quoting[obs["tag_seq"][quoting] == seq]
        loop = find_loop(seen, _expired_from(obs, errors))
        if loop is None:
            way = tuple((s.point, s.form, s.place) for s in seen)
            div = ways[way] if way in ways else ways.setdefault(way, divergence(topo, path, seen, None))
        else:
            div = divergence(topo, path, seen, loop)
        out[p] = ObservedProbe(seq, direction, seen, div, loop, _quoted(obs, errors))
    return out


def _quoting(obs: Observations, run: int, kind: int) -> np.ndarray:
    """Rows of the ICMP errors whose quote carries a tag of this run, in capture order."""
    m = (obs["cls"] == PacketClass.ICMP_ERROR) & (obs["tag_run"] == run) & (obs["tag_kind"] == kind)
    return np.flatnonzero(m)


def _quoted(obs: Observations, rows: np.ndarray) -> tuple[str, ...]:
    """ICMP errors (``rows``) whose quote carries this probe's tag: who answered what about it, seen where."""
    out: dict[str, None] = {}
    for r in rows.tolist():
        name = icmp_name(int(obs["icmp_type"][r]), int(obs["icmp_code"][r]))
        out[f"ICMP {name} from {IPv4Address(int(obs['src'][r]))} (seen at {obs.points[int(obs['point'][r])]})"] = None
    return tuple(out)


def _clear_rows(obs: Observations, run: int, kind: int, direction: Direction, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, probe index) of the tagged probe itself, anywhere."""
    rows = np.flatnonzero(probe_rows(obs, run, kind, direction))
    return _known(rows, obs["tag_seq"][rows], seqs)


def carrier_rows(obs: Observations, m: SightingMatrix) -> tuple[np.ndarray, np.ndarray]:
    """(rows, probe index) of ESP packets whose (SPI, seq) is a probe's carrier, anywhere."""
    keyed = m.esp_keys != 0
    if not keyed.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p_idx, h_idx = np.nonzero(keyed)
    keys, first = np.unique(m.esp_keys[p_idx, h_idx], return_index=True)
    owner = p_idx[first]
    rows, row_keys = obs.esp_rows()
    pos = np.minimum(np.searchsorted(keys, row_keys), len(keys) - 1)
    hit = keys[pos] == row_keys
    return rows[hit], owner[pos[hit]]


def _known(rows: np.ndarray, row_seq: np.ndarray, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(seqs) == 0 or len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pos = np.minimum(np.searchsorted(seqs, row_seq), len(seqs) - 1)
    ok = seqs[pos] == row_seq
    return rows[ok], pos[ok]


def _looping(probe: np.ndarray, pt: np.ndarray, ttl: np.ndarray, form: np.ndarray) -> set[int]:
    """Probes seen at one point with more than one TTL (in the clear): the same packet came round again."""
    c = form == 0
    if not c.any():
        return set()
    # Only a (probe, point) seen more than once can have two TTLs; counted without a sort when the
    # table is small (the usual run: each probe once per point, nothing left to sort).
    pair = probe[c].astype(np.int64) * (int(pt.max()) + 1) + pt[c]
    if int(pair.max()) < 8 * len(pair) + (1 << 20):
        c[c] = np.bincount(pair)[pair] > 1
        if not c.any():
            return set()
    # (probe, point, TTL) packed in one integer (point < 2**16, TTL < 2**8): a plain sort, not
    # np.unique over stacked rows (a sort of void records, ~20x slower)
    trip = np.sort((probe[c].astype(np.int64) << 24) | (pt[c].astype(np.int64) << 8) | ttl[c].astype(np.int64))
    trip = trip[np.append(True, trip[1:] != trip[:-1])]  # distinct, still sorted
    pair = trip >> 8  # (probe, point): a repeat has a second TTL there
    return set((pair[1:][pair[1:] == pair[:-1]] >> 16).tolist())


def _seen(obs: Observations, r: int, form: Form, place: Place) -> Seen:
    esp = outer = None
    if form == Form.ESP:
        esp = (int(obs["spi"][r]), int(obs["esp_seq"][r]))
        outer = (int(obs["src"][r]), int(obs["sport"][r]), int(obs["dst"][r]), int(obs["dport"][r]))
    return Seen(obs.points[int(obs["point"][r])], int(obs["ts_ns"][r]), form, place, int(obs["ttl"][r]), esp, outer)


def _expired_from(obs: Observations, rows: np.ndarray) -> str | None:
    """Who sent an ICMP time exceeded quoting this probe (``rows``: the ICMP errors quoting it)."""
    rows = rows[obs["icmp_type"][rows] == ICMP_TIME_EXCEEDED]
    return str(IPv4Address(int(obs["src"][rows[0]]))) if len(rows) else None


def find_loop(seen: tuple[Seen, ...], expired_from: str | None = None) -> Loop | None:
    """A loop: some point saw the probe in the clear with several TTLs (each pass one lower)."""
    by_point: dict[str, list[int]] = {}
    for s in seen:
        if s.form == Form.CLEAR:
            by_point.setdefault(s.point, []).append(s.ttl)
    repeated = {p: ttls for p, ttls in by_point.items() if len(set(ttls)) > 1}
    if not repeated:
        return None
    point = max(repeated, key=lambda p: len(repeated[p]))
    nodes = tuple(dict.fromkeys(CapturePoint.parse(p).node for p in repeated))
    ttls = repeated[point]
    return Loop(nodes, point, len(ttls), ttls[0], ttls[-1], expired_from)


def observed_graph(op: ObservedProbe) -> nx.DiGraph:
    """The probe's observed path as a graph of capture points, edges in the order it moved;
    node attributes say how it was seen there (form, place, times)."""
    import networkx as nx  # for the path diagram only; a replay does not load it
    g = nx.DiGraph(seq=op.seq, direction=str(op.direction))
    prev = None
    for i, s in enumerate(op.seen):
        if s.point not in g:
            g.add_node(s.point, form=str(s.form), place=str(s.place), first_ns=s.time_ns, times=0)
        g.nodes[s.point]["times"] += 1
        if prev is not None and prev != s.point:
            g.add_edge(prev, s.point, order=i)
        prev = s.point
    return g


def rewrites(obs: Observations, m: SightingMatrix, carriers: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
    """NAT on the path: the same ESP packet (same SPI and sequence: its identity survives NAT) seen
    with other outer addresses or ports at a later capture point. One line per distinct rewrite.
    ``carriers``: :func:`carrier_rows` of ``m`` when the caller has them."""
    rows, _ = carrier_rows(obs, m) if carriers is None else carriers
    if not len(rows):
        return []
    key = (obs["spi"][rows].astype(np.uint64) << np.uint64(32)) | obs["esp_seq"][rows].astype(np.uint64)
    order = np.lexsort((obs["ts_ns"][rows], key))
    rows, key = rows[order], key[order]
    same = np.flatnonzero(key[1:] == key[:-1])
    a_rows, b_rows = rows[same], rows[same + 1]
    # Only pairs at two points whose outer addresses or ports differ become words (vectorised:
    # a run of many probes has one pair per ESP hop and probe, nearly all unchanged).
    moved = obs["point"][a_rows] != obs["point"][b_rows]
    moved &= np.any([obs[c][a_rows] != obs[c][b_rows] for c in ("src", "sport", "dst", "dport")], axis=0)
    out: dict[str, None] = {}
    for a, b in zip(a_rows[moved].tolist(), b_rows[moved].tolist(), strict=True):
        before, after = _outer(obs, a), _outer(obs, b)
        where = f"between {obs.points[int(obs['point'][a])]} and {obs.points[int(obs['point'][b])]}"
        for side, x, y in (("source", before[0], after[0]), ("destination", before[1], after[1])):
            if x != y:
                out[f"outer {side} rewritten {x} → {y} {where} (NAT); the ESP was followed by SPI and sequence"] = None
    return list(out)


def _outer(obs: Observations, r: int) -> tuple[str, str]:
    def ep(addr: int, port: int) -> str:
        return f"{IPv4Address(addr)}:{port}" if port else str(IPv4Address(addr))

    return ep(int(obs["src"][r]), int(obs["sport"][r])), ep(int(obs["dst"][r]), int(obs["dport"][r]))
