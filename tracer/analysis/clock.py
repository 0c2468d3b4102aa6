"""Clock offsets of remote capture points (pure: observations in, observations out).

Capture points in network namespaces of one host share that host's clock.
A point captured on another host (over SSH) is stamped by *its* clock, which
may be off by microseconds (PTP), milliseconds (NTP) or seconds (nothing).
Loss location does not need a common clock, but per-hop delays, plots and
anything that orders events across hosts do, so each remote node gets an
offset estimated from the packets themselves.

Convention: ``offset(node) = node's clock − reference clock`` in ns; the
reference is the clock of the local (non-remote) nodes. A packet crossing a
wire from a local point A to a remote point B gives ``t_B − t_A = d + offset``;
one crossing from B to A gives ``t_A − t_B = d − offset`` (d: the real one-way
delay, ≥ 0).

* **Two-way** (crossings both ways, as when requests go one way and replies
  the other): like NTP, assume the same delay both ways:
  ``offset = (median(fwd) − median(rev)) / 2``. Medians, so one packet that
  queued does not move the estimate.
* **One-way** (crossings in one direction only, e.g. the probes died just
  after the remote point): assume the fastest crossing took no time:
  ``offset = min(fwd)`` or ``−min(rev)``. Off by the wire's real minimum delay
  (microseconds on a LAN, the propagation delay on a WAN link).

Which packets are "the same" on both ends of a wire: tagged probes of the
path's direction by their tag, ESP by ``(SPI, sequence)`` (background ESP of
the SA counts too: more samples). Remote nodes wired only to other remote
nodes are estimated in turn, once their neighbour's offset is known. With no
local node on the paths at all, the first node of the first path is the
reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tracer.model.flowgraph import EdgeKind
from tracer.model.observations import Observations, PacketClass
from tracer.model.path import ExpectedPath, Hop
from tracer.model.topology import Topology, split_point


@dataclass(frozen=True)
class ClockEstimate:
    """How far a node's clock is from the reference clock, and from which samples."""

    node: str
    offset_ns: int  # node's clock − reference clock
    method: str  # "two-way" | "one-way"
    forward: int  # crossings into the node
    reverse: int  # crossings out of it
    wires: tuple[str, ...]  # "a:x ↔ b:y" wires the samples came from
    reference: str | None = None  # None: the local clock; else the node whose clock is the reference

    @property
    def samples(self) -> int:
        return self.forward + self.reverse

    def describe(self) -> str:
        ms = self.offset_ns / 1e6
        ref = f" relative to {self.reference}'s clock" if self.reference else ""
        wires = ", ".join(self.wires)
        if self.method == "two-way":
            how = f"from {self.samples} packets crossing {wires} both ways"
        else:
            how = (f"from {self.samples} packets crossing {wires} one way only "
                   "(assumes the fastest took no time: off by the wire's delay)")
        return f"clock of {self.node} estimated at {ms:+.3f} ms{ref} {how}; its timestamps are corrected by it"


def estimate(obs: Observations, paths: Sequence[ExpectedPath], remote_nodes: Iterable[str]) -> dict[str, ClockEstimate]:
    """A :class:`ClockEstimate` per remote node on ``paths`` that shares a wire with a known clock."""
    remote = set(remote_nodes)
    on_paths = {h.node for p in paths for h in p.hops}
    anchored: dict[str, int] = {n: 0 for n in on_paths - remote}  # node → its (known) offset
    reference = None
    if not anchored and paths and paths[0].hops:
        # Every node is remote: times are only comparable relative to one of them.
        reference = paths[0].hops[0].node
        anchored[reference] = 0
    wires = [(p, i) for p in paths for i, k in enumerate(p.edges) if k == EdgeKind.WIRE]
    found: dict[str, ClockEstimate] = {}
    progress = True
    while progress:
        progress = False
        for node in sorted(remote & on_paths - set(anchored)):
            fwd: list[np.ndarray] = []
            rev: list[np.ndarray] = []
            used: list[str] = []
            for path, i in wires:
                a, b = path.hops[i], path.hops[i + 1]  # the packet goes a → b
                if b.node == node and a.node in anchored:
                    d = _crossings(obs, path, a, b) + anchored[a.node]  # t_b − (t_a − offset_a)
                    fwd.append(d)
                elif a.node == node and b.node in anchored:
                    d = _crossings(obs, path, a, b) - anchored[b.node]  # (t_b − offset_b) − t_a
                    rev.append(d)
                else:
                    continue
                if len(d):
                    used.append(" ↔ ".join(sorted((a.point, b.point))))
            f = np.concatenate(fwd) if fwd else np.zeros(0, np.int64)
            r = np.concatenate(rev) if rev else np.zeros(0, np.int64)
            if len(f) and len(r):
                offset, method = round(float(np.median(f) - np.median(r)) / 2), "two-way"
            elif len(f):
                offset, method = int(f.min()), "one-way"
            elif len(r):
                offset, method = -int(r.min()), "one-way"
            else:
                continue
            found[node] = ClockEstimate(node, offset, method, len(f), len(r), tuple(dict.fromkeys(used)), reference)
            anchored[node] = offset
            progress = True
    return found


def apply_offsets(obs: Observations, topo: Topology, offsets: dict[str, int]) -> Observations:
    """Observations with each node's timestamps moved onto the reference clock (ts − offset)."""
    if not any(offsets.values()) or len(obs) == 0:
        return obs
    shift = np.zeros(max(len(obs.points), 1), np.int64)
    for k, point in enumerate(obs.points):
        iface = topo.interface(point)
        shift[k] = offsets.get(iface.node if iface else split_point(point)[0], 0)
    cols = dict(obs.cols)
    cols["ts_ns"] = obs["ts_ns"] - shift[obs["point"].astype(np.intp)]
    return dataclasses.replace(obs, cols=cols)


def correct_clocks(
    obs: Observations, topo: Topology, paths: Sequence[ExpectedPath], remote_nodes: Iterable[str]
) -> tuple[Observations, list[str]]:
    """Estimate and apply remote clock offsets; one line per remote node for the verdict."""
    remote = list(dict.fromkeys(remote_nodes))
    found = estimate(obs, paths, remote)
    notes = [found[n].describe() for n in remote if n in found]
    on_paths = {h.node for p in paths for h in p.hops}
    notes += [f"clock of {n} unknown: no packet was seen at both ends of a wire to it; its timestamps are used "
              "as recorded (delays to and from it may be off)" for n in remote if n in on_paths and n not in found]
    return apply_offsets(obs, topo, {n: e.offset_ns for n, e in found.items()}), notes


def _crossings(obs: Observations, path: ExpectedPath, a: Hop, b: Hop) -> np.ndarray:
    """``t_b − t_a`` (raw clocks) for each packet of ``path`` seen at both ends of the wire a → b."""
    ka, ta = _first_seen(obs, path, a)
    kb, tb = _first_seen(obs, path, b)
    if not len(ka) or not len(kb):
        return np.zeros(0, np.int64)
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    return (tb[ib] - ta[ia]).astype(np.int64)


def _first_seen(obs: Observations, path: ExpectedPath, hop: Hop) -> tuple[np.ndarray, np.ndarray]:
    """(identity keys, first timestamp) of the path's packets at ``hop``; keys unique."""
    pidx = obs.point_index(hop.point)
    if pidx < 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    at = obs.point_rows(pidx)

    def col(name: str) -> np.ndarray:
        return obs[name][at]

    if hop.esp is None:
        # Tagged probes of this direction (by addresses: a reply is another path). ICMP errors
        # quote a probe's tag but are not the probe.
        m = (col("tag_kind") > 0) & (col("cls") != PacketClass.ICMP_ERROR)
        m &= (col("src") == int(path.src)) & (col("dst") == int(path.dst))
        # (run, seq) names a probe: run ids are random per run, whatever the probe kind.
        keys = (col("tag_run")[m].astype(np.uint64) << np.uint64(32)) | col("tag_seq")[m].astype(np.uint64)
        ts = col("ts_ns")[m]
    else:  # the point's ESP rows and their (SPI, seq) keys, indexed once per run
        rows, keys = obs.esp_rows(at)
        m = (obs["src"][rows] == int(hop.esp.src)) & (obs["dst"][rows] == int(hop.esp.dst))
        keys, ts = keys[m], obs["ts_ns"][rows[m]]
    order = np.argsort(ts, kind="stable")
    keys, ts = keys[order], ts[order]
    uniq, first = np.unique(keys, return_index=True)  # first occurrence in time order
    return uniq, ts[first]
