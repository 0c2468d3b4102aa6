"""Observation columns files (tracer.columns): what an SSH host with tracer sends back instead of
its capture. Written by the real ``tracer extract`` command, read back by replay: a recorded run
whose captures are swapped for their columns gives the same verdict, field for field."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli.tracer_cmd import tracer
from tracer.capture.observe import observe_file
from tracer.columns import FORMAT, fingerprint, read_columns, write_columns
from tracer.errors import CaptureError
from tracer.run.manifest import MANIFEST

ROOT = Path(__file__).resolve().parents[2]


def test_format_names_todays_columns() -> None:
    # COLUMNS changed: bump the version in FORMAT and put the new fingerprint there.
    assert FORMAT.split()[1] == fingerprint()


def test_extract_check_prints_the_format_without_numpy() -> None:
    probe = "import runpy, sys; sys.argv = ['tracer', 'extract', '--check']\n" \
            "try:\n  runpy.run_module('tracer', run_name='__main__')\nexcept SystemExit: pass\n" \
            "print('numpy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.stdout.split("\n")[:2] == [FORMAT, "False"]


def test_round_trip_keeps_every_column(tmp_path: Path) -> None:
    biggest = max((ROOT / "captures").glob("*/*.pcapng"), key=lambda f: f.stat().st_size)
    seen = observe_file(biggest, "west-gw:wan0")
    assert len(seen.obs) > 50
    buf = io.BytesIO()
    n = write_columns(buf, seen.obs.cols, "west-gw:wan0", "root@gw:/var/tmp/x.pcap", ["a warning"], None)
    (tmp_path / "x.cols").write_bytes(buf.getvalue())
    cf = read_columns(tmp_path / "x.cols")
    assert (cf.point, cf.capture, cf.warnings, cf.damaged, len(cf)) == ("west-gw:wan0", "root@gw:/var/tmp/x.pcap",
                                                                          ["a warning"], None, len(seen.obs))
    for k, v in seen.obs.cols.items():
        assert cf.cols[k].dtype == v.dtype and np.array_equal(cf.cols[k], v), k
    assert n < 150 + len(seen.obs) * 40  # compressed: tens of bytes a packet, not ~120


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not ours", b"TRCOLS1\nnot zlib"])
def test_damaged_files_are_one_line_capture_errors(tmp_path: Path, damage: bytes) -> None:
    (tmp_path / "x.cols").write_bytes(damage)
    with pytest.raises(CaptureError, match=r"x\.cols: "):
        read_columns(tmp_path / "x.cols")


def test_cut_short_columns_are_refused(tmp_path: Path) -> None:
    seen = observe_file(ROOT / "captures/gw-forward-drop/west_eth0.pcapng", "west:eth0")
    buf = io.BytesIO()
    write_columns(buf, seen.obs.cols, "west:eth0")
    (tmp_path / "x.cols").write_bytes(buf.getvalue()[:-20])
    with pytest.raises(CaptureError, match="damaged columns file"):
        read_columns(tmp_path / "x.cols")


@pytest.mark.parametrize("scenario", ["gw-forward-drop", "esp-input-drop", "all-delivered"])
def test_a_run_of_columns_replays_to_the_same_verdict(tmp_path: Path, scenario: str) -> None:
    src = ROOT / "captures" / scenario
    run = shutil.copytree(src, tmp_path / scenario)
    manifest = json.loads((run / MANIFEST).read_text())
    for c in manifest["captures"][::2]:  # half the points as if extracted on their hosts
        kept = f"host:/var/tmp/tracer/x/{c['file']}"
        r = subprocess.run([sys.executable, "-m", "tracer", "extract", str(run / c["file"]), "--point", c["point"],
                            "--kept-at", kept], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True,
                           check=False)
        assert r.returncode == 0, r.stderr
        (run / c["file"]).unlink()
        c["file"] = c["file"].replace(".pcapng", ".cols")
        c["kept_at"] = kept
        (run / c["file"]).write_bytes(r.stdout)
    (run / MANIFEST).write_text(json.dumps(manifest))
    whole, cols = tracer("replay", str(src), "--json"), tracer("replay", str(run), "--json")
    assert whole.code == cols.code
    a, b = json.loads(whole.out)["runs"], json.loads(cols.out)["runs"]
    assert a == b
