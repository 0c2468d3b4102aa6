"""What every probe kind shares: its socket inside the sending node's namespace, and
the send/receive rhythm: one probe every ``interval`` seconds, answers read in
between, done when all are answered or ``timeout`` seconds after the last left."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from typing import Protocol, TypeVar

from tracer.errors import BadInput, EnvironmentProblem
from tracer.netns import netns_socket


class Record(Protocol):
    error: str | None


R = TypeVar("R", bound=Record)


def exchange(
    count: int,
    interval: float,
    timeout: float,
    send_one: Callable[[int], R],
    receive: Callable[[dict[int, R], float], None],
    answered: Callable[[R], bool],
) -> list[R]:
    """``send_one(seq)`` sends probe ``seq`` and returns its record (with ``error`` set if
    the local stack refused it); ``receive(sent, wait)`` reads answers for up to ``wait``
    seconds and fills the records; ``answered(record)`` says whether one is complete."""
    sent: dict[int, R] = {}
    next_send = time.monotonic()
    seq = 0
    last_sent: float | None = None
    while True:
        now = time.monotonic()
        if seq < count and now >= next_send:
            sent[seq] = send_one(seq)
            seq += 1
            last_sent = now
            next_send += interval
        done = seq >= count and all(answered(r) or r.error for r in sent.values())
        if done or (seq >= count and last_sent is not None and now - last_sent >= timeout):
            break
        # Wake for the next send, the timeout, or at least every 50 ms.
        wait = max(0.0, min(next_send if seq < count else (last_sent or now) + timeout, now + 0.05) - now)
        receive(sent, wait)
    return [sent[k] for k in sorted(sent)]


def probe_socket(netns: str | None, sock_type: int, proto: int, source: IPv4Address | None) -> socket.socket:
    """A socket inside ``netns`` (None: this namespace), bound to ``source`` when given,
    so the kernel routes and builds headers exactly as for the node's own traffic."""
    try:
        sock = netns_socket(netns, socket.AF_INET, sock_type, proto) if netns \
            else socket.socket(socket.AF_INET, sock_type, proto)
    except PermissionError:
        raise EnvironmentProblem("sending probes needs root (raw sockets, network namespaces)") from None
    if source is not None:
        try:
            # Port 0: ephemeral (for UDP; IKE's 500/4500 belong to the node's own daemon).
            sock.bind((str(source), 0))
        except OSError as e:
            sock.close()
            raise BadInput(f"cannot send from {source} ({e.strerror}): is it an address of the sending node?") from None
    return sock


def drain(sock: socket.socket, wait: float) -> Iterator[tuple[bytes, int]]:
    """(datagram, arrival ns) for what arrives within ``wait`` seconds, then for everything
    already queued; ``sock`` is non-blocking."""
    ready, _, _ = select.select([sock], [], [], wait)
    while ready:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return
        yield data, time.time_ns()
