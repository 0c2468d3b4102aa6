"""The master connections' runtime directory is the user's own (tracer.ssh_mux, tracer.privdir):
another user's directory or symlink there is refused in one line or left alone, never a
traceback, and never used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracer.errors import EXIT_ENVIRONMENT, EnvironmentProblem
from tracer.privdir import private_dir
from tracer.ssh_client import connection
from tracer.ssh_mux import Masters, remove_stale

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
OTHER = 999_999  # a pid that runs nowhere: its directories are stale
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user, setpriv: root only")


def test_private_dir_is_made_tightened_or_refused(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "run", "runtime")
    assert made.stat().st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    private_dir(loose, "runtime")
    assert loose.stat().st_mode & 0o777 == 0o700  # an older tracer's 0755: ours, so tightened
    link = tmp_path / "link"
    link.symlink_to(made)
    with pytest.raises(EnvironmentProblem, match="is a symlink") as err:
        private_dir(link, "runtime")
    assert err.value.exit_code == EXIT_ENVIRONMENT


@as_root
def test_another_users_directory_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o755)  # not mkdir's mode: the umask (077 in CI) would cut it
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(EnvironmentProblem, match=f"owned by uid {NOBODY}"):
        Masters(theirs).open([connection("127.0.0.1", port=1)])
    assert theirs.stat().st_mode & 0o777 == 0o755 and list(theirs.iterdir()) == []  # untouched, unused


@as_root
def test_stale_directories_of_others_are_left_alone(tmp_path: Path) -> None:
    ours_ = tmp_path / f"ssh-{OTHER}-ours"
    theirs = tmp_path / f"ssh-{OTHER}-theirs"
    for d in (ours_, theirs):
        d.mkdir(mode=0o700)
        (d / "0").write_text("")
    os.chown(theirs, NOBODY, NOBODY)
    (tmp_path / f"ssh-{OTHER}-link").symlink_to(ours_)
    remove_stale(tmp_path)
    assert not ours_.exists() and (theirs / "0").exists() and (tmp_path / f"ssh-{OTHER}-link").is_symlink()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A /tmp of its own (sticky, world-writable) for a non-root user's runtime directory."""
    d = Path(tempfile.mkdtemp(prefix="trc-mx-"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d)


OPEN = """
import sys
from tracer.errors import TracerError
from tracer.ssh_client import connection
from tracer.ssh_mux import Masters, runtime_dir
print(runtime_dir())
m = Masters()
try:
    m.open([connection("127.0.0.1", port=1)])  # refused at once, on loopback
except TracerError as e:
    print(e)
    sys.exit(e.exit_code)
finally:
    m.close()
print(len(m.failed))
"""


def _as_nobody(tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "HOME": str(tmp)}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           sys.executable, "-c", OPEN], env=env, capture_output=True, text=True, timeout=30)


@as_root
def test_a_non_root_user_gets_a_directory_of_its_own(shared_tmp: Path) -> None:
    """Without XDG_RUNTIME_DIR: ``/tmp/tracer-<uid>``, not a ``/tmp/tracer`` another user made
    first (whose stale directories made this exit 70 before)."""
    shared = shared_tmp / "tracer"  # what every user shared before, with a stale directory not ours
    (shared / f"ssh-{OTHER}-x").mkdir(parents=True, mode=0o700)
    done = _as_nobody(shared_tmp)
    assert done.returncode == 0, done.stderr
    base = shared_tmp / f"tracer-{NOBODY}"
    assert done.stdout.split() == [str(base), "1"]  # the master failed (port 1): direct connections
    st = base.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY, 0o700) and list(base.iterdir()) == []


@as_root
def test_a_planted_runtime_directory_is_refused_in_one_line(shared_tmp: Path) -> None:
    """Another user made ``/tmp/tracer-<uid>`` first (to plant a control socket): exit 4, one line."""
    base = shared_tmp / f"tracer-{NOBODY}"
    base.mkdir(mode=0o777)
    base.chmod(0o777)
    done = _as_nobody(shared_tmp)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert f"{base} is owned by uid 0" in done.stdout and "Traceback" not in done.stderr
    assert list(base.iterdir()) == []


def test_a_master_that_cannot_connect_says_why_in_ssh_words(tmp_path: Path) -> None:
    """Its stderr (a file in the private directory, not a pipe) gives the one-line reason."""
    m = Masters(tmp_path / "run")
    try:
        m.open([conn := connection("127.0.0.1", port=1)])  # refused at once, on loopback
        assert m.open_ == {} and m.refused() == {}
        assert m.failed[conn].endswith("port 1: Connection refused"), m.failed
    finally:
        m.close()
    assert list((tmp_path / "run").iterdir()) == []
