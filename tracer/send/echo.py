"""Tagged ICMP echo probes, sent from inside a network namespace.

The ICMP message is built here (tag first in the payload, then padding to the
requested size; RFC 792 header and checksum: eight bytes, no library needed, and
importing scapy for them cost a live trace 0.2-0.5 s of its start); a raw socket
created in the source namespace sends it, so the kernel picks routes and the IP
header exactly as ``ping`` would. The same socket reads the replies, matched by echo id,
seq and tag.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from tracer.errors import BadInput
from tracer.model.tag import TAG_LEN, ProbeKind, ProbeTag, decode, icmp_id_for
from tracer.send.pacer import drain, exchange, probe_socket

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2  # set DF and never fragment locally
IP_PMTUDISC_DONT = 0
IP_PMTUDISC_PROBE = 3  # set DF, and neither consult nor obey the kernel's path-MTU cache
ICMP_HEADER = 8
ECHO_REQUEST = 8


@dataclass
class Sent:
    seq: int
    sent_ns: int
    size: int  # ICMP payload bytes
    rtt_ms: float | None = None
    error: str | None = None  # local send error (EMSGSIZE with DF, unreachable, ...)


def echo_request(tag: ProbeTag, size: int) -> bytes:
    if size < TAG_LEN:
        raise BadInput(f"--size {size}: echo payload must be at least {TAG_LEN} bytes to carry the probe tag")
    payload = tag.encode() + bytes(size - TAG_LEN)
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, icmp_id_for(tag.run), tag.seq & 0xFFFF)
    return header[:2] + inet_checksum(header + payload).to_bytes(2, "big") + header[4:] + payload


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def open_socket(netns: str | None, source: IPv4Address | None, df: bool, bypass_cache: bool = False) -> socket.socket:
    """``bypass_cache``: with ``df``, send sizes above a path MTU the kernel learnt before (MTU
    probes measure the path as it is now; ping --df refuses them, as ping -M do does)."""
    sock = probe_socket(netns, socket.SOCK_RAW, socket.IPPROTO_ICMP, source)
    mode = (IP_PMTUDISC_PROBE if bypass_cache else IP_PMTUDISC_DO) if df else IP_PMTUDISC_DONT
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, mode)
    except OSError:
        sock.close()
        raise
    return sock


def send_probes(
    netns: str | None,
    dst: IPv4Address,
    run: int,
    count: int,
    interval: float,
    size: int,
    timeout: float,
    source: IPv4Address | None = None,
    kind: ProbeKind = ProbeKind.PING,
    df: bool = False,
    sizes: list[int] | None = None,
    bypass_cache: bool = False,
    on_result: Callable[[Sent], None] | None = None,
) -> list[Sent]:
    """Send ``count`` probes ``interval`` seconds apart, seq 1 to ``count`` like ping (``sizes``:
    the payload of each, in order); return when every reply is in or ``timeout`` seconds
    after the last probe left. ``on_result``: each probe's record as soon as its fate is known."""
    sock = open_socket(netns, source, df, bypass_cache)
    ident = icmp_id_for(run)

    def send_one(seq: int) -> Sent:
        size_i = sizes[seq - 1] if sizes else size
        rec = Sent(seq, time.time_ns(), size_i)
        try:
            sock.sendto(echo_request(ProbeTag(run, kind, seq), size_i), (str(dst), 0))
        except OSError as e:
            rec.error = e.strerror or str(e)
        return rec

    try:
        sock.setblocking(False)
        return exchange(count, interval, timeout, send_one,
                        lambda sent, wait: _read_replies(sock, ident, run, kind, sent, wait),
                        lambda r: r.rtt_ms is not None, on_result)
    finally:
        sock.close()


def _read_replies(sock: socket.socket, ident: int, run: int, kind: ProbeKind, sent: dict[int, Sent], wait: float) -> None:
    for data, now in drain(sock, wait):
        ihl = (data[0] & 0x0F) * 4
        icmp = data[ihl:]
        if len(icmp) >= ICMP_HEADER + TAG_LEN and icmp[0] == 0 and int.from_bytes(icmp[4:6], "big") == ident:
            tag = decode(icmp[ICMP_HEADER:])
            if tag and tag.run == run and tag.kind == kind and tag.seq in sent and sent[tag.seq].rtt_ms is None:
                sent[tag.seq].rtt_ms = (now - sent[tag.seq].sent_ns) / 1e6


def random_run_id() -> int:
    return int.from_bytes(os.urandom(4), "big") | 1
