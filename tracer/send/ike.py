"""Sending tagged IKEv2 IKE_SA_INIT probes (the I/O half; messages are built and parsed
in :mod:`tracer.send.ike_message`).

A UDP socket created in the initiating gateway's namespace, bound to its address and an
ephemeral port (charon already owns 500 and 4500 there; responders answer the request's
source port), sends each request to the responder's port 500, or 4500 behind the 4-byte
non-ESP marker (RFC 3948).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tracer.model.tag import ProbeKind, ProbeTag
from tracer.send.ike_message import (
    IKE_PORT,
    NATT_PORT,
    NON_ESP_MARKER,
    nat_note,
    nat_seen,
    parse_answer,
    sa_init_request,
    summarize,
)
from tracer.send.pacer import drain, exchange, probe_socket


@dataclass
class Sent:
    seq: int
    sent_ns: int
    rtt_ms: float | None = None
    error: str | None = None  # local send error (unreachable, EMSGSIZE, ...)
    answer: str | None = None  # summarize() of the first answer
    responder_spi: str | None = None  # "0x…" (0 when the answer is a bare notify)
    notifies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # error notifies (NO_PROPOSAL_CHOSEN, ...)
    chosen: list[str] = field(default_factory=list)  # the transforms the responder picked
    nat: bool | None = None  # responder saw us NATed (from its NAT-detection hash)
    peer_nat: bool | None = None  # responder signals NAT on its side (or fakes it to force UDP encapsulation)


def send_probes(
    netns: str | None,
    src: IPv4Address,
    dst: IPv4Address,
    run: int,
    count: int,
    interval: float,
    timeout: float,
    port: int = IKE_PORT,
    on_result: Callable[[Sent], None] | None = None,
) -> list[Sent]:
    """Send ``count`` IKE_SA_INIT probes ``interval`` s apart to ``dst:port``; return when every
    one is answered or ``timeout`` s after the last left."""
    sock = probe_socket(netns, socket.SOCK_DGRAM, 0, src)
    sport = sock.getsockname()[1]
    marker = NON_ESP_MARKER if port == NATT_PORT else b""
    by_spi: dict[bytes, int] = {}

    def send_one(seq: int) -> Sent:
        tag = ProbeTag(run, ProbeKind.IKE, seq)
        rec = Sent(seq, time.time_ns())
        try:
            sock.sendto(marker + sa_init_request(tag, src, sport, dst, port), (str(dst), port))
        except OSError as e:
            rec.error = e.strerror or str(e)
        by_spi[tag.ike_spi()] = seq
        return rec

    try:
        sock.setblocking(False)
        return exchange(count, interval, timeout, send_one,
                        lambda sent, wait: _read_answers(sock, marker, by_spi, sent, (src, sport, dst, port), wait),
                        lambda r: r.answer is not None, on_result)
    finally:
        sock.close()


def _read_answers(
    sock: socket.socket,
    marker: bytes,
    by_spi: dict[bytes, int],
    sent: dict[int, Sent],
    flow: tuple[IPv4Address, int, IPv4Address, int],
    wait: float,
) -> None:
    src, sport, dst, dport = flow
    for data, now in drain(sock, wait):
        if marker:
            if data[:4] != marker:
                continue  # ESP or a keepalive: not an answer to us
            data = data[4:]
        try:
            a = parse_answer(data)
        except ValueError:
            continue
        seq = by_spi.get(a.spi_i)
        if seq is None or not a.is_response or sent[seq].answer is not None:
            continue
        s = sent[seq]
        s.rtt_ms = (now - s.sent_ns) / 1e6
        s.nat, s.peer_nat = nat_seen(a, src, sport, dst, dport)
        s.answer = summarize(a) + nat_note(s.nat, s.peer_nat)
        s.responder_spi = f"0x{a.spi_r.hex()}"
        s.notifies = [n.name for n in a.notifies]
        s.errors = [n.name for n in a.errors]
        s.chosen = list(a.chosen)
