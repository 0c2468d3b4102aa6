"""``tracer report``, the real command line on recorded scenarios: the bundle's first file is
SUMMARY.txt, its verdict is what ``tracer replay`` prints, every capture is in it, it is written
owner-only and never over an existing file without --force; ``-o -`` streams it; bad input is one
line and exit 2."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.cli.tracer_cmd import CAPTURES, ROOT, assert_bad_input, tracer
from tests.json_contract import validated

RUN = CAPTURES / "esp-blocked"
FOLDER = "tracer-report-esp-blocked"


def _members(path: Path | bytes, folder: str = FOLDER) -> dict[str, bytes]:
    tar = tarfile.open(fileobj=io.BytesIO(path), mode="r:gz") if isinstance(path, bytes) else tarfile.open(path)
    with tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        assert names[0] == f"{folder}/SUMMARY.txt", names[:3]
        return {m.name.removeprefix(folder + "/"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_report_writes_an_owner_only_bundle(tmp_path: Path) -> None:
    out = tmp_path / "esp-blocked.tar.gz"
    r = tracer("report", RUN, "-o", out)
    assert (r.code, r.err) == (0, ""), r
    assert r.out.startswith(f"wrote {out}: ") and r.out.count("\n") == 1
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    files = _members(out)
    assert files["verdict.txt"].decode() == tracer("replay", RUN).out
    assert files["verdict.json"].decode() == tracer("replay", RUN, "--json").out
    for c in json.loads((RUN / "manifest.json").read_text())["captures"]:
        assert files[f"run/{c['file']}"] == (RUN / c["file"]).read_bytes()
    summary = files["SUMMARY.txt"].decode()
    assert summary.startswith("tracer problem report\n")
    assert "LOSS  3/3 echo requests lost inside router between eth0 and eth1 (forward)" in summary


def test_an_existing_file_is_kept_without_force(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    out.write_text("precious")
    assert_bad_input(tracer("report", RUN, "-o", out), f"tracer: {out}: exists; pass --force to overwrite it")
    assert out.read_text() == "precious"
    out.chmod(0o644)
    r = tracer("report", RUN, "-o", out, "--force")
    assert r.code == 0, r
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "SUMMARY.txt" in _members(out)


def test_dash_writes_the_bundle_to_stdout() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tracer", "report", str(RUN), "-o", "-"], cwd=ROOT, env=env,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().startswith("wrote stdout: ")
    files = _members(proc.stdout)
    assert files["verdict.txt"].decode() == tracer("replay", RUN).out


def test_json_says_what_was_written(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    r = tracer("report", RUN, "-o", out, "--json")
    assert (r.code, r.err) == (0, ""), r
    full = validated(r.out)
    assert full["runs"] == validated(tracer("replay", RUN, "--json").out)["runs"]
    doc = full["report"]
    assert doc["path"] == str(out) and doc["folder"] == FOLDER
    assert doc["files"][0] == {"name": f"{FOLDER}/SUMMARY.txt", "size": len(_members(out)["SUMMARY.txt"])}
    assert [f["name"] for f in doc["files"]] == [f"{FOLDER}/{n}" for n in _members(out)]
    assert (doc["redactions"], doc["left_out"]) == ([], [])
    assert doc["verdict"] == {"status": "loss", "exit_code": 1,
                              "summary": "3/3 echo requests lost inside router between eth0 and eth1 (forward)"}


def test_redactions_are_reported(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    (run / "evidence").mkdir()
    (run / "evidence" / "swanctl.conf").write_text("secrets {\n  ike-1 {\n    secret = 0s0123456789abcdef\n  }\n}\n")
    (run / "keys.log").write_text("09[CHD]    0: F2 76 D1 67\n")
    r = tracer("report", run, "-o", tmp_path / "b.tar.gz", "--json")
    assert r.code == 0, r
    doc = validated(r.out)["report"]
    assert doc["redactions"] == [{"file": "run/evidence/swanctl.conf", "what": "pre-shared key or password", "count": 1}]
    assert doc["left_out"] == [{"file": "keys.log", "why": "key or secrets file (by its name)"}]
    files = _members(tmp_path / "b.tar.gz", "tracer-report-run")
    assert "keys.log" not in " ".join(files) and b"0s0123456789abcdef" not in b"".join(files.values())
    assert b"secret = REDACTED" in files["run/evidence/swanctl.conf"]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("captures/nope", "-o", "{tmp}/b.tar.gz"), "tracer: captures/nope: no such run directory"),
        (("tests", "-o", "{tmp}/b.tar.gz"),
         "tracer: tests: not a run directory (no manifest.json); pass capture files and --topology instead"),
        (("README.md", "-o", "{tmp}/b.tar.gz"),
         "tracer: README.md: not a run directory (a run directory holds manifest.json and the captures)"),
        (("captures/esp-blocked", "-o", "{tmp}"),
         "tracer: {tmp}: is a directory; give the bundle's file name (e.g. -o bundle.tar.gz)"),
        (("captures/esp-blocked", "-o", "{tmp}/no/b.tar.gz"), "tracer: {tmp}/no: no such directory for the bundle"),
        (("captures/esp-blocked",), "tracer: the following arguments are required: --output/-o (see tracer --help)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], line: str) -> None:
    assert_bad_input(tracer("report", *(a.format(tmp=tmp_path) for a in args)), line.format(tmp=tmp_path))
    assert not (tmp_path / "b.tar.gz").exists()


def test_json_with_the_bundle_on_stdout_is_refused_as_a_json_error() -> None:
    r = tracer("report", "captures/esp-blocked", "-o", "-", "--json")
    line = "--json needs -o FILE: with -o - stdout carries the bundle"
    assert (r.code, r.err) == (2, f"tracer: {line}\n")
    doc = validated(r.out)  # --json: the error as a document on stdout too (docs/json.md)
    assert doc["error"] == {"message": line, "exit_code": 2} and doc["runs"] == [] and doc["command"] == "report"


def test_an_unreadable_manifest_is_bad_input(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{not json")
    r = tracer("report", run, "-o", tmp_path / "b.tar.gz")
    assert (r.code, r.out) == (2, "") and r.err.startswith(f"tracer: {run}/manifest.json: unreadable manifest (")
    assert r.err.count("\n") == 1


def test_help_has_examples() -> None:
    r = tracer("report", "--help")
    assert (r.code, r.err) == (0, "")
    assert r.out.startswith("usage: tracer report ")
    lines = r.out.splitlines()
    examples = lines[lines.index("examples:") + 1:]
    assert examples[0] == "  tracer report captures/esp-blocked -o esp-blocked.tar.gz"
    assert "  tracer report run1 -o - | tar tzf -          # the bundle on stdout" in examples
