"""Helper processes die with tracer (PDEATHSIG), and what a killed tracer left is found again by
PID + start time + command line — never a reused PID, never a live trace's helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tracer import subprocs
from tracer.subprocs import Helper, alive, reap_orphans, start_time

ROOT = Path(__file__).resolve().parents[1]


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "300"])


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _registry(folder: Path, owner: tuple[int, int | None], helpers: list[Helper]) -> Path:
    path = folder / f"{owner[0]}-{owner[1]}.json"
    path.write_text(json.dumps({"owner": {"pid": owner[0], "start": owner[1]},
                                "helpers": [h.to_dict() for h in helpers]}))
    return path


def test_the_helpers_of_a_dead_tracer_are_stopped_and_nothing_else(tmp_path):
    orphan, reused, live_owners = _sleeper(), _sleeper(), _sleeper()
    try:
        me = (os.getpid(), start_time(os.getpid()))
        dead = _registry(tmp_path, (_dead_pid(), 1), [
            Helper(orphan.pid, start_time(orphan.pid), ("sleep", "300"), "sleep"),
            # The same PID number with another start time: a reused PID, not ours to kill.
            Helper(reused.pid, (start_time(reused.pid) or 0) + 1, ("sleep", "300"), "reused"),
        ])
        mine = _registry(tmp_path, me, [Helper(live_owners.pid, start_time(live_owners.pid), ("sleep", "300"), "x")])
        stopped = reap_orphans(tmp_path)
        assert [h.what for h in stopped] == ["sleep"]
        assert orphan.wait(5) == -15  # SIGTERM
        assert reused.poll() is None and live_owners.poll() is None
        assert not dead.exists() and mine.exists()  # a live tracer's record stays
    finally:
        for p in (orphan, reused, live_owners):
            p.kill()
            p.wait()


def test_a_different_command_line_under_the_recorded_pid_is_left_alone(tmp_path):
    other = _sleeper()
    try:
        _registry(tmp_path, (_dead_pid(), 1), [Helper(other.pid, start_time(other.pid), ("tcpdump", "-i", "x"), "t")])
        assert reap_orphans(tmp_path) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_wrapper_that_execs_in_place_still_matches():
    p = subprocess.Popen(["env", "sleep", "300"])  # env execs sleep: /proc shows "sleep 300"
    try:
        deadline = time.monotonic() + 5
        while subprocs.cmdline(p.pid) != ("sleep", "300") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert Helper(p.pid, start_time(p.pid), ("env", "sleep", "300"), "x").same()
        assert not Helper(p.pid, start_time(p.pid), ("env", "sleep", "301"), "x").same()
    finally:
        p.kill()
        p.wait()


def test_an_unreadable_registry_file_is_dropped(tmp_path):
    (tmp_path / "1-2.json").write_text("{not json")
    assert reap_orphans(tmp_path) == []
    assert not (tmp_path / "1-2.json").exists()


def test_spawned_helpers_die_with_a_sigkilled_parent_and_are_on_record(tmp_path):
    # A Python "tracer" spawns a helper, records it in a run directory, then is SIGKILLed.
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from tracer import subprocs
        subprocs.REGISTRY = Path({str(tmp_path / "registry")!r})
        subprocs.record_in(Path({str(tmp_path)!r}))
        p = subprocs.spawn(["sleep", "300"], "sleep")
        print(p.pid, flush=True)
        time.sleep(300)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    start = start_time(child)
    record = json.loads((tmp_path / "processes.json").read_text())
    assert [(h["pid"], h["start"], h["argv"][-2:]) for h in record["helpers"]] == [(child, start, ["sleep", "300"])]
    assert record["owner"]["pid"] == parent.pid
    assert alive(child, start)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child, start) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child, start)  # the kernel's parent-death signal
    if os.geteuid() == 0 or (tmp_path / "registry").exists():
        assert list((tmp_path / "registry").glob("*.json"))  # the dead owner's record outlived it...
        assert reap_orphans(tmp_path / "registry") == []  # ...and is cleared (nothing left to stop)
        assert not list((tmp_path / "registry").glob("*.json"))


def test_spawn_runs_no_python_in_the_child_while_threads_exist(monkeypatch):
    # preexec_fn runs Python between fork and exec, which can hang the child when other threads
    # (bpftrace's reader, ssh pumps, parallel sniffer starts) hold locks at the fork.
    import threading

    seen: list[dict] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    monkeypatch.setattr(subprocess, "Popen", popen)
    p = subprocs.spawn(["sleep", "300"], "sleep")
    try:
        assert seen and seen[-1].get("preexec_fn") is None and seen[-1].get("start_new_session")
        deadline = time.monotonic() + 5
        while subprocs.cmdline(p.pid) != ("sleep", "300") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert subprocs.cmdline(p.pid) == ("sleep", "300")  # setpriv and sh exec'd in place
        status = Path(f"/proc/{p.pid}/status").read_text()
        assert f"PPid:\t{os.getpid()}\n" in status
    finally:
        stop.set()
        busy.join()
        p.kill()
        p.wait()
        subprocs.ended(p)


def test_a_helper_whose_tracer_died_before_the_prctl_exits_at_once():
    # The window between fork and setpriv's prctl: sh finds its parent is not the tracer that
    # spawned it and exits before becoming the helper (nothing would signal it later).
    cmd = subprocs.wrapped(["sleep", "300"], _dead_pid())
    assert cmd is not None
    p = subprocess.Popen(cmd)
    assert p.wait(timeout=5) == 1


def test_a_missing_program_is_file_not_found_as_with_popen():
    import pytest

    with pytest.raises(FileNotFoundError):
        subprocs.spawn(["/nonexistent/tcpdump", "-i", "x"], "x")
