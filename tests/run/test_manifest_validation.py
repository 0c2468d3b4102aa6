"""Numbers in a run directory are checked before anything is sized by them, and an interrupted
run replays as what it sent, never as what it planned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.tracer_cmd import tracer
from tracer.errors import BadInput
from tracer.run.manifest import read_manifest, read_probe_report
from tracer.run.replay import load_run, replay_run

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


def _copy(tmp_path: Path, name: str = "gw-forward-drop") -> Path:
    d = tmp_path / name
    shutil.copytree(CAPTURES / name, d)
    return d


def _edit(run_dir: Path, **changes: object) -> None:
    path = run_dir / "manifest.json"
    doc = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(("field", "value", "says"), [
    ("count", 1e9, "count 1000000000.0: expected an integer"),
    ("count", 10**9, "count 1000000000: expected 0 to 1000000"),
    ("count", "20", "count '20': expected an integer"),
    ("count", -1, "count -1: expected 0 to"),
    ("count", True, "count True: expected an integer"),
    ("run", "0x1", "run '0x1': expected an integer"),
    ("run", 2**40, "run 1099511627776: expected 0 to 4294967295"),
    ("planned", 2, "count 3 is more than the 2 planned"),
    ("origin", 5, "origin 5: expected a string"),
])
def test_bad_manifest_numbers_are_one_line_bad_input(tmp_path, field, value, says):
    d = _copy(tmp_path)
    _edit(d, **{field: value})
    with pytest.raises(BadInput, match="malformed manifest") as e:
        read_manifest(d)
    assert says in str(e.value)


@pytest.mark.parametrize(("entry", "says"), [
    ({"point": "west:eth0", "file": "../../etc/passwd"}, "must name a file inside the run directory"),
    ({"point": "west:eth0", "file": "/etc/passwd"}, "must name a file inside the run directory"),
    ({"point": "west:eth0", "file": 7}, "expected a file name"),
    ({"point": "west:eth0", "file": "west_eth0.pcapng", "drops": -3}, "drops -3"),
    ({"point": "west:eth0", "file": "west_eth0.pcapng", "drops": "many"}, "drops 'many'"),
    ({"point": ["west"], "file": "west_eth0.pcapng"}, "point ['west']"),
])
def test_bad_capture_entries_are_refused(tmp_path, entry, says):
    d = _copy(tmp_path)
    _edit(d, captures=[entry])
    with pytest.raises(BadInput) as e:
        read_manifest(d)
    assert says in str(e.value)


@pytest.mark.parametrize("field", ["topology", "report"])
@pytest.mark.parametrize("value", ["../../etc/passwd", "/etc/passwd", "a/../../b"])
def test_other_manifest_paths_stay_inside_the_run_directory(tmp_path, field, value):
    d = _copy(tmp_path)
    _edit(d, **{field: value})
    with pytest.raises(BadInput, match="must name a file inside the run directory"):
        read_manifest(d)


@pytest.mark.parametrize("field", ["topology", "report"])
def test_other_manifest_paths_must_be_strings(tmp_path, field):
    d = _copy(tmp_path)
    _edit(d, **{field: 7})
    with pytest.raises(BadInput, match="expected a file name"):
        read_manifest(d)


@pytest.mark.parametrize("value", ["../../etc", "/etc", "a/../.."])
def test_an_evidence_folder_outside_the_run_costs_only_the_evidence(tmp_path, value):
    # Like netstate (tests/run/test_netstate_replay.py): the verdict stands, the folder is not read.
    d = _copy(tmp_path)
    _edit(d, evidence=value)
    (v,) = replay_run(load_run([d]))
    assert f"evidence '{value}' is not a folder name; evidence not read" in "\n".join(v.warnings)


def test_a_huge_count_on_the_command_line_is_exit_2_in_one_line(tmp_path):
    d = _copy(tmp_path)
    _edit(d, count=10**9)
    r = tracer("replay", str(d))
    assert r.code == 2
    assert r.err.count("\n") == 1 and "count 1000000000: expected 0 to 1000000" in r.err


def _interrupted(run_dir: Path, sent: int, planned: int, manifest_count: int) -> None:
    """Make a recorded run look as if Ctrl-C came after ``sent`` probes (a report, like live traces write)."""
    doc = json.loads((run_dir / "manifest.json").read_text())
    probes = doc.pop("probe")["sent"][:sent]
    (run_dir / "probes.json").write_text(json.dumps({
        "format": "tracer-probes/1", "kind": "ping", "planned": planned, "interrupted": True,
        "options": {}, "sent": probes}))
    doc |= {"report": "probes.json", "count": manifest_count, "planned": planned, "interrupted": True}
    (run_dir / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("manifest_count", [1, 3])
def test_an_interrupted_run_counts_only_the_probes_sent(tmp_path, manifest_count):
    # gw-forward-drop: every request dies inside west-gw. Cut after 1 of 3, the verdict is about
    # that one probe: "1/1 lost", not "3/3" (nor 2 phantoms) — even if the manifest said 3.
    d = _copy(tmp_path)
    _interrupted(d, sent=1, planned=3, manifest_count=manifest_count)
    (v,) = replay_run(load_run([d]))
    (f,) = [f for f in v.findings if f.outcome == "lost"]
    assert (f.count, f.total) == (1, 1)
    assert "run interrupted: 1 of 3 planned probes were sent; the verdict covers those 1" in v.warnings


@pytest.mark.parametrize(("sent", "planned", "count", "says"), [
    (3, 2, 2, "3 probes sent of 2 planned"),
    (2, 3, 5, "count 5 disagrees with probes.json (2 sent of 3 planned)"),
    (1, 10**9, 1, "planned 1000000000: expected 0 to 1000000"),
])
def test_a_report_that_disagrees_with_the_manifest_is_refused(tmp_path, sent, planned, count, says):
    d = _copy(tmp_path)
    _interrupted(d, sent=sent, planned=planned, manifest_count=count)
    doc = json.loads((d / "manifest.json").read_text())
    doc.pop("planned")
    (d / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BadInput) as e:
        read_probe_report(d, read_manifest(d))
    assert says in str(e.value)


def test_duplicate_or_out_of_range_seqs_are_refused(tmp_path):
    d = _copy(tmp_path)
    _interrupted(d, sent=2, planned=3, manifest_count=2)
    report = json.loads((d / "probes.json").read_text())
    report["sent"][1]["seq"] = 0
    (d / "probes.json").write_text(json.dumps(report))
    with pytest.raises(BadInput, match="seqs must be distinct"):
        read_probe_report(d, read_manifest(d))


def test_a_run_killed_before_its_manifest_is_reported_incomplete(tmp_path):
    d = tmp_path / "killed"
    d.mkdir()
    (d / "west_eth0.tmp.pcap").write_bytes(b"")
    (d / "probes.jsonl").write_text('{"event": "sent", "seq": 0}\n{"event": "sent", "seq": 1}\n'
                                    '{"event": "answered", "seq": 0}\n')
    r = tracer("replay", str(d))
    assert r.code == 2 and r.err.count("\n") == 1
    assert "incomplete run directory: the trace was killed before writing manifest.json (2 probes sent" in r.err


def test_replay_src_and_dst_must_belong_to_the_topology(tmp_path):
    r = tracer("replay", str(CAPTURES / "all-delivered"), "--dst", "203.0.113.99")
    assert r.code == 2 and r.err.count("\n") == 1
    assert "--dst 203.0.113.99: no node of the topology" in r.err
    assert tracer("replay", str(CAPTURES / "all-delivered"), "--src", "192.0.2.10").code == 0


def test_a_bad_esp_key_file_is_refused_before_the_captures_are_read(tmp_path):
    keys = tmp_path / "esp_sa"
    keys.write_text("this is not an esp_sa line\n")
    r = tracer("replay", str(CAPTURES / "all-delivered"), "--esp-keys", str(keys))
    assert r.code == 2 and r.err.count("\n") == 1 and str(keys) in r.err


def test_a_probe_report_of_many_probes_is_read_past_the_small_file_limit(tmp_path):
    # 40,000 probes make a ~5.5 MB probes.json (over textfile.LIMIT): a run tracer itself writes.
    d = _copy(tmp_path, "asymmetric-return-routed")
    n = 40_000
    report = json.loads((d / "probes.json").read_text())
    first = report["sent"][0]
    report["planned"] = n
    report["sent"] = [dict(first, seq=i, sent_ns=first["sent_ns"] + i * 1000) for i in range(n)]
    (d / "probes.json").write_text(json.dumps(report, indent=2))
    assert (d / "probes.json").stat().st_size > 4 * 1024 * 1024
    _edit(d, count=n)
    got = read_probe_report(d, read_manifest(d))
    assert got is not None and len(got.sent) == n


def test_a_huge_probe_report_of_a_few_probes_is_refused_before_parsing(tmp_path):
    # The bound follows the manifest's count: 3 probes may not bring a 6 MB probes.json.
    d = _copy(tmp_path, "asymmetric-return-routed")
    report = json.loads((d / "probes.json").read_text())
    report["sent"][0]["error"] = "x" * (6 * 1024 * 1024)
    (d / "probes.json").write_text(json.dumps(report))
    with pytest.raises(BadInput, match="probe report is larger than"):
        read_probe_report(d, read_manifest(d))


def test_evidence_with_non_ascii_text_survives_a_c_locale(tmp_path: Path) -> None:
    """Snapshots are written as UTF-8 (orjson does not escape), whatever the locale: a log line
    in another language must neither stop the run's writing nor be unreadable afterwards."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path\n"
        "from tracer.model.evidence import Snapshot\n"
        "from tracer.run.manifest import write_evidence\n"
        "line = 'd\\u00e9j\\u00e0 vu \\u2014 \\u9023\\u7d50'\n"
        "write_evidence(Path(sys.argv[1]), [Snapshot('logs', 'west-gw', lines=(line,))])\n"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env)
    from tracer.run.manifest import EVIDENCE, Manifest, read_evidence

    m = Manifest.__new__(Manifest)
    object.__setattr__(m, "evidence", EVIDENCE)
    _, notes = read_evidence(tmp_path, m)
    assert notes == []
    (path,) = (tmp_path / EVIDENCE).glob("*.json")
    assert "déjà vu — 連結" in path.read_text(encoding="utf-8")
