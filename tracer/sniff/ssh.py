"""tcpdump on a remote host, over SSH (the OpenSSH client, key-based, non-interactive).

The remote tcpdump writes its pcap to stdout (``-w -``); the SSH channel
carries it here, where a reader thread streams it into the same raw pcap file
the local backend would have written. tcpdump's stderr comes back as ssh's
stderr, so the local backend's barrier ("listening on") and drop-count parsing
apply unchanged, and so does the pcap → pcapng conversion.

How the remote tcpdump is stopped, and why this way: the remote command is a
small POSIX sh wrapper that starts tcpdump in the background and blocks
reading the SSH channel's stdin; a line or end-of-file there makes it send
SIGTERM to tcpdump, which then prints its statistics (drop count) and exits,
and the session ends. So stopping is "write a line and close stdin" on the
one connection we already have:

* no second SSH connection (a handshake per capture point at stop time, and
  a second way to fail: auth, MaxStartups, a changed route);
* no pseudo-terminal: ``ssh -tt`` plus ^C would also stop it, but a pty
  rewrites the binary pcap stream (``\\n`` → ``\\r\\n``) and merges stderr
  into stdout, losing the barrier and the drop count;
* no orphan: if tracer dies or the connection drops, sshd closes the channel,
  ``read`` sees end-of-file and tcpdump is stopped all the same, instead of
  capturing on a production box forever.

SIGTERM rather than the local backend's SIGINT: a background job of a
non-interactive shell starts with SIGINT ignored (POSIX), and whether a
program re-enables it is its business; tcpdump handles TERM exactly like INT
(statistics, complete pcap), and nothing ignores TERM on the way.

The capture filter excludes the SSH session's own TCP flow (taken from
``$SSH_CONNECTION`` on the remote side): capturing the stream that carries
the capture would feed itself. Over a master connection (tracer.ssh_mux)
that flow is the master's, which carries every session to the host.

Remote extraction: when the host has tracer (its master connection found
``python3 -m tracer extract --check`` answering this tracer's column format),
tcpdump writes the capture to a file there, in a directory made fresh for this
capture (``mktemp -d`` under the remote user's own cache directory, see
:data:`_BEFORE_EXTRACT`), and once stopped the same session runs ``tracer
extract`` on it and sends back its observation columns (tracer.columns: a few
bytes a packet) instead of the capture. The capture stays on the host, and the
manifest says where (``kept_at``, the directory the host reported), so nothing
recorded is lost; the replay reads the columns as it would have read the
capture. A host without tracer, or where no private directory can be made,
streams the whole capture as above.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tracer.columns import FORMAT, SUFFIX
from tracer.errors import EnvironmentProblem
from tracer.interrupts import deferred, held_count, starting
from tracer.model.point import point_name
from tracer.sniff import CaptureResult
from tracer.sniff.tcpdump import DEFAULT_SNAPLEN, STOP_TIMEOUT, TcpdumpSniffer, finish_capture, parse_stats, tcpdump_args
from tracer.ssh_client import CONNECT_TIMEOUT, MASTERS, Connection, connection, ssh_argv, topology_relative
from tracer.subprocs import ended, spawn

if TYPE_CHECKING:
    from tracer.model.topology import Node, Topology

STOP_LINE = b"stop\n"

# Stopping includes the host's extraction, whose time grows with its capture: the host says
# the capture's size once tcpdump has stopped, and the wait is a floor plus an allowance per MiB
# (extraction reads ~10-20 MiB/s on one core: 1 s per MiB leaves ample room for a slow host).
EXTRACT_FLOOR_S = 30.0
EXTRACT_S_PER_MIB = 1.0
# What the host's wrapper says on stderr, for this side to parse (one line each).
KEPT_DIR = "tracer-kept-dir: "  # the fresh directory holding the capture
NO_DIR = "tracer-no-dir: "  # none could be made: the whole capture is streamed instead
CAPTURE_BYTES = "tracer-capture-bytes: "  # the capture's size, once tcpdump has stopped
EXTRACT_FAILED = "tracer extract failed"

# The remote side. {bpf} and {tcpdump} are shell-quoted by remote_script(). fd 3 keeps
# the channel's stdin for the stop reader: a background job's own stdin is /dev/null (POSIX).
_REMOTE = """\
PATH="$PATH:/usr/sbin:/sbin"
command -v tcpdump >/dev/null 2>&1 || {{ echo "tcpdump not found on the remote host (PATH=$PATH)" >&2; exit 127; }}
f={bpf}
if [ -n "$SSH_CONNECTION" ]; then
  set -- $SSH_CONNECTION
  f="($f) and not (tcp and host $1 and host $3 and port $4)"
fi
{before}exec 3<&0
{tcpdump} "$f" </dev/null &
pid=$!
{{ read -r _ <&3; kill -TERM "$pid" 2>/dev/null; }} &
reader=$!
wait "$pid"; rc=$?
kill "$reader" 2>/dev/null
{after}exit "$rc"
"""

# Remote extraction: the capture into a file in a directory made for it alone, then its columns
# to stdout. Never a path that may already exist: root's tcpdump (-Z root) follows a symlink
# planted there, and a reused name would overwrite a capture an older manifest's kept_at names.
# The base is the remote user's own cache directory, checked to be theirs and not a symlink;
# not /var/tmp (shared: anyone may create the name first, and a root-made 0700 one shuts other
# users out), not $XDG_RUNTIME_DIR (a tmpfs that logind empties when the user's last session
# ends: the kept capture would vanish with the SSH session). No usable directory: tcpdump
# streams the whole capture as for a host without tracer. A failed extraction ends the session
# with its status (the capture is still there, the message says where).
_BEFORE_EXTRACT = """umask 077
b="${{XDG_CACHE_HOME:-${{HOME:-/nonexistent}}/.cache}}/tracer"
d=
if mkdir -p "$b" 2>/dev/null && [ -d "$b" ] && [ ! -L "$b" ] && [ -O "$b" ]; then
  d=$(mktemp -d "$b/run.XXXXXXXX" 2>/dev/null) || d=
fi
if [ -n "$d" ]; then w="$d/"{name}; echo "{kept_dir}$d" >&2
else w=-; echo "{no_dir}no private directory under $b (cannot make it, not this user's, or a symlink)" >&2; fi
"""
_AFTER_EXTRACT = """if [ "$w" != - ]; then
  [ -s "$w" ] || exit "$rc"
  echo "{capture_bytes}"$(wc -c <"$w") >&2
  python3 -m tracer extract --point {point} --kept-at {kept}"$w" "$w" || {{
    x=$?; echo "{failed} on the remote host (status $x); the capture stays at $w" >&2; exit "$x"; }}
fi
"""


def remote_script(iface: str, bpf: str, buffer_kib: int, snaplen: int = DEFAULT_SNAPLEN,
                  extract: tuple[str, str, str] | None = None) -> str:
    """The sh script run on the remote host: tcpdump to stdout until stdin says stop; with
    ``extract`` (point, capture file name, the host part of kept_at: "user@host:"), tcpdump to
    that file in a fresh private directory (said on stderr), then its columns."""
    args = tcpdump_args(iface, "-", bpf, buffer_kib, snaplen)
    assert args[-1] == bpf  # the filter goes last; here it is "$f", built remotely
    quoted = [shlex.quote(a) for a in ["tcpdump", *args[:-1]]]
    before = after = ""
    if extract is not None:
        quoted[args.index("-w") + 2] = '"$w"'  # the file in the fresh directory, or "-" without one
        point, name, kept = (shlex.quote(x) for x in extract)
        before = _BEFORE_EXTRACT.format(name=name, kept_dir=KEPT_DIR, no_dir=NO_DIR)
        after = _AFTER_EXTRACT.format(point=point, kept=kept, capture_bytes=CAPTURE_BYTES, failed=EXTRACT_FAILED)
    return _REMOTE.format(bpf=shlex.quote(bpf), tcpdump=" ".join(quoted), before=before, after=after)


def extract_timeout(capture_bytes: int | None) -> float:
    """How long stopping waits for the host's extraction, once its capture's size is known."""
    return EXTRACT_FLOOR_S + EXTRACT_S_PER_MIB * (capture_bytes or 0) / (1 << 20)


def _said(stderr: str, marker: str) -> str | None:
    """The rest of the last line the remote wrapper began with ``marker``; None if none did."""
    found = re.findall(rf"^{re.escape(marker)}(.*)$", stderr, re.MULTILINE)
    return found[-1].strip() if found else None


def remote_columns(conn: Connection) -> bool:
    """Whether the host has tracer and it writes the columns this tracer reads (one session,
    over the host's master connection; run as the master opens, tracer.ssh_mux)."""
    target, ssh_netns, key, port, known_hosts = conn
    line = 'PATH="$PATH:/usr/sbin:/sbin"; exec python3 -m tracer extract --check'
    argv = ssh_argv(target, f"exec sh -c {shlex.quote(line)}", ssh_netns, Path(key) if key else None, port,
                    Path(known_hosts) if known_hosts else None)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=CONNECT_TIMEOUT + 5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.strip() == FORMAT


class SshTcpdumpSniffer(TcpdumpSniffer):
    """A remote capture point; same interface as :class:`TcpdumpSniffer` (start, wait_ready, stop)."""

    backend = "ssh"

    def __init__(
        self,
        point: str,
        target: str,
        iface: str,
        out: Path,
        bpf: str,
        ssh_netns: str | None = None,
        key: Path | None = None,
        port: int | None = None,
        known_hosts: Path | None = None,
        buffer_kib: int = 16384,
        snaplen: int = DEFAULT_SNAPLEN,
        extract: bool = False,
    ) -> None:
        super().__init__(point, None, iface, out, bpf, buffer_kib, snaplen)
        # Extracting on the host: its columns arrive here, its capture stays there, in a directory
        # the host makes and names when the capture starts (kept_at, known once stopped).
        self.kept_at: str | None = None
        self.extract = extract
        self.remote_name = out.with_suffix(".pcap").name
        self.whole_out = out  # the pcapng, should the host stream the whole capture after all
        self._unextracted: str | None = None  # why the host's columns did not arrive (killed, failed)
        if extract:
            self.out = out.with_suffix(SUFFIX)
            self.raw = out.with_suffix(".tmp" + SUFFIX)
        self.target = target
        self.ssh_netns = ssh_netns
        self.key = key
        self.port = port
        self.known_hosts = known_hosts
        self._pump: threading.Thread | None = None
        self._pump_error: OSError | None = None
        self._start_error: EnvironmentProblem | None = None

    @classmethod
    def for_node(cls, topo: Topology, node: Node, iface: str, out: Path, bpf: str, snaplen: int) -> SshTcpdumpSniffer:
        """The node's own tcpdump, reached over SSH (docs/remote-capture.md)."""
        assert node.ssh is not None  # the topology parser guarantees it for capture = "ssh"
        key, known_hosts = _topo_path(topo, node.ssh_key), _topo_path(topo, node.ssh_known_hosts)
        master = MASTERS.get(connection(node.ssh, node.ssh_netns, key, node.ssh_port, known_hosts))
        return cls(point_name(node.name, iface), node.ssh, iface, out, bpf, ssh_netns=node.ssh_netns,
                   key=key, port=node.ssh_port, known_hosts=known_hosts, snaplen=snaplen,
                   extract=master is not None and master.columns)

    def argv(self) -> list[str]:
        extract = (self.point, self.remote_name, f"{self.target}:") if self.extract else None
        script = remote_script(self.iface, self.bpf, self.buffer_kib, self.snaplen, extract)
        # ssh hands the command to the remote login shell; exec sh runs our script the same
        # way whatever that shell is.
        return ssh_argv(self.target, f"exec sh -c {shlex.quote(script)}", self.ssh_netns, self.key, self.port,
                        self.known_hosts)

    def start(self) -> None:
        # Own session, as for the local backend: a Ctrl-C at the terminal must not kill
        # ssh before we have stopped the remote tcpdump and read its drop count. If tracer
        # dies, ssh gets SIGTERM (subprocs), the channel closes, and the remote side stops.
        # A Ctrl-C now is raised once both are kept, so stop() finds them.
        with deferred(starting(f"ssh tcpdump for {self.point}")):
            self.proc = spawn(self.argv(), f"ssh tcpdump {self.point}", stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._pump = threading.Thread(target=self._copy_stream, name=f"ssh-pcap {self.point}", daemon=True)
            self._pump.start()

    def _copy_stream(self) -> None:
        """Stream the remote pcap into the raw file as it arrives (a run cut short keeps its packets)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            with open(self.raw, "wb") as f:
                while chunk := os.read(fd, 1 << 20):
                    f.write(chunk)
                    f.flush()
        except OSError as e:  # a full disk, say: reported by stop()
            self._pump_error = e

    def wait_ready(self, deadline: float) -> None:
        try:
            super().wait_ready(deadline)
        except EnvironmentProblem as err:
            # It will never become ready: end the connection now rather than wait out stop()'s timeout.
            self._end(graceful=False)
            self._start_error = err
            raise

    def _why_not_started(self, stderr: str) -> str:
        what = _why(stderr) or f"no answer within the start timeout (ConnectTimeout {CONNECT_TIMEOUT} s)"
        return f"{what} (ssh {self.target}{' from netns ' + self.ssh_netns if self.ssh_netns else ''})"

    def request_stop(self) -> None:
        """The stop line, then end-of-file: the remote wrapper stops tcpdump (collected by :meth:`stop`)."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdin.closed:
            return
        if self._asked():
            try:
                proc.stdin.write(STOP_LINE)
                proc.stdin.flush()
            except OSError:
                pass  # ssh already gone: stop() collects it
        try:
            proc.stdin.close()  # EOF also stops the remote side
        except OSError:
            pass

    def _end(self, graceful: bool) -> None:
        """Stop the remote tcpdump via stdin (graceful) or by dropping the connection; reap ssh."""
        proc = self.proc
        assert proc is not None
        if graceful:
            self.request_stop()
        elif proc.stdin is not None:
            try:
                proc.stdin.close()  # EOF also stops the remote side
            except OSError:
                pass
        try:
            if graceful and self.extract:
                self._wait_extracting()
            else:
                proc.wait(STOP_TIMEOUT if graceful else 0.5)
        except subprocess.TimeoutExpired:
            proc.kill()  # the remote wrapper then sees EOF and stops tcpdump itself
            proc.wait()
            self._forced = True
        ended(proc)
        if self._pump is not None:
            self._pump.join(STOP_TIMEOUT)

    def _wait_extracting(self) -> None:
        """Wait for the host to stop tcpdump (STOP_TIMEOUT), then for its extraction: a floor plus
        an allowance for the capture's size, which the host says once tcpdump has stopped. A
        Ctrl-C or SIGTERM held meanwhile (tracer.interrupts) ends the wait early. Either way a
        wait cut short kills ssh and leaves the point unextracted, never half a columns file."""
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        fd, held = proc.stderr.fileno(), held_count()
        deadline = time.monotonic() + STOP_TIMEOUT
        sized = False
        while proc.poll() is None:
            if held_count() != held:
                self._kill_extracting("stopped by Ctrl-C or SIGTERM while the host extracted its columns")
                return
            left = deadline - time.monotonic()
            if left <= 0:
                size = _said(self._stderr.decode(errors="replace"), CAPTURE_BYTES)
                self._kill_extracting(
                    f"the host's extraction did not finish within {extract_timeout(int(size)):.0f} s" if size and
                    size.isdigit() else f"tcpdump on the host did not stop within {STOP_TIMEOUT:g} s")
                return
            if select.select([fd], [], [], min(left, 0.2))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:  # stderr closed: the session is ending
                    try:
                        proc.wait(max(deadline - time.monotonic(), 0.1))
                    except subprocess.TimeoutExpired:
                        continue
                    break
                self._stderr += chunk
            if not sized and (size := _said(self._stderr.decode(errors="replace"), CAPTURE_BYTES)) is not None:
                sized = True  # tcpdump has stopped: the extraction's allowance starts now
                deadline = time.monotonic() + extract_timeout(int(size) if size.isdigit() else None)

    def _kill_extracting(self, why: str) -> None:
        assert self.proc is not None
        self.proc.kill()  # the wrapper sees EOF; tcpdump has stopped, the capture stays on the host
        self.proc.wait()
        self._forced = True
        self._unextracted = why

    def stop(self) -> CaptureResult:
        if self.proc is None:
            raise EnvironmentProblem(f"sniffer on {self.point} was never started")
        self._end(graceful=True)
        if self._start_error is not None:
            self.raw.unlink(missing_ok=True)
            raise self._start_error  # the reason it never ran, not a second symptom of it
        self._stderr += self._drain()
        text = self._stderr.decode(errors="replace")
        if self._pump_error is not None:
            raise EnvironmentProblem(f"sniffer on {self.point}: cannot write {self.raw}: {self._pump_error.strerror}")
        kept_dir = _said(text, KEPT_DIR) if self.extract else None
        if kept_dir is not None:
            self.kept_at = f"{self.target}:{kept_dir}/{self.remote_name}"
            if self._unextracted is None and _said(text, EXTRACT_FAILED) is not None:
                # (Only then: a tcpdump that ended early also ends the session non-zero, its columns good.)
                self._unextracted = (_why(text) or EXTRACT_FAILED).split("; the capture stays at")[0]
            if self._unextracted is not None:
                return self._unextracted_result(text)
        if not self.raw.exists() or self.raw.stat().st_size == 0:
            self.raw.unlink(missing_ok=True)
            raise EnvironmentProblem(f"sniffer on {self.point} received no capture: {self._why_not_started(text)}")
        if kept_dir is not None:  # columns, not a capture: nothing to convert
            self.raw.replace(self.out)
            result = CaptureResult(self.point, self.out, *parse_stats(text), kept_at=self.kept_at)
        else:
            if self.extract:  # the host could not make a private directory: it streamed the whole capture
                self.out = self.whole_out
                print(f"tracer: note: {self.point}: {_said(text, NO_DIR) or 'no directory on the host'}; "
                      "its whole capture came back instead of its columns", file=sys.stderr)
            result = finish_capture(self.point, self.raw, self.out, *parse_stats(text), text)
        # tcpdump exits 0 on the wrapper's SIGTERM, and ssh with it: any other status is not ours.
        result.ended_early = self._ended_early(signal.SIGTERM)
        return result

    def _unextracted_result(self, text: str) -> CaptureResult:
        """The point, without its columns (a partial file would make replay refuse the whole run):
        an empty columns file, recorded as ended early, so that its silence proves nothing and
        the other points still count; the note says where the capture is."""
        self.raw.unlink(missing_ok=True)
        why = f"{self._unextracted}; the capture stays at {self.kept_at}"
        write_unextracted(self.out, self.point, self.kept_at, why)
        drops, _ = parse_stats(text)
        return CaptureResult(self.point, self.out, drops, 0, ended_early=f"its columns did not arrive: {why}",
                             kept_at=self.kept_at)


def write_unextracted(out: Path, point: str, kept_at: str | None, why: str) -> None:
    """A point's columns file without a row, marked damaged (``why``): it reads, and proves nothing."""
    import numpy as np  # only here: starting a sniffer does not load it

    from tracer.columns import write_columns
    from tracer.model.observations import COLUMNS

    with open(out, "wb") as f:
        write_columns(f, {k: np.empty(0, dtype=dt) for k, dt in COLUMNS.items()}, point, kept_at, damaged=why)


def _why(stderr: str) -> str | None:
    """The line of an SSH session's stderr that says what went wrong: tracer's own (a failed
    extraction, after tcpdump's "listening on"), else the first that is not a banner, a marker or
    tcpdump's chatter: ssh's own error ("Permission denied (publickey)", "No ED25519 host key is
    known for …" before "Host key verification failed."), or the remote tcpdump's."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    if tracer := [ln for ln in lines if ln.startswith(EXTRACT_FAILED)]:
        return tracer[-1]
    chatter = ("@", "Warning:", KEPT_DIR, NO_DIR, CAPTURE_BYTES, "tcpdump: listening on", "listening on")
    useful = [ln for ln in lines if ln and not ln.startswith(chatter) and not _STATS.match(ln)]
    return useful[0] if useful else None


_STATS = re.compile(r"\d+ packets? (captured|received by filter|dropped by kernel)")


def _topo_path(topo: Topology, value: str | None) -> Path | None:
    return topology_relative(topo.source, value)
