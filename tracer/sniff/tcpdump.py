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

from tracer.capture.pcapng_writer import convert_pcap_to_pcapng
from tracer.errors import EnvironmentProblem
from tracer.netns import ensure_tool
from tracer.sniff import CaptureResult

_DROPS = re.compile(r"(\d+) packets? dropped by kernel")
_CAPTURED = re.compile(r"(\d+) packets? captured")
STOP_TIMEOUT = 5.0


class TcpdumpSniffer:
    def __init__(self, point: str, netns: str | None, iface: str, out: Path, bpf: str, buffer_kib: int = 16384) -> None:
        self.point = point
        self.netns = netns
        self.iface = iface
        self.out = out
        self.raw = out.with_suffix(".tmp.pcap")
        self.bpf = bpf
        self.buffer_kib = buffer_kib
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr = b""

    def argv(self) -> list[str]:
        tcpdump = ensure_tool("tcpdump")
        cmd = [tcpdump, "-i", self.iface, "-w", str(self.raw), "-U", "--immediate-mode", "-n",
               "--time-stamp-precision=nano", "-s", "262144", "-B", str(self.buffer_kib), "-Z", "root", self.bpf]
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd

    def start(self) -> None:
        # Own process group: a Ctrl-C at the terminal must not kill tcpdump
        # before we have stopped it cleanly and collected its drop count.
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while b"listening on" not in self._stderr:
            left = deadline - time.monotonic()
            if self.proc.poll() is not None or left <= 0:
                self._stderr += self._drain()
                why = self._stderr.decode(errors="replace").strip().splitlines()
                raise EnvironmentProblem(
                    f"sniffer on {self.point} did not start: {why[-1] if why else 'no output from tcpdump'}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                self._stderr += chunk

    def _drain(self) -> bytes:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            return self.proc.stderr.read() or b""
        except (OSError, ValueError):
            return b""

    def stop(self) -> CaptureResult:
        proc = self.proc
        if proc is None:
            raise EnvironmentProblem(f"sniffer on {self.point} was never started")
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._stderr += self._drain()
        text = self._stderr.decode(errors="replace")
        drops = int(m.group(1)) if (m := _DROPS.search(text)) else None
        captured = int(m.group(1)) if (m := _CAPTURED.search(text)) else 0
        if not self.raw.exists():
            raise EnvironmentProblem(f"sniffer on {self.point} wrote no file: {text.strip().splitlines()[-1:]}")
        convert_pcap_to_pcapng(self.raw, self.out, if_name=self.point, drops=drops)
        self.raw.unlink()
        return CaptureResult(self.point, self.out, drops, captured)
