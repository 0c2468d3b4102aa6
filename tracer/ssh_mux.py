"""One OpenSSH master connection per SSH host for the length of a trace (``ControlMaster``).

A trace reaches an SSH host many times: its live state, its evidence before and after, one
sniffer per capture point. Without sharing, each is a TCP connection plus a key exchange and
authentication; with a master, the first costs one handshake and every later ``ssh`` to that
host (:func:`tracer.ssh_client.ssh_argv`) opens a session on it, which costs a round trip.

* The masters of all hosts start in parallel; a trace waits for the slowest, once.
* Their sockets live in a private directory (0700) under tracer's runtime directory
  (``/run/tracer/ssh-<pid>-*``; short paths: a socket path has at most 107 bytes), removed
  when the trace ends, also on failure; the directories of a tracer that no longer runs are
  removed by the next one.
* ``ssh -M -N -f -o ControlPersist=15``: the command returns once the master is
  authenticated and listening (the barrier), the master itself runs in the background. At the
  end tracer tells it to exit (``ssh -O exit``); if tracer is killed outright, its sessions die
  with it (tracer.subprocs) and the master exits ``PERSIST_S`` seconds later on its own.
* A host whose master cannot start gets none: its sessions connect on their own, as without
  multiplexing, and fail there with the real reason (a refused key says so in the sniffer's
  one-line error, not in a second message from here).

``TRACER_SSH_MASTERS=0`` turns it off (and with it extraction on the hosts, which is decided
as a master opens). The server must allow as many sessions per connection as the trace opens at once on one host
(sshd's ``MaxSessions``, default 10: sniffers of the host's interfaces plus a few readers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tracer.ssh_client import CONNECT_TIMEOUT, MASTERS, Connection, Master, control_argv, master_argv
from tracer.subprocs import alive

RUNTIME = Path("/run/tracer")  # tracer's runtime directory (root); else $XDG_RUNTIME_DIR or /tmp
PERSIST_S = 15  # a master outlives its last session by this long (tracer killed: nobody says exit)
OPEN_TIMEOUT = CONNECT_TIMEOUT + 5.0
PREFIX = "ssh-"
OFF = "TRACER_SSH_MASTERS"  # =0: no master connections (each session connects on its own, as before)


def runtime_dir() -> Path:
    if os.geteuid() == 0:
        return RUNTIME
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / "tracer"


class Masters:
    """The master connections of one trace; :meth:`open` them, :meth:`close` them (always)."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or runtime_dir()
        self.dir: Path | None = None
        self.open_: dict[Connection, Master] = {}
        self.failed: dict[Connection, str] = {}  # host → why it has no master

    def open(self, conns: Iterable[Connection], probe: Callable[[Connection], bool] | None = None) -> None:
        """Start a master per connection, all at once, and wait for them (each bounded by its
        connect timeout). ``probe(conn)``, run over each new master as soon as it is up: what
        :attr:`Master.columns` says (tracer.sniff.ssh asks whether the host has tracer)."""
        conns = list(dict.fromkeys(c for c in conns if c not in MASTERS))
        if not conns or os.environ.get(OFF) == "0":
            return
        self.base.mkdir(mode=0o755, parents=True, exist_ok=True)
        remove_stale(self.base)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=self.base))  # 0700

        def one(i: int, conn: Connection) -> None:
            assert self.dir is not None
            path = self.dir / str(i)
            why = _start(conn, path)
            if why is not None:
                self.failed[conn] = why
                return
            master = self.open_[conn] = MASTERS[conn] = Master(path)
            if probe is not None:
                master.columns = probe(conn)

        with ThreadPoolExecutor(max_workers=min(64, len(conns)), thread_name_prefix="ssh-master") as pool:
            for f in [pool.submit(one, i, c) for i, c in enumerate(conns)]:
                f.result()

    def close(self) -> None:
        """Tell every master to exit (their remaining sessions end with them); remove the sockets."""
        opened = list(self.open_.items())
        for conn, _ in opened:
            MASTERS.pop(conn, None)
        self.open_.clear()
        if opened:
            with ThreadPoolExecutor(max_workers=min(64, len(opened)), thread_name_prefix="ssh-exit") as pool:
                list(pool.map(lambda cm: _exit(cm[1].control_path, cm[0][0]), opened))
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


@contextmanager
def masters(conns: Iterable[Connection], probe: Callable[[Connection], bool] | None = None) -> Iterator[Masters]:
    m = Masters()
    try:
        m.open(conns, probe)
        yield m
    finally:
        m.close()


def _start(conn: Connection, path: Path) -> str | None:
    """Start one master; None once it listens, else why not (one line)."""
    with tempfile.TemporaryFile() as err:  # not a pipe: the backgrounded master must not hold it open
        try:
            proc = subprocess.run(master_argv(conn, path, PERSIST_S), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, timeout=OPEN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return f"no master within {OPEN_TIMEOUT:.0f} s"
        except OSError as e:
            return f"cannot run ssh ({e.strerror})"
        err.seek(0)
        text = err.read().decode(errors="replace").strip()
    if proc.returncode != 0 or not path.exists():
        return (text.splitlines() or [f"ssh exited with status {proc.returncode}"])[-1]
    return None


def _exit(path: Path, target: str) -> None:
    try:
        subprocess.run(control_argv("exit", path, target), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass  # it exits PERSIST_S after its last session anyway


def remove_stale(base: Path) -> None:
    """Socket directories of tracers that no longer run (killed outright): their masters are told
    to exit (they would within PERSIST_S anyway) and the directories removed."""
    for d in base.glob(f"{PREFIX}*-*"):
        try:
            pid = int(d.name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or alive(pid, None):
            continue
        for sock in d.iterdir():
            _exit(sock, "stale")
        shutil.rmtree(d, ignore_errors=True)
