"""Network-namespace helpers: run commands in, and open sockets inside, a netns.

Named namespaces are the ``ip netns`` kind (bind mounts under /run/netns), so
everything here interoperates with ``ip netns exec`` typed by a human.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tracer.errors import EnvironmentProblem

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc: ctypes.CDLL | None = None


def ensure_root() -> None:
    """Raise EnvironmentProblem unless we may create namespaces (effective uid 0)."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("needs root (network namespaces, raw sockets, tcpdump, charon): run it with sudo")


def ensure_tool(name: str, path: str | None = None, package: str | None = None) -> str:
    """Return the path of a required executable or raise EnvironmentProblem."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if not found:
        raise EnvironmentProblem(f"'{name}' not found: install it (Debian: apt-get install {package or name})")
    return found


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def list_with_prefix(prefix: str) -> list[str]:
    """Names of the named namespaces starting with ``prefix``, sorted."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def add(ns: str) -> None:
    _ip(["netns", "add", ns])


def delete(ns: str) -> None:
    """Delete a named namespace; a namespace that is already gone is fine."""
    if exists(ns):
        _ip(["netns", "delete", ns])


def pids(ns: str) -> list[int]:
    """PIDs of the processes living in namespace ``ns`` (``ip netns pids``)."""
    if not exists(ns):
        return []
    out = _ip(["netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split()]


def ns_run(
    ns: str,
    argv: Sequence[str],
    check: bool = True,
    timeout: float | None = 10.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``ns`` and capture its text output.

    With ``check`` a non-zero exit raises EnvironmentProblem carrying the
    command and the first line of its stderr, so callers can let it propagate.
    """
    return _run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, input=input)


def ns_popen(ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` inside ``ns``; ``ip netns exec`` execs, so the PID is argv's."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)


def _libc_setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Move the *current thread* into ``ns`` for the block, then back.

    setns(CLONE_NEWNET) is per thread, so other threads are unaffected; only
    network-namespace-relative operations (socket(), /proc/sys/net) see ``ns``.
    """
    try:
        target = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EnvironmentProblem(f"network namespace '{ns}' does not exist") from None
    try:
        # /proc/thread-self, not /proc/self: we must come back to *this thread's* netns.
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(target)
        raise
    try:
        _libc_setns(target)
        try:
            yield
        finally:
            _libc_setns(home)
    finally:
        os.close(target)
        os.close(home)


def netns_socket(
    ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
) -> socket.socket:
    """A socket that lives in ``ns`` although this process does not.

    A socket stays bound to the namespace it was created in, so probes can be
    sent from any namespace without spawning a process per packet.
    """
    with entered(ns):
        return socket.socket(family, type, proto)


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    """Set sysctls (dotted names under net.) inside ``ns`` without a subprocess."""
    with entered(ns):
        for key, value in values.items():
            Path("/proc/sys", *key.split(".")).write_text(value)


def ip(args: Sequence[str], ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``ip`` command, inside ``ns`` if given (``ip -n``: no mount namespace needed)."""
    return _run(["ip", *(["-n", ns] if ns else []), *args], check=check, timeout=10.0)


def ip_batch(
    lines: Sequence[str], ns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run several ``ip`` commands in one process (``ip [-n NS] -batch -``).

    Without ``check`` it uses -force: every line runs even if one fails.
    """
    argv = ["ip", *(["-n", ns] if ns else []), *([] if check else ["-force"]), "-batch", "-"]
    return _run(argv, check=check, timeout=10.0, input="\n".join(lines) + "\n")


def _ip(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check=check, timeout=10.0)


def _run(
    argv: list[str], check: bool, timeout: float | None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
    except FileNotFoundError:
        raise EnvironmentProblem(f"'{argv[0]}' not found: install iproute2") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"'{' '.join(argv)}' timed out after {timeout} s") from None
    if check and proc.returncode != 0:
        first = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[0]
        raise EnvironmentProblem(f"'{' '.join(argv)}' failed ({proc.returncode}): {first}")
    return proc
