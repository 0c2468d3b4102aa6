"""Processes the lab started, told apart from PID reuse by their start time (/proc/PID/stat,
read by :mod:`tracer.subprocs`, which the trace's own helpers use too)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

from tracer.subprocs import STOP_WAIT_S, alive, descendants, signal_pid, start_time, stat_fields


@dataclass(frozen=True)
class Proc:
    """A process the lab started: its PID and start time, so a reused PID is never mistaken for it."""

    pid: int
    start: int | None

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, start_time(pid))

    def alive(self) -> bool:
        return alive(self.pid, self.start)

    def tree(self) -> list[Proc]:
        """Its descendants, then itself: what stopping it must take down (sshd -D leaves sessions running)."""
        if not self.alive():
            return []
        return [*(Proc.of(pid) for pid in descendants(self.pid)), self]


class Children:
    """The processes this Python process started: polled and reaped by us, so none is left a zombie."""

    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def add(self, proc: subprocess.Popen[bytes]) -> Proc:
        self._procs[proc.pid] = proc
        return Proc.of(proc.pid)

    def running(self, pid: int) -> bool:
        """Our child still runs (a zombie does not); any other PID: whether it exists."""
        proc = self._procs.get(pid)
        return proc.poll() is None if proc else alive(pid, None)

    def stop(self, procs: Iterable[Proc]) -> None:
        """SIGTERM the given processes (only if still the same ones), SIGKILL after STOP_WAIT_S."""
        live = [p for p in procs if p.alive()]
        for p in live:
            signal_pid(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        while live and time.monotonic() < deadline:
            time.sleep(0.01)
            live = [p for p in live if self._reap(p.pid) and p.alive()]
        for p in live:
            signal_pid(p.pid, signal.SIGKILL)
            self._reap(p.pid, block=True)

    def _reap(self, pid: int, block: bool = False) -> bool:
        """Collect our own child's exit status; returns True while it may still run."""
        proc = self._procs.get(pid)
        if proc is None:
            return True
        try:
            if block:
                proc.wait(timeout=2.0)
            elif proc.poll() is None:
                return True
        except subprocess.TimeoutExpired:
            return True
        self._procs.pop(pid, None)
        return False


__all__ = ["Children", "Proc", "alive", "descendants", "start_time", "stat_fields"]
