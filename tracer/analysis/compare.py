"""Compare an observed path with the expected one: did the probe diverge, where, and how —
said the way a network engineer would ("left west-gw by wan0 in the clear instead of into
ipsec0"). Pure: sightings and the topology in, words out."""

from __future__ import annotations

from tracer.model.observed import Divergence, Form, Loop, Place, Seen
from tracer.model.path import ExpectedPath
from tracer.model.point import CapturePoint
from tracer.model.topology import Topology


def divergence(topo: Topology, path: ExpectedPath, seen: tuple[Seen, ...], loop: Loop | None) -> Divergence | None:
    """The first sighting off the expected path (or the loop), described against the expected path."""
    off = next((i for i, s in enumerate(seen) if s.place != Place.EXPECTED), None)
    if off is None:
        # Only a loop over points of the expected path itself: the loop is the divergence.
        return Divergence("loop", _last_expected(seen, len(seen)), loop.point, loop_text(loop)) if loop else None
    s = seen[off]
    if not path.hops:  # the topology gives it no path at all: any sighting contradicts it
        return Divergence("off-path", None, s.point,
                          f"turned up at {s.point} though the topology gives it no path ({path.end_note})")
    after = _last_expected(seen, off)
    rejoined = next((t.point for t in seen[off + 1:] if t.place == Place.EXPECTED and t.point != after), None)
    cp = CapturePoint.parse(s.point)
    instead = _expected_exit(topo, path, cp.node)
    if s.place == Place.LEAK:
        esp = path.esp_at(s.point)
        into = f"into {instead.iface}" if instead and _is_tunnel_device(topo, instead) \
            else f"into tunnel {esp.tunnel if esp else '?'}"
        text = f"left {cp.node} by {cp.iface} in the clear instead of {into}"
    elif s.place == Place.UNMAPPED and cp.node not in topo.nodes:
        text = f"reached {cp.node} ({s.point}), a node the topology does not have"
    elif s.place == Place.UNMAPPED:
        text = f"left {cp.node} by {cp.iface}, which the topology does not have"
        if instead is not None:
            text += f" (expected: {instead.iface})"
    elif instead is not None and instead.iface != cp.iface:
        text = f"left {cp.node} by {cp.iface} instead of {instead.iface}"
    elif instead is not None:
        text = f"crossed {s.point} as {s.form} where it should be {'ESP' if s.form == Form.CLEAR else 'in the clear'}"
    else:
        came = f" after {after}" if after else ""
        text = f"went through {cp.node} ({s.point}){came}, which the expected path does not cross"
    if rejoined and loop is None:
        text += f", and rejoined the expected path at {rejoined}"
    kind = {Place.LEAK: "leak", Place.UNMAPPED: "not-in-topology"}.get(s.place, "off-path")
    return Divergence(kind, after, s.point, text, rejoined)


def loop_text(loop: Loop) -> str:
    between = " and ".join(loop.nodes) if len(loop.nodes) > 1 else loop.nodes[0]
    text = (f"routing loop {'between' if len(loop.nodes) > 1 else 'at'} {between}: seen {loop.count} times on "
            f"{loop.point}, TTL {loop.ttl_first}→{loop.ttl_last}")
    if loop.expired_from:
        text += f", ICMP time exceeded from {loop.expired_from}"
    return text


def _last_expected(seen: tuple[Seen, ...], before: int) -> str | None:
    return next((s.point for s in reversed(seen[:before]) if s.place == Place.EXPECTED), None)


def _expected_exit(topo: Topology, path: ExpectedPath, node: str) -> CapturePoint | None:
    """Where the expected path leaves ``node``: into its tunnel's device when it has one (the
    cleartext point right before the ESP hops), else its last point there (a policy-based
    tunnel end sends the ESP straight out of its WAN interface)."""
    mine = [i for i, h in enumerate(path.hops) if h.node == node]
    if not mine:
        return None
    for i in mine:
        nxt = i + 1
        if nxt < len(path.hops) and path.hops[i].esp is None and path.hops[nxt].esp is not None:
            cp = CapturePoint.parse(path.hops[i].point)
            if _is_tunnel_device(topo, cp):
                return cp
    return CapturePoint.parse(path.hops[mine[-1]].point)


def _is_tunnel_device(topo: Topology, cp: CapturePoint) -> bool:
    return any(e.node == cp.node and e.interface == cp.iface for t in topo.tunnels for e in (t.left, t.right))


def leak_cause(topo: Topology, path: ExpectedPath, point: str, sa_seen: bool) -> str | None:
    """Why a probe left ``point`` in the clear where the topology's tunnel covers it. ``sa_seen``:
    ESP of that tunnel crossed the network during the run, so its SAs were up."""
    esp = path.esp_at(point)
    tunnel = next((t for t in topo.tunnels if esp and t.name == esp.tunnel), None)
    if tunnel is None:
        return None
    node = CapturePoint.parse(point).node
    if sa_seen:
        return (f"tunnel {tunnel.name}'s SAs were up (its ESP crossed the network during the run), yet {node} sent "
                f"{path.src} → {path.dst} around it: a route or policy rule that wins over the tunnel's "
                f"(ip rule; ip route show table all on {node})")
    check = (f"is its IKE SA up? (swanctl --list-sas on {node})" if tunnel.keying == "ike"
             else f"are its SAs and policies installed? (ip xfrm state; ip xfrm policy on {node})")
    return f"no SA or policy on {node} covered {path.src} → {path.dst}, which tunnel {tunnel.name} should carry: {check}"
