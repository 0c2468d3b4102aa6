"""Extraction on the host, the sniffer's side of it, with the real remote wrapper run by sh here.

Only the transport and the host's programs are stand-ins: ``ssh`` runs its command with sh on
this machine (no host key or network involved), ``tcpdump`` writes a few bytes where ``-w``
says, and ``python3 -m tracer extract`` answers, fails or hangs as a test asks. The directory
handling, the markers, the stop and the timeout are tracer's own.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from pathlib import Path

import pytest

from tracer.columns import read_columns
from tracer.interrupts import deferred
from tracer.sniff import ssh
from tracer.sniff.ssh import SshTcpdumpSniffer, _why

# A nanosecond pcap header (Ethernet, snaplen 2048) and no packet: what tcpdump writes first.
HDR = bytes.fromhex("4d3cb2a1 0200 0400 00000000 00000000 00080000 01000000")
_TCPDUMP = """#!/bin/sh
w=-; prev=; for a; do [ "$prev" = -w ] && w="$a"; prev="$a"; done
trap 'echo "3 packets captured" >&2; echo "0 packets dropped by kernel" >&2; exit ${FAKE_TCPDUMP_RC:-0}' INT TERM
echo "tcpdump: listening on lo, link-type EN10MB" >&2
h='\\115\\074\\262\\241\\002\\000\\004\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\010\\000\\000\\001\\000\\000\\000'
if [ "$w" = - ]; then printf "$h"; else printf "$h" > "$w"; fi
while :; do sleep 0.01; done
"""
_PYTHON3 = """#!/bin/sh
case "$FAKE_EXTRACT" in
  hang) printf PARTIAL; exec sleep 5 >/dev/null 2>&1 ;;  # ssh's pipes: gone with ssh, as for a real one
  fail) printf PARTIAL; echo "extract: cannot read the capture" >&2; exit 3 ;;
  *) for a; do last="$a"; done; printf "COLS:%s" "$last" ;;
esac
"""
_SSH = """#!/bin/sh
for a; do last="$a"; done
exec /bin/sh -c "$last"
"""


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A "host" whose user's HOME is tmp_path/home; returns that HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("tcpdump", _TCPDUMP), ("python3", _PYTHON3), ("ssh", _SSH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    return home


def capture(tmp_path: Path, run: str = "run", settle: float = 0.3):
    out = tmp_path / run / "gw1_eth0.pcapng"
    out.parent.mkdir(exist_ok=True)
    s = SshTcpdumpSniffer("gw1:eth0", "root@gw1", "eth0", out, "icmp", extract=True)
    s.start()
    s.wait_ready(time.monotonic() + 5)
    time.sleep(settle)
    return s.stop()


def test_each_capture_gets_a_fresh_private_directory_named_in_kept_at(host: Path, tmp_path: Path) -> None:
    a, b = capture(tmp_path, "a"), capture(tmp_path, "b")  # the same capture file name twice
    assert a.kept_at and b.kept_at and a.kept_at != b.kept_at
    for r in (a, b):
        host_part, path = r.kept_at.split(":", 1)
        assert host_part == "root@gw1" and Path(path).parent.parent == host / ".cache" / "tracer"
        assert Path(path).read_bytes() == HDR  # the first capture was not overwritten
        assert stat.S_IMODE(Path(path).parent.stat().st_mode) == 0o700
        assert r.file.suffix == ".cols" and r.file.read_bytes() == f"COLS:{path}".encode()
        assert r.ended_early is None


def test_a_planted_symlink_is_never_followed(host: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (host / ".cache").mkdir()
    (host / ".cache" / "tracer").symlink_to(victim)
    r = capture(tmp_path)
    assert list(victim.iterdir()) == []
    # No private directory: the whole capture streamed, as from a host without tracer, with a note.
    assert r.kept_at is None and r.file.name == "gw1_eth0.pcapng"
    assert "tracer: note: gw1:eth0: no private directory under" in capsys.readouterr().err


def test_a_directory_of_another_user_is_not_used(host: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    (host / ".cache" / "tracer").mkdir(parents=True)
    os.chown(host / ".cache" / "tracer", 65534, 65534)
    r = capture(tmp_path)
    assert r.kept_at is None and r.file.suffix == ".pcapng"


def test_a_hung_extraction_leaves_the_point_unextracted_not_half_a_file(
        host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EXTRACT", "hang")
    monkeypatch.setattr(ssh, "EXTRACT_FLOOR_S", 1.0)
    t = time.monotonic()
    r = capture(tmp_path)
    assert time.monotonic() - t < 5
    assert r.ended_early is not None and "did not finish within 1 s" in r.ended_early
    assert r.kept_at is not None and r.kept_at in r.ended_early
    cols = read_columns(r.file)  # a valid, empty columns file that says it is damaged
    assert cols.damaged is not None and r.kept_at in cols.damaged
    assert not list(r.file.parent.glob("*.tmp*"))


def test_ctrl_c_during_extraction_ends_it_the_same_way(
        host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As in tracer.run.record: stopping runs with Ctrl-C held; one then ends the wait at once.
    monkeypatch.setenv("FAKE_EXTRACT", "hang")
    monkeypatch.setattr(ssh, "EXTRACT_FLOOR_S", 60.0)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    t = time.monotonic()
    with deferred(raise_after=False) as got:
        r = capture(tmp_path)
    assert got == [signal.SIGINT] and time.monotonic() - t < 5
    assert r.ended_early is not None and "stopped by Ctrl-C" in r.ended_early and r.kept_at in r.ended_early
    assert read_columns(r.file).damaged is not None


def test_a_failed_extraction_names_tracer_s_line(host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EXTRACT", "fail")
    r = capture(tmp_path)
    assert r.ended_early is not None
    assert f"tracer extract failed on the remote host (status 3); the capture stays at {r.kept_at}" in r.ended_early
    assert read_columns(r.file).damaged is not None


def test_a_tcpdump_that_ended_badly_still_gives_its_columns(
        host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TCPDUMP_RC", "1")  # the session's status is tcpdump's, the extraction went fine
    r = capture(tmp_path)
    assert r.file.read_bytes().startswith(b"COLS:") and r.ended_early == "exited with status 1"


def test_extract_timeout_grows_with_the_capture() -> None:
    assert ssh.extract_timeout(None) == ssh.EXTRACT_FLOOR_S
    assert ssh.extract_timeout(600 << 20) == ssh.EXTRACT_FLOOR_S + 600 * ssh.EXTRACT_S_PER_MIB


def test_why_prefers_tracer_s_line_then_the_first_that_is_not_chatter() -> None:
    err = ("tracer-kept-dir: /root/.cache/tracer/run.x\ntcpdump: listening on eth0, link-type EN10MB\n"
           "3 packets captured\nTraceback (most recent call last):\n"
           "tracer extract failed on the remote host (status 2); the capture stays at /x\n")
    assert _why(err).startswith("tracer extract failed")
    assert _why("Warning: Permanently added\nPermission denied (publickey).\n") == "Permission denied (publickey)."
    assert _why("tcpdump: eth9: No such device exists\n(No such device exists)\n") == "tcpdump: eth9: No such device exists"
    assert _why("tcpdump: listening on lo\n3 packets captured\n") is None
