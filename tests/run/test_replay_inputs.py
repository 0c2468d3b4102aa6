"""Replay's inputs: memory of loading a run (one copy of the rows), packets read twice, and the
--write-pcapng / --point / input path checks (review items 1-4, 7, 10, 19, 20)."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

from tests.cli.tracer_cmd import CAPTURES, assert_bad_input, tracer
from tests.json_contract import one_run
from tracer.capture.pcapng_writer import write_pcapng
from tracer.model.observations import COLUMNS
from tracer.run.replay import load_run

FRAME = bytes.fromhex("020000000002020000000001080045000054000040004001f6b3c000020ac6336400"
                      "0800f7ff00010001") + bytes(56)


def test_load_run_builds_the_rows_once(tmp_path: Path) -> None:
    """Files mapped by name (and one unused capture) are extracted straight into the merged
    columns: the peak allocation is the rows plus one file's worth, not each file's columns
    plus copies made while relabelling and merging (that was 3.1x)."""
    topo = CAPTURES / "all-delivered" / "topology.toml"
    points = ["west_eth0", "west-gw_lan0", "west-gw_wan0", "router_eth0", "router_eth1", "east-gw_wan0",
              "east_eth0", "west_lo"]  # west_lo: not in the topology, its rows are dropped
    files = []
    for k, name in enumerate(points):
        path = tmp_path / f"{name}.pcapng"
        write_pcapng(path, ((10**18 + i * 1000 + k, FRAME, len(FRAME)) for i in range(10_000)),
                     if_name=name.replace("_", ":", 1), linktype=1)
        files.append(path)
    tracemalloc.start()
    try:
        loaded = load_run(files, topo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    obs = loaded.observations
    row_bytes = sum(dt.itemsize for dt in COLUMNS.values())
    assert len(obs) == 70_000 and "west:lo" not in obs.points
    assert obs["rec"].tolist() == list(range(10_000)) * 7  # every row still names its record
    assert peak < 2 * row_bytes * 80_000, peak / (row_bytes * 80_000)


def _replay(*args: str | Path) -> tuple[int, str, str]:
    r = tracer("replay", "--json", *args)
    assert r.out, r.err
    doc = one_run(r.out)
    return r.code, doc["status"], doc["summary"]


def test_packets_read_twice_do_not_change_the_verdict(tmp_path: Path) -> None:
    """The run directory's own run.pcapng beside its captures (RUN/*.pcapng), or one capture
    given twice, reads packets twice; the verdict must stay the located loss."""
    run = tmp_path / "esp-blocked"
    shutil.copytree(CAPTURES / "esp-blocked", run)
    want = (1, "loss", "3/3 echo requests lost inside router between eth0 and eth1 (forward)")  # README's table
    assert _replay(run) == want
    assert tracer("replay", run, "--write-pcapng").code == 1
    caps = sorted(run.glob("*.pcapng"))
    assert run / "run.pcapng" in caps
    assert _replay("-t", run / "topology.toml", *caps) == want
    twice = run / "copy" / "west-gw_ipsec0.pcapng"
    twice.parent.mkdir()
    shutil.copy(run / "west-gw_ipsec0.pcapng", twice)
    others = [c for c in caps if c.name != "run.pcapng"]
    assert _replay("-t", run / "topology.toml", *others, twice) == want
    again = tracer("replay", "-t", run / "topology.toml", *others, run / "west-gw_ipsec0.pcapng")
    assert again.out.count("west-gw_ipsec0.pcapng") == 1 and "read twice" not in again.out  # read once


def test_write_pcapng_never_replaces_what_it_reads(tmp_path: Path) -> None:
    """Only the run directory's own run.pcapng may be replaced: not a capture inside it, its
    manifest or topology (refused before anything is printed); the write goes through a
    temporary file, so the old run.pcapng is whole until the new one is."""
    run = tmp_path / "ad"
    shutil.copytree(CAPTURES / "all-delivered", run)
    for name in ("west_eth0.pcapng", "manifest.json", "topology.toml"):
        before = (run / name).read_bytes()
        r = tracer("replay", run, "--write-pcapng", run / name)
        assert (r.code, r.out) == (2, "") and r.err.startswith(f"tracer: --write-pcapng {run / name}: would overwrite")
        assert (run / name).read_bytes() == before
    r = tracer("replay", run, "--write-pcapng", run / "notes.pcapng")
    assert (r.code, r.out) == (2, "") and "a file of the run directory" in r.err
    assert tracer("replay", run, "--write-pcapng").code == 0
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_write_pcapng_with_an_unused_capture_keeps_the_verdict(tmp_path: Path) -> None:
    """An unplaceable capture's rows are not in the observations; the merged file is still
    written from the used rows, and the loss keeps exit 1."""
    run = tmp_path / "eb"
    shutil.copytree(CAPTURES / "esp-blocked", run)
    lo = run / "xx_lo.pcapng"
    write_pcapng(lo, [(10**18, FRAME, len(FRAME))], if_name="lo", linktype=1)
    caps = sorted(p for p in run.glob("*.pcapng"))
    out = tmp_path / "merged.pcapng"
    r = tracer("replay", "-t", run / "topology.toml", *caps, "--write-pcapng", out)
    assert r.code == 1 and f"wrote {out}" in r.err, r.err
    from tracer.capture.pcapfile import read_capture

    merged = read_capture(out)
    assert len(merged) == sum(len(read_capture(c)) for c in caps if c != lo)


def test_write_pcapng_failure_is_a_warning(tmp_path: Path) -> None:
    """A write that fails (no permission: /proc) prints the verdict and keeps its exit code."""
    r = tracer("replay", CAPTURES / "esp-blocked", "--write-pcapng", "/proc/x.pcapng")
    assert r.code == 1 and "LOSS" in r.out, r
    assert r.err.count("\n") == 1 and "--write-pcapng /proc/x.pcapng: not written" in r.err, r.err


def test_point_options_checked(tmp_path: Path) -> None:
    """One file mapped to two points is refused (no verdict made of one point's packets at
    another); a directory is named as such; --point alone is enough input."""
    f = CAPTURES / "gw-forward-drop" / "west_eth0.pcapng"
    topo = CAPTURES / "gw-forward-drop" / "topology.toml"
    assert_bad_input(tracer("replay", "-t", topo, "--point", f"router:eth0={f}", "--point", f"router:eth1={f}"),
                     f"tracer: {f}: mapped to two capture points (router:eth0 and router:eth1); a file is one point")
    assert_bad_input(tracer("replay", "-t", topo, "--point", f"router:eth0={tmp_path}"),
                     f"tracer: {tmp_path}: a directory, not a capture file (--point router:eth0={tmp_path})")
    r = tracer("replay", "-t", topo, "--point", f"west:eth0={f}")
    assert r.code == 3, r  # one point that saw the requests: where they went is unknown
    assert "3/3 echo requests inconclusive: somewhere between west:eth0 and the destination" in r.out, r.out
    assert_bad_input(tracer("replay"), "tracer: nothing to replay: give a run directory or capture files")


def test_live_trace_leaves_out_a_large_run_pcapng(tmp_path: Path, monkeypatch, capsys) -> None:
    """A live trace's run.pcapng is a second copy of every capture: above the cap it is left
    out with a note naming the command that writes it; the verdict is unchanged."""
    from tracer.run import record

    run = tmp_path / "ad"
    shutil.copytree(CAPTURES / "all-delivered", run)
    small = record.replay_recorded(run)
    assert (run / "run.pcapng").exists()
    (run / "run.pcapng").unlink()
    packets = len(load_run([run]).observations)
    monkeypatch.setattr(record, "MERGED_MAX_PACKETS", packets - 1)
    capsys.readouterr()
    big = record.replay_recorded(run)
    assert [v.summary for v in big] == [v.summary for v in small]
    assert not (run / "run.pcapng").exists()
    assert f"run.pcapng not written: {packets:,} packets" in capsys.readouterr().err
