"""The MTU search's upper bound is the outgoing interface's MTU, not a path MTU the kernel
cached from an earlier 'fragmentation needed' (IP_MTU reports that for ~10 minutes)."""

from __future__ import annotations

import socket
import time
from ipaddress import IPv4Address

from scapy.layers.inet import ICMP, IP

from tests.own_netns import own_namespaces
from tracer import netns
from tracer.send.mtu import _route_mtu, socket_mtu
from tracer.send.pacer import probe_socket

A, B = "trc-pm-a", "trc-pm-b"
A_IP, B_IP = "198.18.250.1", "198.18.250.2"
DST = IPv4Address("198.51.100.7")  # beyond B


def _cached_mtu() -> int:
    return socket_mtu(A, DST, None)


def test_a_cached_path_mtu_does_not_lower_the_bound() -> None:
    with own_namespaces([A, B]):
        netns.ip(["link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", B], A)
        netns.ip(["addr", "add", f"{A_IP}/24", "dev", "v0"], A)
        netns.ip(["link", "set", "v0", "up"], A)
        netns.ip(["addr", "add", f"{B_IP}/24", "dev", "v1"], B)
        netns.ip(["link", "set", "v1", "up"], B)
        netns.ip(["route", "add", "198.51.100.0/24", "via", B_IP], A)
        assert _route_mtu(A, DST, None) == 1500 == _cached_mtu()
        # B tells A that an echo reply A sent to DST needs 1300 bytes: A's kernel caches that path
        # MTU (the kernel updates it with no socket only for a quoted echo reply: icmp_err).
        quoted = bytes(IP(src=A_IP, dst=str(DST), flags="DF", len=1400) / ICMP(type=0, id=7, seq=1))[:28]
        err = bytes(IP(src=B_IP, dst=A_IP) / ICMP(type=3, code=4, nexthopmtu=1300) / quoted)
        raw = probe_socket(B, socket.SOCK_RAW, socket.IPPROTO_RAW, None)
        try:
            deadline = time.monotonic() + 5
            while _cached_mtu() != 1300 and time.monotonic() < deadline:
                raw.sendto(err, (A_IP, 0))
                time.sleep(0.05)
        finally:
            raw.close()
        assert _cached_mtu() == 1300  # the stale value the search used to start from
        assert _route_mtu(A, DST, None) == 1500
        netns.ip(["link", "set", "v0", "mtu", "1400"], A)
        assert _route_mtu(A, DST, None) == 1400
