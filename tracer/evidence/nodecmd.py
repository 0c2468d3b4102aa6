"""Run one read-only command on a node, wherever it is: in its local network namespace
(``ip netns exec``), on this host (no namespace), or on its SSH host.

The one place evidence sources touch processes: the trace's snapshot sources (links, nft, snmp,
strongswan, ikelog) and ``tracer check``'s readers (sysctl, sockets, nft, strongswan,
remoteclock). A failure is :class:`Unavailable` with a one-line reason (the source then says
"unavailable: why"), never a traceback.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from tracer.errors import TracerError
from tracer.model.topology import Node, Topology
from tracer.ssh_client import CONNECT_TIMEOUT, ssh_argv, topology_relative

TIMEOUT = 10.0  # seconds for a local command
SSH_TIMEOUT = CONNECT_TIMEOUT + 5.0


class Unavailable(Exception):
    """This evidence could not be read on this node (the message says why, one line)."""


@dataclass(frozen=True)
class Output:
    stdout: str
    stderr: str
    returncode: int


def over_ssh(node: Node) -> bool:
    return node.capture_backend == "ssh" and bool(node.ssh)


def output(node: Node, argv: Sequence[str], topo_source: str = "", *, in_netns: bool = True,
           ok: tuple[int, ...] | None = (0,), env: dict[str, str] | None = None,
           timeout: float | None = None) -> Output:
    """``argv`` run the way the node is captured: over SSH (``capture = "ssh"``, with /usr/sbin
    on PATH), else locally — inside ``node.netns`` when ``in_netns`` (counters are per
    namespace), else here (a unix socket or a file path means the same from every namespace).
    ``ok``: the exit statuses that are no failure (None: any). ``topo_source``: the topology
    file, which SSH key and known-hosts paths are relative to."""
    if over_ssh(node):
        assert node.ssh is not None
        line = f'PATH="$PATH:/usr/sbin:/sbin"; exec {shlex.join(argv)}'
        try:
            full = ssh_argv(node.ssh, f"exec sh -c {shlex.quote(line)}", node.ssh_netns,
                            topology_relative(topo_source, node.ssh_key), node.ssh_port,
                            topology_relative(topo_source, node.ssh_known_hosts))
        except TracerError as e:
            raise Unavailable(str(e)) from None
        where, limit = f"ssh {node.ssh}: ", timeout or SSH_TIMEOUT
    else:
        full = ["ip", "netns", "exec", node.netns, *argv] if in_netns and node.netns else list(argv)
        where, limit = "", timeout or TIMEOUT
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=limit, check=False, env=env)
    except FileNotFoundError:
        raise Unavailable(f"{full[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{where}{argv[0]}: no answer within {limit:.0f} s") from None
    except OSError as e:
        raise Unavailable(f"{where}cannot run {full[0]} ({e.strerror})") from None
    if ok is not None and proc.returncode not in ok:
        err = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()
        if proc.returncode == 127 or ("not found" in err[-1] and argv[0] in err[-1]):
            raise Unavailable(f"{where}{argv[0]} is not installed")
        raise Unavailable(f"{where}{' '.join(argv[:3])}: {err[-1][:200]}")
    return Output(proc.stdout, proc.stderr, proc.returncode)


def run(topo: Topology, node: Node, argv: Sequence[str], in_netns: bool = True, ok: tuple[int, ...] = (0,)) -> str:
    """``argv``'s stdout on ``node`` of ``topo`` (see :func:`output`)."""
    return output(node, argv, topo.source, in_netns=in_netns, ok=ok).stdout
