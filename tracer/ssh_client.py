"""The OpenSSH client command line tracer uses everywhere: non-interactive, host key checked,
optionally run from inside a network namespace (the lab's management namespace).

While a trace runs, each SSH host may have a master connection (:mod:`tracer.ssh_mux`):
:func:`ssh_argv` then sends the session over it (``ControlPath``), so the node-state reads,
evidence readers and sniffers of one host share one TCP connection and one handshake. The
masters open now are kept in :data:`MASTERS`, keyed by :func:`connection`: only sessions that
would have connected exactly the same way (target, namespace, key, port, known_hosts) share one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracer.netns import ensure_tool

CONNECT_TIMEOUT = 5  # seconds; the start barrier (tracer.sniff.start_all) bounds it anyway

# Identifies one way of reaching a host: (target, ssh_netns, key, port, known_hosts).
Connection = tuple[str, str | None, str | None, int | None, str | None]


@dataclass
class Master:
    """A master connection open now (tracer.ssh_mux) and what is known of its host."""

    control_path: Path
    columns: bool = False  # tracer on that host extracts observation columns we can read (tracer.sniff.ssh)


MASTERS: dict[Connection, Master] = {}


def connection(target: str, ssh_netns: str | None = None, key: Path | None = None, port: int | None = None,
               known_hosts: Path | None = None) -> Connection:
    return (target, ssh_netns, str(key) if key else None, port, str(known_hosts) if known_hosts else None)


def _options(key: Path | None, port: int | None, known_hosts: Path | None) -> list[str]:
    opts = [
        "-T",  # no pty: the pcap stream must stay binary and stderr separate
        "-o", "BatchMode=yes",  # never prompt: a missing key is an error, not a hang
        "-o", "StrictHostKeyChecking=yes",  # unknown or changed host keys fail, never get accepted
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
        "-o", "ServerAliveInterval=5",  # notice a dead peer mid-capture
        "-o", "LogLevel=ERROR",  # stderr is tcpdump's plus real errors: the barrier and the one-line reason
    ]
    if key is not None:
        opts += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    if known_hosts is not None:
        opts += ["-o", f"UserKnownHostsFile={known_hosts}"]
    if port is not None:
        opts += ["-p", str(port)]
    return opts


def ssh_argv(
    target: str,
    remote_command: str,
    ssh_netns: str | None = None,
    key: Path | None = None,
    port: int | None = None,
    known_hosts: Path | None = None,
) -> list[str]:
    """The ssh command line: non-interactive, host key checked, run from ``ssh_netns`` if given,
    over the host's master connection if one is open (else a connection of its own)."""
    opts = _options(key, port, known_hosts)
    master = MASTERS.get(connection(target, ssh_netns, key, port, known_hosts))
    if master is not None:
        # ControlMaster=no: use the master, never become one; if its socket is gone (the
        # master died), ssh connects on its own as it would have without one.
        opts += ["-o", "ControlMaster=no", "-o", f"ControlPath={master.control_path}"]
    cmd = [ensure_tool("ssh", package="openssh-client"), *opts, "--", target, remote_command]
    return (["ip", "netns", "exec", ssh_netns] if ssh_netns else []) + cmd


def master_argv(conn: Connection, control_path: Path) -> list[str]:
    """``ssh -M -N``: authenticate, then listen on ``control_path`` for sessions until stopped
    (in the foreground: it is one of tracer's helpers and dies with it, tracer.subprocs)."""
    target, ssh_netns, key, port, known_hosts = conn
    opts = _options(Path(key) if key else None, port, Path(known_hosts) if known_hosts else None)
    # INFO (the first LogLevel given wins): it then logs each session its server refuses (ssh_mux.REFUSED).
    opts = ["-o", "LogLevel=INFO", *opts, "-M", "-N", "-o", f"ControlPath={control_path}", "-o", "ControlPersist=no"]
    cmd = [ensure_tool("ssh", package="openssh-client"), *opts, "--", target]
    return (["ip", "netns", "exec", ssh_netns] if ssh_netns else []) + cmd


def control_argv(op: str, control_path: Path, target: str) -> list[str]:
    """``ssh -O op`` (check, exit) to a master; its socket is a file, so from any namespace."""
    return [ensure_tool("ssh", package="openssh-client"), "-o", f"ControlPath={control_path}", "-O", op, "--", target]


def topology_relative(topo_source: str, value: str | None) -> Path | None:
    """A path a topology file gives (ssh_key, ssh_known_hosts): ~ expanded, relative to the file's directory."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(topo_source).parent / p
