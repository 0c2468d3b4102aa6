"""``tracer watch`` on the real lab: a fault switched on and off while it runs shows as change
lines and in the loss-over-time graph at the right hop; Ctrl-C while a window probes ends it
cleanly (that window closed with the probes sent, exit 130, valid files, no sniffer left); the
disk budget holds."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.json_contract import validated
from tracer.cli import main
from tracer.plot.watch import events, loss_matrix, watch_figure
from tracer.run.manifest import PROBE_JOURNAL
from tracer.run.watch import GRAPH, WINDOWS, dir_size, read_summaries

pytestmark = pytest.mark.lab

LAB = "pgw"  # namespaces trc-pgw-*
ROOT = Path(__file__).resolve().parents[2]
DROP_AT = "west-gw:lan0 → west-gw:ipsec0"  # gw-forward-drop: west-gw's forward chain drops lan0 → ipsec0
BUDGET_MB = 2.5  # a window of the lab is ~1 MB (captures, evidence, netstate): two or three fit


class Lines:
    """tracer's stdout, line by line, as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.all: list[str] = []
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self.q.put(line.rstrip("\n"))

    def wait_for(self, what: str, timeout: float = 90) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.q.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                break
            self.all.append(line)
            if what in line:
                return line
        raise AssertionError(f"no line with {what!r} within {timeout} s; got:\n" + "\n".join(self.all))


def rest_of_stdout(lines: Lines) -> str:
    """What tracer printed after the lines already read (after Ctrl-C: the watch's summary)."""
    rest = []
    while True:
        try:
            rest.append(lines.q.get(timeout=5))
        except queue.Empty:
            break
    return "\n".join(rest)


def sniffers_of(directory: Path) -> list[int]:
    """PIDs of processes whose command line names ``directory`` (tcpdump writing into it)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if str(directory).encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def probing_window(out: Path, sent_at_least: int, timeout: float = 60) -> Path:
    """The window being recorded, once its probe journal shows ``sent_at_least`` probes sent."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = {json.loads(line)["dir"] for line in (out / WINDOWS).read_text().splitlines() if line.strip()}
        for d in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in done):
            journal = d / PROBE_JOURNAL
            if journal.is_file() and journal.read_text().count('"event": "sent"') >= sent_at_least:
                return d
        time.sleep(0.1)
    raise AssertionError(f"no window of {out} started probing within {timeout} s")


def test_watch_fault_on_off_then_ctrl_c(lab, tmp_path):
    out = tmp_path / "watch"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "watch", "west", "east", "--topology", str(lab.topology_path),
         "--window", "3s", "--interval", "0.25", "--keep-mb", str(BUDGET_MB), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        lines = Lines(proc)
        assert lines.wait_for("watching ping west → east").endswith("(Ctrl-C to stop)")
        first = lines.wait_for("[window 1,")
        assert " OK    0% loss (0/12)" in first
        lab.set_fault("gw-forward-drop")
        try:
            on = lines.wait_for(f"at {DROP_AT} (request)")
            assert "LOSS" in on and "NETFILTER_DROP" in on  # the reason, from the kernel's drop events
        finally:
            lab.clear_fault()
        off = lines.wait_for(" OK    0% loss")
        assert "(0/12)" in off
        probing_window(out, sent_at_least=3)  # Ctrl-C while the next window probes
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # not communicate(): it would race the Lines thread for stdout
        assert proc.stderr is not None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not sniffers_of(out)

    summaries = read_summaries(out)
    n = len(summaries)
    assert n >= 4
    assert [s.window for s in summaries] == list(range(n))
    # The window Ctrl-C cut short: closed with the probes sent (fewer than a window's 12).
    cut = summaries[-1]
    assert cut.interrupted and 3 <= cut.sent < 12 and cut.lost <= 1  # at most the one awaiting its reply
    assert not any(s.interrupted for s in summaries[:-1])
    rest = rest_of_stdout(lines)
    assert f"{n} windows over" in rest and "watch directory:" in rest, (rest, err)
    # Every line of windows.jsonl is whole JSON; every window directory left is a summarised one.
    assert len((out / WINDOWS).read_text().splitlines()) == n
    kept = sorted(p for p in out.iterdir() if p.is_dir())
    assert all((d / "manifest.json").is_file() for d in kept)
    assert {d.name for d in kept} <= {s.dir for s in summaries}
    assert sum(dir_size(d) for d in kept) <= BUDGET_MB * 1e6
    assert (n > 3) <= (len(kept) < n)  # beyond the budget, old windows' captures went
    assert (out / f"{GRAPH}.png").stat().st_size > 10_000
    assert (out / f"{GRAPH}.svg").read_text().rstrip().endswith("</svg>")

    # The graph: loss on at the drop, then off; the located hop is the first point after it.
    labels = [e.label for e in events(summaries) if e.state]
    assert f"loss on: {DROP_AT}" in labels and labels[-1] == "loss off"
    lossy = [s for s in summaries if s.lost]
    assert lossy and all(s.located == DROP_AT and s.direction == "request" for s in lossy)
    m, rows = loss_matrix(summaries)
    for s in lossy:
        col = m[:, s.window]
        assert col[rows.index(("request", "west-gw:lan0"))] == 0.0
        assert col[rows.index(("request", "west-gw:ipsec0"))] > 0.0
    fig = watch_figure(summaries)
    located = next(c for ax in fig.axes for c in ax.collections if c.get_gid() == "watch-located")
    assert {int(y) for _, y in located.get_offsets()} == {rows.index(("request", "west-gw:ipsec0"))}

    # tracer plot redraws it afterwards; a window kept on disk replays like any run directory.
    (out / f"{GRAPH}.png").unlink()
    assert main(["plot", str(out)]) == 0 and (out / f"{GRAPH}.png").is_file()
    assert main(["replay", str(kept[-1]), "--json"]) in (0, 1)
    assert json.loads((out / "watch.json").read_text())["window_s"] == 3.0


def test_watch_json_lines_are_contract_documents(lab, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "watch", "west", "east", "--topology", str(lab.topology_path),
         "--window", "2s", "--interval", "0.5", "--windows", "2", "--json", "--out", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2  # one document a window, a line each
    for i, line in enumerate(lines):
        doc = validated(line)
        assert doc["command"] == "watch" and doc["watch"]["window"] == i
        (run,) = doc["runs"]
        assert run["status"] == "delivered" and run["kind"] == "ping"
