"""Live output like ping, on the real lab: a line per probe as it happens (seq from 1), the
verdict, where the unanswered probes got to, rtt statistics; colour and symbols on a terminal
only (NO_COLOR respected); -q; --lab / TRACER_LAB; run directories in the user's data
directory, owner-only; and the JSON of every live command validated against the schema."""

from __future__ import annotations

import os
import pty
import re
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP
from scapy.utils import rdpcap

from tests.json_contract import one_run, validated
from tests.lab_faults import fault
from tracer.lab import Lab

pytestmark = pytest.mark.lab

LAB = "pf"  # namespaces trc-pf-*
ROOT = Path(__file__).resolve().parents[2]
RTT = re.compile(r"^rtt min/avg/max/mdev = (\d+\.\d{3})/(\d+\.\d{3})/(\d+\.\d{3})/(\d+\.\d{3}) ms$")


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TRACER_LAB")}
    return e | {"PYTHONPATH": str(ROOT), "XDG_DATA_HOME": str(tmp_path / "data"), **extra}


def tracer(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", *args], env=env(tmp_path, **extra), capture_output=True,
                          text=True, timeout=120)


def test_twenty_probes_show_as_they_happen_then_rtt_statistics(lab: Lab, tmp_path: Path) -> None:
    # Read stdout while tracer runs: each probe's line must arrive when its answer does, not at the end.
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "ping", "west", "east", "--lab", LAB, "-c", "20",
                             "-i", "0.2", "--out", str(tmp_path / "run")],
                            env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    arrived: list[tuple[float, str]] = [(time.monotonic(), line.rstrip("\n")) for line in proc.stdout]
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    lines = [text for _, text in arrived]
    assert lines[0].startswith("TRACER ping west (192.0.2.10) → east (198.51.100.10), 56 bytes of data, 20 probes, run 0x")
    probe = [(t, text) for t, text in arrived if " seq=" in text]
    assert [text for _, text in probe] == [text for text in lines[1:21]]
    for n, (_, text) in enumerate(probe, start=1):
        assert re.fullmatch(rf"64 bytes from 198\.51\.100\.10: seq={n} time=\d+\.\d{{3}} ms", text), text
    # 20 probes 0.2 s apart: the first line is out about 3.8 s before the last one.
    assert probe[-1][0] - probe[0][0] > 2.5
    assert "OK    20/20 echo requests delivered and answered (west → east)" in lines
    assert "20 probes, 20 transmitted, 20 answered, 0% loss, time " in "\n".join(lines)
    (stats,) = [RTT.match(x) for x in lines if RTT.match(x)]
    lo, avg, hi, mdev = map(float, stats.groups())
    assert 0 < lo <= avg <= hi and mdev >= 0
    assert not any("\x1b[" in x or "✓" in x for x in lines)  # a pipe: plain text
    # The ICMP echoes themselves carry seq 1..20, like ping's.
    seqs = [p[ICMP].seq for p in rdpcap(str(tmp_path / "run" / "west_eth0.pcapng")) if ICMP in p and p[ICMP].type == 8]
    assert seqs == list(range(1, 21))


def _pty_run(tmp_path: Path, *args: str, **extra: str) -> str:
    """tracer with stdout on a terminal; what the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tracer", *args], env=env(tmp_path, TERM="xterm", **extra),
                            stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(master)
    return out.decode()


def test_colour_and_symbols_on_a_terminal_unless_no_color(lab: Lab, tmp_path: Path) -> None:
    args = ("ping", "west", "east", "--lab", LAB, "-c", "3", "-i", "0.05")
    coloured = _pty_run(tmp_path, *args)
    assert "\x1b[32m✓ \x1b[0m64 bytes from 198.51.100.10: seq=1 time=" in coloured
    assert "\x1b[32;1mOK\x1b[0m    3/3 echo requests delivered" in coloured
    plain = _pty_run(tmp_path, *args, NO_COLOR="1")
    assert "\x1b[" not in plain and "✓" not in plain
    assert "64 bytes from 198.51.100.10: seq=3 time=" in plain


def test_lost_probes_time_out_one_by_one_and_say_where_they_got_to(lab: Lab, tmp_path: Path) -> None:
    with fault(lab, "gw-forward-drop"):
        r = tracer(tmp_path, "ping", "west", "east", "--lab", LAB, "-c", "5", "-i", "0.05", "-W", "0.3")
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert [x for x in lines if " seq=" in x and "timeout" in x] == [
        f"no answer (198.51.100.10): seq={n} timeout" for n in range(1, 6)]
    i = lines.index("where the unanswered probes got to:")
    assert lines[i + 1] == ("  seq=1-5: request last seen at west-gw:lan0, "
                            "lost inside west-gw between lan0 and ipsec0 (forward)")
    assert "5 probes, 5 transmitted, 0 answered, 100% loss, time " in r.stdout
    assert not any(x.startswith("rtt ") for x in lines)  # nothing answered: no statistics to give


def test_quiet_prints_the_verdict_only(lab: Lab, tmp_path: Path) -> None:
    r = tracer(tmp_path, "ping", "west", "east", "--lab", LAB, "-c", "2", "-i", "0.05", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("tracer ping: west (192.0.2.10) → east (198.51.100.10)  run 0x")
    assert " seq=" not in r.stdout and "rtt min" not in r.stdout and "run directory" not in r.stdout


def test_tracer_lab_names_the_default_topology_and_run_dirs_are_private(lab: Lab, tmp_path: Path) -> None:
    r = tracer(tmp_path, "ping", "west", "east", "-c", "1", "--json", TRACER_LAB=LAB)
    assert r.returncode == 0, r.stderr
    doc = validated(r.stdout)
    run_dir = Path(doc["trace"]["run_dir"])
    runs = tmp_path / "data" / "tracer" / "runs"
    assert run_dir.parent == runs and run_dir.name.endswith(f"-ping-{doc['runs'][0]['run'][2:]}")
    for d in (runs, runs.parent, run_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in run_dir.iterdir() if f.is_file())
    assert validated((run_dir / "verdict.json").read_text())["runs"] == doc["runs"]
    r = tracer(tmp_path, "ping", "west", "east", "-c", "1", "--runs-dir", str(tmp_path / "here"), "-q",
               TRACER_LAB=LAB)
    assert r.returncode == 0 and len(list((tmp_path / "here").iterdir())) == 1
    # No such lab: the environment (exit 4), as the README says.
    r = tracer(tmp_path, "ping", "west", "east", "--lab", "pfnone")
    assert (r.returncode, r.stdout) == (4, ""), r
    assert r.stderr == ("tracer: no topology given and lab 'pfnone' is not up: "
                        "run 'tracer lab up --name pfnone' or pass --topology\n")


def test_every_live_commands_json_validates(lab: Lab, tmp_path: Path) -> None:
    run = one_run(tracer(tmp_path, "ike", "west-gw", "east-gw", "--lab", LAB, "-c", "2", "--json").stdout)
    assert run["status"] == "delivered" and [s["seq"] for s in run["sent"]] == [1, 2]
    (answer,) = run["ike"]["answers"]
    assert answer["seqs"] == [1, 2] and answer["chosen"] and answer["errors"] == []
    run = one_run(tracer(tmp_path, "mtu", "west", "east", "--lab", LAB, "--sizes", "576,1000", "--json").stdout)
    assert run["mtu"]["largest_delivered"] == 1000 and run["rtt"]["count"] == 2
    r = tracer(tmp_path, "lab", "status", "--json", TRACER_LAB=LAB)
    doc = validated(r.stdout)
    assert (r.returncode, doc["command"], doc["lab"]["name"], doc["lab"]["up"]) == (0, "lab status", LAB, True)
    r = tracer(tmp_path, "check", "--lab", LAB, "--json")
    doc = validated(r.stdout)
    assert doc["exit_code"] == r.returncode == 0 and doc["check"]["checks"]
