"""Correlate: which capture point on the expected path saw which probe.

Input is columnar observations and one expected path; output is a
(probes × hops) matrix of :class:`Sighting` codes plus first-seen times and
the ESP identity each probe had on the untrusted hops. Cleartext hops match
on the probe tag; ESP hops match on ``(SPI, seq)``, which is learnt at the
encapsulating gateway (the first ESP packet of the SA leaving after the
probe entered in the clear) or, failing that, at the decapsulating one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracer.model.direction import Direction
from tracer.model.distinct import distinct
from tracer.model.observations import Observations, PacketClass
from tracer.model.path import Esp, ExpectedPath
from tracer.model.probe import DecryptedTags
from tracer.model.topology import Topology
from tracer.model.verdict import Sighting
from tracer.probes import probe_type

# Longest time a gateway may hold a packet between its cleartext and ESP
# sides; user-space ESP (kernel-libipsec) takes well under a millisecond.
ENCAP_WINDOW_NS = 200_000_000

_CODES = list(Sighting)
SEEN, MISSED, UNOBSERVED, UNRELIABLE, UNKNOWN, GAP, ELSEWHERE, LEAKED = (np.int8(_CODES.index(s)) for s in _CODES)


@dataclass
class SightingMatrix:
    """Per probe and hop of one direction: how (and when) it was seen."""

    seqs: np.ndarray  # probe sequence numbers, sorted
    codes: np.ndarray  # int8 [probe, hop], index into list(Sighting)
    times: np.ndarray  # int64 [probe, hop], -1 where not seen
    esp_keys: np.ndarray  # uint64 [probe, hop]: SPI << 32 | ESP seq on ESP hops when associated, else 0
    leaks: list[str]  # ESP hops where the probe was seen in the clear instead
    confirmed: int = 0  # probes whose ESP carrier was identified by decryption
    disagreements: int = 0  # probes where the keyless association named another ESP packet


def probe_rows(obs: Observations, run: int, kind: int, direction: Direction) -> np.ndarray:
    """Rows that carry this run's tag, travelling in ``direction`` (the kind says what its
    requests and replies look like)."""
    tagged = (obs["tag_run"] == run) & (obs["tag_kind"] == int(kind))
    return tagged & probe_type(kind).rows(obs, direction)


def correlate(
    obs: Observations,
    topo: Topology,
    path: ExpectedPath,
    run: int,
    kind: int,
    direction: Direction,
    seqs: np.ndarray,
    drops: dict[str, int] | None = None,
    decrypted: DecryptedTags | None = None,
) -> SightingMatrix:
    """``decrypted``: what ESP decryption with keys found inside each opened packet. It
    identifies ESP hops directly; the keyless association is then only the fallback (and is
    cross-checked). Where every ESP packet at a hop decrypted, a probe none of them carries
    was positively not there."""
    drops = drops or {}
    n, m = len(seqs), len(path.hops)
    codes = np.full((n, m), MISSED, np.int8)
    times = np.full((n, m), -1, np.int64)
    esp_keys = np.zeros((n, m), np.uint64)
    leaks: list[str] = []
    known = _decrypted_keys(decrypted.keys_of(run, kind, direction) if decrypted else {}, seqs)
    all_decrypted = np.array([(spi << 32) | q for spi, q in decrypted.carriers], np.uint64) if decrypted else None
    disagreements = 0

    # The probe's own rows grouped by point once, so each hop costs its rows, not all of them.
    rows = np.flatnonzero(probe_rows(obs, run, kind, direction))
    rows = rows[np.argsort(obs["point"][rows], kind="stable")]
    p_seq, p_ts = obs["tag_seq"][rows], obs["ts_ns"][rows]
    bounds = np.searchsorted(obs["point"][rows], np.arange(len(obs.points) + 1))

    for h, hop in enumerate(path.hops):
        pidx = obs.point_index(hop.point)
        if pidx < 0:
            codes[:, h] = UNOBSERVED
            continue
        at = slice(bounds[pidx], bounds[pidx + 1])
        first_seen = _first_times(seqs, p_seq[at], p_ts[at])
        if hop.esp is None:
            times[:, h] = first_seen
            codes[first_seen >= 0, h] = SEEN
        elif (first_seen >= 0).any():
            # The tagged probe in the clear where it should be ESP: it left the
            # expected path (no SA), so this is a leak, not a sighting.
            leaks.append(hop.point)
        if drops.get(hop.point, 0) > 0:
            codes[(codes[:, h] == MISSED), h] = UNRELIABLE

    for seg in _esp_segments(path):
        disagreements += _follow_esp(obs, topo, path, seg, codes, times, esp_keys, known, all_decrypted)

    # A probe missed at one point but seen further down is capture noise.
    last_seen = last_index(codes == SEEN)
    before = np.arange(m)[None, :] < last_seen[:, None]
    codes[before & np.isin(codes, (MISSED, UNRELIABLE, UNKNOWN))] = GAP
    return SightingMatrix(seqs, codes, times, esp_keys, leaks, int((known != 0).sum()), disagreements)


def _decrypted_keys(carriers: dict[int, tuple[int, int]], seqs: np.ndarray) -> np.ndarray:
    """Per probe, the SPI << 32 | seq of the ESP packet that decryption showed carries it (0: none)."""
    out = np.zeros(len(seqs), np.uint64)
    for q, (spi, esp_seq) in carriers.items():
        p = int(np.searchsorted(seqs, q))
        if p < len(seqs) and seqs[p] == q:
            out[p] = (spi << 32) | esp_seq
    return out


def last_index(mask: np.ndarray) -> np.ndarray:
    """Per row, the last column where ``mask`` is true; -1 where it never is."""
    m = mask.shape[1]
    rev = np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), m - 1 - rev, -1)


def _first_times(want: np.ndarray, row_keys: np.ndarray, row_ts: np.ndarray) -> np.ndarray:
    """Earliest timestamp among rows whose key equals each wanted key; -1 where absent."""
    out = np.full(len(want), -1, np.int64)
    if len(row_keys) == 0 or len(want) == 0:
        return out
    # The wanted keys are few (one per probe), the rows many (all of a point's ESP): look each
    # row up among the sorted wanted keys, and sort only the rows that match.
    wanted = distinct(want)
    pos = np.minimum(np.searchsorted(wanted, row_keys), len(wanted) - 1)
    hit = np.flatnonzero(wanted[pos] == row_keys)
    if not len(hit):
        return out
    order = np.lexsort((row_ts[hit], row_keys[hit]))  # by key, then time: a key's first row is its earliest
    keys, ts = row_keys[hit][order], row_ts[hit][order]
    uniq, first = np.unique(keys, return_index=True)
    pos = np.minimum(np.searchsorted(uniq, want), len(uniq) - 1)
    ok = uniq[pos] == want
    out[ok] = ts[first[pos[ok]]]
    return out


def _esp_segments(path: ExpectedPath) -> list[tuple[int, int]]:
    """(first, last) hop indices of each run of ESP hops."""
    segs, start = [], None
    for i, hop in enumerate(path.hops):
        if hop.esp is not None and start is None:
            start = i
        if hop.esp is None and start is not None:
            segs.append((start, i - 1))
            start = None
    if start is not None:
        segs.append((start, len(path.hops) - 1))
    return segs


def _esp_rows(obs: Observations, point: str, esp: Esp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts, spi, seq) of the SA's ESP packets at ``point``, time-sorted."""
    rows, _ = obs.esp_rows(obs.point_rows(obs.point_index(point)))
    m = (obs["src"][rows] == int(esp.src)) & (obs["dst"][rows] == int(esp.dst))
    if esp.spi is not None:
        m &= obs["spi"][rows] == esp.spi
    rows = rows[m]
    ts = obs["ts_ns"][rows]
    order = np.argsort(ts, kind="stable")
    return ts[order], obs["spi"][rows][order], obs["esp_seq"][rows][order]


def _sa_clear_ts(obs: Observations, topo: Topology, point: str, esp: Esp) -> np.ndarray:
    """Timestamps of all cleartext packets at ``point`` that belong in the SA
    (probes and background alike): they all consume ESP sequence numbers."""
    tunnel = next(t for t in topo.tunnels if t.name == esp.tunnel)
    sender = tunnel.left if tunnel.left.address == esp.src else tunnel.right
    receiver = tunnel.right if sender is tunnel.left else tunnel.left
    at = obs.point_rows(obs.point_index(point))
    m = (obs["ipver"][at] == 4) & (obs["cls"][at] != PacketClass.ESP)
    src, dst = obs["src"][at][m], obs["dst"][at][m]
    sel = in_any(src, sender.subnets) & in_any(dst, receiver.subnets)
    return np.sort(obs["ts_ns"][at][m][sel])


def in_any(addrs: np.ndarray, nets: tuple) -> np.ndarray:
    """Which of the IPv4 addresses (host-order uint32) lie in any of the networks ``nets``."""
    out = np.zeros(len(addrs), bool)
    for net in nets:
        out |= (addrs & np.uint32(int(net.netmask))) == np.uint32(int(net.network_address))
    return out


def _follow_esp(
    obs: Observations,
    topo: Topology,
    path: ExpectedPath,
    seg: tuple[int, int],
    codes: np.ndarray,
    times: np.ndarray,
    esp_keys: np.ndarray,
    decrypted_keys: np.ndarray,
    all_decrypted: np.ndarray | None,
) -> int:
    """Fill the ESP hops of one tunnel segment; return how many keyless associations
    contradicted decryption."""
    first, last = seg
    esp = path.hops[first].esp
    assert esp is not None
    enc, dec = first - 1, last + 1
    n = len(codes)
    keys = np.zeros(n, np.uint64)  # the probe's SPI << 32 | seq, 0 while unknown
    no_esp = np.zeros(n, bool)  # seen entering the SA, and no ESP at all left after it
    # Captured (without drops) where it should enter the SA, and not there: it is on no ESP hop.
    never_entered = codes[:, enc] == MISSED if enc >= 0 else np.zeros(n, bool)
    # Learn each probe's (SPI, seq) where it enters the SA; failing that, where it leaves it.
    for clear_hop, esp_hop, entering in ((enc, first, True), (dec, last, False)):
        if not 0 <= clear_hop < len(path.hops) or obs.point_index(path.hops[clear_hop].point) < 0:
            continue
        if obs.point_index(path.hops[esp_hop].point) < 0:
            continue
        todo = (times[:, clear_hop] >= 0) & (keys == 0)
        found, none_in_window = _match(_esp_rows(obs, path.hops[esp_hop].point, esp),
                                       _sa_clear_ts(obs, topo, path.hops[clear_hop].point, esp),
                                       times[todo, clear_hop], entering)
        keys[todo] = found
        if entering:
            no_esp[todo] = none_in_window
    # With keys, the tag inside the ESP packet says which probe it carries.
    with_keys = decrypted_keys != 0
    disagreements = int((with_keys & (keys != 0) & (keys != decrypted_keys)).sum())
    keys[with_keys] = decrypted_keys[with_keys]
    no_esp[with_keys] = False
    # One ESP packet carries one probe: a carrier claimed twice (a probe whose neighbour is
    # missing from the clear capture takes the neighbour's, which the other side or the keys
    # then name too) is only kept where decryption proved it.
    claimed = np.sort(keys[keys != 0])
    twice = claimed[1:][claimed[1:] == claimed[:-1]]
    if len(twice):
        pos = np.minimum(np.searchsorted(twice, keys), len(twice) - 1)
        keys[~with_keys & (twice[pos] == keys)] = 0
    for h in range(first, last + 1):
        pidx = obs.point_index(path.hops[h].point)
        if pidx < 0:
            continue
        esp_rows, row_keys = obs.esp_rows(obs.point_rows(pidx))
        unknown = (keys == 0) & (codes[:, h] == MISSED)
        # Nothing left the encapsulating gateway for it: a plain miss at the first
        # ESP hop; beyond that we cannot tell which ESP packet would be its, unless
        # keys opened every ESP packet here and none was the probe.
        plain_miss = (no_esp & (h == first)) | never_entered
        opened_all = all_decrypted is not None and bool(np.isin(row_keys, all_decrypted).all())
        if not opened_all:
            codes[unknown & ~plain_miss, h] = UNKNOWN
        known = keys != 0
        esp_keys[known, h] = keys[known]
        first_ts = _first_times(keys, row_keys, obs["ts_ns"][esp_rows])
        hit = known & (first_ts >= 0)
        codes[hit, h] = SEEN
        times[hit, h] = first_ts[hit]
    return disagreements


def _match(
    rows: tuple[np.ndarray, np.ndarray, np.ndarray], clear: np.ndarray, t: np.ndarray, entering: bool
) -> tuple[np.ndarray, np.ndarray]:
    """For cleartext packets seen at times ``t``, the ESP packet that carried each: entering
    the SA, the first ESP leaving after t; leaving it, the last ESP arriving before t.
    Returns SPI << 32 | seq per packet (0 when ambiguous or absent) and whether there was
    no ESP packet in the window at all.

    FIFO bounds the window by the neighbouring ESP packet: cleartext that entered before the
    previous ESP left was carried by it or earlier. Any other SA cleartext left in the window
    could be the one this ESP carried, so then we say "unknown" instead of guessing.
    """
    ts, spi, seq = rows
    t = t.astype(np.int64)
    big = np.iinfo(np.int64).max // 4
    pad = np.concatenate(([-big], ts, [big]))  # pad[j + 1] == ts[j]
    if entering:
        j = np.searchsorted(ts, t, "left")
        found = (j < len(ts)) & (pad[j + 1] - t <= ENCAP_WINDOW_NS)
        lo, hi = np.maximum(t - ENCAP_WINDOW_NS, pad[j] + 1), pad[j + 1]
    else:
        j = np.searchsorted(ts, t, "right") - 1
        found = (j >= 0) & (t - pad[j + 1] <= ENCAP_WINDOW_NS)
        lo, hi = pad[j + 1], np.minimum(t + ENCAP_WINDOW_NS, pad[j + 2] - 1)
    alone = np.searchsorted(clear, hi, "right") - np.searchsorted(clear, lo, "left") <= 1
    jj = np.clip(j, 0, max(len(ts) - 1, 0))
    key = (spi[jj].astype(np.uint64) << np.uint64(32)) | seq[jj].astype(np.uint64) if len(ts) else np.zeros(len(t), np.uint64)
    return np.where(found & alone, key, np.uint64(0)), ~found
