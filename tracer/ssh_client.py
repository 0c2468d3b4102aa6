"""The OpenSSH client command line tracer uses everywhere: non-interactive, host key checked,
optionally run from inside a network namespace (the lab's management namespace)."""

from __future__ import annotations

from pathlib import Path

from tracer.netns import ensure_tool

CONNECT_TIMEOUT = 5  # seconds; the start barrier (tracer.sniff.start_all) bounds it anyway


def ssh_argv(
    target: str,
    remote_command: str,
    ssh_netns: str | None = None,
    key: Path | None = None,
    port: int | None = None,
    known_hosts: Path | None = None,
) -> list[str]:
    """The ssh command line: non-interactive, host key checked, run from ``ssh_netns`` if given."""
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
    cmd = [ensure_tool("ssh", package="openssh-client"), *opts, "--", target, remote_command]
    return (["ip", "netns", "exec", ssh_netns] if ssh_netns else []) + cmd


def topology_relative(topo_source: str, value: str | None) -> Path | None:
    """A path a topology file gives (ssh_key, ssh_known_hosts): ~ expanded, relative to the file's directory."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(topo_source).parent / p
