"""Processes the lab started, told apart from PID reuse by their start time (/proc/PID/stat)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 on): state, ppid, ...; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ')'


def start_time(pid: int) -> int | None:
    """Process start time (clock ticks since boot): tells a PID from its reuse."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, start: int | None) -> bool:
    """True if ``pid`` runs, is not a zombie, and (if known) started at ``start``."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


def descendants(pid: int) -> list[int]:
    """PIDs of the whole process tree under ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


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
        """SIGTERM the given processes (only if still the same ones), SIGKILL after 3 s."""
        live = [p for p in procs if p.alive()]
        for p in live:
            _signal(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while live and time.monotonic() < deadline:
            time.sleep(0.01)
            live = [p for p in live if self._reap(p.pid) and p.alive()]
        for p in live:
            _signal(p.pid, signal.SIGKILL)
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


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
