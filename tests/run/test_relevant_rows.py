"""Replaying a run directory leaves out the rows its tagged run's analysis does not read
(tracer.analysis.relevant, issue 14), and that changes no verdict. The recorded scenarios hold
only relevant packets, so each gets untagged background in every capture first (plain pings,
DNS, TCP inside and outside the tunnels' subnets, ICMP errors with no tag, ARP); then:

* the verdict, JSON and text, is the same with every row kept as with the relevant ones only,
  read in this process and by forked workers;
* the rows kept are exactly the relevant rows of a full read, every column alike, and each
  point's counts (what plausibility checks read) are those of all its rows.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
from ipaddress import IPv4Address
from pathlib import Path

import numpy as np
import pytest

import tracer.capture.observe as observe
import tracer.run.replay as replay
from tests.cli.tracer_cmd import CAPTURES
from tracer.analysis.relevant import relevant_rows
from tracer.capture.pcapfile import read_capture
from tracer.capture.pcapng_writer import write_pcapng
from tracer.cli import main
from tracer.model.observations import count_rows
from tracer.model.tag import icmp_id_for
from tracer.run.replay import load_run

SCENARIOS = sorted(p.name for p in CAPTURES.iterdir() if (p / "manifest.json").exists())
OUTSIDE = ("203.0.113.7", "203.0.113.8")  # addresses of no topology


def _ip(src: str, dst: str, proto: int, l4: bytes, ttl: int = 64, ident: int = 0) -> bytes:
    head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0, ttl, proto, 0,
                       IPv4Address(src).packed, IPv4Address(dst).packed)
    return head + l4


def _background(src: str, dst: str, run: int) -> list[bytes]:
    """IP packets no tracer run sends: some in the tunnels' subnets or ICMP errors about the
    run's ends (kept), most not."""
    echo = [struct.pack(">BBHHH", t, 0, 0, 777, q) + bytes(56) for t in (8, 0) for q in range(3)]
    out = [_ip(src, dst, 1, e, ident=i) for i, e in enumerate(echo)]  # a plain ping between the ends
    out.append(_ip(src, OUTSIDE[0], 17, struct.pack(">HHHH", 40000, 53, 48, 0) + bytes(40)))  # DNS out
    out.append(_ip(src, dst, 6, struct.pack(">HHIIHHHH", 40001, 443, 1, 0, 0x5010, 512, 0, 0) + bytes(100)))
    out.append(_ip(OUTSIDE[0], OUTSIDE[1], 6, struct.pack(">HHIIHHHH", 5, 6, 1, 0, 0x5010, 512, 0, 0)))
    quote = _ip(OUTSIDE[1], OUTSIDE[0], 17, struct.pack(">HHHH", 1, 2, 8, 0))
    out.append(_ip(OUTSIDE[0], OUTSIDE[1], 1, struct.pack(">BBHI", 3, 3, 0, 0) + quote))  # an error of no probe
    # Errors about the run's ends without a tag in the quote: a UDP packet, and an echo of the
    # run's identifier cut after 8 bytes (a frag-needed the MTU analysis ties by header)
    udp = _ip(src, dst, 17, struct.pack(">HHHH", 33434, 33434, 8, 0))
    out.append(_ip(OUTSIDE[0], src, 1, struct.pack(">BBHI", 3, 1, 0, 0) + udp))
    echo = _ip(src, dst, 1, struct.pack(">BBHHH", 8, 0, 0, icmp_id_for(run), 1), ident=9)
    out.append(_ip(OUTSIDE[1], src, 1, struct.pack(">BBHHH", 3, 4, 0, 0, 1280) + echo))
    return out


def _with_background(name: str, to: Path) -> Path:
    run = to / name
    shutil.copytree(CAPTURES / name, run)
    manifest = json.loads((run / "manifest.json").read_text())
    caps = {c["file"]: read_capture(run / c["file"]) for c in manifest["captures"]}
    times = np.concatenate([c.ts_ns for c in caps.values()])
    lo, hi = int(times.min()), int(times.max()) + 1
    ip = _background(manifest["src"], manifest["dst"], manifest["run"])
    arp = bytes(6) + bytes.fromhex("020000000001" "0806") + bytes(28)
    for file, cap in caps.items():
        (info,) = cap.interfaces
        l2 = bytes.fromhex("020000000002" "020000000001" "0800") if info.linktype == 1 else b""
        frames = [l2 + p for p in ip] + ([arp] if info.linktype == 1 else [])
        recs = [(int(cap.ts_ns[i]), cap.frame(i), int(cap.wire_len[i])) for i in range(len(cap))]
        step = (hi - lo) // (3 * len(frames))
        recs += [(lo + k * step + 1, f, len(f)) for k, f in enumerate(frames * 3)]
        recs.sort(key=lambda r: r[0])
        write_pcapng(run / file, recs, if_name=info.name or "x", linktype=info.linktype, drops=info.drops)
    return run


def _replay(run: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["replay", str(run), *args])
    return out.getvalue()


def _keep_all(topo: object) -> object:
    return lambda cols: np.ones(len(cols["ts_ns"]), bool)


@pytest.mark.parametrize("name", SCENARIOS)
def test_leaving_rows_out_changes_no_verdict(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _with_background(name, tmp_path)
    with monkeypatch.context() as m:
        m.setattr(replay, "relevant_rows", _keep_all)
        want = _replay(run, "--json"), _replay(run)
    assert (_replay(run, "--json"), _replay(run)) == want
    monkeypatch.setattr(observe, "PARALLEL_FROM", 0)  # every replay forks workers
    assert (_replay(run, "--json"), _replay(run)) == want


@pytest.mark.parametrize("name", ["all-delivered", "esp-blocked", "mtu-search-blackhole", "ike-ok"])
@pytest.mark.parametrize(("workers", "segment"), [(False, observe.SEGMENT), (True, observe.SEGMENT), (False, 7), (True, 5)])
def test_the_rows_kept_are_the_relevant_ones(name: str, workers: bool, segment: int, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Also extracted a few records at a time (as large files are), every row or the kept ones."""
    run = _with_background(name, tmp_path)
    whole = load_run([run]).observations
    monkeypatch.setattr(observe, "SEGMENT", segment)
    full = load_run([run]).observations
    for k, v in whole.cols.items():
        assert np.array_equal(full[k], v), k
    if workers:
        monkeypatch.setattr(observe, "PARALLEL_FROM", 0)
    slim = load_run([run], verdicts_only=True).observations
    keep = relevant_rows(load_run([run]).topology)(full.cols)
    assert 0 < keep.sum() < len(full) and len(slim) == keep.sum()
    assert slim.points == full.points and slim.sources == full.sources
    for k, v in full.cols.items():
        assert np.array_equal(slim[k], v[keep]), k
    assert slim.counts is not None and set(slim.counts) == set(full.points)
    for p in range(len(full.points)):
        rows = full.point_rows(p)
        assert slim.point_counts(p) == count_rows(full["ipver"][rows], full["ts_ns"][rows]) == full.point_counts(p)


def test_a_replay_that_reads_every_row_leaves_none_out(tmp_path: Path) -> None:
    """--flow, another run than the manifest's and the Python API read all rows."""
    run = _with_background("all-delivered", tmp_path)
    n = len(load_run([run]).observations)
    assert len(load_run([run], verdicts_only=True, run=0x1234).observations) == n
    assert len(load_run([run], verdicts_only=True).observations) < n
