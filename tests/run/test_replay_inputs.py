"""Replay's inputs: memory of loading a run (one copy of the rows), packets read twice, and the
--write-pcapng / --point / input path checks (review items 1-4, 7, 10, 19, 20)."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np

from tests.cli.tracer_cmd import CAPTURES, assert_bad_input, tracer
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
    doc = json.loads(r.out)
    return r.code, doc["status"], doc["summary"]


def test_packets_read_twice_do_not_change_the_verdict(tmp_path: Path) -> None:
    """The run directory's own run.pcapng beside its captures (RUN/*.pcapng), or one capture
    given twice, reads packets twice; the verdict must stay the located loss."""
    run = tmp_path / "esp-blocked"
    shutil.copytree(CAPTURES / "esp-blocked", run)
    want = _replay(run)
    assert want[0] == 1 and "inside router" in want[2], want
    assert tracer("replay", run, "--write-pcapng").code == 1
    caps = sorted(run.glob("*.pcapng"))
    assert run / "run.pcapng" in caps
    assert _replay("-t", run / "topology.toml", *caps) == want
    twice = run / "copy" / "west-gw_ipsec0.pcapng"
    twice.parent.mkdir()
    shutil.copy(run / "west-gw_ipsec0.pcapng", twice)
    others = [c for c in caps if c.name != "run.pcapng"]
    assert _replay("-t", run / "topology.toml", *others, twice) == want
