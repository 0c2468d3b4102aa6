"""Work on items in forked worker processes that write their results straight into shared
columns, at places the parent hands out in item order.

For reading several capture files at once: numpy keeps the GIL for most of the small per-chunk
operations extraction is made of, so threads ran no faster than one (measured: 2 threads, 10
files, 1M packets: 0.34 s vs 0.31 s). Forked children share the parent's imports and memory for
free. Each item goes in two steps: the child does the work and sends a small picklable header
(how many rows it has, say); the parent, taking headers in item order, answers with where they
go (``place``); the child writes them there, into columns the parent mapped shared before
forking. So rows are copied once, by the children, in parallel, and the parent merges nothing
(handing rows back through a pipe and merging them measured ~3x the parent's time).
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

if TYPE_CHECKING:
    import socket

T = TypeVar("T")
Finish = Callable[[Any], None]  # in the child: write the item's rows where the parent said
Work = Callable[[T], tuple[Any, Finish]]


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    return hasattr(os, "fork") and hasattr(mmap, "MAP_SHARED")


def shared_zeros(n: int, dt: np.dtype) -> np.ndarray:
    """``n`` zeros in memory forked children write to and the parent sees; only pages written
    are ever backed (the rest is address space, not memory)."""
    size = max(n * dt.itemsize, 1)
    flags = mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
    return np.frombuffer(mmap.mmap(-1, size, flags=flags), dt, n)


class Workers(Generic[T]):
    """``jobs`` children forked once; child ``w`` takes items ``w``, ``w + jobs``, … (its memory
    is warm from its second item on). :meth:`heads` yields each item's header in order, after
    ``place(header)`` has told its child where to write; :meth:`wait` returns once every child
    has written. An exception in a child is raised here at its item's turn (children killed)."""

    def __init__(self, work: Work[T], place: Callable[[Any], Any], items: Sequence[T], jobs: int) -> None:
        import socket  # only where workers are forked: a small replay does not pay for it

        self.work, self.place, self.items = work, place, items
        self.children: list[tuple[int, socket.socket]] = []
        for w in range(min(jobs, len(items))):
            ours, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = 1
                try:
                    ours.close()
                    code = _serve(work, items[w::jobs], theirs)
                finally:
                    os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
            theirs.close()
            self.children.append((pid, ours))

    def heads(self) -> Iterator[Any]:
        try:
            jobs = len(self.children)
            for i in range(len(self.items)):
                sock = self.children[i % jobs][1]
                if i >= jobs:
                    _receive(sock)  # the child wrote its previous item
                head = _receive(sock)
                _send(sock, (True, self.place(head)))
                yield head
        except BaseException:
            self.close()
            raise

    def wait(self) -> None:
        """Every item written (call after all heads)."""
        try:
            jobs = len(self.children)
            for i in range(max(0, len(self.items) - jobs), len(self.items)):  # each child's last item
                _receive(self.children[i % jobs][1])
            for pid, sock in self.children:  # done: each child is exiting
                sock.close()
                os.waitpid(pid, 0)
            self.children = []
        finally:
            self.close()

    def close(self) -> None:
        for pid, sock in self.children:
            sock.close()
            if os.waitpid(pid, os.WNOHANG) == (0, 0):  # still working: an error cut the run short
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        self.children = []


def _serve(work: Work[T], items: Sequence[T], sock: socket.socket) -> int:
    _keep_freed_memory()
    for item in items:
        try:
            head, finish = work(item)
        except BaseException as e:  # everything goes back to the parent, which raises it
            _send(sock, (False, e))
            return 0
        _send(sock, (True, head))
        where = _receive(sock)
        try:
            finish(where)
        except BaseException as e:
            _send(sock, (False, e))
            return 0
        _send(sock, (True, None))
    return 0


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of handing it back: a child's columns and
    temporaries are the same sizes file after file, and memory fresh from the kernel costs a
    page fault per page (measured: half the faults, 0.07 s less system time per child at 1M
    packets). Elsewhere (not glibc) nothing changes."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # the largest glibc allows: bigger blocks come from mmap
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def _send(sock: socket.socket, msg: tuple[bool, Any]) -> None:
    try:
        data = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its words survive
        data = pickle.dumps((False, RuntimeError(f"{type(msg[1]).__name__}: {msg[1]}")))
    sock.sendall(struct.pack("<Q", len(data)) + data)


def _receive(sock: socket.socket) -> Any:
    ok, what = _receive_raw(sock)
    if not ok:
        raise what
    return what


def _receive_raw(sock: socket.socket) -> tuple[bool, Any]:
    (n,) = struct.unpack("<Q", _exactly(sock, 8))
    return pickle.loads(_exactly(sock, n))


def _exactly(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise RuntimeError("a worker process died")
        got += k
    return buf
