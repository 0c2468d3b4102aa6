"""Observation columns files (tracer.columns): what an SSH host with tracer sends back instead of
its capture. Written by the real ``tracer extract`` command, read back by replay: a recorded run
whose captures are swapped for their columns gives the same verdict, field for field."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.cli.tracer_cmd import tracer
from tracer import __version__ as tracer_version
from tracer.capture.observe import observe_file
from tracer.columns import FORMAT, MAGIC, fingerprint, read_columns, write_columns
from tracer.errors import CaptureError
from tracer.model.observations import COLUMNS
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


ROW = sum(dt.itemsize for dt in COLUMNS.values())


def crafted(tmp_path: Path, header: object, body: bytes = b"", *, level: int = 6) -> Path:
    """A columns file made by hand: ``header`` (JSON-encoded unless bytes), then ``body``."""
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    z = zlib.compressobj(level)
    data = MAGIC + z.compress(len(hb).to_bytes(4, "little") + hb)
    for at in range(0, len(body), 1 << 24):
        data += z.compress(body[at : at + (1 << 24)])
    (tmp_path / "x.cols").write_bytes(data + z.flush())
    return tmp_path / "x.cols"


def good(**change: object) -> dict:
    return {"format": FORMAT, "tracer": tracer_version, "point": "west:eth0", "rows": 0, "capture": None,
            "warnings": [], "damaged": None, **change}


@pytest.mark.parametrize("header, why", [
    (b"[1,2]", "not a JSON object"),
    (b"[" * 200_000 + b"]" * 200_000, "RecursionError"),
    (good(warnings="abc"), "warnings"),
    (good(warnings=[1]), "warnings"),
    (good(capture={"a": 1}), "capture"),
    (good(rows=True), "rows"),
    (good(rows=-1), "rows"),
    (good(point=""), "point"),
    (good(point="x" * 5000), "point"),
    (good(extra=1), "'extra'"),
    ({k: v for k, v in good().items() if k != "damaged"}, "'damaged'"),
    (b"{\"\xff\": 1}", "Error"),  # not UTF-8
])
def test_bad_headers_are_one_line_capture_errors(tmp_path: Path, header: object, why: str) -> None:
    with pytest.raises(CaptureError, match=r"x\.cols: damaged columns file .*" + why):
        read_columns(crafted(tmp_path, header))


def test_rows_the_file_cannot_hold_are_refused_before_reading(tmp_path: Path) -> None:
    # 1 GiB of columns promised by a file of a hundred bytes: refused on the header alone.
    with pytest.raises(CaptureError, match=r"cannot fit in \d+ bytes"):
        read_columns(crafted(tmp_path, good(rows=(1 << 30) // ROW)))


def test_a_zlib_bomb_is_read_within_its_columns_memory(tmp_path: Path) -> None:
    # ~256 MiB of zeros in ~250 kB (zlib's own ratio, so the size check lets it through), one
    # row short of what the header promises: refused, and memory never more than one copy.
    rows = (256 << 20) // ROW
    path = crafted(tmp_path, good(rows=rows + 1), bytes(rows * ROW), level=9)
    probe = ("import resource, sys\nfrom tracer.columns import read_columns\nfrom tracer.errors import CaptureError\n"
             "try:\n  read_columns(sys.argv[1])\nexcept CaptureError as e:\n  print(e)\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", probe, str(path)], cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, check=True)
    said, peak_kb = r.stdout.splitlines()
    assert "columns cut short" in said
    assert int(peak_kb) < 256 * 1024 + 150 * 1024, peak_kb  # the columns once (+ interpreter and numpy)


@pytest.mark.parametrize("tail, why", [(b"garbage", "data after the columns"),
                                       (zlib.compress(b"x"), "data after the columns")])
def test_data_after_the_stream_is_refused(tmp_path: Path, tail: bytes, why: str) -> None:
    path = crafted(tmp_path, good())
    path.write_bytes(path.read_bytes() + tail)
    with pytest.raises(CaptureError, match=why):
        read_columns(path)


def test_more_columns_than_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="more columns than its rows"):
        read_columns(crafted(tmp_path, good(rows=1), bytes(2 * ROW)))


def test_the_tracer_version_is_written_and_another_is_a_warning(tmp_path: Path) -> None:
    cols = {k: np.zeros(2, dt) for k, dt in COLUMNS.items()}
    buf = io.BytesIO()
    write_columns(buf, cols, "west:eth0")
    (tmp_path / "x.cols").write_bytes(buf.getvalue())
    assert read_columns(tmp_path / "x.cols").warnings == []  # this tracer's own
    for version, said in (("0.0.9", "by tracer 0.0.9, this is tracer"), (None, "does not say its version")):
        header = {k: v for k, v in good(rows=2, tracer=version).items() if version or k != "tracer"}
        cf = read_columns(crafted(tmp_path, header, b"".join(np.zeros(2, dt).tobytes() for dt in COLUMNS.values())))
        assert len(cf) == 2 and len(cf.warnings) == 1 and said in cf.warnings[0], cf.warnings


def _columns_run(tmp_path: Path, scenario: str, which: slice) -> tuple[Path, list[dict]]:
    """A copy of a recorded run whose ``which`` captures were extracted on their hosts (by the real command)."""
    run = shutil.copytree(ROOT / "captures" / scenario, tmp_path / scenario)
    manifest = json.loads((run / MANIFEST).read_text())
    done = []
    for c in manifest["captures"][which]:
        kept = f"root@host:/var/tmp/tracer/x/{c['file']}"
        r = subprocess.run([sys.executable, "-m", "tracer", "extract", str(run / c["file"]), "--point", c["point"],
                            "--kept-at", kept], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True,
                           check=True)
        (run / c["file"]).unlink()
        c["file"] = c["file"].replace(".pcapng", ".cols")
        c["kept_at"] = kept
        (run / c["file"]).write_bytes(r.stdout)
        done.append(c)
    (run / MANIFEST).write_text(json.dumps(manifest))
    return run, done


def test_columns_swapped_between_points_are_refused(tmp_path: Path) -> None:
    run, (a, b, *_) = _columns_run(tmp_path, "gw-forward-drop", slice(0, None, 2))
    (run / a["file"]).rename(run / "t")
    (run / b["file"]).rename(run / a["file"])
    (run / "t").rename(run / b["file"])
    r = tracer("replay", str(run))
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert f"columns of point '{b['point']}', but the manifest says '{a['point']}'" in r.err


def test_dissect_and_merged_capture_name_where_remote_captures_stayed(tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")  # (what --dissect runs)
    run, done = _columns_run(tmp_path, "gw-forward-drop", slice(None))
    r = tracer("replay", str(run), "--dissect", "--write-pcapng", str(tmp_path / "m.pcapng"))
    assert r.code == 1, r.err
    assert "capture kept at /var/tmp/tracer/x/" in r.out and "on root@host; fetch it to dissect" in r.out
    for c in done:
        assert f"tracer: note: {c['point']}: its packets are not in m.pcapng: capture kept at " \
               f"/var/tmp/tracer/x/{c['file'].replace('.cols', '.pcapng')} on root@host" in r.err
