"""Run one read-only command on a node: in its local network namespace, or on its host over SSH.

The one place evidence sources touch processes. A failure is :class:`Unavailable` with a
one-line reason (the source's snapshot then says "unavailable: why"), never a traceback.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from tracer.model.topology import Node, Topology
from tracer.ssh_client import CONNECT_TIMEOUT, ssh_argv, topology_relative

TIMEOUT = 5.0  # seconds for a local command
SSH_TIMEOUT = CONNECT_TIMEOUT + 5.0


class Unavailable(Exception):
    """This evidence could not be read on this node (the message says why, one line)."""


def over_ssh(node: Node) -> bool:
    return node.capture_backend == "ssh" and bool(node.ssh)


def run(topo: Topology, node: Node, argv: Sequence[str], in_netns: bool = True, ok: tuple[int, ...] = (0,)) -> str:
    """``argv``'s stdout, run the way the node is captured: over SSH (``capture = "ssh"``), else
    locally — inside ``node.netns`` when ``in_netns`` (counters are per namespace), else here
    (a unix socket or a file path means the same from every network namespace)."""
    if over_ssh(node):
        assert node.ssh is not None
        line = f'PATH="$PATH:/usr/sbin:/sbin"; exec {shlex.join(argv)}'
        full = ssh_argv(node.ssh, f"exec sh -c {shlex.quote(line)}", node.ssh_netns,
                        topology_relative(topo.source, node.ssh_key), node.ssh_port,
                        topology_relative(topo.source, node.ssh_known_hosts))
        where, timeout = f"ssh {node.ssh}: ", SSH_TIMEOUT
    else:
        full = ["ip", "netns", "exec", node.netns, *argv] if in_netns and node.netns else list(argv)
        where, timeout = "", TIMEOUT
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise Unavailable(f"{full[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{where}{argv[0]}: no answer within {timeout:.0f} s") from None
    except OSError as e:
        raise Unavailable(f"{where}cannot run {full[0]} ({e.strerror})") from None
    if proc.returncode not in ok:
        err = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()
        if proc.returncode == 127 or ("not found" in err[-1] and argv[0] in err[-1]):
            raise Unavailable(f"{where}{argv[0]} is not installed")
        raise Unavailable(f"{where}{' '.join(argv[:3])}: {err[-1][:200]}")
    return proc.stdout
