"""Path MTU search, tracepath-like: one Don't-Fragment echo at a time, the next size chosen
from what the last one met.

The socket uses ``IP_PMTUDISC_PROBE``: DF is set and the kernel's path-MTU cache is neither
consulted nor a reason to refuse a size (the cache of the source namespace is flushed
first as well), so the answer is what the network does today, not what the kernel learnt
yesterday. The only local limit is the outgoing interface's own MTU (EMSGSIZE), read from
the interface itself, never from the kernel's cache.

An ICMP error counts only when it quotes *this* probe: the quoted packet goes to our
destination, is an echo request with our identifier and this probe's seq, and — when the
quote is long enough — carries this probe's tag. A "fragmentation needed" about another
size, another run or the tunnel's ESP carrier is ignored here (the analysis reports it).

:class:`Search` holds the search itself with no I/O: sizes passed, sizes failed, and the
next size to try — testable with data alone.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tracer.analysis.icmp import icmp_name
from tracer.model.tag import ECHO_OVERHEAD, ProbeKind, ProbeTag, decode, icmp_id_for
from tracer.netns import ip
from tracer.send.echo import ICMP_HEADER, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE, echo_request
from tracer.send.pacer import Interrupted, drain, journal, probe_socket

IP_MTU = 14
FRAG_NEEDED = (3, 4)
START = 576  # IPv4's guaranteed size: the first probe, to see that the path works at all
MAX_PROBES = 40


@dataclass
class Attempt:
    """One probe of the search and what came back."""

    seq: int
    size: int  # IP packet bytes
    sent_ns: int
    rtt_ms: float | None = None  # echo reply
    error: str | None = None  # the sender's own refusal (EMSGSIZE above the interface MTU)
    icmp: str | None = None  # an ICMP error quoting this probe, in words
    icmp_from: str | None = None
    next_hop_mtu: int | None = None  # from a frag-needed quoting this probe
    left: bool = False  # the send call returned (or refused): the probe is in the run

    @property
    def passed(self) -> bool:
        return self.rtt_ms is not None


@dataclass
class Search:
    """Largest size that passed, smallest that failed; the next size halves the gap, or jumps
    to the next-hop MTU a frag-needed announced. A silent failure (no answer, no error) is
    tried once more before it is believed: one lost packet must not lower the answer."""

    low: int  # smallest size tried first (known to pass once it did)
    high: int  # largest size the interface sends (interface MTU)
    passed: set[int] = field(default_factory=set)
    failed: dict[int, bool] = field(default_factory=dict)  # size → failed silently
    retried: set[int] = field(default_factory=set)
    hint: int | None = None  # next-hop MTU from the last frag-needed
    announced: set[int] = field(default_factory=set)  # every next-hop MTU a frag-needed named

    def best(self) -> int | None:
        return max(self.passed, default=None)

    def ceiling(self) -> int | None:
        above = [s for s in self.failed if s > (self.best() or 0)]
        return min(above, default=None)

    def record(self, a: Attempt) -> None:
        if a.passed:
            self.passed.add(a.size)
            self.failed.pop(a.size, None)
            return
        if a.size in self.passed:
            return  # it passed before: this failure is loss, not size
        self.failed[a.size] = a.icmp is None and a.error is None
        self.hint = a.next_hop_mtu
        if a.next_hop_mtu:
            self.announced.add(a.next_hop_mtu)

    def next_size(self) -> int | None:
        """The next size to send; None when the answer is exact (or the path does not work)."""
        best, ceiling = self.best(), self.ceiling()
        if best is None:
            if self.low in self.failed:
                if self.failed[self.low] and self.low not in self.retried:
                    self.retried.add(self.low)
                    return self.low
                return None  # even the smallest size fails: not an MTU question
            return self.low
        if ceiling is None:
            return self.high if self.high > best else None
        if ceiling == best + 1:
            if self.failed[ceiling] and ceiling not in self.retried:
                self.retried.add(ceiling)
                return ceiling
            return None
        if self.hint is not None and best < self.hint < ceiling:
            size, self.hint = self.hint, None
            return size
        if best in self.announced:
            return best + 1  # a hop said this size is its MTU and it passed: one byte more, to measure it
        return (best + ceiling) // 2


def search_path_mtu(
    netns: str | None,
    dst: IPv4Address,
    run: int,
    timeout: float,
    source: IPv4Address | None = None,
    kind: int = ProbeKind.MTU,
    start: int = START,
    on_result: Callable[[Attempt], None] | None = None,
) -> tuple[list[Attempt], int]:
    """Run the search; return its probes (seq 1, 2, … in sending order, like ping's) and the
    interface MTU it started from. ``on_result``: each probe once its answer (or its wait) is in."""
    if netns:
        ip(["route", "flush", "cache"], netns, check=False)  # nothing the kernel learnt before counts
    iface_mtu = _route_mtu(netns, dst, source)
    sock = probe_socket(netns, socket.SOCK_RAW, socket.IPPROTO_ICMP, source)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        sock.setblocking(False)
        search = Search(min(start, iface_mtu), iface_mtu)
        attempts: list[Attempt] = []
        wait = timeout
        try:
            while len(attempts) < MAX_PROBES and (size := search.next_size()) is not None:
                a = Attempt(len(attempts) + 1, size, time.time_ns())
                attempts.append(a)
                _probe(sock, dst, run, kind, a, wait)
                if a.passed:
                    journal("answered", a)
                search.record(a)
                if on_result is not None:
                    on_result(a)
                if a.passed:  # later waits follow the path's round trip, within --timeout
                    wait = min(timeout, max(0.2, 4 * max(x.rtt_ms or 0 for x in attempts) / 1000))
                elif a.icmp is not None and a.next_hop_mtu is None:
                    break  # unreachable, prohibited: the path itself refuses; the verdict says where
        except KeyboardInterrupt:  # Ctrl-C: the probes that left (the last one maybe unanswered), no more
            raise Interrupted([a for a in attempts if a.left]) from None
        return attempts, iface_mtu
    finally:
        sock.close()


def _route_mtu(netns: str | None, dst: IPv4Address, source: IPv4Address | None) -> int:
    """The MTU of the outgoing device of the route to ``dst``: the search's upper bound. Not the
    socket's IP_MTU, which is the cached path MTU (kept ~10 minutes after an ICMP 'fragmentation
    needed', and only flushed here with a namespace): a stale value would cap the search below
    what the path carries today. IP_MTU only when ``ip`` cannot say."""
    route = ip(["-j", "route", "get", str(dst), *(["from", str(source)] if source else [])], netns, check=False)
    try:
        dev = json.loads(route.stdout)[0]["dev"]
        link = ip(["-j", "link", "show", "dev", str(dev)], netns, check=False)
        mtu = json.loads(link.stdout)[0]["mtu"]
        if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu >= 68:
            return mtu
    except (ValueError, LookupError, TypeError):
        pass
    return socket_mtu(netns, dst, source)


def socket_mtu(netns: str | None, dst: IPv4Address, source: IPv4Address | None) -> int:
    """IP_MTU of a connected UDP socket that sends nothing: the route's MTU, or the path MTU the
    kernel cached for ``dst``. Not the probe socket: a connected raw socket turns each ICMP error
    into a socket error on the next receive."""
    udp = probe_socket(netns, socket.SOCK_DGRAM, socket.IPPROTO_UDP, source)
    try:
        udp.connect((str(dst), 9))
        return udp.getsockopt(socket.IPPROTO_IP, IP_MTU)
    finally:
        udp.close()


def _probe(sock: socket.socket, dst: IPv4Address, run: int, kind: int, a: Attempt, wait: float) -> None:
    """Send ``a`` and fill in what came back within ``wait`` seconds."""
    try:
        sock.sendto(echo_request(ProbeTag(run, kind, a.seq), a.size - ECHO_OVERHEAD), (str(dst), 0))
    except OSError as e:
        a.error = e.strerror or str(e)
    a.left = True
    journal("sent", a)  # on disk as it leaves: a killed run still says what it sent
    if a.error:
        return
    deadline = time.monotonic() + wait
    ident = icmp_id_for(run)
    while (left := deadline - time.monotonic()) > 0:
        for data, now in drain(sock, left):
            _match(a, data, now, dst, run, kind, ident)
            if a.passed or a.icmp is not None:
                return


def _match(a: Attempt, data: bytes, now: int, dst: IPv4Address, run: int, kind: int, ident: int) -> None:
    """Fill ``a`` from one received IP datagram when it answers or quotes this probe."""
    if len(data) < 20:
        return
    icmp = data[(data[0] & 0x0F) * 4:]
    if len(icmp) < ICMP_HEADER:
        return
    if icmp[0] == 0:  # echo reply: ours if id, seq and tag all say so
        tag = decode(icmp[ICMP_HEADER:])
        if (int.from_bytes(icmp[4:6], "big") == ident and tag is not None
                and (tag.run, tag.kind, tag.seq) == (run, kind, a.seq)):
            a.rtt_ms = (now - a.sent_ns) / 1e6
        return
    if icmp[0] not in (3, 11, 12) or not quotes(icmp[ICMP_HEADER:], dst, run, kind, ident, a.seq):
        return
    a.icmp = icmp_name(icmp[0], icmp[1])
    a.icmp_from = str(IPv4Address(data[12:16]))
    if (icmp[0], icmp[1]) == FRAG_NEEDED:
        a.next_hop_mtu = int.from_bytes(icmp[6:8], "big") or None


def quotes(quote: bytes, dst: IPv4Address, run: int, kind: int, ident: int, seq: int) -> bool:
    """Does an ICMP error's quoted packet show this very probe?"""
    if len(quote) < 20 or quote[9] != 1 or quote[16:20] != dst.packed:
        return False
    inner = quote[(quote[0] & 0x0F) * 4:]
    if len(inner) < ICMP_HEADER or inner[0] != 8:
        return False
    if int.from_bytes(inner[4:6], "big") != ident or int.from_bytes(inner[6:8], "big") != seq & 0xFFFF:
        return False
    tag = decode(inner[ICMP_HEADER:])
    # A quote long enough to hold the tag must hold ours; a shorter one (8 bytes of ICMP, the
    # RFC 792 minimum) is matched by id and seq alone.
    if tag is None:
        return len(inner) < ICMP_HEADER + 16
    return (tag.run, tag.kind, tag.seq) == (run, kind, seq)
