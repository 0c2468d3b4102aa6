"""Sniffers: one capture per capture point, started together, confirmed listening
before the first probe leaves, stopped cleanly, each leaving a pcapng named
``node:iface`` with its kernel drop count.

Backends are modules here (``tcpdump`` in a local network namespace, ``ssh``
for tcpdump on a remote host); each provides a class with ``for_node(...)``,
``start()``, ``wait_ready(deadline)``, ``request_stop()`` and ``stop()``, registered in :data:`BACKENDS`
under the name a topology node's ``capture`` key uses.
"""

from __future__ import annotations

import importlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tracer.errors import EnvironmentProblem

if TYPE_CHECKING:
    from tracer.model.topology import Node, Topology

# capture backend name (topology: node.capture) → "module:class"
BACKENDS = {"local": "tracer.sniff.tcpdump:TcpdumpSniffer", "ssh": "tracer.sniff.ssh:SshTcpdumpSniffer"}


@dataclass
class CaptureResult:
    point: str
    file: Path  # the pcapng, named inside as node:iface
    drops: int | None  # kernel drops the sniffer reported; None: it could not say
    packets: int
    # How the sniffer ended if not because tracer asked ("killed by signal 15"): its capture
    # is incomplete, and its silence proves nothing (None: it ran until stopped)
    ended_early: str | None = None
    kept_at: str | None = None  # host:path of the capture, kept on its SSH host (only its columns are in file)


def how_ended(returncode: int) -> str:
    """A process's exit status in words, for a sniffer that ended on its own."""
    if returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return f"killed by signal {-returncode}{name}"
    # tcpdump exits 0 on SIGTERM/SIGINT/SIGHUP (after writing its statistics): before tracer
    # asked, someone else sent one.
    return f"exited with status {returncode}" if returncode else "exited cleanly, as on a SIGTERM tracer did not send"


def ended_early(returncode: int, before_asked: bool, asked: int, forced: bool) -> str | None:
    """Why a sniffer's capture is incomplete, from its exit: it had already exited before tracer
    asked it to stop (``before_asked``), or it ended some other way than by the signal tracer
    sent (``asked``: exit 0, or death by that signal) and tracer did not kill it (``forced``)."""
    if before_asked:
        return how_ended(returncode)
    if forced or returncode in (0, -asked):
        return None
    return how_ended(returncode)


class Sniffer(Protocol):
    point: str
    backend: str  # recorded per capture point in the manifest ("tcpdump", "ssh")
    proc: object | None  # the capturing process once started

    def start(self) -> None: ...

    def wait_ready(self, deadline: float) -> None: ...

    def request_stop(self) -> None: ...  # ask it to finish, without waiting (stop() collects)

    def stop(self) -> CaptureResult: ...


def sniffer_for(topo: Topology, node: Node, iface: str, out: Path, bpf: str, snaplen: int) -> Sniffer:
    """The sniffer for one capture point, by the node's capture backend."""
    module, _, cls = BACKENDS[node.capture_backend].partition(":")
    return getattr(importlib.import_module(module), cls).for_node(topo, node, iface, out, bpf, snaplen)


def start_all(sniffers: list[Sniffer], timeout: float = 5.0, optional: list[Sniffer] | None = None) -> dict[str, str]:
    """Start every sniffer, then wait until all of them listen (a barrier, not a sleep).

    ``optional`` sniffers (witnesses) start alongside; one that does not get ready is stopped,
    its file removed, and left out: the returned dict says which point and why. A required
    one that does not get ready raises."""
    optional = optional or []
    for s in [*sniffers, *optional]:
        s.start()
    return wait_all(sniffers, time.monotonic() + timeout, optional)


def wait_all(sniffers: list[Sniffer], deadline: float, optional: list[Sniffer] | None = None) -> dict[str, str]:
    """The barrier of :func:`start_all` for sniffers already started (each was spawned as soon as
    its point was known, so they all get ready together: the wait is for the slowest, once)."""
    optional = optional or []
    for s in sniffers:
        s.wait_ready(deadline)
    failed: dict[str, str] = {}
    for s in optional:
        try:
            s.wait_ready(deadline)
        except EnvironmentProblem as e:
            failed[s.point] = str(e)
            _discard(s)
    return failed


def _discard(s: Sniffer) -> None:
    """Stop a sniffer that never got ready and remove whatever it wrote."""
    try:
        result = s.stop()
    except Exception:  # it wrote nothing (or nothing usable): nothing to remove
        return
    result.file.unlink(missing_ok=True)


def request_stop_all(sniffers: list[Sniffer]) -> None:
    """Ask every sniffer to finish (no waiting); :func:`stop_all` collects them."""
    for s in sniffers:
        try:
            s.request_stop()
        except Exception:  # stop() reports it
            pass


def stop_all(sniffers: list[Sniffer]) -> tuple[list[CaptureResult], list[EnvironmentProblem]]:
    """Stop every sniffer, even if some fail (what was recorded is kept); the failures are
    returned, not raised, so the caller can still write its manifest first. All are asked to
    stop first, then collected: they flush and exit together, not one after another."""
    results, errors = [], []
    request_stop_all(sniffers)
    for s in sniffers:
        try:
            results.append(s.stop())
        except Exception as e:  # one broken sniffer must not leave the others running
            errors.append(e if isinstance(e, EnvironmentProblem) else EnvironmentProblem(f"sniffer on {s.point}: {e}"))
    return results, errors
