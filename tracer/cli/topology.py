"""``tracer topology check|path|discover``: a topology file validated, the paths it implies, one written from what runs.

``check`` loads the file strictly (the same loader every command uses) and adds what the file
implies (:mod:`tracer.analysis.topolint`); ``path`` prints the expected request and reply paths
with the verdict's own renderer; ``discover`` reads local network namespaces and their IKE
daemons (:mod:`tracer.discover`) and writes an ordinary topology file. See docs/topology.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sized
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracer.model.topology import Node

from tracer.errors import EXIT_DELIVERED, BadInput, TracerError
from tracer.jsondoc import document, dumps, error_document

EPILOG = """\
examples:
  tracer topology check captures/all-delivered/topology.toml
  tracer topology check my-net.toml --json
  tracer topology path captures/all-delivered/topology.toml west east
  tracer topology path captures/all-delivered/topology.toml 192.0.2.10 198.51.100.10 --json
  tracer topology discover --netns 'trc-lab-*' -o discovered.toml
  tracer topology discover --netns 'site-*' --ssh gw=root@192.0.2.50 --ssh-key ~/.ssh/id_ed25519

exit codes: 0 valid (warnings are findings, not failures) or written (discover's notes on
  stderr), 2 invalid topology or bad arguments (discover: also when the file it wrote does not
  load, the reason a note; edit it), 4 environment (discover: not root, ip missing)
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topology", help="check a topology file, show the paths it implies, discover one",
                       description="Work with topology files (docs/topology.md): validate one strictly and list "
                       "its capture points (check), print the expected request and reply paths between two "
                       "nodes or addresses (path), or write one from the network namespaces and IKE daemons "
                       "that run here (discover).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, short: str, description: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=short, description=description, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)

    c = action("check", "validate strictly, list capture points and findings",
               "Load the topology strictly (unknown keys, addresses, links, routes, tunnels) and report what it "
               "implies: hosts that cannot reach or answer each other, tunnel selectors that hold no address, "
               "gateways outside the file, interfaces without a link. Exit 0 when valid (warnings included), "
               "2 when invalid.")
    c.add_argument("file", type=Path, metavar="FILE", help="topology TOML")
    c.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    c.set_defaults(func=run_check)
    pa = action("path", "expected request and reply paths, hop by hop",
                "The expected request path from SRC to DST and the reply path back, capture point by capture "
                "point with the edge kinds between them (wire, forward, encap, decap), as a verdict shows them.")
    pa.add_argument("file", type=Path, metavar="FILE", help="topology TOML")
    pa.add_argument("src", metavar="SRC", help="source: a node name or one of its addresses")
    pa.add_argument("dst", metavar="DST", help="destination: a node name or an address")
    pa.add_argument("--json", action="store_true", help="machine-readable paths on stdout")
    pa.set_defaults(func=run_path)
    d = action("discover", "write a topology from the namespaces and IKE daemons running here",
               "Read the network namespaces whose names match PATTERN (and the SSH hosts given): interfaces and "
               "addresses, veth links between them (by peer ifindex and namespace id), routes (the main table and "
               "the tables policy rules reach, strongSwan's 220 included), TUN/ipsec devices, forwarding; and the "
               "IPsec tunnels their strongSwan daemons report over vici. Writes ordinary TOML to edit. Needs root.")
    d.add_argument("--netns", metavar="PATTERN", action="append", default=[],
                   help="namespace name pattern (shell-style, like 'trc-lab-*'); repeatable")
    d.add_argument("--ssh", metavar="NODE=TARGET", action="append", default=[],
                   help="also read this host over SSH as node NODE (TARGET: user@host or a Host alias); repeatable")
    d.add_argument("--ssh-netns", metavar="NS", help="run the ssh client in this local namespace")
    d.add_argument("--ssh-key", type=Path, metavar="FILE", help="ssh identity file")
    d.add_argument("--ssh-port", type=int, metavar="PORT", help="ssh port")
    d.add_argument("--ssh-known-hosts", type=Path, metavar="FILE", help="known_hosts to check host keys against")
    d.add_argument("--name", default="discovered", help="the topology's name (default: discovered)")
    d.add_argument("-o", "--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    d.set_defaults(func=run_discover)


def run_check(args: argparse.Namespace) -> int:
    from tracer.analysis.topolint import capture_points, exit_code, lint
    from tracer.topofile import load_topology

    try:
        topo = load_topology(args.file)
    except TracerError as e:
        if not args.json:
            raise
        # The error document (with the check's own verdict beside it) and the line on stderr.
        doc = error_document("topology check", str(e), e.exit_code)
        print(dumps(doc | {"topology_check": {"valid": False, "error": str(e)}}))
        print(f"tracer: {e}", file=sys.stderr)
        return e.exit_code
    points = capture_points(topo)
    lints = lint(topo)
    code = exit_code(lints)
    if args.json:
        print(dumps(document("topology check", exit_code=code, topology_check={
            "valid": code == EXIT_DELIVERED, "file": str(args.file), "name": topo.name,
            "nodes": list(topo.nodes), "links": len(topo.links), "tunnels": [t.name for t in topo.tunnels],
            "capture_points": [p.to_dict() for p in points], "findings": [x.to_dict() for x in lints]})))
        return code
    word = "valid" if code == EXIT_DELIVERED else "invalid"
    print(f"{args.file}: {word}: {_count(topo.nodes, 'node')}, {_count(topo.links, 'link')}, "
          f"{_count(topo.tunnels, 'tunnel')}, {_count(points, 'capture point')}")
    print("capture points:")
    width = max(len(p.point) for p in points) + 2
    for p in points:
        print(f"  {p.point:<{width}}{p.describe()}")
    for x in lints:
        print(f"{x.level}: {x.text}")
    return code


def run_path(args: argparse.Namespace) -> int:
    from tracer.cli.render import render_expected
    from tracer.model.path import expected_paths
    from tracer.topofile import load_topology

    topo = load_topology(args.file)
    src_node, src = topo.resolve(args.src)
    dst_node, dst = topo.resolve(args.dst)
    paths = expected_paths(topo, src, dst, src_node)
    if args.json:
        print(dumps(document("topology path", topology_path={
            "src": str(src), "src_node": src_node.name, "dst": str(dst), "dst_node": dst_node.name,
            "paths": {str(k): p.to_dict() for k, p in paths.items()}})))
        return EXIT_DELIVERED
    blocks = [f"{src_node.name} ({src}) → {dst_node.name} ({dst})"]
    blocks += ["\n".join(render_expected(direction, p)) for direction, p in paths.items()]
    print("\n\n".join(blocks))
    return EXIT_DELIVERED


def run_discover(args: argparse.Namespace) -> int:
    from tracer.discover import discover
    from tracer.model.topology import Topology
    from tracer.topofile import dump_topology, save_topology, topology_to_dict

    if not args.netns and not args.ssh:
        raise BadInput("topology discover: give --netns PATTERN or --ssh NODE=TARGET (or both)")
    topo, notes = discover(args.netns, args.name, _ssh_hosts(args))
    code = EXIT_DELIVERED
    try:  # what is written must load with the strict loader; if not, say why (it is still written, to edit)
        Topology.from_dict(topology_to_dict(topo), source="the discovered topology")
    except TracerError as e:
        notes.append(f"{e}: edit it before use")
        code = e.exit_code  # 2, as 'topology check' would give for the file
    header = "Written by 'tracer topology discover " + " ".join(
        [f"--netns {p}" for p in args.netns] + [f"--ssh {h}" for h in args.ssh]) + "'.\n" + \
             "Check it with 'tracer topology check FILE'; edit freely (docs/topology.md)."
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        save_topology(topo, args.out, header)
        print(f"{args.out}: {_count(topo.nodes, 'node')}, {_count(topo.links, 'link')}, "
              f"{_count(topo.tunnels, 'tunnel')}", file=sys.stderr)
    else:
        print(dump_topology(topo, header), end="")
    return code


def _count(items: Sized, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _ssh_hosts(args: argparse.Namespace) -> list[Node]:
    """``--ssh NODE=TARGET`` options as nodes, checked by the topology's own rules (the file will hold them)."""
    from tracer.model.topology import Topology

    out = []
    for spec in args.ssh:
        name, sep, target = spec.partition("=")
        if not sep:
            raise BadInput(f"--ssh {spec}: expected NODE=TARGET, like east-gw=root@203.0.113.2")
        fields = {"ssh": target, "capture": "ssh", "ssh_netns": args.ssh_netns, "ssh_port": args.ssh_port,
                  "ssh_key": str(args.ssh_key.resolve()) if args.ssh_key else None,
                  "ssh_known_hosts": str(args.ssh_known_hosts.resolve()) if args.ssh_known_hosts else None}
        other = "peer" if name != "peer" else "peer2"  # a one-link frame around the node, for the loader's rules
        raw = {"nodes": {name: {"interfaces": {"x": {}}, **{k: v for k, v in fields.items() if v is not None}},
                         other: {"interfaces": {"x": {}}}},
               "links": [{"ends": [f"{name}:x", f"{other}:x"]}]}
        out.append(Topology.from_dict(raw, source=f"--ssh {spec}").nodes[name])
    return out
