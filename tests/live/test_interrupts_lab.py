"""Killing a live trace, as a user or a service manager would, on the real lab (in SSH mode:
east-gw is captured by a remote tcpdump over SSH, the others by local tcpdumps).

A real ``tracer ping``/``tracer ike`` runs as a subprocess in its own process group and is
hit with SIGKILL, SIGTERM, SIGINT, a double SIGINT or a signal to its whole group, once
five probes have left (its probe journal says when). Afterwards no process it started may
run: neither the recorded PIDs nor any process carrying the mark put in the trace's
environment (which every descendant inherits, reparented or not); an
interrupt exits 130 with a verdict for the probes sent and a run directory that replays
without phantom losses; a run killed outright is reported incomplete, and ``tracer lab
down`` afterwards leaves nothing behind either.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.json_contract import one_run
from tracer.subprocs import REGISTRY, alive, cmdline, descendants, start_time

pytestmark = pytest.mark.lab

LAB = "pa"
LAB_SSH = True  # east-gw captured over SSH: the remote tcpdumps must stop too
REPO = Path(__file__).resolve().parents[2]
MARK = "TRACER_TEST_INTERRUPT"  # set in the trace's environment; its helpers inherit it


def _ours(mark: str) -> dict[int, tuple[str, ...]]:
    """Every process that carries this test's environment mark: the trace's descendants, even
    once reparented to init (other helpers' traces on this machine never carry it)."""
    needle = f"{MARK}={mark}".encode()
    out = {}
    for e in Path("/proc").iterdir():
        try:
            if e.name.isdigit() and needle in (e / "environ").read_bytes().split(b"\0"):
                out[int(e.name)] = cmdline(int(e.name)) or ()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return out


def _tracer(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tracer", *argv]


def _env(mark: str = "") -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), MARK: mark}


def _sent(run_dir: Path) -> int:
    try:
        return (run_dir / "probes.jsonl").read_text().count('"event": "sent"')
    except OSError:
        return 0


def _interrupt(lab, tmp_path: Path, how: str, kind: str = "ping", count: int = 20):
    """Run a trace, hit it with ``how`` once 5 probes left; (exit code, stderr, run dir, leftovers)."""
    mark = uuid.uuid4().hex
    out = tmp_path / f"run-{how}"
    ends = ["west-gw", "east-gw"] if kind == "ike" else ["west", "east"]
    counts = ["--sizes", "1000,1100", "--count", str(count // 2)] if kind == "mtu" else ["--count", str(count)]
    proc = subprocess.Popen(
        _tracer(kind, "--topology", str(lab.topology_path), *ends, *counts, "--interval", "0.25", "--out", str(out)),
        cwd=REPO, env=_env(mark), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while _sent(out) < 5:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        recorded = json.loads((out / "processes.json").read_text())["helpers"]
        assert len(recorded) >= 5  # the sniffers on the paths (and bpftrace) are on record
        assert {h["pid"] for h in recorded} <= set(_ours(mark))  # what is recorded runs, as the trace's own
        assert any(h["argv"][-1].startswith("exec sh -c") for h in recorded)  # the SSH capture too
        if how == "KILL":
            proc.send_signal(signal.SIGKILL)
        elif how == "TERM":
            proc.send_signal(signal.SIGTERM)
        elif how == "INT":
            proc.send_signal(signal.SIGINT)
        elif how == "INT2":  # the second one lands while the first is being handled (cleanup)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
        elif how == "PGKILL":
            os.killpg(proc.pid, signal.SIGKILL)
        elif how == "PGTERM":
            os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)  # PDEATHSIG'd helpers get their SIGTERM at once; give them time to exit
    left = _ours(mark)
    left |= {h["pid"]: tuple(h["argv"]) for h in recorded if alive(h["pid"], h["start"])}
    # The remote side: east-gw's sshd runs the remote tcpdumps as its sessions' children; once
    # the ssh clients are gone the sessions end and stop them (no environment mark crosses ssh).
    sshd = lab.status()["ssh"]["sshd_pid"]
    deadline = time.monotonic() + 5
    while (remote := descendants(sshd)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left |= {p: cmdline(p) or () for p in remote}
    return proc.returncode, err.decode(), out, left


def _replay(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_tracer("replay", str(run_dir), "--json"), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how", ["TERM", "INT", "INT2", "PGTERM"])
def test_an_interrupt_stops_everything_and_gives_the_verdict_for_what_was_sent(lab, tmp_path, how):
    code, err, out, left = _interrupt(lab, tmp_path, how)
    assert not left, left
    assert code == 130, err
    assert "interrupted; the verdict covers the probes sent" in err
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "probes.json").read_text())
    sent = len(report["sent"])
    assert 5 <= sent < 20 and report["interrupted"] is True
    assert (manifest["count"], manifest["planned"], manifest["interrupted"]) == (sent, 20, True)
    # Every sniffer was stopped so that it flushed and reported its drop count (not killed).
    assert len(manifest["captures"]) >= 10 and all(c["drops"] == 0 for c in manifest["captures"])
    assert not list(out.glob("*.tmp.pcap"))
    r = _replay(out)
    doc = one_run(r.stdout)
    assert r.returncode == 0, doc["summary"]  # the healthy lab: every probe sent was delivered
    assert doc["status"] == "delivered"
    # No phantom probes: exactly the seqs that left, 1..sent like ping's.
    assert [p["seq"] for p in doc["probes"] if p["direction"] == "request"] == list(range(1, sent + 1))
    assert any(f"run interrupted: {sent} of 20 planned probes were sent" in w for w in doc["warnings"])


@pytest.mark.parametrize("kind", ["ike", "mtu"])
def test_interrupted_ike_and_mtu_runs_count_the_probes_sent(lab, tmp_path, kind):
    code, err, out, left = _interrupt(lab, tmp_path, "INT", kind=kind)
    assert not left, left
    assert code == 130, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["interrupted"] is True and 5 <= manifest["count"] < 20 and manifest["planned"] == 20
    doc = one_run(_replay(out).stdout)
    assert doc["status"] == "delivered", doc["summary"]


@pytest.mark.parametrize("how", ["KILL", "PGKILL"])
def test_sigkill_leaves_no_process_and_an_incomplete_run_directory(lab, tmp_path, how):
    code, _, out, left = _interrupt(lab, tmp_path, how)
    assert code == -signal.SIGKILL
    assert not left, left  # PDEATHSIG: the kernel stopped every helper when tracer died
    assert not (out / "manifest.json").exists()
    r = _replay(out)
    assert r.returncode == 2
    assert "incomplete run directory: the trace was killed before writing manifest.json" in r.stderr
    assert r.stderr.count("\n") == 1  # one line
    # Its entry in the registry outlived it; `tracer lab down` removes it (and would stop its helpers).
    owner = json.loads((out / "processes.json").read_text())["owner"]
    assert (REGISTRY / f"{owner['pid']}-{owner['start']}.json").exists()
    down = subprocess.run(_tracer("lab", "down", "--name", LAB), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120)
    try:
        assert down.returncode == 0, down.stderr
        assert not (REGISTRY / f"{owner['pid']}-{owner['start']}.json").exists()
    finally:
        lab.up(ssh=True)


def test_lab_down_stops_what_a_dead_trace_left_running(lab, tmp_path):
    # PDEATHSIG normally leaves nothing for it to do; here a dead trace's record names a helper
    # that still runs (as if the signal had been lost), and one whose PID was since reused.
    helper = subprocess.Popen(["sleep", "300"])
    reused = subprocess.Popen(["sleep", "301"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    entry = REGISTRY / f"{dead.pid}-1.json"
    REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
    entry.write_text(json.dumps({"owner": {"pid": dead.pid, "start": 1}, "helpers": [
        {"pid": helper.pid, "start": start_time(helper.pid), "argv": ["sleep", "300"], "what": "tcpdump west:eth0"},
        {"pid": reused.pid, "start": start_time(reused.pid), "argv": ["sleep", "300"], "what": "tcpdump x:y"},
    ]}))
    try:
        down = subprocess.run(_tracer("lab", "down", "--name", LAB), cwd=REPO, env=_env(), capture_output=True,
                              text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert f"stopped tcpdump west:eth0 (pid {helper.pid}) left by a killed trace" in down.stderr
        assert helper.wait(5) == -signal.SIGTERM
        assert reused.poll() is None  # another command line under a recorded PID: not ours
        assert not entry.exists()
    finally:
        for p in (helper, reused):
            p.kill()
            p.wait()
        entry.unlink(missing_ok=True)
        lab.up(ssh=True)
