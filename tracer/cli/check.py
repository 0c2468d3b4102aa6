"""``tracer check [NODE…]``: a modern ``ipsec verify`` over the topology's nodes.

Reads each node's live state (addresses, routes, rules, MACs), neighbour table, sysctls, listening UDP sockets,
nftables ruleset and its IKE daemon's SAs, then judges them against the topology's tunnels
(``tracer.analysis.checks``): one line per finding, naming the node, the check and the fix.
Nothing is sent and nothing is changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tracer.analysis.checks import (
    ALL,
    FAIL,
    OK,
    UNCHECKED,
    WARN,
    Finding,
    Snapshot,
    exit_code,
    needs,
    run_checks,
)
from tracer.errors import BadInput
from tracer.model.checkstate import NodeEvidence
from tracer.model.topology import Node, Topology

DESCRIPTION = """\
Check every node of the topology the way 'ipsec verify' checked a FreeS/WAN box, before
(or instead of) tracing: every interface up with carrier, static neighbour entries that
carry the neighbour's real MAC, IP forwarding on gateways and routers, rp_filter on the
tunnels' interfaces (also against cleartext a peer routes around the tunnel), a route from
each tunnel end to its peer, the IKE daemon listening on UDP 500/4500, an installed CHILD_SA per tunnel end
and its SPIs, routes and policy rules that send each tunnel's subnets into it (strongSwan's
table 220 included), the tunnel path's MTU against ESP overhead, nftables rules that drop
IKE, ESP or the tunnels' forwarded traffic, differences between the topology and the live
network, and the clocks of remote (SSH) hosts. Each finding names the node, the check and
the fix. Reads only: nothing is sent, nothing is changed."""

EPILOG = """\
examples:
  tracer check                       # every node of the built-in lab
  tracer check router east-gw        # only what concerns these nodes
  tracer check -q                    # failures, warnings and checks that could not run
  tracer check -t site.toml --json   # a topology of your own; machine-readable

a node's IKE daemon is reached through its 'ike_vici' key in the topology (a vici socket
path or URI); the built-in lab writes it for its gateways.

exit codes: 0 every check passed, 1 a misconfiguration found, 2 bad input,
  3 some checks could not run, 4 environment (not root, a tool missing)
"""

LABELS = {OK: "OK", FAIL: "FAIL", WARN: "WARN", UNCHECKED: "--"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check forwarding, rp_filter, IKE daemon, SAs, routes, MTU, firewall, clocks",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("nodes", nargs="*", metavar="NODE", help="nodes to report on (default: all)")
    from tracer.cli.trace import add_topology_options

    add_topology_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable findings on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="leave out the checks that passed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tracer.cli.trace import topology_path
    from tracer.topofile import load_topology

    tpath = topology_path(args)
    topo = load_topology(tpath)
    unknown = [n for n in args.nodes if n not in topo.nodes]
    if unknown:
        raise BadInput(f"{tpath}: no node '{unknown[0]}' (nodes: {', '.join(topo.nodes)})")
    if any(n.netns for n in topo.nodes.values()):
        from tracer.netns import ensure_root

        ensure_root()  # reading other namespaces needs root
    snap = read(topo, tpath)
    findings = run_checks(topo, snap, args.nodes or None)
    if args.json:
        from tracer.jsondoc import document, dumps

        print(dumps(document("check", [], exit_code(findings), check={
            "topology": str(tpath),
            "checks": [f.to_dict() for f in findings if not (args.quiet and f.status == OK)]})))
    else:
        print(render(findings, args.quiet))
    return exit_code(findings)


def read(topo: Topology, tpath: Path) -> Snapshot:
    """Everything the checks need, from every node (a tunnel's checks need both ends and the path between)."""
    from tracer.evidence import neigh, netstate, nft, remoteclock, sockets, strongswan, sysctl

    states, unread = netstate.snapshot_nodes(topo, topo.nodes)
    evidence = {}
    for name, node in topo.nodes.items():
        want = needs(topo, name)
        evidence[name] = NodeEvidence(
            sysctl=sysctl.read(node, topo.source) if "sysctl" in want else None,
            sockets=sockets.listening(node, topo.source) if "sockets" in want else None,
            nft=nft.ruleset(node, topo.source) if "nft" in want else None,
            ike=strongswan.state(node, ike_daemon(node, tpath), topo.source) if "ike" in want else None,
            clock=remoteclock.read(node, topo.source) if "clock" in want else None,
            neigh=neigh.read(node, topo.source) if "neigh" in want else None,
        )
    return Snapshot(states, unread, evidence)


def ike_daemon(node: Node, tpath: Path) -> str | None:
    """The vici URI of the node's IKE daemon: the topology's ``ike_vici`` (a path relative to the
    topology file, like ``ssh_key``), None when it has none."""
    from tracer.evidence.strongswan import vici_uri

    if not node.ike_vici:
        return None
    value = node.ike_vici
    if "://" not in value and not Path(value).is_absolute():
        value = str(tpath.parent / value)
    return vici_uri(value)


def render(findings: list[Finding], quiet: bool = False) -> str:
    shown = [f for f in findings if not (quiet and f.status == OK)]
    wn = max((len(f.node) for f in shown), default=4)
    wc = max((len(f.check) for f in shown), default=5)
    lines = []
    for f in shown:
        fix = f" — {f.fix}" if f.fix and f.status != OK else ""
        lines.append(f"{LABELS[f.status]:<5} {f.node:<{wn}}  {f.check:<{wc}}  {f.detail}{fix}")
    counts = {s: sum(1 for f in findings if f.status == s) for s in (OK, FAIL, WARN, UNCHECKED)}
    nodes = len({f.node for f in findings if f.node != ALL})
    summary = (f"{len(findings)} checks on {nodes} node{'s' if nodes != 1 else ''}: {counts[OK]} ok, {counts[FAIL]} failed, "
               f"{counts[WARN]} warnings, {counts[UNCHECKED]} not checked")
    if quiet and not shown:
        return summary
    return "\n".join([*lines, "", summary])
