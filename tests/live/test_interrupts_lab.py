"""Killing a live trace, as a user or a service manager would, on the real lab.

A real ``tracer ping``/``tracer ike`` runs as a subprocess in its own process group and is
hit with SIGKILL, SIGTERM, SIGINT, a double SIGINT or a signal to its whole group, once
five probes have left (its probe journal says when). Afterwards no process it started
(the recorded PIDs, and any tcpdump/bpftrace/ssh that appeared meanwhile) may run; an
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
from pathlib import Path

import pytest

from tracer.subprocs import REGISTRY, alive, cmdline

pytestmark = pytest.mark.lab

LAB = "pa"
REPO = Path(__file__).resolve().parents[2]
HELPERS = ("tcpdump", "bpftrace", "ssh", "dumpcap")


def _procs() -> dict[int, tuple[str, ...]]:
    out = {}
    for e in Path("/proc").iterdir():
        if e.name.isdigit() and (c := cmdline(int(e.name))):
            out[int(e.name)] = c
    return out


def _helpers_since(before: set[int]) -> dict[int, tuple[str, ...]]:
    """Sniffer-like processes that appeared since ``before`` (this test holds the live lock)."""
    return {p: c for p, c in _procs().items() if p not in before and Path(c[0]).name in HELPERS}


def _tracer(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tracer", *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _sent(run_dir: Path) -> int:
    try:
        return (run_dir / "probes.jsonl").read_text().count('"event": "sent"')
    except OSError:
        return 0


def _interrupt(lab, tmp_path: Path, how: str, kind: str = "ping", count: int = 20):
    """Run a trace, hit it with ``how`` once 5 probes left; (exit code, stderr, run dir, leftovers)."""
    before = set(_procs())
    out = tmp_path / f"run-{how}"
    proc = subprocess.Popen(
        _tracer(kind, "--topology", str(lab.topology_path), "west-gw" if kind == "ike" else "west",
                "east-gw" if kind == "ike" else "east", "--count", str(count), "--interval", "0.25", "--out", str(out)),
        cwd=REPO, env=_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while _sent(out) < 5:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        recorded = json.loads((out / "processes.json").read_text())["helpers"]
        assert len(recorded) >= 5  # the sniffers on the paths (and bpftrace) are on record
        running = _helpers_since(before)
        assert {h["pid"] for h in recorded} <= set(running)  # what runs is what is recorded
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
    left = {p: c for p, c in _helpers_since(before).items()}
    left |= {h["pid"]: tuple(h["argv"]) for h in recorded if alive(h["pid"], h["start"])}
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
    doc = json.loads(r.stdout)
    assert r.returncode == 0, doc["summary"]  # the healthy lab: every probe sent was delivered
    assert doc["status"] == "delivered"
    assert len([p for p in doc["probes"] if p["direction"] == "request"]) == sent  # no phantom probes
    assert any(f"run interrupted: {sent} of 20 planned probes were sent" in w for w in doc["warnings"])


def test_an_interrupted_ike_run_counts_the_requests_sent(lab, tmp_path):
    code, err, out, left = _interrupt(lab, tmp_path, "INT", kind="ike")
    assert not left, left
    assert code == 130, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["interrupted"] is True and 5 <= manifest["count"] < 20
    doc = json.loads(_replay(out).stdout)
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
        lab.up()
