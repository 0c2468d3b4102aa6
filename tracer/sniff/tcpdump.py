"""tcpdump inside a local network namespace.

tcpdump writes classic pcap with nanosecond stamps in immediate mode (without
it the last packets of a short run sit in the kernel buffer and are lost). It
says "listening on IFACE" on stderr once the capture is live, which is our
barrier, and prints its kernel drop count when stopped with SIGINT. The pcap
is then rewritten as pcapng whose interface is named ``node:iface`` and whose
statistics block carries the drop count, so a run directory is self-describing.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tracer.errors import CaptureError, EnvironmentProblem
from tracer.interrupts import deferred, starting
from tracer.model.point import point_name
from tracer.netns import ensure_tool
from tracer.sniff import CaptureResult, ended_early
from tracer.subprocs import ended, spawn

if TYPE_CHECKING:
    from tracer.model.topology import Node, Topology

_DROPS = re.compile(r"(\d+) packets? dropped by kernel")
_CAPTURED = re.compile(r"(\d+) packets? captured")
STOP_TIMEOUT = 5.0
READY = b"listening on"  # tcpdump's stderr once the filter is attached: the start barrier


# -- shared by every tcpdump backend (local here, remote in tracer.sniff.ssh) -----------------


# libpcap sizes TPACKET_V3 ring blocks from the snaplen, and immediate mode retires a block
# almost per packet: at 262144 a 16 MiB ring holds ~32 packets and drops under load
# (measured: thousands of drops at 10k pkt/s); 2048 covers a 1500-byte MTU plus any link header,
# so ESP stays decryptable, and measured 0 drops at this machine's top tunnel rate.
DEFAULT_SNAPLEN = 2048


def tcpdump_args(iface: str, write_to: str, bpf: str, buffer_kib: int, snaplen: int = DEFAULT_SNAPLEN) -> list[str]:
    """tcpdump's arguments after the program name: nanosecond pcap to ``write_to`` ("-" = stdout).

    Immediate mode and -U, or the last packets of a short run sit in a buffer
    and are lost; -Z root keeps a root tcpdump from dropping to a user that
    could not write the file (a non-root tcpdump ignores it).
    """
    return ["-i", iface, "-w", write_to, "-U", "--immediate-mode", "-n", "--time-stamp-precision=nano",
            "-s", str(snaplen), "-B", str(buffer_kib), "-Z", "root", bpf]


def parse_stats(stderr: str) -> tuple[int | None, int]:
    """(kernel drops, packets captured) from the lines tcpdump prints when stopped.

    Drops are None when tcpdump did not say (killed): unknown, not zero.
    """
    drops = int(m.group(1)) if (m := _DROPS.search(stderr)) else None
    captured = int(m.group(1)) if (m := _CAPTURED.search(stderr)) else 0
    return drops, captured


def finish_capture(point: str, raw: Path, out: Path, drops: int | None, captured: int, stderr: str) -> CaptureResult:
    """Rewrite the raw pcap as pcapng named ``point`` with its drop count; remove the pcap."""
    if not raw.exists():
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentProblem(f"sniffer on {point} wrote no file: {last}")
    try:
        # Imported here: tracer.capture loads the capture reader (numpy), which starting a sniffer does not need.
        from tracer.capture.pcapng_writer import convert_pcap_to_pcapng

        convert_pcap_to_pcapng(raw, out, if_name=point, drops=drops)
    except CaptureError as e:
        # The sniffer's own file is broken: a capture problem here, not the user's input.
        raise EnvironmentProblem(f"sniffer on {point}: {e}") from None
    raw.unlink()
    return CaptureResult(point, out, drops, captured)


class TcpdumpSniffer:
    backend = "tcpdump"  # recorded in the run manifest per capture point

    def __init__(
        self, point: str, netns: str | None, iface: str, out: Path, bpf: str, buffer_kib: int = 16384,
        snaplen: int = DEFAULT_SNAPLEN,
    ) -> None:
        self.point = point
        self.snaplen = snaplen
        self.netns = netns
        self.iface = iface
        self.out = out
        self.raw = out.with_suffix(".tmp.pcap")
        self.bpf = bpf
        self.buffer_kib = buffer_kib
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr = b""
        # Whether it had already exited when first asked to stop (killed from outside, crashed):
        # its silence since then is not loss. None: not asked yet.
        self._gone_when_asked: bool | None = None
        self._forced = False  # tracer itself killed it (hung at stop)

    @classmethod
    def for_node(cls, topo: Topology, node: Node, iface: str, out: Path, bpf: str, snaplen: int) -> TcpdumpSniffer:
        return cls(point_name(node.name, iface), node.netns, iface, out, bpf, snaplen=snaplen)

    def argv(self) -> list[str]:
        cmd = [ensure_tool("tcpdump"), *tcpdump_args(self.iface, str(self.raw), self.bpf, self.buffer_kib, self.snaplen)]
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd

    def start(self) -> None:
        # Own session: a Ctrl-C at the terminal must not kill tcpdump before we have stopped
        # it cleanly and collected its drop count; it dies with tracer all the same (subprocs).
        with deferred(starting(f"tcpdump on {self.point}")):  # a Ctrl-C now is raised once self.proc holds it, so stop() finds it
            self.proc = spawn(self.argv(), f"tcpdump {self.point}", stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while READY not in self._stderr:
            left = deadline - time.monotonic()
            if self.proc.poll() is not None or left <= 0:
                # Still running (not ready in time): what it said so far, without waiting for an
                # end-of-file that comes only when it exits (a remote one may never).
                self._stderr += self._drain() if self.proc.poll() is not None else self._available(fd)
                raise EnvironmentProblem(
                    f"sniffer on {self.point} did not start: {self._why_not_started(self._stderr.decode(errors='replace'))}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                self._stderr += chunk

    def _why_not_started(self, stderr: str) -> str:
        """The stderr line that explains a failed start (backends with chattier stderr override it)."""
        why = stderr.strip().splitlines()
        # "tcpdump: ipsec0: No such device exists" then "(No such device exists)": the first says which.
        named = [line for line in why if line.startswith("tcpdump: ")]
        return named[-1] if named else why[-1] if why else "no output from tcpdump"

    @staticmethod
    def _available(fd: int) -> bytes:
        out = b""
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out += chunk
        return out

    def _drain(self) -> bytes:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            return self.proc.stderr.read() or b""
        except (OSError, ValueError):
            return b""

    def _asked(self) -> bool:
        """Note, the first time tracer asks it to stop, whether it was still running; whether it is."""
        running = self.proc is not None and self.proc.poll() is None
        if self._gone_when_asked is None and self.proc is not None:
            self._gone_when_asked = not running
        return running

    def request_stop(self) -> None:
        """SIGINT: tcpdump flushes, prints its statistics and exits (collected by :meth:`stop`)."""
        if self._asked():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT)

    def _ended_early(self, asked: int) -> str | None:
        """How it ended if not by ``asked``, tracer's stop signal (None: as asked)."""
        assert self.proc is not None and self.proc.returncode is not None
        return ended_early(self.proc.returncode, bool(self._gone_when_asked), asked, self._forced)

    def stop(self) -> CaptureResult:
        proc = self.proc
        if proc is None:
            raise EnvironmentProblem(f"sniffer on {self.point} was never started")
        self._asked()
        if proc.poll() is None:
            self.request_stop()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()  # hung: its file so far is all there is
                proc.wait()
                self._forced = True
        ended(proc)
        self._stderr += self._drain()
        text = self._stderr.decode(errors="replace")
        result = finish_capture(self.point, self.raw, self.out, *parse_stats(text), text)
        result.ended_early = self._ended_early(signal.SIGINT)
        return result
