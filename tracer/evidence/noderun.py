"""Run one read-only command on a node, wherever it is: in its local network namespace
(``ip netns exec``), on this host (no namespace), or on its SSH host. Shared by the
``tracer check`` evidence sources (sysctl, sockets, nftables, ikesa, remoteclock)."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from tracer.errors import TracerError
from tracer.model.topology import Node
from tracer.ssh_client import CONNECT_TIMEOUT, ssh_argv, topology_relative

TIMEOUT = 10.0
SSH_TIMEOUT = CONNECT_TIMEOUT + 5.0


class Unreadable(Exception):
    """The command could not be run or failed; the message is one line."""


@dataclass(frozen=True)
class Output:
    stdout: str
    stderr: str
    returncode: int


def over_ssh(node: Node) -> bool:
    return node.capture_backend == "ssh"


def run(node: Node, argv: Sequence[str], topo_source: str = "", check: bool = True,
        env: dict[str, str] | None = None, timeout: float | None = None) -> Output:
    """``argv`` on ``node``: over SSH for ``capture = "ssh"`` nodes (with /usr/sbin on PATH),
    else inside ``node.netns`` (or here). Unreadable with a one-line reason on failure."""
    if over_ssh(node):
        assert node.ssh is not None
        line = 'PATH="$PATH:/usr/sbin:/sbin"; exec ' + " ".join(shlex.quote(a) for a in argv)
        try:
            full = ssh_argv(node.ssh, f"exec sh -c {shlex.quote(line)}", node.ssh_netns,
                            topology_relative(topo_source, node.ssh_key), node.ssh_port,
                            topology_relative(topo_source, node.ssh_known_hosts))
        except TracerError as e:
            raise Unreadable(str(e)) from None
        where, limit = f"ssh {node.ssh}", timeout or SSH_TIMEOUT
    else:
        full = ["ip", "netns", "exec", node.netns, *argv] if node.netns else list(argv)
        where, limit = (f"netns {node.netns}" if node.netns else "this host"), timeout or TIMEOUT
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=limit, check=False, env=env)
    except FileNotFoundError:
        raise Unreadable(f"'{full[0]}' not found") from None
    except subprocess.TimeoutExpired:
        raise Unreadable(f"'{argv[0]}' in {where}: no answer within {limit:.0f} s") from None
    if check and proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()
        raise Unreadable(f"'{' '.join(argv)}' in {where} failed: {lines[-1][:200]}")
    return Output(proc.stdout, proc.stderr, proc.returncode)
