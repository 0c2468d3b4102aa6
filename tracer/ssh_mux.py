"""One OpenSSH master connection per SSH host for the length of a trace (``ControlMaster``).

A trace reaches an SSH host many times: its live state, its evidence before and after, one
sniffer per capture point. Without sharing, each is a TCP connection plus a key exchange and
authentication; with a master, the first costs one handshake and every later ``ssh`` to that
host (:func:`tracer.ssh_client.ssh_argv`) opens a session on it, which costs a round trip.

* The masters of all hosts start at once; a trace waits for the slowest, once. A master is
  ready when its control socket appears (ssh creates it once authenticated).
* Their sockets live in a private directory (0700) under tracer's runtime directory
  (``/run/tracer/ssh-<pid>-*``; short paths: a socket path has at most 107 bytes), removed
  when the trace ends, also on failure; the directories of a tracer that no longer runs are
  removed by the next one. That runtime directory is the user's own (root: ``/run/tracer``,
  others ``$XDG_RUNTIME_DIR/tracer`` or ``/tmp/tracer-<uid>``), 0700 and not a symlink, else
  the trace stops with a one-line error (tracer.privdir): whoever can write there could
  plant a control socket and see every session to the host.
* A master is ``ssh -M -N`` in the foreground, one of tracer's helpers (tracer.subprocs: its
  own session, PDEATHSIG, on record): stopped when the trace ends, and if tracer is killed
  outright it gets SIGTERM from the kernel, so no master (and no session on it) outlives a
  trace, not even for a ``ControlPersist`` while (``ControlPersist=no``).
* A host whose master cannot start gets none: its sessions connect on their own, as without
  multiplexing, and fail there with the real reason (a refused key says so in the sniffer's
  one-line error, not in a second message from here).

``TRACER_SSH_MASTERS=0`` turns it off (and with it extraction on the hosts, which is decided
as a master opens). A session past what the server allows per connection (sshd's
``MaxSessions``, default 10) is refused on the master; ssh then connects it on its own, so it
works but costs its own handshake: :meth:`Masters.refused` counts them (the manifest says so).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tracer.errors import EnvironmentProblem
from tracer.interrupts import deferred, starting
from tracer.privdir import ours, private_dir
from tracer.ssh_client import CONNECT_TIMEOUT, MASTERS, Connection, Master, control_argv, master_argv
from tracer.subprocs import alive, ended, spawn

RUNTIME = Path("/run/tracer")  # tracer's runtime directory (root); see runtime_dir
OPEN_TIMEOUT = CONNECT_TIMEOUT + 5.0
STOP_TIMEOUT = 3.0
PREFIX = "ssh-"
# What a master logs (LogLevel=INFO) for each session its server refused, e.g. past sshd's
# MaxSessions: "channel 4: open failed: connect failed: open failed" (OpenSSH 9.2).
REFUSED = re.compile(r"^channel \d+: open failed", re.MULTILINE)
OFF = "TRACER_SSH_MASTERS"  # =0: no master connections (each session connects on its own, as before)


def runtime_dir() -> Path:
    """The effective user's own: root's ``/run/tracer``, else ``$XDG_RUNTIME_DIR/tracer``, else
    ``/tmp/tracer-<uid>`` (never one shared by users: see :func:`tracer.privdir.private_dir`)."""
    uid = os.geteuid()
    if uid == 0:
        return RUNTIME
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "tracer" if xdg else Path(tempfile.gettempdir()) / f"tracer-{uid}"


class Masters:
    """The master connections of one trace; :meth:`open` them, :meth:`close` them (always)."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or runtime_dir()
        self.dir: Path | None = None
        self.open_: dict[Connection, Master] = {}
        self.failed: dict[Connection, str] = {}  # host → why it has no master
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[Connection, Path] = {}  # each master's stderr

    def open(self, conns: Iterable[Connection], probe: Callable[[Connection], bool] | None = None) -> None:
        """Start a master per connection, all at once, and wait until each listens (or failed,
        or its connect timeout passed). Spawned here, in the calling thread: a helper's
        PDEATHSIG follows the thread that forked it (tracer.subprocs). ``probe(conn)``, run over
        each master once all are up, in parallel: what :attr:`Master.columns` says
        (tracer.sniff.ssh asks whether the host has tracer)."""
        conns = list(dict.fromkeys(c for c in conns if c not in MASTERS))
        if not conns or os.environ.get(OFF) == "0":
            return
        private_dir(self.base, "tracer's runtime directory")
        remove_stale(self.base)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=self.base))  # 0700
        except OSError as e:
            raise EnvironmentProblem(f"cannot make a directory for ssh control sockets in {self.base}: "
                                     f"{e.strerror}") from None
        starting_: dict[Connection, tuple[Path, subprocess.Popen[bytes]]] = {}
        for i, conn in enumerate(conns):
            path = self.dir / str(i)
            # Its stderr goes to a file (a pipe nobody reads while it runs could fill and stall
            # the master): its last words if it fails, the sessions its host refused if not.
            self._logs[conn] = log = self.dir / f"{i}.log"
            try:
                with open(log, "xb") as err, deferred(starting(f"ssh master for {conn[0]}")):
                    proc = spawn(master_argv(conn, path), f"ssh master {conn[0]}", stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err)
                    self._procs.append(proc)
            except OSError as e:
                self.failed[conn] = f"cannot run ssh ({e.strerror})"
                continue
            starting_[conn] = (path, proc)
        deadline = time.monotonic() + OPEN_TIMEOUT
        while starting_:
            for conn, (path, proc) in list(starting_.items()):
                if path.exists():
                    self.open_[conn] = MASTERS[conn] = Master(path)
                elif proc.poll() is not None or time.monotonic() > deadline:
                    self.failed[conn] = _why(proc, self._logs[conn])
                else:
                    continue
                del starting_[conn]
            time.sleep(0.005)
        if probe is not None and self.open_:
            with ThreadPoolExecutor(max_workers=min(64, len(self.open_)), thread_name_prefix="ssh-probe") as pool:
                for master, answer in zip(self.open_.values(), pool.map(probe, list(self.open_)), strict=True):
                    master.columns = answer

    def refused(self) -> dict[str, int]:
        """Per host, how many sessions its server refused on the master (sshd's ``MaxSessions``
        reached): ssh then connected them on its own, so they worked, just not multiplexed."""
        out = {}
        for conn in self.open_:
            try:
                text = self._logs[conn].read_text(errors="replace")
            except OSError:
                continue
            if n := len(REFUSED.findall(text)):
                out[conn[0]] = n
        return out

    def close(self) -> None:
        """Stop every master (their remaining sessions end with them); remove the sockets."""
        for conn in self.open_:
            MASTERS.pop(conn, None)
        self.open_.clear()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()  # ssh closes the connection and removes its socket
        for proc in self._procs:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            ended(proc)
        self._procs.clear()
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


def _why(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Why a master did not come up (one line): ssh's last words, or the timeout."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return f"no master within {OPEN_TIMEOUT:.0f} s"
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return (text.splitlines() or [f"ssh exited with status {proc.returncode}"])[-1]


def _exit(path: Path, target: str) -> None:
    try:
        subprocess.run(control_argv("exit", path, target), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass


def remove_stale(base: Path) -> None:
    """Socket directories of tracers that no longer run (killed outright; their masters died with
    them): any master still there is told to exit, and the directories are removed. Only ours:
    an entry of another user (or a symlink) is left alone, never an error."""
    try:
        entries = list(base.glob(f"{PREFIX}*-*"))
    except OSError:
        return
    for d in entries:
        try:
            pid = int(d.name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or alive(pid, None) or not ours(d):
            continue
        try:
            socks = list(d.iterdir())
        except OSError:
            continue
        for sock in socks:
            if sock.is_socket():
                _exit(sock, "stale")
        shutil.rmtree(d, ignore_errors=True)
