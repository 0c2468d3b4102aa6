"""A second small network for the observed-path tests — deliberately not the lab: other
node names, interface names and addresses — and builders for hand-made Observations.

::

                 h3 (198.18.3.10, outside the tunnel's selectors)
                 │ lan1
    h1 ── lan0 edge1 wan0 ══ eth0 core1 eth1 ══ wan0 edge2 lan0 ── h2
               xfrm0  wan1           eth2          wan1
                   │               │             │
                   └── eth0 core2 eth2 ──┘ eth1 ──┘

    (══: ESP of tunnel t12; core2 is off the expected path, the one router that knows the LANs)

``edge1`` is a device-based tunnel end (``xfrm0``), ``edge2`` a policy-based one. ``core1``
routes nothing but its connected nets (a leaked probe dies there); ``core2`` routes both
LANs (a probe that goes its way can still arrive). Addresses come from 198.18.0.0/15,
192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24 only. The hop lists are written by hand.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from tracer.model.observations import Observations, PacketClass
from tracer.model.probe import ProbeSpec
from tracer.model.tag import ProbeKind, icmp_id_for
from tracer.model.topology import Topology

H1, H2, H3 = IPv4Address("198.18.1.10"), IPv4Address("198.18.2.10"), IPv4Address("198.18.3.10")
EDGE1_WAN, EDGE2_WAN = IPv4Address("192.0.2.1"), IPv4Address("198.51.100.1")
CORE1_ETH1, CORE1_ETH2 = IPv4Address("198.51.100.2"), IPv4Address("203.0.113.1")
SPI_12, SPI_21 = 0x51000012, 0x51000021  # the SPI edge2 receives on (requests), edge1 (replies)
RUN = 0x0B5E4709
PING = int(ProbeKind.PING)
T0 = 1_700_000_000_000_000_000
US = 1_000
MS = 1_000_000
HOP_NS = 10 * US  # a packet moves one hop every 10 µs


def topology_dict(keying: str = "ike", encapsulation: str = "esp") -> dict[str, Any]:
    def iface(addr: str | None = None, role: str = "lan") -> dict[str, Any]:
        return {"addresses": [addr] if addr else [], "role": role}

    return {
        "name": "netsite",
        "nodes": {
            "h1": {"role": "host", "interfaces": {"eth0": iface("198.18.1.10/24")},
                   "routes": [{"dst": "default", "via": "198.18.1.1", "dev": "eth0"}]},
            "h3": {"role": "host", "interfaces": {"eth0": iface("198.18.3.10/24")},
                   "routes": [{"dst": "default", "via": "198.18.3.1", "dev": "eth0"}]},
            "edge1": {"role": "gateway",
                      "interfaces": {"lan0": iface("198.18.1.1/24"), "lan1": iface("198.18.3.1/24"),
                                     "wan0": iface("192.0.2.1/26", "wan"), "wan1": iface("192.0.2.65/26", "wan"),
                                     "xfrm0": iface(role="tunnel")},
                      "routes": [{"dst": "198.18.2.0/24", "dev": "xfrm0"},
                                 {"dst": "default", "via": "192.0.2.2", "dev": "wan0"}]},
            "core1": {"role": "router",
                      "interfaces": {"eth0": iface("192.0.2.2/26", "wan"), "eth1": iface("198.51.100.2/26", "wan"),
                                     "eth2": iface("203.0.113.1/30", "wan")}},
            "core2": {"role": "router",
                      "interfaces": {"eth0": iface("192.0.2.66/26", "wan"), "eth1": iface("198.51.100.66/26", "wan"),
                                     "eth2": iface("203.0.113.2/30", "wan")},
                      "routes": [{"dst": "198.18.1.0/24", "via": "192.0.2.65", "dev": "eth0"},
                                 {"dst": "198.18.2.0/24", "via": "198.51.100.65", "dev": "eth1"}]},
            "edge2": {"role": "gateway",
                      "interfaces": {"wan0": iface("198.51.100.1/26", "wan"), "wan1": iface("198.51.100.65/26", "wan"),
                                     "lan0": iface("198.18.2.1/24")},
                      "routes": [{"dst": "default", "via": "198.51.100.2", "dev": "wan0"}]},
            "h2": {"role": "host", "interfaces": {"eth0": iface("198.18.2.10/24")},
                   "routes": [{"dst": "default", "via": "198.18.2.1", "dev": "eth0"}]},
        },
        "links": [{"ends": ["h1:eth0", "edge1:lan0"]}, {"ends": ["h3:eth0", "edge1:lan1"]},
                  {"ends": ["edge1:wan0", "core1:eth0"]}, {"ends": ["edge1:wan1", "core2:eth0"]},
                  {"ends": ["core1:eth1", "edge2:wan0"]}, {"ends": ["core1:eth2", "core2:eth2"]},
                  {"ends": ["core2:eth1", "edge2:wan1"]}, {"ends": ["edge2:lan0", "h2:eth0"]}],
        "tunnels": [{"name": "t12", "encapsulation": encapsulation, "keying": keying,
                     "left": {"node": "edge1", "address": "192.0.2.1", "interface": "xfrm0",
                              "subnets": ["198.18.1.0/24"], "spi_in": SPI_21},
                     "right": {"node": "edge2", "address": "198.51.100.1",
                               "subnets": ["198.18.2.0/24"], "spi_in": SPI_12}}],
    }


def topology(keying: str = "ike", encapsulation: str = "esp") -> Topology:
    return Topology.from_dict(topology_dict(keying, encapsulation), "netsite.toml")


# (point, form) of the request h1 → h2 and of the reply h2 → h1, written by hand.
REQUEST_HOPS = [
    ("h1:eth0", "clear"), ("edge1:lan0", "clear"), ("edge1:xfrm0", "clear"),
    ("edge1:wan0", "esp"), ("core1:eth0", "esp"), ("core1:eth1", "esp"), ("edge2:wan0", "esp"),
    ("edge2:lan0", "clear"), ("h2:eth0", "clear"),
]
REQUEST_EDGES = ["wire", "forward", "encap", "wire", "forward", "wire", "decap", "wire"]
REPLY_HOPS = [
    ("h2:eth0", "clear"), ("edge2:lan0", "clear"),
    ("edge2:wan0", "esp"), ("core1:eth1", "esp"), ("core1:eth0", "esp"), ("edge1:wan0", "esp"),
    ("edge1:xfrm0", "clear"), ("edge1:lan0", "clear"), ("h1:eth0", "clear"),
]
REPLY_EDGES = ["wire", "encap", "wire", "forward", "wire", "decap", "forward", "wire"]
# Every interface of the topology: each is captured unless a test says otherwise.
ALL_POINTS = [
    "h1:eth0", "h3:eth0", "edge1:lan0", "edge1:lan1", "edge1:xfrm0", "edge1:wan0", "edge1:wan1",
    "core1:eth0", "core1:eth1", "core1:eth2", "core2:eth0", "core2:eth1", "core2:eth2",
    "edge2:wan0", "edge2:wan1", "edge2:lan0", "h2:eth0",
]


def spec(count: int = 1, src: IPv4Address = H1, dst: IPv4Address = H2) -> ProbeSpec:
    return ProbeSpec(RUN, PING, src, dst, count=count)


def T(k: int) -> int:
    """Probe k leaves h1 at T(k), 1 ms apart."""
    return T0 + k * MS


def observations(rows: list[dict[str, Any]], points: list[str] | None = None) -> Observations:
    """One row per dict (``point`` by name; unset columns 0); ``points``: what was captured."""
    points = list(ALL_POINTS if points is None else points)
    obs = Observations.empty(len(rows), points)
    for i, row in enumerate(rows):
        for key, value in row.items():
            obs.cols[key][i] = points.index(value) if key == "point" else value
    return obs


def echo(point: str, ts: int, seq: int, *, reply: bool = False, ttl: int = 64,
         src: IPv4Address | None = None, dst: IPv4Address | None = None) -> dict[str, Any]:
    """A tagged ICMP echo request (or reply) in the clear."""
    a, b = (H2, H1) if reply else (H1, H2)
    src, dst = src or a, dst or b
    return {"point": point, "ts_ns": ts, "ipver": 4, "src": int(src), "dst": int(dst), "proto": 1, "ttl": ttl,
            "cls": PacketClass.ECHO_REPLY if reply else PacketClass.ECHO_REQUEST,
            "icmp_type": 0 if reply else 8, "tag_kind": PING, "tag_run": RUN, "tag_seq": seq}


def esp(point: str, ts: int, esp_seq: int, *, reply: bool = False, src: IPv4Address | None = None,
        dst: IPv4Address | None = None, sport: int = 0, dport: int = 0) -> dict[str, Any]:
    """An ESP packet of tunnel t12: edge1 → edge2 (requests, SPI_12) or back (replies, SPI_21).
    Ports given: ESP in UDP."""
    a, b = (EDGE2_WAN, EDGE1_WAN) if reply else (EDGE1_WAN, EDGE2_WAN)
    src, dst = src or a, dst or b
    return {"point": point, "ts_ns": ts, "ipver": 4, "src": int(src), "dst": int(dst), "ttl": 64,
            "proto": 17 if sport else 50, "cls": PacketClass.ESP, "sport": sport, "dport": dport,
            "udp_encap": bool(sport), "spi": SPI_21 if reply else SPI_12, "esp_seq": esp_seq}


def time_exceeded(point: str, ts: int, seq: int, sender: IPv4Address, *, src: IPv4Address = H1,
                  dst: IPv4Address = H2) -> dict[str, Any]:
    """ICMP time exceeded from ``sender`` back to ``src``, quoting tagged echo request ``seq``
    (on an ICMP error the tag columns describe the quoted packet)."""
    return {"point": point, "ts_ns": ts, "ipver": 4, "src": int(sender), "dst": int(src), "proto": 1, "ttl": 64,
            "cls": PacketClass.ICMP_ERROR, "icmp_type": 11, "icmp_code": 0,
            "inner_src": int(src), "inner_dst": int(dst), "inner_proto": 1, "inner_id": icmp_id_for(RUN),
            "inner_seq": seq,
            "tag_kind": PING, "tag_run": RUN, "tag_seq": seq}


def along(hops: list[tuple[str, str]], t: int, seq: int, esp_seq: int, which: range | list[int] | None = None,
          *, reply: bool = False) -> list[dict[str, Any]]:
    """Probe ``seq`` as the given hops of a path see it (hop h at t + h·10 µs): the echo in the
    clear (TTL 64 until the first router, one lower after each), ESP ``esp_seq`` on the tunnel hops."""
    out = []
    for h in range(len(hops)) if which is None else which:
        point, form = hops[h]
        ts = t + h * HOP_NS
        if form == "clear":
            out.append(echo(point, ts, seq, reply=reply, ttl=_ttl(hops, h)))
        else:
            out.append(esp(point, ts, esp_seq, reply=reply))
    return out


def _ttl(hops: list[tuple[str, str]], h: int) -> int:
    """The inner TTL at hop h: each node forwarding the cleartext (entering by one point, leaving
    by another of the same node) takes one off; the ESP hops carry the inner packet untouched."""
    ttl = 64
    for i in range(1, h + 1):
        a, b = hops[i - 1][0].split(":")[0], hops[i][0].split(":")[0]
        if a == b and hops[i][1] == "clear" and hops[i - 1][1] == "clear":
            ttl -= 1
    return ttl


def request(k: int, which: range | list[int] | None = None) -> list[dict[str, Any]]:
    """Request probe k (ESP seq 101 + k) on the request path."""
    return along(REQUEST_HOPS, T(k), k, 101 + k, which)


def reply(k: int, which: range | list[int] | None = None) -> list[dict[str, Any]]:
    """Its echo reply, 500 µs after it left h1 (ESP seq 201 + k of the reply SA)."""
    return along(REPLY_HOPS, T(k) + 500 * US, k, 201 + k, which, reply=True)
