"""A sniffer killed from outside mid-trace (an admin's kill, an OOM kill) on the real lab: its
capture stops short, and the silence after that is no evidence of loss. The trace must notice
(the manifest says how and by when it ended) and say inconclusive, naming the point, never LOSS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.json_contract import one_run

pytestmark = pytest.mark.lab

LAB = "pn"
REPO = Path(__file__).resolve().parents[2]
POINT = "west:eth0"  # the sender's own interface: the first request and the last reply point


def _sent(run_dir: Path) -> int:
    try:
        return (run_dir / "probes.jsonl").read_text().count('"event": "sent"')
    except OSError:
        return 0


def test_a_sniffer_killed_mid_run_makes_the_verdict_inconclusive_not_a_loss(lab, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "ping", "--topology", str(lab.topology_path), "west", "east",
         "--count", "40", "--interval", "0.1", "--out", str(out), "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _sent(out) < 10:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        helpers = json.loads((out / "processes.json").read_text())["helpers"]
        victim = next(h for h in helpers if h["what"] == f"tcpdump {POINT}")
        os.kill(victim["pid"], signal.SIGTERM)  # someone else's SIGTERM, halfway through
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = json.loads((out / "probes.json").read_text())
    assert len(report["sent"]) == 40 and all(s.get("rtt_ms") is not None for s in report["sent"]), \
        "the lab is healthy: every probe got its reply"
    entry = next(c for c in json.loads((out / "manifest.json").read_text())["captures"] if c["point"] == POINT)
    # tcpdump catches SIGTERM and exits 0 after its statistics: only the timing gives it away.
    assert entry["ended_early"]["how"] == "exited cleanly, as on a SIGTERM tracer did not send"
    assert 0 < entry["ended_early"]["by_s"] < 60
    doc = one_run(stdout)
    assert proc.returncode == 3, (doc["summary"], stderr)
    assert doc["status"] == "inconclusive"
    assert POINT in doc["damaged"]
    assert any(w.startswith(f"tcpdump on {POINT} ended early (by +") and "exited cleanly" in w for w in doc["warnings"])
    assert not any(f["outcome"] == "lost" for f in doc["findings"]), doc["findings"]
