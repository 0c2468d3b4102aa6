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
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from tracer.errors import EnvironmentProblem

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


def populate(a: np.ndarray) -> None:
    """Back the pages of ``a`` (a slice of :func:`shared_zeros`) in one call before writing it:
    shared pages faulted in one at a time cost a child more than copying its rows (measured with
    a 1M-packet replay, back to back). Linux 5.14+ (MADV_POPULATE_WRITE); elsewhere the pages fault
    in as they are written, as before."""
    m: Any = a.base  # views, then the memoryview np.frombuffer keeps, then the mapping
    while m is not None and not isinstance(m, mmap.mmap):
        m = m.obj if isinstance(m, memoryview) else getattr(m, "base", None)
    if m is None or a.nbytes == 0:
        return
    off = a.__array_interface__["data"][0] - np.frombuffer(m, np.uint8, 1).__array_interface__["data"][0]
    lo = off - off % mmap.PAGESIZE
    try:
        m.madvise(_MADV_POPULATE_WRITE, lo, off + a.nbytes - lo)
    except (OSError, ValueError):
        pass  # an older kernel, or no such advice: the pages fault in as they are written


_MADV_POPULATE_WRITE = 23  # linux/mman.h; Python 3.11's mmap does not name it


class Workers(Generic[T]):
    """``jobs`` children forked once; child ``w`` takes items ``w``, ``w + jobs``, … (its memory
    is warm from its second item on). :meth:`heads` yields each item's header in order, after
    ``place(header)`` has told its child where to write; :meth:`wait` returns once every child
    has written. An exception in a child is raised here at its item's turn (children killed).
    A child that dies (the OOM killer's SIGKILL) or runs out of memory is an
    :class:`EnvironmentProblem` that says which item and how, named by ``describe(item)``.
    Children die with the parent process (PDEATHSIG); :meth:`close` stops and reaps them."""

    def __init__(self, work: Work[T], place: Callable[[Any], Any], items: Sequence[T], jobs: int,
                 describe: Callable[[T], str] = lambda item: f"the worker for {item!r}") -> None:
        import socket  # only where workers are forked: a small replay does not pay for it

        from tracer.subprocs import die_with_parent

        self.work, self.place, self.items, self.describe = work, place, items, describe
        self.children: list[tuple[int, socket.socket]] = []
        parent = os.getpid()
        for w in range(min(jobs, len(items))):
            ours, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = 1
                try:
                    # Killed when the parent dies, even mid-item (a recv would only see EOF later).
                    die_with_parent(parent, signal.SIGKILL)
                    for _, sock in [*self.children, (0, ours)]:  # the parent's ends: its death is our EOF
                        sock.close()
                    code = _serve(work, items[w::jobs], theirs)
                finally:
                    os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
            theirs.close()
            self.children.append((pid, ours))

    def heads(self) -> Iterator[Any]:
        try:
            jobs = len(self.children)
            for i in range(len(self.items)):
                if i >= jobs:
                    self._receive(i - jobs)  # the child wrote its previous item
                head = self._receive(i)
                self._send(i, (True, self.place(head)))
                yield head
        except BaseException:
            self.close()
            raise

    def wait(self) -> None:
        """Every item written (call after all heads)."""
        try:
            jobs = len(self.children)
            for i in range(max(0, len(self.items) - jobs), len(self.items)):  # each child's last item
                self._receive(i)
            for pid, sock in self.children:  # done: each child is exiting
                sock.close()
                os.waitpid(pid, 0)
            self.children = []
        finally:
            self.close()

    def close(self) -> None:
        """Every child stopped (if still working: an error cut the run short) and reaped."""
        for pid, sock in self.children:
            sock.close()
            try:
                if os.waitpid(pid, os.WNOHANG) == (0, 0):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            except ChildProcessError:  # already reaped (see _died)
                pass
        self.children = []

    def _receive(self, i: int) -> Any:
        """From item ``i``'s child: what it sent, or its error raised."""
        pid, sock = self.children[i % len(self.children)]
        try:
            ok, what = _receive_raw(sock)
        except (OSError, EOFError) as e:
            raise self._died(i, pid) from e
        if ok:
            return what
        if isinstance(what, MemoryError):  # the machine's limit, not a bug of ours
            raise EnvironmentProblem(f"{self.describe(self.items[i])} ran out of memory "
                                     f"(MemoryError{': ' + str(what) if str(what) else ''})") from what
        raise what

    def _send(self, i: int, msg: tuple[bool, Any]) -> None:
        pid, sock = self.children[i % len(self.children)]
        try:
            _send(sock, msg)
        except OSError as e:  # BrokenPipeError: never to be taken for our stdout closed
            raise self._died(i, pid) from e

    def _died(self, i: int, pid: int) -> EnvironmentProblem:
        """Item ``i``'s child broke off: reaped, and how it ended told."""
        return EnvironmentProblem(f"{self.describe(self.items[i])} {_ended(pid)}")


def _ended(pid: int) -> str:
    """How child ``pid``, which closed its end (so is exiting), ended; reaped."""
    for _ in range(_GONE_WAIT_S * 100):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:  # alive but not talking: nothing it could still say
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "stopped answering (killed)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.valid_signals() else f"signal {sig}"
        return f"was killed by {name}" + (" (out of memory?)" if sig == signal.SIGKILL else "")
    return f"died (exit status {os.waitstatus_to_exitcode(status)})"


_GONE_WAIT_S = 2  # a child whose socket closed is exiting: how long it may take


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
        if not k:  # the other end closed: its process ended
            raise EOFError("the other end of a worker's socket closed")
        got += k
    return buf
