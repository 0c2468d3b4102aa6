"""``tracer lab``: build, inspect, break and remove the built-in IPsec lab."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from tracer.cli.trace import default_lab
from tracer.errors import EXIT_ENVIRONMENT, BadInput
from tracer.jsondoc import document, dumps
from tracer.lab import FAULTS, GATEWAYS, Lab

LAYOUT = """\
  west ── west-gw ══ router ══ east-gw ── east
  192.0.2.10   198.18.1.1  198.18.2.1   198.51.100.10
         IPsec tunnel west-east (IKEv2, PSK, ESP in UDP 4500)
         between west-gw and east-gw, route-based via ipsec0

Each node is a network namespace (trc-NAME-west, trc-NAME-westgw, ...);
each gateway runs its own strongSwan charon (kernel-libipsec). Nothing is
connected to the host's network."""


def _fault_list(extra: dict[str, str] | None = None) -> str:
    items = {**FAULTS, **(extra or {})}
    width = max(len(n) for n in items)
    return "\n".join(
        textwrap.fill(desc, 100, initial_indent=f"  {name:<{width}}  ", subsequent_indent=" " * (width + 4))
        for name, desc in items.items()
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lab",
        help="built-in lab: namespaces with real strongSwan gateways, and faults to inject",
        description="A five-node IPsec lab in network namespaces, to try tracer on (needs root).\n\n"
        + LAYOUT,
        epilog="examples:\n"
        "  tracer lab up                      # build it (about 0.1 s), print the topology file\n"
        "  tracer ping west east              # traced ping through the tunnel\n"
        "  tracer lab fault esp-blocked       # break it, then trace again\n"
        "  tracer lab fault clear\n"
        "  tracer lab up --ssh                # east-gw captured over SSH (real sshd), see docs/remote-capture.md\n"
        "  tracer lab down\n\n"
        "faults:\n" + _fault_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="lab_action", metavar="ACTION", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name", default=default_lab(), help="lab name, 1-10 lowercase letters/digits (default: $TRACER_LAB, "
        "else lab); several labs can run side by side, and 'tracer ping --lab NAME' traces on one"
    )

    up = actions.add_parser(
        "up",
        parents=[common],
        help="build the lab (or keep it), wait for the tunnel, print the topology path",
        description="Build the lab and wait until the CHILD_SA is installed on both gateways. "
        "Idempotent: on a running lab it only applies --fault (or clears a fault) and "
        "re-establishes the tunnel if needed. State lives in /run/tracer/lab-NAME/.",
        epilog="faults:\n" + _fault_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("--fault", choices=sorted(FAULTS), metavar="FAULT", help="inject FAULT (see below)")
    up.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the tunnel (default 10)")
    up.add_argument(
        "--ssh", action="store_true",
        help="also run a real sshd in east-gw, reachable only from a management namespace trc-NAME-mgmt "
        "(203.0.113.10 → east-gw:mgmt0 203.0.113.2), and mark east-gw to be captured over SSH",
    )
    up.add_argument("--json", action="store_true", help="print the full status as JSON")
    up.set_defaults(func=_up)

    down = actions.add_parser(
        "down",
        parents=[common],
        help="remove every namespace and charon of the lab",
        description="Stop the lab's charon daemons (by their recorded PIDs) and delete its "
        "namespaces and state directory. Safe to run when the lab is not up.",
    )
    down.set_defaults(func=_down)

    status = actions.add_parser(
        "status",
        parents=[common],
        help="namespaces, IKE/CHILD SAs with SPIs, routes, active fault",
        description="Show what exists now: namespaces, charon processes, each gateway's "
        "IKE_SA and CHILD_SA (state, SPIs, packet counters), routes (tunnel routes are in "
        "table 220) and how many packets the active fault dropped. Exit code 0 if the lab "
        "is up, 4 if not.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    fault = actions.add_parser(
        "fault",
        parents=[common],
        help="inject a fault into the running lab, or 'clear' it",
        description="Inject one fault into the running lab (replacing the active one), or "
        "remove it with 'clear'. Each fault is real, at packet level (nftables, routes or "
        "MTU), so tracer has to find it from the packets.",
        epilog="faults:\n"
        + _fault_list({"clear": "remove the active fault (re-establishes the tunnel if it had been broken)"}),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fault.add_argument("fault", metavar="FAULT", help="a fault name from the list below, or 'clear'")
    fault.set_defaults(func=_fault)

    clear = actions.add_parser("clear-fault", parents=[common], help="same as 'fault clear'")
    clear.set_defaults(func=_clear)


def _up(args: argparse.Namespace) -> int:
    lab = Lab(args.name)
    path = lab.up(fault=args.fault, wait=args.wait, ssh=args.ssh)
    if args.json:
        print(dumps(document("lab up", lab=lab.status())))
        return 0
    print(path)
    _print_summary(lab.status())
    return 0


def _down(args: argparse.Namespace) -> int:
    for h in Lab(args.name).down():
        print(f"stopped {h.what} (pid {h.pid}) left by a killed trace", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    st = Lab(args.name).status()
    if args.json:
        print(dumps(document("lab status", exit_code=0 if st["up"] else EXIT_ENVIRONMENT, lab=st)))
    elif not st["up"]:
        print(f"lab '{args.name}' is not up")
    else:
        print(f"lab '{args.name}' is up; topology {st['topology']}")
        _print_summary(st)
        for node, routes in st["routes"].items():
            print(f"  routes {node}: " + "; ".join(routes))
    return 0 if st["up"] else EXIT_ENVIRONMENT


def _fault(args: argparse.Namespace) -> int:
    if args.fault == "clear":
        return _clear(args)
    if args.fault not in FAULTS:
        raise BadInput(f"unknown fault '{args.fault}': choose one of {', '.join(FAULTS)}, or clear")
    Lab(args.name).set_fault(args.fault)
    print(f"fault {args.fault}: {FAULTS[args.fault]}")
    return 0


def _clear(args: argparse.Namespace) -> int:
    Lab(args.name).clear_fault()
    print("fault cleared")
    return 0


def _print_summary(st: dict[str, Any]) -> None:
    drops = ", ".join(f"{n} {c}" for n, c in st.get("fault_drops", {}).items())
    print(f"  fault: {st['fault'] or 'none'}" + (f" (packets dropped by it so far: {drops})" if drops else ""))
    if "ssh" in st:
        s = st["ssh"]
        state = "running" if s["sshd_alive"] else "NOT running"
        print(f"  ssh: {s['node']} captured over SSH ({s['target']}, from netns {s['netns']}); sshd pid {s['sshd_pid']} {state}")
    for gw in GATEWAYS:
        g = st["gateways"][gw]
        sas = g["ike_sas"]
        if not sas:
            print(f"  {gw}: no IKE_SA" + (f" ({g['error']})" if "error" in g else ""))
        for sa in sas:
            children = ", ".join(
                f"CHILD_SA {c['state']} in {c['spi_in']} out {c['spi_out']}" for c in sa["child_sas"]
            ) or "no CHILD_SA"
            print(f"  {gw}: IKE_SA {sa['state']} {sa['local']} <-> {sa['remote']}; {children}")
