"""``tracer topology discover`` on the real lab (root, namespaces, strongSwan): the topology it writes from
the running namespaces and charon's SAs gives the same expected request and reply paths as the lab's own
file, for every pair of lab nodes (the lab's ping pair west/east and IKE pair west-gw/east-gw among them).

Node names differ (a namespace ``trc-pb-westgw`` becomes node ``westgw``: the lab drops the dash), so
paths are compared by (namespace, interface) at each hop, with the edge kinds and the ESP form between."""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable
from itertools import permutations
from pathlib import Path

import pytest

from tests.cli.tracer_cmd import tracer
from tracer.lab import Lab
from tracer.model.path import ExpectedPath, expected_paths
from tracer.model.topology import Topology
from tracer.topofile import load_topology

pytestmark = pytest.mark.lab

LAB = "pb"  # namespaces trc-pb-*


def ident(topo: Topology, node: str) -> str:
    """What a node is, whatever it is called: its namespace (or, read over SSH only, its ssh target)."""
    n = topo.nodes[node]
    return n.netns or f"ssh {n.ssh}"


def walk(topo: Topology, path: ExpectedPath, who: Callable[[str], str]) -> list[tuple[str, ...]]:
    """A path as (node identity, interface, ESP tunnel or "", UDP) hops and edge kinds, free of node names."""
    out: list[tuple[str, ...]] = []
    for i, hop in enumerate(path.hops):
        esp = (hop.esp.tunnel, str(hop.esp.udp)) if hop.esp else ("", "")
        out.append((who(hop.node), hop.iface, *esp))
        if i < len(path.edges):
            out.append((path.edges[i].value,))
    return out


def all_paths(topo: Topology, who: Callable[[str], str] | None = None) -> dict[tuple[str, str, str], tuple[list, bool, str]]:
    """(source, destination, direction) → (walk, delivered, end) for every pair of nodes, by node identity."""
    who = who or (lambda n: ident(topo, n))
    out = {}
    for a, b in permutations(topo.nodes.values(), 2):
        src, dst = topo.resolve(a.name)[1], topo.resolve(b.name)[1]
        for direction, p in expected_paths(topo, src, dst, a).items():
            end = p.end_note
            for name in sorted(topo.nodes, key=len, reverse=True):  # node names → identities in the note too
                end = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", who(name), end)
            out[(who(a.name), who(b.name), str(direction))] = (walk(topo, p, who), p.delivered, end)
    return out


def test_discovered_topology_gives_the_labs_paths(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "discovered.toml"
    t0 = time.monotonic()
    r = tracer("topology", "discover", "--netns", f"trc-{LAB}-*", "--name", LAB, "-o", out)
    took = time.monotonic() - t0
    assert r.code == 0, r
    assert r.err.splitlines()[-1] == f"{out}: 5 nodes, 4 links, 1 tunnel", r.err
    print(f"discover on lab {LAB}: {took:.2f} s")
    mine, theirs = load_topology(out), load_topology(lab.topology_path)
    assert {n.netns for n in mine.nodes.values()} == {n.netns for n in theirs.nodes.values()}
    # The roles that decide where packets may go, and the tunnel as the IKE daemon has it.
    assert {n.netns: n.role for n in theirs.nodes.values()} == {n.netns: n.role for n in mine.nodes.values()}
    (tunnel,) = mine.tunnels
    assert tunnel.name == "west-east" and tunnel.encapsulation == "udp"
    assert {(mine.nodes[e.node].netns, e.interface, e.subnets) for e in (tunnel.left, tunnel.right)} == {
        (theirs.nodes[e.node].netns, e.interface, e.subnets) for e in (theirs.tunnels[0].left, theirs.tunnels[0].right)}
    # Every gateway's vici socket is written at the path it has here: the discovered file is good for evidence too.
    assert {n.netns: n.ike_vici for n in mine.nodes.values() if n.ike_vici} == {
        n.netns: n.ike_vici for n in theirs.nodes.values() if n.ike_vici}
    mine_paths, their_paths = all_paths(mine), all_paths(theirs)
    assert len(their_paths) == 5 * 4 * 2
    assert mine_paths == their_paths
    # The lab's own pairs (ping west → east, IKE west-gw → east-gw) are delivered both ways, the ping through ESP.
    for a, b in (("west", "east"), ("westgw", "eastgw")):
        for direction in ("request", "reply"):
            steps, delivered, _ = their_paths[(f"trc-{LAB}-{a}", f"trc-{LAB}-{b}", direction)]
            assert delivered and steps[0][0] == f"trc-{LAB}-{a if direction == 'request' else b}"
    assert ("decap",) in their_paths[(f"trc-{LAB}-west", f"trc-{LAB}-east", "request")][0]
    # And it checks clean.
    r = tracer("topology", "check", out)
    assert r.code == 0 and not [ln for ln in r.out.splitlines() if ln.startswith(("warning:", "error:"))], r.out


def test_a_pattern_that_matches_nothing_is_bad_input(lab: Lab) -> None:
    r = tracer("topology", "discover", "--netns", f"trc-{LAB}-nothing-*")
    assert (r.code, r.out) == (2, "") and r.err == f"tracer: no network namespace matches trc-{LAB}-nothing-* (ip netns list)\n"


def test_part_of_the_lab_keeps_what_it_can_see(lab: Lab) -> None:
    """Only the gateways and the router: the veths to west and east lead out of the pattern, so those
    interfaces have no link; the tunnel's ends are both here and it is written."""
    r = tracer("topology", "discover", "--netns", f"trc-{LAB}-*gw", "--netns", f"trc-{LAB}-router")
    assert r.code == 0, r
    doc = tomllib.loads(r.out)
    assert sorted(doc["nodes"]) == ["eastgw", "router", "westgw"]
    assert sorted(tuple(sorted(link["ends"])) for link in doc["links"]) == [
        ("eastgw:wan0", "router:eth1"), ("router:eth0", "westgw:wan0")]
    assert len(doc["tunnels"]) == 1
