"""What every probe kind shares: its socket inside the sending node's namespace, and
the send/receive rhythm: one probe every ``interval`` seconds, answers read in
between, done when all are answered or ``timeout`` seconds after the last left.

Interrupts are honest: Ctrl-C (or SIGTERM, see tracer.interrupts) while probing stops
sending and raises :class:`Interrupted` carrying exactly the probes that left, with the
answers heard so far; and under :func:`journal_to` each probe is written to a JSON-lines
file as it leaves (answers once a second), so even a run killed outright says what it sent."""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, is_dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from tracer.errors import BadInput, EnvironmentProblem
from tracer.netns import netns_socket


class Record(Protocol):
    error: str | None


R = TypeVar("R", bound=Record)

JOURNAL_FLUSH_S = 1.0  # answers are journalled this often (a scan of the unanswered probes)
_journal: ContextVar[IO[str] | None] = ContextVar("probe_journal", default=None)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while probing: ``records`` are the probes that really left, answers filled in."""

    def __init__(self, records: list[Any]) -> None:
        super().__init__()
        self.records = records


@contextmanager
def journal_to(path: Path) -> Iterator[None]:
    """Within the block, :func:`exchange` appends one JSON line per probe sent to ``path``
    (``{"event": "sent", "seq", "sent_ns", "size", ...}``) and one per answer."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", buffering=1) as f:  # line-buffered: each probe is on disk as it leaves
        token = _journal.set(f)
        try:
            yield
        finally:
            _journal.reset(token)


def journal(event: str, record: object) -> None:
    """Append ``{"event": event, **record}`` to the journal of :func:`journal_to` (if one is open)."""
    f = _journal.get()
    if f is not None:
        fields = asdict(record) if is_dataclass(record) and not isinstance(record, type) else {}
        try:
            f.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        except OSError:
            pass  # a full disk must not stop the probing; probes.json is written at the end


def exchange(
    count: int,
    interval: float,
    timeout: float,
    send_one: Callable[[int], R],
    receive: Callable[[dict[int, R], float], None],
    answered: Callable[[R], bool],
    on_result: Callable[[R], None] | None = None,
) -> list[R]:
    """``send_one(seq)`` sends probe ``seq`` (1, 2, …: numbered like ping) and returns its
    record (with ``error`` set if the local stack refused it); ``receive(sent, wait)`` reads
    answers for up to ``wait`` seconds and fills the records; ``answered(record)`` says
    whether one is complete. ``on_result(record)`` is called once per probe, in seq order,
    as soon as its fate is known: answered, refused, or not answered within ``timeout``
    seconds of leaving (ping's rhythm: a line per probe as it happens)."""
    sent: dict[int, R] = {}
    unanswered: dict[int, R] = {}  # for the journal's answer lines
    left: dict[int, float] = {}  # seq → monotonic time it left
    next_send = time.monotonic()
    next_flush = next_send + JOURNAL_FLUSH_S
    seq = 1
    told = 1  # the next seq whose fate on_result has not been told
    last = count + 1

    def tell(now: float, final: bool) -> None:
        nonlocal told
        while told < seq:
            r = sent[told]
            if not (answered(r) or r.error or final or now - left[told] >= timeout):
                return
            if on_result is not None:
                on_result(r)
            told += 1

    try:
        while True:
            now = time.monotonic()
            if seq < last and now >= next_send:
                sent[seq] = rec = send_one(seq)
                journal("sent", rec)
                unanswered[seq] = rec
                left[seq] = now
                seq += 1
                next_send += interval
            tell(now, False)
            done = seq >= last and told >= last
            if done or (seq >= last and now - left[count] >= timeout):
                break
            # Wake for the next send, the next timeout, or at least every 50 ms.
            due = [next_send] if seq < last else []
            if told < seq:
                due.append(left[told] + timeout)
            wait = max(0.0, min([*due, now + 0.05]) - now)
            receive(sent, wait)
            if _journal.get() is not None and time.monotonic() >= next_flush:
                next_flush = time.monotonic() + JOURNAL_FLUSH_S
                _journal_answers(unanswered, answered)
        tell(time.monotonic(), True)
    except KeyboardInterrupt:
        raise Interrupted([sent[k] for k in sorted(sent)]) from None
    finally:
        _journal_answers(unanswered, answered)
    return [sent[k] for k in sorted(sent)]


def _journal_answers(unanswered: dict[int, R], answered: Callable[[R], bool]) -> None:
    if _journal.get() is None:
        return
    for seq in [s for s, r in unanswered.items() if answered(r)]:
        journal("answered", unanswered.pop(seq))


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
