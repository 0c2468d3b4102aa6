"""A sniffer that ended before tracer stopped it (killed from outside, crashed) leaves a capture
that stops short: replay must call its silence unknown, not loss (docs/run-directory.md,
``ended_early``)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from tests.cli.tracer_cmd import tracer
from tracer.errors import BadInput
from tracer.run.manifest import EarlyEnd, read_manifest, write_manifest
from tracer.sniff import ended_early
from tracer.sniff.ssh import write_unextracted

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
POINT = "west-gw:ipsec0"  # where gw-forward-drop's requests vanish


def _run_dir(tmp_path: Path, early: object) -> Path:
    d = tmp_path / "run"
    shutil.copytree(CAPTURES / "gw-forward-drop", d)
    doc = json.loads((d / "manifest.json").read_text())
    entry = next(c for c in doc["captures"] if c["point"] == POINT)
    entry |= {"ended_early": early, "backend": "tcpdump"}
    (d / "manifest.json").write_text(json.dumps(doc))
    return d


def test_the_manifest_keeps_how_and_when_a_sniffer_ended(tmp_path):
    d = _run_dir(tmp_path, {"how": "killed by signal 15 (SIGTERM)", "by_s": 2.1})
    m = read_manifest(d)
    entry = next(c for c in m.captures if c.point == POINT)
    assert entry.ended_early == EarlyEnd("killed by signal 15 (SIGTERM)", 2.1)
    write_manifest(d, m)  # written back as it was read
    assert read_manifest(d).captures == m.captures
    assert all(c.ended_early is None for c in m.captures if c.point != POINT)


def test_a_point_whose_sniffer_ended_early_makes_the_loss_there_inconclusive(tmp_path):
    before = tracer("replay", str(CAPTURES / "gw-forward-drop"), "--json")
    assert before.code == 1  # the control: a located loss at exactly this point
    d = _run_dir(tmp_path, {"how": "killed by signal 15 (SIGTERM)", "by_s": 2.1})
    r = tracer("replay", str(d), "--json")
    doc = json.loads(r.out)
    doc = doc["runs"][0] if "runs" in doc else doc
    assert r.code == 3, doc["summary"]
    assert doc["status"] == "inconclusive"
    why = f"tcpdump on {POINT} ended early (by +2.1 s): killed by signal 15 (SIGTERM); the capture tracer has of it is incomplete"
    assert why in doc["warnings"]
    assert doc["damaged"] == {POINT: why}
    text = tracer("replay", str(d))
    assert text.code == 3 and why in text.out + text.err
    assert "LOSS" not in text.out.splitlines()[1]


def test_a_point_whose_columns_did_not_arrive_leaves_the_others_counting(tmp_path):
    # What the SSH sniffer leaves when the host's extraction timed out, failed or was cut
    # short: an empty columns file marked damaged, ended_early naming kept_at. Replay must not
    # refuse the run (a half columns file did: exit 2), only call that point's silence unknown.
    d = _run_dir(tmp_path, None)
    doc = json.loads((d / "manifest.json").read_text())
    entry = next(c for c in doc["captures"] if c["point"] == POINT)
    (d / entry["file"]).unlink()
    kept = "root@west-gw:/root/.cache/tracer/run.x/west-gw_ipsec0.pcap"
    why = f"the host's extraction did not finish within 30 s; the capture stays at {kept}"
    write_unextracted(d / "west-gw_ipsec0.cols", POINT, kept, why)
    entry |= {"file": "west-gw_ipsec0.cols", "backend": "ssh", "remote": True, "kept_at": kept,
              "ended_early": {"how": f"its columns did not arrive: {why}", "by_s": 2.0}}
    (d / "manifest.json").write_text(json.dumps(doc))
    (d / "run.pcapng").unlink(missing_ok=True)
    r = tracer("replay", str(d), "--json")
    out = json.loads(r.out)
    out = out["runs"][0] if "runs" in out else out
    assert r.code == 3, (r.err, out.get("summary"))
    assert out["status"] == "inconclusive" and POINT in out["damaged"] and kept in out["damaged"][POINT]
    assert any(p["sightings"] for p in out["probes"])  # the other points still count


@pytest.mark.parametrize("bad", ["soon", {"how": "x"}, {"how": "x", "by_s": -1}, {"how": 3, "by_s": 1}])
def test_a_malformed_ended_early_is_refused(tmp_path, bad):
    with pytest.raises(BadInput, match="malformed manifest"):
        read_manifest(_run_dir(tmp_path, bad))


@pytest.mark.parametrize(("rc", "before", "forced", "says"), [
    (0, False, False, None),  # stopped by our SIGINT: exited cleanly
    (-signal.SIGINT, False, False, None),  # died of our own signal
    (-signal.SIGKILL, False, True, None),  # we killed it (hung): our doing, its file is what it is
    (-signal.SIGTERM, True, False, "killed by signal 15 (SIGTERM)"),  # killed from outside mid-run
    (0, True, False, "exited cleanly, as on a SIGTERM tracer did not send"),  # tcpdump's SIGTERM
    (1, True, False, "exited with status 1"),
    (-signal.SIGSEGV, False, False, "killed by signal 11 (SIGSEGV)"),  # not the signal we sent
    (2, False, False, "exited with status 2"),
])
def test_how_a_sniffer_ended_is_judged_by_what_tracer_asked(rc, before, forced, says):
    assert ended_early(rc, before, signal.SIGINT, forced) == says
