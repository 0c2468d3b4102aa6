"""Helper processes a trace starts (tcpdump, ssh, bpftrace), which must never outlive it.

They run in their own session, so a Ctrl-C at the terminal reaches tracer only and tracer
stops them cleanly (SIGINT/SIGTERM: they flush and print their drop counts). Two things
make sure that a tracer killed outright (SIGKILL, or its process group) leaves nothing:

* **PDEATHSIG**: each is started with ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, so the kernel
  sends it SIGTERM when tracer dies. The signal follows the death of the *thread* that
  forked it, so :func:`spawn` is meant for the main thread (a trace starts its helpers there);
  from another thread it still works, but only the registry below covers that thread's exit.
  ``ip netns exec`` and ssh exec in place, and a root tcpdump's ``-Z root`` keeps its
  credentials, so the setting survives into the capturing process itself.
  The prctl is made by util-linux ``setpriv --pdeathsig TERM`` exec'd in the child, then
  ``sh`` checks the parent is still tracer and execs the helper: no Python code runs between
  fork and exec, which is unsafe once other threads exist (bpftrace's reader, ssh pumps,
  parallel sniffer starts). Without such a setpriv a ``preexec_fn`` does the same.
* **A registry of what was started**: PID, start time (``/proc/PID/stat``) and command line,
  written to ``processes.json`` in the run directory and to ``/run/tracer/procs/<pid>-<start>.json``.
  :func:`reap_orphans` (run by ``tracer lab down`` and by the next trace) kills the
  processes of a tracer that no longer runs — only if PID, start time and command line all
  still match, so a reused PID is never touched, and never by name.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tracer.textfile import write_private

REGISTRY = Path("/run/tracer/procs")  # one <pid>-<start>.json per running tracer that started helpers
RUN_FILE = "processes.json"  # in the run directory: every helper the run started
PR_SET_PDEATHSIG = 1
STOP_WAIT_S = 3.0  # SIGTERM, then SIGKILL after this long


# -- process identity (/proc) ---------------------------------------------------------------


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 on): state, ppid, ...; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ')'


def start_time(pid: int) -> int | None:
    """Process start time (clock ticks since boot): tells a PID from its reuse."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, start: int | None) -> bool:
    """True if ``pid`` runs, is not a zombie, and (if known) started at ``start``."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


def cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return tuple(a.decode(errors="replace") for a in raw.split(b"\0")[:-1])


def descendants(pid: int) -> list[int]:
    """PIDs of the whole process tree under ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


@dataclass(frozen=True)
class Helper:
    """One helper process as recorded: enough to find it again and to be sure it is the same one."""

    pid: int
    start: int | None
    argv: tuple[str, ...]  # as started; /proc/PID/cmdline is it, or its tail after a wrapper's exec
    what: str  # "tcpdump west:eth0", "bpftrace"

    def same(self) -> bool:
        """Still running as the process we started (PID, start time and command line agree)."""
        if not alive(self.pid, self.start):
            return False
        now = cmdline(self.pid)
        # A wrapper that execs in place ("ip netns exec NS tcpdump ...") leaves the tail.
        return bool(now) and now == self.argv[len(self.argv) - len(now):]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"argv": list(self.argv)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Helper:
        pid, start, argv = d["pid"], d.get("start"), d["argv"]
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
            raise ValueError(f"pid {pid!r}")
        if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
            raise ValueError(f"start {start!r}")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv")
        return cls(pid, start, tuple(argv), str(d.get("what", "")))


# -- this process's helpers -------------------------------------------------------------------

_helpers: dict[int, Helper] = {}  # running helpers of this process, by PID
_run_file: Path | None = None  # the current run directory's processes.json
_run_helpers: list[dict[str, Any]] = []  # everything the current run started (and whether it ended)


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # resolved once here: the forked child must not load libraries


def die_with_parent(parent: int, sig: int) -> None:
    """In a child just forked by ``parent``: the kernel sends it ``sig`` when the parent dies
    (exits at once if that already happened). Minimal: it runs between fork and exec too."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:  # tracer died before the prctl: nothing would signal us
        os._exit(1)


def _die_with(parent: int, sig: int) -> Callable[[], None]:
    return functools.partial(die_with_parent, parent, sig)


# In the child after setpriv: exit if tracer died before the prctl (nothing would signal us),
# else become the helper. $PPID is the parent when sh started, i.e. after setpriv's prctl.
_CHECK_PARENT = '[ "$PPID" = "$1" ] || exit 1; shift; exec "$@"'


@functools.cache
def _setpriv() -> str | None:
    """util-linux setpriv if it has --pdeathsig (2.33 and later), else None."""
    exe, sh = shutil.which("setpriv"), shutil.which("sh")
    if exe is None or sh is None:
        return None
    try:
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return exe if "--pdeathsig" in out else None


def wrapped(argv: Sequence[str], parent: int) -> list[str] | None:
    """``argv`` behind setpriv's parent-death signal and sh's parent check; None without setpriv."""
    exe, sh = _setpriv(), shutil.which("sh")
    if exe is None or sh is None:
        return None
    return [exe, "--pdeathsig", "TERM", "--", sh, "-c", _CHECK_PARENT, "sh", str(parent), *argv]


def spawn(argv: Sequence[str], what: str, **popen: Any) -> subprocess.Popen[bytes]:
    """Start a helper in its own session that gets SIGTERM when tracer dies, and record it.
    A missing program raises FileNotFoundError, as Popen itself would.

    Call it under :func:`tracer.interrupts.deferred` together with keeping the result: a
    Ctrl-C between the fork and the caller's assignment would otherwise leave a helper that
    nobody stops until tracer exits."""
    env = popen.get("env")
    if shutil.which(argv[0], path=(env if env is not None else os.environ).get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    cmd = wrapped(argv, os.getpid())
    if cmd is not None:
        proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, start_new_session=True, **popen)
    else:
        cmd = list(argv)
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with(os.getpid(), signal.SIGTERM), **popen)
    # The command as started: its cmdline is that, then each exec's tail, ending with ``argv``.
    helper = Helper(proc.pid, start_time(proc.pid), tuple(cmd), what)
    _helpers[proc.pid] = helper
    _run_helpers.append(helper.to_dict() | {"ended": False})
    _save()
    return proc


def ended(proc: subprocess.Popen[Any]) -> None:
    """A helper we started has been stopped and reaped: drop it from the registry."""
    if _helpers.pop(proc.pid, None) is None:
        return
    for h in _run_helpers:
        if h["pid"] == proc.pid:
            h["ended"] = True
    _save()


def record_in(run_dir: Path | None) -> None:
    """From now on also keep ``run_dir/processes.json`` (None: the run is over, stop writing it)."""
    global _run_file
    _run_file = run_dir / RUN_FILE if run_dir is not None else None
    _run_helpers.clear()
    _run_helpers.extend(h.to_dict() | {"ended": False} for h in _helpers.values())
    _save()


def _registry_file() -> Path:
    me = os.getpid()
    return REGISTRY / f"{me}-{start_time(me)}.json"


def _save() -> None:
    me = os.getpid()
    doc = {"owner": {"pid": me, "start": start_time(me)}, "helpers": [h.to_dict() for h in _helpers.values()]}
    try:
        if _helpers:
            REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write(_registry_file(), doc)
        else:
            _registry_file().unlink(missing_ok=True)
    except OSError:
        pass  # not root (no /run/tracer): PDEATHSIG and the run directory's record still hold
    if _run_file is not None:
        try:
            _write(_run_file, {"owner": doc["owner"], "helpers": _run_helpers})
        except OSError:
            pass  # the run directory is gone (removed under us): nothing to record into


def _write(path: Path, doc: dict[str, Any]) -> None:
    write_private(path, json.dumps(doc, indent=1) + "\n")


# -- what a killed tracer left -------------------------------------------------------------------


def reap_orphans(registry: Path | None = None) -> list[Helper]:
    """Stop the helpers of every tracer that no longer runs; the ones that were still running.

    A registry file whose owner (PID + start time) still runs is left alone: that trace is
    live. Unreadable files are removed (they name nothing we could verify)."""
    folder = registry or REGISTRY
    left: list[Helper] = []
    try:
        files = sorted(folder.glob("*.json"))
    except OSError:
        return []
    for path in files:
        try:
            doc = json.loads(path.read_text()[:1_000_000])
            owner = doc["owner"]
            if alive(int(owner["pid"]), owner.get("start")):
                continue
            helpers = [Helper.from_dict(h) for h in doc["helpers"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            helpers = []
        left += [h for h in helpers if h.same()]
        path.unlink(missing_ok=True)
    stop(left)
    return left


def stop(helpers: Sequence[Helper]) -> None:
    """SIGTERM each (while still the same process), SIGKILL what is left after a few seconds."""
    live = [h for h in helpers if h.same()]
    for h in live:
        signal_pid(h.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while live and time.monotonic() < deadline:
        time.sleep(0.02)
        live = [h for h in live if h.same()]
    for h in live:
        signal_pid(h.pid, signal.SIGKILL)


def signal_pid(pid: int, sig: int) -> None:
    """Signal a PID that may have just exited."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
