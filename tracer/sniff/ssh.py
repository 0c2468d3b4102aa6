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
tcpdump writes the capture to a file there (``/var/tmp/tracer/<run>/``), and
once stopped the same session runs ``tracer extract`` on it and sends back its
observation columns (tracer.columns: a few bytes a packet) instead of
the capture. The capture stays on the host, and the manifest says where
(``kept_at``), so nothing recorded is lost; the replay reads the columns as it
would have read the capture. A host without tracer streams the whole capture
as above.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tracer.columns import FORMAT, SUFFIX
from tracer.errors import EnvironmentProblem
from tracer.interrupts import deferred, starting
from tracer.model.point import point_name
from tracer.sniff import CaptureResult
from tracer.sniff.tcpdump import DEFAULT_SNAPLEN, STOP_TIMEOUT, TcpdumpSniffer, finish_capture, parse_stats, tcpdump_args
from tracer.ssh_client import CONNECT_TIMEOUT, MASTERS, Connection, connection, ssh_argv, topology_relative
from tracer.subprocs import ended, spawn

if TYPE_CHECKING:
    from tracer.model.topology import Node, Topology

STOP_LINE = b"stop\n"

STOP_EXTRACT_TIMEOUT = 60.0  # stopping includes the host's extraction (bounded by its capture's size)
REMOTE_DIR = "/var/tmp/tracer"  # on the host: one folder per run, the captures it extracted

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

# Remote extraction: the capture into a private file, then its columns to stdout. A failed
# extraction ends the session with its status (the capture is still there, the message says where).
_BEFORE_EXTRACT = """umask 077
mkdir -p {dir} || exit 1
"""
_AFTER_EXTRACT = """[ -s {file} ] || exit "$rc"
python3 -m tracer extract --point {point} --kept-at {kept} {file} || {{
  x=$?; echo "tracer extract failed on the remote host (status $x); the capture stays at "{file} >&2; exit "$x"; }}
"""


def remote_script(iface: str, bpf: str, buffer_kib: int, snaplen: int = DEFAULT_SNAPLEN,
                  extract: tuple[str, str, str] | None = None) -> str:
    """The sh script run on the remote host: tcpdump to stdout until stdin says stop; with
    ``extract`` (point, file on the host, its host:path), tcpdump to that file, then its columns."""
    args = tcpdump_args(iface, extract[1] if extract else "-", bpf, buffer_kib, snaplen)
    assert args[-1] == bpf  # the filter goes last; here it is "$f", built remotely
    tcpdump = " ".join(shlex.quote(a) for a in ["tcpdump", *args[:-1]])
    before = after = ""
    if extract is not None:
        point, file, kept = (shlex.quote(x) for x in extract)
        before = _BEFORE_EXTRACT.format(dir=shlex.quote(str(PurePosixPath(extract[1]).parent)))
        after = _AFTER_EXTRACT.format(point=point, file=file, kept=kept)
    return _REMOTE.format(bpf=shlex.quote(bpf), tcpdump=tcpdump, before=before, after=after)


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
        # Extracting on the host: its columns arrive here, its capture stays there (kept_at).
        self.kept_at: str | None = None
        self.remote_file: str | None = None
        if extract:
            self.remote_file = f"{REMOTE_DIR}/{out.parent.name}/{out.with_suffix('.pcap').name}"
            self.kept_at = f"{target}:{self.remote_file}"
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
        extract = (self.point, self.remote_file, self.kept_at) if self.remote_file and self.kept_at else None
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
        # The first line that is not a banner: ssh's own error ("Permission denied (publickey)",
        # "No route to host", "Host key verification failed") or the remote tcpdump's.
        lines = [ln.strip() for ln in stderr.splitlines()]
        useful = [ln for ln in lines if ln and not ln.startswith(("@", "Warning:"))]
        what = useful[0] if useful else f"no answer within the start timeout (ConnectTimeout {CONNECT_TIMEOUT} s)"
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
            proc.wait((STOP_EXTRACT_TIMEOUT if self.remote_file else STOP_TIMEOUT) if graceful else 0.5)
        except subprocess.TimeoutExpired:
            proc.kill()  # the remote wrapper then sees EOF and stops tcpdump itself
            proc.wait()
            self._forced = True
        ended(proc)
        if self._pump is not None:
            self._pump.join(STOP_TIMEOUT)

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
        if not self.raw.exists() or self.raw.stat().st_size == 0:
            self.raw.unlink(missing_ok=True)
            raise EnvironmentProblem(f"sniffer on {self.point} received no capture: {self._why_not_started(text)}")
        if self.remote_file:  # columns, not a capture: nothing to convert
            self.raw.replace(self.out)
            result = CaptureResult(self.point, self.out, *parse_stats(text), kept_at=self.kept_at)
        else:
            result = finish_capture(self.point, self.raw, self.out, *parse_stats(text), text)
        # tcpdump exits 0 on the wrapper's SIGTERM, and ssh with it: any other status is not ours.
        result.ended_early = self._ended_early(signal.SIGTERM)
        return result


def _topo_path(topo: Topology, value: str | None) -> Path | None:
    return topology_relative(topo.source, value)
