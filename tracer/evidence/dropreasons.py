"""Kernel drop reasons for our probes, from the ``skb:kfree_skb`` tracepoint.

For the duration of a trace, a short bpftrace script generated here is attached to
``tracepoint:skb:kfree_skb`` (tracepoints and BTF only: no kprobes). It runs in the kernel on
every freed-as-dropped socket buffer of the host, whatever its network namespace, and prints
one line only for the drops of *our* probes:

* an IPv4 ICMP echo request or reply whose payload starts with the probe tag of this run
  (magic ``TRC1`` and the run id, read at ``skb->head + skb->network_header + ihl + 8``;
  the tag's check word is verified here, in Python);
* an ESP packet (IP protocol 50) or ESP-in-UDP packet (NAT-T port, non-zero SPI) whose SPI is
  one of the tunnel SPIs the caller gave: SPI and ESP sequence number identify the carrier.
  A trace starts bpftrace before it has asked the IKE daemons for their SPIs (so the compile
  overlaps everything else): the kernel side then matches every SPI and :meth:`Session.learn`
  keeps only the tunnels' drops once the SPIs are known; never learned (the trace failed
  before), no ESP drop is kept, and the evidence says so.

Each line becomes a :class:`Drop`: the reason (the kernel's ``enum skb_drop_reason`` name,
mapped from the number with the tracepoint's own ``print fmt`` on this kernel, never a table
written here), the device (``skb->dev->name``), the network namespace inode
(``skb->dev->nd_net.net->ns.inum``, or the socket's namespace when the buffer has no device),
the kernel function that dropped it (``ksym(location)``) and the probe's identity. The inode
is turned into a topology node by the inode of ``/run/netns/<node.netns>``.

The shape of a trace-long evidence source (see :mod:`tracer.evidence`): :func:`start` first
(it never blocks: bpftrace compiles its script while the sniffers start), :func:`learn` once
the tunnel SPIs are known,
:func:`ready` once they run (waits for the attach, at most until a deadline), :func:`stop`
after the probes, in a ``finally``: one ``events`` snapshot per node with its drops. It never
raises: a source that cannot run says why in :attr:`Session.unavailable` and the trace goes on.
:func:`attach` is the same for a caller of its own (tests, a tool). bpftrace is our child, stopped by its PID
(SIGINT, it drains its buffers and exits; SIGKILL if it does not), and it cannot outlive us by
more than ``max_s``: the script exits by itself after that. What it prints is bounded.

Limits: this host only (a node captured over SSH is listed as unavailable), IPv4, the tag must
lie in the linear part of the buffer (always so for echo probes as sent by tracer), and a
packet that is not a first fragment carries no tag to match.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO, Any

from tracer.evidence import btf
from tracer.interrupts import deferred, starting
from tracer.model.evidence import EVENTS, Drop, ProbeMatch, Snapshot
from tracer.model.tag import MAGIC, TAG_LEN, decode
from tracer.model.topology import Node, Topology
from tracer.netns import NETNS_DIR
from tracer.subprocs import ended, spawn

TRACEPOINT = "skb:kfree_skb"
TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
START_TIMEOUT = 20.0  # s: bpftrace compiles the script with LLVM before it attaches (measured ~2 s)
STOP_TIMEOUT = 5.0  # s after SIGINT before SIGKILL
MAX_S = 3600  # s: the script exits by itself after this, should tracer die without stopping it
MAX_DROPS = 10_000  # lines kept; more are counted, not stored
MAX_SPIS = 256  # SPIs matched in the kernel (one comparison each)
ECHO_REQUEST, ECHO_REPLY = 8, 0
IPPROTO_ICMP, IPPROTO_UDP, IPPROTO_ESP = 1, 17, 50

# bpftrace prints this once every probe is attached when the variable is set in its environment
# (its own runtime tests use it): the start barrier. 0.17 writes it on stderr, later ones on stdout.
_READY_ENV = "__BPFTRACE_NOTIFY_PROBES_ATTACHED"
_LINE = "DR1"  # first word of every line the script prints for a drop
_LOST = re.compile(r"Lost (\d+) events")
_CHATTER = ("RLIMIT_MEMLOCK", "Attaching ")  # bpftrace's start-up lines that are no error (a warning, a count)
_SYMBOLIC = re.compile(r'\{\s*(\d+)\s*,\s*"([A-Za-z0-9_]+)"\s*\}')
# The kernel struct fields the script reads (see tracer.evidence.btf).
FIELDS: dict[str, tuple[str, ...]] = {
    "skb_head": ("sk_buff", "head"), "skb_network_header": ("sk_buff", "network_header"),
    "skb_tail": ("sk_buff", "tail"), "skb_dev": ("sk_buff", "dev"), "skb_sk": ("sk_buff", "sk"),
    "dev_net": ("net_device", "nd_net", "net"), "dev_name": ("net_device", "name"),
    "inum": ("net", "ns", "inum"), "sk_net": ("sock", "__sk_common", "skc_net", "net"),
}
IFNAMSIZ = 16


@dataclass
class Session:
    """A drop-reason recording: running, or unavailable (then :meth:`stop` returns nothing)."""

    unavailable: str | None = None  # why this source could not report (None: it did or does)
    unavailable_nodes: dict[str, str] = field(default_factory=dict)  # nodes it cannot see, and why
    pid: int | None = None  # bpftrace's PID while it runs
    startup_s: float | None = None  # from spawning bpftrace to its probe attached
    problems: list[str] = field(default_factory=list)  # after stop: lost events, lines over the bound
    delivered: list[Drop] = field(default_factory=list)  # after stop: freed after delivery (see delivered())
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _reader: _Reader | None = field(default=None, repr=False)
    _names: dict[int, str] = field(default_factory=dict, repr=False)
    _nodes: dict[int, str] = field(default_factory=dict, repr=False)
    _run: int = field(default=0, repr=False)
    _clock: int = field(default=0, repr=False)  # CLOCK_REALTIME - CLOCK_MONOTONIC at start, ns
    _started: float = field(default=0.0, repr=False)
    _drops: list[Drop] | None = field(default=None, repr=False)
    _all: list[str] = field(default_factory=list, repr=False)  # the nodes asked for
    _went_on: float | None = field(default=None, repr=False)  # the trace stopped waiting for it then
    _spis: frozenset[int] | None = field(default=None, repr=False)  # ESP kept at stop (None: all matched)

    @property
    def status(self) -> str:
        return f"unavailable: {self.unavailable}" if self.unavailable else "available"

    def wait_ready(self, deadline: float, give_up: bool = True) -> bool:
        """Wait (until ``time.monotonic()`` reaches ``deadline``) for the probe to be attached.
        False, with :attr:`unavailable` set and bpftrace stopped, when it did not attach; without
        ``give_up``, one still compiling keeps going, and :meth:`stop` says when it attached
        (drops before then are not seen) or that it never did."""
        if self.unavailable or self._proc is None or self._reader is None:
            return False
        if self.startup_s is not None:
            return True
        if self._reader.ready.wait(max(0.0, deadline - time.monotonic())) and self._reader.attached:
            self.startup_s = round(self._reader.attached_at - self._started, 3)
            return True
        if not give_up and self._proc.poll() is None:
            self._went_on = time.monotonic()
            return False
        why = self._reader.error() or (f"exited with status {self._proc.poll()}" if self._proc.poll() is not None
                                        else f"not attached within {deadline - self._started:.0f} s")
        self._end()
        self.unavailable = f"bpftrace: {why}"
        return False

    def learn(self, spis: frozenset[int]) -> None:
        """The tunnels' SPIs, for a session started before they were known: ESP drops of other
        SPIs, which the kernel side could not tell apart, are left out at :meth:`stop`."""
        self._spis = frozenset(spis)

    def stop(self) -> list[Drop]:
        """Stop bpftrace (by PID) and return the drops of our probes, in time order. Safe to call
        on an unavailable session (nothing) or again (the same drops)."""
        if self._drops is not None:
            return list(self._drops)
        if self._proc is None or self._reader is None:
            return []
        reader = self._reader
        died = self._proc.poll()
        self._end()
        if self._went_on is not None and self.startup_s is None:
            # The trace went on while bpftrace compiled: say exactly which part it covered.
            if reader.attached:
                self.startup_s = round(reader.attached_at - self._started, 3)
                self.problems.append(
                    f"attached {reader.attached_at - self._went_on:.2f} s after the probes began (bpftrace started "
                    f"in {self.startup_s:.2f} s): drops of probes sent before then are not seen")
            elif self.unavailable is None:
                self.unavailable = (f"bpftrace: not attached before the trace ended ({time.monotonic() - self._started:.1f} s "
                                    "after it started); run with a longer --drop-reasons-wait")
                return []
        if died is not None and self.unavailable is None:
            self.problems.append(f"bpftrace exited early (status {died}): {reader.error() or 'no message'}")
        if reader.lost:
            self.problems.append(f"bpftrace lost {reader.lost} events (its buffer overflowed): drops may be missing")
        if reader.over:
            self.problems.append(f"{reader.over} drop lines over the bound of {MAX_DROPS} were not kept")
        drops, unattributed = [], 0
        for line in reader.lines:
            drop = parse_line(line, self._names, self._nodes, self._run, self._clock)
            if drop is None:
                continue
            if drop.spi is not None and self._spis is None:  # never learned: any tunnel's, maybe not ours
                unattributed += 1
                continue
            if drop.spi is not None and drop.spi not in self._spis:
                continue
            (self.delivered if delivered(drop) else drops).append(drop)
        if unattributed:
            self.problems.append(f"{unattributed} ESP drops could not be attributed: this trace never learned its "
                                 "tunnels' SPIs, so they were left out")
        self._drops = sorted(drops, key=lambda d: d.time_ns)
        return list(self._drops)

    def _stop_signal(self) -> int:
        """SIGINT once attached (it drains its buffers); SIGKILL while it still compiles: it has
        nothing to drain, and would otherwise finish compiling and attach before it exits."""
        return signal.SIGINT if self._reader is None or self._reader.attached else signal.SIGKILL

    def request_stop(self) -> None:
        """SIGINT bpftrace (it drains its buffers and exits) without waiting: :meth:`stop` collects."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.kill(self._proc.pid, self._stop_signal())
            except ProcessLookupError:
                pass

    def _end(self) -> None:
        """SIGINT bpftrace by its PID, SIGKILL it if it does not exit, reap it, join the readers."""
        proc, reader = self._proc, self._reader
        if proc is None:
            return
        try:
            if proc.poll() is None:
                os.kill(proc.pid, self._stop_signal())
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        except ProcessLookupError:
            proc.wait()
        finally:
            ended(proc)
            if reader is not None:
                reader.join()
            self.pid = None


def delivered(drop: Drop) -> bool:
    """A drop of ours that is no loss: the packet was freed as dropped after it reached its end.

    * ``NO_SOCKET`` in ``ping_rcv`` for an echo reply: the raw socket of the prober got its own
      copy, then the kernel frees the original because no ping socket wants it (every reply
      of every live trace, measured);
    * ``QUEUE_PURGE``: it sat in a socket's receive queue when the socket was closed (a reply
      that came after the prober stopped reading)."""
    return drop.reason == "QUEUE_PURGE" or (
        drop.reason == "NO_SOCKET" and drop.function == "ping_rcv" and drop.icmp_type == ECHO_REPLY)


NAME = "dropreasons"


def start(topo: Topology, nodes: list[Node], match: ProbeMatch) -> Session:
    """The event source's start: bpftrace spawned, not waited for (see :func:`ready`)."""
    return attach(match, topo, [n.name for n in nodes], wait=False)


def ready(session: Session, deadline: float, give_up: bool = True) -> bool:
    return session.wait_ready(deadline, give_up)


def learn(session: Session, match: ProbeMatch) -> None:
    if match.spis is not None:
        session.learn(match.spis)


def request_stop(session: Session) -> None:
    session.request_stop()


def stop(topo: Topology, session: Session, nodes: list[Node] | None = None) -> list[Snapshot]:
    """One ``events`` snapshot per node the session watched: its drops, or why it could not see them."""
    drops = session.stop()
    names = [n.name for n in nodes] if nodes is not None else session._all
    notes = tuple(session.problems)
    out = []
    for name in names:
        why = session.unavailable or session.unavailable_nodes.get(name)
        if why:
            out.append(Snapshot(NAME, name, EVENTS, unavailable=why))
            continue
        out.append(Snapshot(NAME, name, EVENTS, notes=notes, drops=tuple(d for d in drops if d.node == name)))
    return out


def attach(
    probes: ProbeMatch,
    topo: Topology | None = None,
    nodes: Iterable[str] | None = None,
    *,
    wait: bool = True,
    timeout: float = START_TIMEOUT,
    bpftrace: str | None = None,
    max_s: int = MAX_S,
) -> Session:
    """Attach to ``skb:kfree_skb`` for the drops of ``probes``; never raises.

    ``topo`` and ``nodes`` (default: all of its nodes) name the namespaces of the drops; a node
    captured over SSH is in :attr:`Session.unavailable_nodes`. With ``wait`` (default) it returns
    once the probe is attached; without, call :meth:`Session.wait_ready` (to start it alongside
    the sniffers). ``bpftrace``: the executable (default: found on PATH)."""
    inodes, unseen = node_inodes(topo, nodes) if topo is not None else ({}, {})
    session = Session(unavailable_nodes=unseen, _nodes=inodes, _run=probes.run, _spis=probes.spis)
    session._all = list(nodes if nodes is not None else topo.nodes) if topo is not None else []
    why = None
    try:
        why = _prepare(session, probes, bpftrace, max_s)
    except Exception as e:  # best effort: evidence must never cost the trace
        why = f"{type(e).__name__}: {e}"
    if why:
        session._end()
        session.unavailable = why
        return session
    if wait:
        try:
            session.wait_ready(time.monotonic() + timeout)
        except BaseException:  # Ctrl-C while bpftrace compiles: the caller never gets the session
            session._end()
            raise
    return session


def _prepare(session: Session, probes: ProbeMatch, bpftrace: str | None, max_s: int) -> str | None:
    """Check what bpftrace needs, then spawn it; the reason it cannot run, or None."""
    if os.geteuid() != 0:
        return "needs root (BPF and the skb:kfree_skb tracepoint): run tracer with sudo"
    exe = bpftrace if bpftrace else shutil.which("bpftrace")
    if not exe or not os.access(exe, os.X_OK):
        return f"'{bpftrace or 'bpftrace'}' not found: install it (Debian: apt-get install bpftrace)"
    fmt, why = tracepoint_format()
    if fmt is None:
        return why
    names = reason_names(fmt)
    if not names or "field:enum skb_drop_reason reason" not in fmt:
        return "this kernel's skb:kfree_skb has no drop reason (needs Linux 5.17 or later)"
    if len(probes.spis or ()) > MAX_SPIS:
        return f"{len(probes.spis)} tunnel SPIs: more than the {MAX_SPIS} the script matches"
    session._names = names
    env = {**os.environ, _READY_ENV: "1"}
    session._clock = time.time_ns() - time.monotonic_ns()  # bpftrace's nsecs is CLOCK_MONOTONIC
    session._started = time.monotonic()
    # Its own session: a Ctrl-C at the terminal reaches tracer, whose finally stops bpftrace
    # after the sniffers; if tracer is killed, bpftrace gets SIGTERM (tracer.subprocs), and never
    # outlives us by more than max_s (the script's interval) in any case.
    with deferred(starting("bpftrace")):  # a Ctrl-C now is raised once the session holds it and its reader
        proc = spawn([exe, "-B", "line", "-e", script(probes, max_s, kernel_fields())], "bpftrace", stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        session._proc, session.pid = proc, proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        session._reader = _Reader(proc.stdout, proc.stderr)
    return None


def tracepoint_format() -> tuple[str | None, str]:
    """The text of the tracepoint's ``format`` file (mounting tracefs if no one has), or why not."""
    rel = Path("events", *TRACEPOINT.split(":"), "format")
    for _ in range(2):
        for d in TRACEFS_DIRS:
            if (d / "events").is_dir():
                try:
                    return (d / rel).read_text(), ""
                except FileNotFoundError:
                    return None, f"this kernel has no {TRACEPOINT} tracepoint"
                except OSError as e:
                    return None, f"cannot read {d / rel}: {e.strerror}"
        # tracefs is not mounted (bpftrace then cannot find the tracepoint): mount it where
        # systemd would. It stays mounted, as on any ordinary system.
        if not TRACEFS_DIRS[0].is_dir():
            break
        proc = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS_DIRS[0])],
                              capture_output=True, text=True, timeout=10.0, check=False)
        if proc.returncode != 0:
            return None, f"tracefs is not mounted and mounting it failed: {proc.stderr.strip() or proc.returncode}"
    return None, "tracefs is not available (no /sys/kernel/tracing)"


def reason_names(fmt: str) -> dict[int, str]:
    """``enum skb_drop_reason`` numbers → names on this kernel, from the ``__print_symbolic`` of
    the tracepoint's print fmt (the kernel writes it from the enum itself)."""
    _, _, printfmt = fmt.partition("print fmt:")
    return {int(n): name for n, name in _SYMBOLIC.findall(printfmt)}


def node_inodes(topo: Topology, nodes: Iterable[str] | None = None) -> tuple[dict[int, str], dict[str, str]]:
    """Namespace inode → node for the nodes on this host (``/run/netns/<netns>``, or this
    process's own namespace for a local node without one); the other nodes, and why not."""
    inodes: dict[int, str] = {}
    unseen: dict[str, str] = {}
    for name in dict.fromkeys(nodes if nodes is not None else topo.nodes):
        node = topo.nodes[name]
        if node.capture_backend != "local":
            unseen[name] = "captured over SSH: kernel drop reasons are read on this host only"
            continue
        path = NETNS_DIR / node.netns if node.netns else Path("/proc/self/ns/net")
        try:
            inodes.setdefault(os.stat(path).st_ino, name)
        except OSError as e:
            unseen[name] = f"cannot find its network namespace ({path}: {e.strerror})"
    return inodes, unseen


def _u32(value: bytes) -> int:
    """Four bytes as the native-endian integer a 32-bit load from memory gives in the kernel."""
    return int.from_bytes(value, sys.byteorder)


def kernel_fields() -> dict[str, btf.Field] | None:
    """The offsets of :data:`FIELDS` on the running kernel, or None (no BTF, a field it lacks):
    the script then names the struct types and bpftrace resolves them (slower to start)."""
    try:
        fields = btf.offsets(FIELDS)
    except (OSError, KeyError, ValueError, struct.error):
        return None
    return fields if usable(fields) else None


def usable(fields: Mapping[str, btf.Field]) -> bool:
    """Whether ``fields`` can go into the script as it is written (it runs as root): exactly
    :data:`FIELDS`, integer offsets below :data:`btf.MAX_OFFSET`, and the loaded ones of a
    size a load has (the device name is an array: its offset alone is used)."""
    if set(fields) != set(FIELDS):
        return False
    for name, f in fields.items():
        if not (type(f.offset) is int and type(f.size) is int and 0 <= f.offset < btf.MAX_OFFSET):
            return False
        if name != "dev_name" and f.size not in (1, 2, 4, 8):
            return False
    return True


def _accessors(fields: Mapping[str, btf.Field] | None) -> dict[str, str]:
    """The script's reads of kernel structs: loads at BTF offsets, else bpftrace's typed access."""
    if fields is None:
        return {"skb": "(struct sk_buff *)args->skbaddr", "head": "(uint64)$skb->head",
                "nh": "(uint64)$skb->network_header", "tail": "(uint64)$skb->tail", "dev": "$skb->dev",
                "sk": "$skb->sk", "dev_inum": "$dev->nd_net.net->ns.inum", "dev_name": "$dev->name",
                "sk_inum": "$sk->__sk_common.skc_net.net->ns.inum"}
    if not usable(fields):
        raise ValueError(f"kernel field offsets unfit for the script: {dict(fields)}")

    def load(base: str, name: str) -> str:
        f = fields[name]
        return f"(uint64)*(uint{f.size * 8} *)({base} + {f.offset})"

    inum = fields["inum"]
    return {"skb": "(uint64)args->skbaddr", "head": load("$skb", "skb_head"), "nh": load("$skb", "skb_network_header"),
            "tail": load("$skb", "skb_tail"), "dev": load("$skb", "skb_dev"), "sk": load("$skb", "skb_sk"),
            "dev_inum": f"*(uint{inum.size * 8} *)({load('$dev', 'dev_net')} + {inum.offset})",
            "dev_name": f"str($dev + {fields['dev_name'].offset}, {IFNAMSIZ})",
            "sk_inum": f"*(uint{inum.size * 8} *)({load('$sk', 'sk_net')} + {inum.offset})"}


def script(probes: ProbeMatch, max_s: int = MAX_S, fields: Mapping[str, btf.Field] | None = None) -> str:
    """The bpftrace program: one line per drop of ours, nothing for any other packet.

    Output: ``DR1 nsecs reason inum device function proto saddr daddr w0 w1 w2 w3 type`` with
    the 32-bit words as the kernel loaded them (native order): for an echo the 16 tag bytes and
    the ICMP type, for ESP the SPI and sequence. ``device`` is ``-`` when the buffer has none.
    ``fields``: :func:`kernel_fields` (None: bpftrace resolves the struct types itself)."""
    a = _accessors(fields)
    magic = _u32(MAGIC)
    run = _u32(probes.run.to_bytes(4, "big"))
    spis = sorted({_u32(s.to_bytes(4, "big")) for s in probes.spis or ()})
    ports = sorted({socket.htons(p) if sys.byteorder == "little" else p for p in probes.nat_t_ports})
    # SPIs not known yet: any non-zero SPI (zero is the non-ESP marker of IKE on port 4500);
    # Session.learn keeps those of the tunnels once they are known.
    spi_test = " || ".join(f"$spi == {s}" for s in spis) if probes.spis is not None else "$spi != 0"
    port_test = " || ".join(f"$sport == {p} || $dport == {p}" for p in ports)
    esp = ""
    if spis or probes.spis is None:
        esp = f"""
      if ($proto == {IPPROTO_ESP} && $l4 + 8 <= $tail) {{
        $spi = *(uint32 *)($head + $l4);
        if ({spi_test}) {{ $hit = 1; $w0 = $spi; $w1 = *(uint32 *)($head + $l4 + 4); }}
      }}"""
        if port_test:
            esp += f"""
      if ($proto == {IPPROTO_UDP} && $l4 + 16 <= $tail) {{
        $sport = *(uint16 *)($head + $l4);
        $dport = *(uint16 *)($head + $l4 + 2);
        $spi = *(uint32 *)($head + $l4 + 8);
        if (({port_test}) && ({spi_test})) {{ $hit = 1; $w0 = $spi; $w1 = *(uint32 *)($head + $l4 + 12); }}
      }}"""
    return f"""
tracepoint:skb:kfree_skb
/args->protocol == 0x0800 || args->protocol == 0/
{{
  $skb = {a['skb']};
  $head = {a['head']};
  $nh = {a['nh']};
  $tail = {a['tail']};
  if ($nh + 20 <= $tail) {{
    $ip = $head + $nh;
    $vihl = *(uint8 *)$ip;
    $ihl = (uint64)($vihl & 15) * 4;
    $frag = ((uint64)(*(uint8 *)($ip + 6) & 31) << 8) | (uint64)*(uint8 *)($ip + 7);
    if (($vihl >> 4) == 4 && $ihl >= 20 && $frag == 0) {{
      $proto = *(uint8 *)($ip + 9);
      $l4 = $nh + $ihl;
      $hit = 0; $type = (uint8)0; $w0 = (uint32)0; $w1 = (uint32)0; $w2 = (uint32)0; $w3 = (uint32)0;
      if ($proto == {IPPROTO_ICMP} && $l4 + {8 + TAG_LEN} <= $tail) {{
        $type = *(uint8 *)($head + $l4);
        if (($type == {ECHO_REQUEST} || $type == {ECHO_REPLY}) && *(uint32 *)($head + $l4 + 8) == {magic}
            && *(uint32 *)($head + $l4 + 14) == {run}) {{
          $hit = 1;
          $w0 = *(uint32 *)($head + $l4 + 8);
          $w1 = *(uint32 *)($head + $l4 + 12);
          $w2 = *(uint32 *)($head + $l4 + 16);
          $w3 = *(uint32 *)($head + $l4 + 20);
        }}
      }}{esp}
      if ($hit) {{
        $saddr = *(uint32 *)($ip + 12);
        $daddr = *(uint32 *)($ip + 16);
        $dev = {a['dev']};
        if ($dev != 0) {{
          printf("{_LINE} %llu %u %u %s %s %u %u %u %u %u %u %u %u\\n", nsecs, args->reason,
                 {a['dev_inum']}, {a['dev_name']}, ksym(args->location), $proto, $saddr, $daddr,
                 $w0, $w1, $w2, $w3, $type);
        }} else {{
          $inum = (uint32)0;
          $sk = {a['sk']};
          if ($sk != 0) {{ $inum = {a['sk_inum']}; }}
          printf("{_LINE} %llu %u %u - %s %u %u %u %u %u %u %u %u\\n", nsecs, args->reason, $inum,
                 ksym(args->location), $proto, $saddr, $daddr, $w0, $w1, $w2, $w3, $type);
        }}
      }}
    }}
  }}
}}

interval:s:{int(max_s)} {{ exit(); }}
"""


def parse_line(line: str, names: Mapping[int, str], nodes: Mapping[int, str], run: int, clock: int) -> Drop | None:
    """A :class:`Drop` from one line of the script; None for any other line, or a tag that does
    not check (the kernel matched magic and run only)."""
    words = line.split()
    if len(words) != 14 or words[0] != _LINE:
        return None
    try:
        nsecs, code, inum = int(words[1]), int(words[2]), int(words[3])
        proto, saddr, daddr = (int(w) for w in words[6:9])
        w = [int(x) for x in words[9:13]]
        icmp_type = int(words[13])
    except ValueError:
        return None
    common: dict[str, Any] = dict(
        reason=names.get(code, f"REASON_{code}"), code=code, function=words[5],
        device=None if words[4] == "-" else words[4], netns_inode=inum or None, node=nodes.get(inum),
        src=IPv4Address(saddr.to_bytes(4, sys.byteorder)), dst=IPv4Address(daddr.to_bytes(4, sys.byteorder)),
        protocol=proto, time_ns=nsecs + clock,
    )
    if proto == IPPROTO_ICMP:
        raw = b"".join(x.to_bytes(4, sys.byteorder) for x in w)
        tag = decode(raw[:TAG_LEN])
        if tag is None or tag.run != run:
            return None
        return Drop(**common, run=tag.run, seq=tag.seq, kind=tag.kind, icmp_type=icmp_type)
    spi = int.from_bytes(w[0].to_bytes(4, sys.byteorder), "big")
    seq = int.from_bytes(w[1].to_bytes(4, sys.byteorder), "big")
    return Drop(**common, spi=spi, esp_seq=seq)


class _Reader:
    """Reads bpftrace's stdout and stderr in two threads: the readiness marker, the drop lines
    (at most MAX_DROPS kept), lost-event counts and the last error lines."""

    def __init__(self, out: IO[bytes], err: IO[bytes]) -> None:
        self.ready = threading.Event()
        self.attached = False
        self.attached_at = 0.0
        self.lines: list[str] = []
        self.over = 0
        self.lost = 0
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s,), daemon=True) for s in (out, err)]
        self._open = len(self._threads)
        self._lock = threading.Lock()
        for t in self._threads:
            t.start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith(_LINE):
                    with self._lock:
                        if len(self.lines) < MAX_DROPS:
                            self.lines.append(line)
                        else:
                            self.over += 1
                elif _READY_ENV in line:
                    self.attached_at = time.monotonic()
                    self.attached = True
                    self.ready.set()
                elif m := _LOST.search(line):
                    self.lost += int(m.group(1))
                elif line.strip() and not any(w in line for w in _CHATTER):
                    with self._lock:
                        self.errors = [*self.errors[-4:], line.strip()]
        finally:
            stream.close()
            with self._lock:
                self._open -= 1
                if not self._open:
                    self.ready.set()  # bpftrace is gone: stop waiting for it

    def error(self) -> str | None:
        """bpftrace's own error line, if it printed one."""
        errs = [e for e in self.errors if "ERROR" in e] or self.errors
        return errs[-1][:300] if errs else None

    def join(self) -> None:
        for t in self._threads:
            t.join(STOP_TIMEOUT)
