"""The IKE daemon's log lines written during the trace (an event source: start, then stop).

``start`` notes how long each node's log (the topology's ``ike_log``) is; ``stop`` reads what
was appended since. Read here for local nodes (a path), with ``tail`` over SSH otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tracer.evidence import nodecmd
from tracer.model.evidence import EVENTS, ProbeMatch, Snapshot
from tracer.model.topology import Node, Topology

NAME = "ikelog"
MAX_BYTES = 256 * 1024  # what one trace can have logged; more is cut (the run directory is not an archive)


@dataclass
class Mark:
    node: Node
    offset: int | None
    why: str | None = None  # unavailable: why


def start(topo: Topology, nodes: list[Node], match: ProbeMatch | None = None) -> list[Mark]:
    marks = []
    for node in nodes:
        try:
            marks.append(Mark(node, _size(topo, node)))
        except nodecmd.Unavailable as e:
            marks.append(Mark(node, None, str(e)))
    return marks


def stop(topo: Topology, marks: list[Mark]) -> list[Snapshot]:
    out = []
    for m in marks:
        if m.offset is None:
            out.append(Snapshot(NAME, m.node.name, EVENTS, unavailable=m.why))
            continue
        try:
            text = _tail(topo, m.node, m.offset)
        except nodecmd.Unavailable as e:
            out.append(Snapshot(NAME, m.node.name, EVENTS, unavailable=str(e)))
            continue
        out.append(Snapshot(NAME, m.node.name, EVENTS, lines=tuple(line for line in text.splitlines() if line.strip())))
    return out


def _size(topo: Topology, node: Node) -> int:
    if not node.ike_log:
        raise nodecmd.Unavailable("no ike_log for this node in the topology")
    if nodecmd.over_ssh(node):
        return int(nodecmd.run(topo, node, ["wc", "-c", node.ike_log]).split()[0])
    try:
        return os.stat(node.ike_log).st_size
    except OSError as e:
        raise nodecmd.Unavailable(f"{node.ike_log}: {e.strerror}") from None


def _tail(topo: Topology, node: Node, offset: int) -> str:
    assert node.ike_log is not None
    if nodecmd.over_ssh(node):
        return nodecmd.run(topo, node, ["tail", "-c", f"+{offset + 1}", node.ike_log])[:MAX_BYTES]
    try:
        with open(node.ike_log, "rb") as f:
            f.seek(offset)
            return f.read(MAX_BYTES).decode(errors="replace")
    except OSError as e:
        raise nodecmd.Unavailable(f"{node.ike_log}: {e.strerror}") from None
