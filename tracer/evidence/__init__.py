"""Evidence sources: what the network itself says, read during a live trace and stored in the
run directory beside the captures (the packets say what happened; evidence says why).

``netstate`` (live addresses, links, routes, rules; compared with the topology) predates the
registry and is read on its own. Everything else is a **source** in :data:`SOURCES`, one module
each, with one of two shapes:

* a **snapshot source** (read before the sniffers start and after the settle)::

      NAME = "nft"
      def read(topo: Topology, node: Node) -> Snapshot: ...

  ``read`` raises :class:`nodecmd.Unavailable` (or anything) when it cannot: the registry turns
  that into the node's ``Snapshot(unavailable="why")``, never a failed trace;
  :func:`before` / :func:`after` call it for every node of the trace (in parallel);

* an **event source** (runs for the duration of the trace, like ``skb:kfree_skb`` drop reasons)::

      NAME = "dropreasons"
      def start(topo: Topology, nodes: list[Node], match: ProbeMatch) -> Any: ...  # a handle; must not block
      def learn(handle: Any, match: ProbeMatch) -> None: ...            # optional: the SPIs, once known
      def ready(handle: Any, deadline: float, give_up: bool) -> bool: ...  # optional: wait until it sees
      def request_stop(handle: Any) -> None: ...                        # optional: begin stopping, no wait
      def stop(topo: Topology, handle: Any) -> list[Snapshot]: ...      # phase EVENTS, one per node

  :func:`start` is called first, before the snapshots and the sniffers, and :func:`ready` once
  the sniffers run, so a slow start (bpftrace compiles its script) overlaps theirs: the trace
  waits for the slower, never for their sum. ``match`` says which packets are the trace's; its
  ``spis`` are None at start (the IKE daemons have not been asked yet) and :func:`learn` gives
  them once the snapshots before have been read.

Snapshots (:class:`tracer.model.evidence.Snapshot`) carry named counters (with ``drop``
marking those whose growth means discarded packets), link states and log lines; explain
(``tracer.analysis.explain``) keeps what moved in proportion to the lost probes at the
located hop. Adding a source is one module here and one entry in :data:`SOURCES`.
Commands run through :mod:`.nodecmd`: in the node's namespace, or over SSH. ``tracer check``
reads some of the same modules (``nft.ruleset``, ``strongswan.state``) and a few of its own
(``sysctl``, ``sockets``, ``remoteclock``), each returning ``model.checkstate`` records.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from tracer.evidence import dropreasons, ikelog, links, nft, nodecmd, snmp, sockets, strongswan
from tracer.model.evidence import AFTER, BEFORE, EVENTS, ProbeMatch, Snapshot
from tracer.model.topology import Node, Topology

# Every source, in the order their evidence is shown. One line per new module.
SOURCES: tuple[ModuleType, ...] = (dropreasons, links, nft, snmp, sockets, strongswan, ikelog)


def snapshot_sources() -> list[ModuleType]:
    return [s for s in SOURCES if hasattr(s, "read")]


def event_sources() -> list[ModuleType]:
    return [s for s in SOURCES if hasattr(s, "start") and hasattr(s, "stop")]


def read_one(source: ModuleType, topo: Topology, node: Node, phase: str) -> Snapshot:
    """One source on one node; whatever goes wrong becomes the snapshot's ``unavailable``."""
    taken = datetime.now(UTC).isoformat()
    try:
        snap = source.read(topo, node)
    except Exception as e:  # best effort: evidence never costs the trace
        return Snapshot(source.NAME, node.name, phase, unavailable=_why(e) or type(e).__name__, taken=taken)
    return replace(snap, source=source.NAME, node=node.name, phase=phase, taken=taken)


def take(phase: str, topo: Topology, nodes: Iterable[str]) -> list[Snapshot]:
    """Every snapshot source on every node (``phase``: before or after), in parallel."""
    jobs = [(s, topo.nodes[n]) for n in dict.fromkeys(nodes) for s in snapshot_sources()]
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
        return list(pool.map(lambda job: read_one(job[0], topo, job[1], phase), jobs))


def before(topo: Topology, nodes: Iterable[str]) -> list[Snapshot]:
    return take(BEFORE, topo, nodes)


def after(topo: Topology, nodes: Iterable[str]) -> list[Snapshot]:
    return take(AFTER, topo, nodes)


def start(topo: Topology, nodes: Iterable[str], match: ProbeMatch) -> list[tuple[ModuleType, Any]]:
    """Start every event source without waiting for it; one that cannot start says why at stop."""
    picked = [topo.nodes[n] for n in dict.fromkeys(nodes)]
    out: list[tuple[ModuleType, Any]] = []
    for s in event_sources():
        try:
            out.append((s, s.start(topo, picked, match)))
        except Exception as e:
            out.append((s, _Failed(picked, _why(e))))
    return out


def learn(started: list[tuple[ModuleType, Any]], match: ProbeMatch) -> None:
    """Tell the event sources started without them the tunnels' SPIs. Never raises."""
    for s, handle in started:
        if hasattr(s, "learn") and not isinstance(handle, _Failed):
            try:
                s.learn(handle, match)
            except Exception:  # best effort: stop reports what it can
                continue


def ready(started: list[tuple[ModuleType, Any]], deadline: float, give_up: bool = True) -> None:
    """Wait (until ``time.monotonic()`` reaches ``deadline``) for the event sources that say when
    they see; one that does not by then says why at stop. Without ``give_up`` such a source keeps
    starting while the trace goes on, and says at stop which part of the trace it missed.
    Never raises."""
    for s, handle in started:
        if hasattr(s, "ready") and not isinstance(handle, _Failed):
            try:
                s.ready(handle, deadline, give_up)
            except Exception:  # best effort: stop reports what it can
                continue


def startup_times(started: list[tuple[ModuleType, Any]]) -> dict[str, float]:
    """Seconds each event source took from its start to seeing (those that say, once they do)."""
    return {s.NAME: t for s, handle in started if (t := getattr(handle, "startup_s", None)) is not None}


def request_stop(started: list[tuple[ModuleType, Any]]) -> None:
    """Ask every event source to finish without waiting, so it winds down while the sniffers
    do (:func:`stop` then collects). Never raises."""
    for s, handle in started:
        if hasattr(s, "request_stop") and not isinstance(handle, _Failed):
            try:
                s.request_stop(handle)
            except Exception:  # stop() reports what it can
                continue


def stop(topo: Topology, started: list[tuple[ModuleType, Any]]) -> list[Snapshot]:
    """Stop every event source started; never raises."""
    out: list[Snapshot] = []
    for s, handle in started:
        if isinstance(handle, _Failed):
            out += [Snapshot(s.NAME, n.name, EVENTS, unavailable=handle.why) for n in handle.nodes]
            continue
        try:
            out += s.stop(topo, handle)
        except Exception as e:
            out.append(Snapshot(s.NAME, "*", EVENTS, unavailable=f"{type(e).__name__}: {e}"))
    return out


def _why(e: Exception) -> str:
    """One line: a source's own reason, else what went wrong."""
    return str(e) if isinstance(e, nodecmd.Unavailable) else f"{type(e).__name__}: {e}"


class _Failed:
    def __init__(self, nodes: list[Node], why: str) -> None:
        self.nodes, self.why = nodes, why


__all__ = ["AFTER", "BEFORE", "EVENTS", "SOURCES", "ProbeMatch", "after", "before", "learn", "ready", "request_stop", "start",
           "startup_times", "stop", "take"]
