"""Unrouted: a direction the topology gives no path at all (its first node has no route).

The topology only says where to look; the packets decide. Each probe is followed wherever the
captures saw it (its observed path): seen arriving at its destination's node, it was delivered
(and the topology is contradicted, which is a warning); seen somewhere else, it is located where
it was last seen (locate_observed); seen nowhere, the topology's "no route" is the only word
left, and only a guess ("likely") unless the node's live routing table confirms it — and only
when every capture point of that node was captured, else the answer is inconclusive.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tracer.analysis.correlate import SightingMatrix
from tracer.analysis.locate import LIKELY, ObservedFate, locate_observed, ranked
from tracer.analysis.observed import observe
from tracer.model.direction import Direction
from tracer.model.observations import Observations
from tracer.model.observed import ObservedProbe
from tracer.model.path import ExpectedPath
from tracer.model.topology import Topology
from tracer.model.verdict import Finding, Outcome
from tracer.probes import probe_type

if TYPE_CHECKING:
    from tracer.model.netstate import NodeState


@dataclass
class Unrouted:
    """What the packets say about a direction the topology leaves nowhere to go."""

    findings: list[Finding]
    observed: list[ObservedProbe]
    delivered: list[bool]  # per probe: seen arriving at its destination's node
    warnings: list[str]


def unrouted(obs: Observations, topo: Topology, path: ExpectedPath, direction: Direction, run: int, kind: int,
             seqs: np.ndarray, start: str | None, expected: list[bool] | None, captured: set[str],
             unreliable: set[str], netstate: dict[str, NodeState] | None = None) -> Unrouted:
    """``start``: the node the packets of this direction leave from; ``expected[p]`` False: probe
    p was not sent this way (a reply whose request did not arrive)."""
    n = len(seqs)
    empty = SightingMatrix(seqs, np.zeros((n, 0), np.int8), np.full((n, 0), -1, np.int64),
                           np.zeros((n, 0), np.uint64), [])
    off = observe(obs, topo, path, run, kind, direction, empty)
    groups: dict[ObservedFate, list[int]] = defaultdict(list)
    unseen: list[int] = []
    delivered = [False] * n
    arrived_at: dict[str, int] = {}
    for p in range(n):
        op = off.get(p)
        if op is None:
            if expected is None or expected[p]:
                unseen.append(int(seqs[p]))
            continue  # (a probe seen counts even when its request was not seen arriving)
        fate = locate_observed(topo, path, op, False, captured, unreliable, start=start)
        if fate is None:  # (every sighting is off an empty path, so there is always a divergence)
            continue
        if fate.outcome == Outcome.DELIVERED:
            delivered[p] = True
            arrived_at[fate.last or "?"] = arrived_at.get(fate.last or "?", 0) + 1
        groups[fate].append(int(seqs[p]))
    total = sum(len(v) for v in groups.values()) + len(unseen)
    found = [Finding(direction, f.outcome, len(q), total, f.where, f.last, f.next, f.edge, f.reason, tuple(q), f.divergence)
             for f, q in groups.items()]
    if unseen:
        found.append(_unseen(topo, path, start, tuple(unseen), total, direction, captured, unreliable, netstate))
    warnings = stale(path, direction, kind, start, arrived_at, total)
    return Unrouted(ranked(found),
                    [off[p] for p in sorted(off)], delivered, warnings)


def _unseen(topo: Topology, path: ExpectedPath, start: str | None, seqs: tuple[int, ...], total: int,
            direction: Direction, captured: set[str], unreliable: set[str],
            netstate: dict[str, NodeState] | None) -> Finding:
    """Probes no capture saw anywhere: they never left ``start`` — if every point of it was
    captured; the topology's missing route is then the likely why, the live tables the sure one."""
    node = topo.nodes.get(start) if start else None
    name = start or "?"
    points = [i.point for i in node.interfaces.values()] if node else []
    blind = [p for p in points if p not in captured or p in unreliable]
    if not points or blind:
        why = (f"{', '.join(blind)} not captured (or with sniffer drops)" if blind
               else f"{name} has no capture point")
        return Finding(direction, Outcome.INCONCLUSIVE, len(seqs), total, f"somewhere after {name}", None, None,
                       None, f"{why}; the topology gives it no route ({path.end_note})", seqs)
    reason, evidence = LIKELY + f"{path.end_note} (by the topology)", ()
    state = (netstate or {}).get(name)
    if state is not None:
        from tracer.analysis.topocheck import kernel_route  # live state: only in runs that recorded it

        route = kernel_route(state, path.src, path.dst)
        if route is None:
            reason = f"{name} has no route to {path.dst} (live routing tables)"
            evidence = (f"{name}: the kernel had no route to {path.dst} (its live routing tables when the run started)",)
        else:
            reason += (f"; but {name}'s live routing tables had one (dev {route.dev}): the topology may be stale, "
                       "look at its firewall or whether it answers")
    # A node with one capture point: that is where the probes did not show (the evidence beside it counts).
    first = points[0] if len(points) == 1 else None
    return Finding(direction, Outcome.LOST, len(seqs), total, f"at {name}: {path.end_note}", None, first, None,
                   reason, seqs, evidence=evidence)



def stale(path: ExpectedPath, direction: Direction, kind: int, start: str | None, arrived_at: dict[str, int],
          total: int) -> list[str]:
    """Warnings for probes seen arriving (``arrived_at``: point → how many) where the topology
    says they cannot: the packets win, and the topology is probably out of date."""
    noun = probe_type(kind).noun(direction)
    if path.hops:
        claim = f"topology says {path.end_note}"
    else:
        claim = f"topology gives {start or '?'} no route{' back' if direction == Direction.REPLY else ''} to {path.dst}"
    return [f"{claim} but {k}/{total} {noun} were seen at {point} — the topology may be stale"
            for point, k in arrived_at.items()]
