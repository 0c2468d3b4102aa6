"""Processes told apart from PID reuse, stopped and reaped: with real processes we start (no root needed)."""

from __future__ import annotations

import subprocess
import sys
import time

from tracer.lab import process
from tracer.lab.process import Children, Proc

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_reused_pid_is_not_our_process() -> None:
    children = Children()
    proc = subprocess.Popen(SLEEPER)
    try:
        me = children.add(proc)
        assert me.pid == proc.pid and me.start == process.start_time(proc.pid) and me.alive()
        assert not Proc(proc.pid, (me.start or 0) + 1).alive()  # same PID, other start: someone else
        assert children.running(proc.pid)
    finally:
        children.stop([me])
    assert proc.poll() is not None  # stopped and reaped: no zombie left
    assert not me.alive() and not children.running(proc.pid) and me.tree() == []


def test_tree_stops_descendants_first() -> None:
    code = f"import subprocess, time; subprocess.Popen({SLEEPER!r}); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    children = Children()
    top = children.add(parent)
    try:
        for _ in range(500):
            if process.descendants(parent.pid):
                break
            time.sleep(0.01)
        tree = top.tree()
        assert [p.pid for p in tree][-1] == parent.pid and len(tree) == 2
    finally:
        children.stop(top.tree())
    assert not any(p.alive() for p in tree)
