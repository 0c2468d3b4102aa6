"""Hostile or damaged inputs: one clear line and exit 2 (or a correct verdict), never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tracer(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def one_line_error(r: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    return r.stderr.strip()


def test_a_host_without_routes_is_explained_not_a_crash(tmp_path):
    # Issue 13's crash (argmax of an empty sequence). The replies were all seen, so the packets win
    # over the route-less topology: delivered, with the disagreement said.
    run = tmp_path / "run"
    shutil.copytree(ROOT / "captures" / "all-delivered", run)
    topo = run / "topology.toml"
    text = topo.read_text()
    start = text.index("[[nodes.east.routes]]")
    topo.write_text(text[:start] + text[text.index("\n\n", start) + 2:])
    r = tracer("replay", str(run))
    assert r.returncode == 0, r.stderr
    assert ("topology gives east no route back to 192.0.2.10 but 3/3 echo replies were seen at "
            "west:eth0 — the topology may be stale") in r.stdout
    assert "reply path (0 capture points)  [topology: east has no route to 192.0.2.10]" in r.stdout


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a\\u0000b", "new\\nline"])
def test_unsafe_node_names_are_refused(tmp_path, name):
    topo = tmp_path / "t.toml"
    topo.write_text(f'[nodes."{name}".interfaces.eth0]\naddresses = ["192.0.2.1/24"]\n')
    cap = ROOT / "captures" / "all-delivered" / "west_eth0.pcapng"
    err = one_line_error(tracer("replay", "-t", str(topo), str(cap)))
    assert "is not a valid node name: 1-63 letters, digits" in err


def test_deeply_nested_topology_is_refused(tmp_path):
    topo = tmp_path / "deep.toml"
    topo.write_text("x = " + "[" * 100000 + "]" * 100000 + "\n")
    cap = ROOT / "captures" / "all-delivered" / "west_eth0.pcapng"
    assert "nested too deep" in one_line_error(tracer("replay", "-t", str(topo), str(cap)))


def test_fifo_and_device_as_topology_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    cap = str(ROOT / "captures" / "all-delivered" / "west_eth0.pcapng")
    assert "must be a regular file, this is a FIFO" in one_line_error(tracer("replay", "-t", str(fifo), cap, timeout=10))
    assert "must be a regular file" in one_line_error(tracer("replay", "-t", "/dev/zero", cap, timeout=10))


def test_internal_errors_are_one_line_with_their_own_exit_code(monkeypatch, capsys):
    # A bug anywhere below the command line (here: the analysis raising something unexpected)
    # must not read as exit 1, "loss located".
    import tracer.run.replay
    from tracer.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("synthetic\nfailure")

    monkeypatch.setattr(tracer.run.replay, "replay_run", broken)
    monkeypatch.delenv("TRACER_DEBUG", raising=False)
    assert main(["replay", str(ROOT / "captures" / "all-delivered")]) == 70
    assert capsys.readouterr().err == ("tracer: internal error (RuntimeError: synthetic failure); this is a bug in "
                                       "tracer — run again with TRACER_DEBUG=1 for the traceback and report it\n")
    monkeypatch.setenv("TRACER_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["replay", str(ROOT / "captures" / "all-delivered")])


def test_a_capture_cut_short_makes_the_verdict_inconclusive_not_a_loss(tmp_path):
    # Found by tests/cli: a file that lost its last bytes used to turn "delivered" into
    # "1/3 echo replies lost on the wire": what a damaged file lacks proves nothing.
    topo = ROOT / "captures" / "all-delivered" / "topology.toml"
    files = []
    for src in sorted((ROOT / "captures" / "all-delivered").glob("*.pcapng")):
        node, iface = src.stem.split("_", 1)
        dst = tmp_path / f"{node}:{iface}.pcap"
        subprocess.run(["tcpdump", "-r", str(src), "-w", str(dst)], check=True, capture_output=True)
        files.append(str(dst))
    west = tmp_path / "west:eth0.pcap"
    west.write_bytes(west.read_bytes()[:-10])
    r = tracer("replay", "-t", str(topo), *files)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "INCONCLUSIVE echo requests delivered; 1/3 echo replies inconclusive" in r.stdout
    assert "capture file damaged" in r.stdout
    assert f"{west}: truncated after" in r.stdout  # the warning names the file


def test_a_directory_as_a_text_input_is_one_line_not_an_internal_error(tmp_path):
    # os.fdopen refuses a directory before the regular-file check used to run: exit 70.
    cap = str(ROOT / "captures" / "all-delivered" / "west_eth0.pcapng")
    assert "must be a regular file, this is a directory" in one_line_error(tracer("replay", "-t", str(tmp_path), cap))
    assert "must be a regular file, this is a directory" in one_line_error(tracer("topology", "check", str(tmp_path)))


def test_read_text_closes_the_descriptor_when_it_refuses(tmp_path):
    from tracer.errors import BadInput
    from tracer.textfile import read_text

    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(BadInput, match="this is a directory"):
            read_text(tmp_path, "topology")
    assert len(os.listdir("/proc/self/fd")) == before


# --- found by the mapping fuzzer (tests/fuzz/test_fuzz_mapping.py) ----------------------------------

ALL_DELIVERED = ROOT / "captures" / "all-delivered"
TOPO = str(ALL_DELIVERED / "topology.toml")


def test_fifo_device_and_directory_as_a_capture_are_refused_without_hanging(tmp_path):
    """A FIFO given as a loose capture blocked replay forever; /dev/zero was read until the OOM killer came."""
    fifo = tmp_path / "west_eth0.pcap"
    os.mkfifo(fifo)
    (tmp_path / "zero.pcap").symlink_to("/dev/zero")
    cap = str(ALL_DELIVERED / "router_eth0.pcapng")
    for bad, says in ((fifo, "must be a regular file, this is a FIFO"),
                      (tmp_path / "zero.pcap", "must be a regular file, this is not a regular file"),
                      (tmp_path, "a directory, not a capture file")):
        args = ("replay", "-t", TOPO, cap, "--point", f"west:eth0={bad}")
        assert says in one_line_error(tracer(*args, timeout=10)), bad
    err = one_line_error(tracer("replay", "-t", TOPO, cap, str(fifo), timeout=10))
    assert err.endswith("west_eth0.pcap: a capture must be a regular file, this is a FIFO")
    # Found on a 10,000-case run: a directory as the points file (or topology) was exit 70 (IsADirectoryError).
    for flag in ("--points", "-t"):
        err = one_line_error(tracer("replay", "-t", TOPO, cap, flag, str(tmp_path), timeout=10))
        assert err.endswith("must be a regular file, this is a directory"), err


def test_deeply_nested_points_file_is_refused(tmp_path):
    """tomllib recursed until RecursionError: exit 70 (internal error) instead of 2."""
    points = tmp_path / "points.toml"
    points.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    err = one_line_error(tracer("replay", "-t", TOPO, str(ALL_DELIVERED / "west_eth0.pcapng"), "--points", str(points)))
    assert err.endswith("not a points file (arrays or tables nested too deep)")


def test_control_characters_in_names_stay_on_one_line(tmp_path):
    """A newline in a --point file or point name, or in a points-file key, split the error message."""
    cap = str(ALL_DELIVERED / "west_eth0.pcapng")
    assert "a\\nb: no such capture file (--point west:eth0=a\\nb)" in one_line_error(
        tracer("replay", "-t", TOPO, cap, "--point", "west:eth0=a\nb"))
    assert "capture point 'we\\nst:eth0' is not an interface" in one_line_error(
        tracer("replay", "-t", TOPO, cap, "--point", f"we\nst:eth0={cap}"))
    points = tmp_path / "points.toml"
    points.write_text(f'"west:eth0\\u2028\\u0000" = "{cap}"\n')
    assert "capture point 'west:eth0\\u2028\\x00': 'eth0\\u2028\\x00' is not an interface name" in one_line_error(
        tracer("replay", "-t", TOPO, cap, "--points", str(points)))


def test_a_witness_point_is_named_like_an_interface(tmp_path):
    """--point west:../../x=FILE was kept as a witness point named '../../x'."""
    cap = str(ALL_DELIVERED / "west_eth0.pcapng")
    for iface in ("../../x", "eth0/..", "x" * 16):
        err = one_line_error(tracer("replay", "-t", TOPO, cap, "--point", f"west:{iface}={cap}"))
        assert f"'{iface}' is not an interface name" in err


def test_a_file_listed_many_times_in_a_points_file_is_read_once(tmp_path):
    """20,000 repeats of one file for one point were 20,000 reads (minutes, within the 4 MiB limit)."""
    points = tmp_path / "points.toml"
    files = sorted(ALL_DELIVERED.glob("*.pcapng"))
    lines = [f'"{f.stem.replace("_", ":", 1)}" = "{f}"' for f in files[1:]]
    lines.append(f'"{files[0].stem.replace("_", ":", 1)}" = [' + ", ".join([f'"{files[0]}"'] * 20000) + "]")
    points.write_text("\n".join(lines) + "\n")
    r = tracer("replay", "-t", TOPO, str(files[0]), "--points", str(points), timeout=20)
    assert r.returncode == 0 and "3/3 echo requests delivered and answered" in r.stdout, r.stderr


# --- damage outside the packet data (tests/fuzz/test_fuzz_verdicts.py): never a silent verdict change ---------

def _damaged_run(tmp_path: Path, scenario: str, file: str, how) -> Path:
    from tests.fuzz.mutate import parse_pcapng, serialise_pcapng

    run = tmp_path / scenario
    shutil.copytree(ROOT / "captures" / scenario, run)
    blocks = parse_pcapng((run / file).read_bytes())
    (run / file).write_bytes(serialise_pcapng(how(blocks)))
    return run


def test_a_capture_cut_to_its_header_does_not_move_the_blame(tmp_path):
    """Issue 13: ike-ok with east-gw:wan0's file cut to its header read "3/3 IKE_SA_INIT requests lost on the
    wire" (the reply path showed every response). The manifest gives its drops, but the file ends
    without the statistics block that carries them: cut short."""
    run = _damaged_run(tmp_path, "ike-ok", "east-gw_wan0.pcapng", lambda b: b[:2])
    r = tracer("replay", str(run))
    assert r.returncode == 3 and r.stdout.startswith("tracer ike:"), r.stdout + r.stderr
    assert "INCONCLUSIVE 3/3 IKE_SA_INIT requests inconclusive" in r.stdout
    assert "east-gw_wan0.pcapng: ends without the statistics block its sniffer writes" in r.stdout


def test_a_point_blind_to_probes_seen_after_it_cannot_be_where_they_vanish(tmp_path):
    """Without a manifest (loose files) the emptied capture still shows: the responses east-gw sent were seen
    at router:eth1 but never at east-gw:wan0, which they left by: its silence proves nothing."""
    run = _damaged_run(tmp_path, "ike-ok", "east-gw_wan0.pcapng", lambda b: b[:2])
    files = [str(p) for p in sorted(run.glob("*.pcapng"))]
    r = tracer("replay", "-t", str(run / "topology.toml"), *files)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "east-gw:wan0 missed probes that capture points after it saw" in r.stdout


def test_a_wrong_link_type_or_timestamp_resolution_is_said(tmp_path):
    """gw-forward-drop with west-gw:lan0's link type set to raw IP read "lost on the wire west:eth0 →
    west-gw:lan0"; esp-blocked with west-gw:wan0's if_tsresol changed moved the loss into west-gw."""
    from tests.fuzz.mutate import IDB, set_fixed, with_options

    def relink(blocks):
        return [set_fixed(b, 0, 101) if b.type == IDB else b for b in blocks]

    def retime(blocks):
        return [with_options(b, [(2, b"west-gw:wan0"), (9, b"\x03")]) if b.type == IDB else b for b in blocks]

    run = _damaged_run(tmp_path, "gw-forward-drop", "west-gw_lan0.pcapng", relink)
    r = tracer("replay", str(run))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "west-gw_lan0.pcapng (west-gw:lan0): none of its 3 packets decodes as IP" in r.stdout
    run = _damaged_run(tmp_path / "t", "esp-blocked", "west-gw_wan0.pcapng", retime)
    r = tracer("replay", str(run))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "(west-gw:wan0): its packets are stamped" in r.stdout and "timestamp resolution or offset is wrong" in r.stdout
