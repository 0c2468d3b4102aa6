"""A small site-to-site topology for the analysis unit tests, and a row builder for
hand-made :class:`Observations`.

    a ── gwa ══ r ══ gwb ── b          (══: ESP of tunnel "ab")

``gwa`` is a route-based tunnel end (interface ``ipsec0``), ``gwb`` a policy-based one,
so the request path has every edge kind: wire, forward (in the clear at gwa, as ESP at
r), encap and decap. The hop lists below are written by hand, not computed.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from tracer.model.direction import Direction
from tracer.model.observations import Observations, PacketClass
from tracer.model.path import ExpectedPath, expected_path
from tracer.model.tag import ProbeKind
from tracer.model.topology import Topology

A, B = IPv4Address("10.1.0.10"), IPv4Address("10.2.0.10")
GWA_WAN, GWB_WAN = IPv4Address("203.0.113.1"), IPv4Address("198.51.100.1")
SPI_AB, SPI_BA = 0xC0000001, 0xC0000002  # the SPI gwb receives on (requests), gwa (replies)
RUN = 0x5EED0042
PING = int(ProbeKind.PING)

TOPOLOGY: dict[str, Any] = {
    "name": "minisite",
    "nodes": {
        "a": {"role": "host",
              "interfaces": {"eth0": {"addresses": ["10.1.0.10/24"]}},
              "routes": [{"dst": "default", "via": "10.1.0.1", "dev": "eth0"}]},
        "gwa": {"role": "gateway",
                "interfaces": {"lan0": {"addresses": ["10.1.0.1/24"]},
                               "wan0": {"addresses": ["203.0.113.1/24"], "role": "wan"},
                               "ipsec0": {"role": "tunnel"}},
                "routes": [{"dst": "10.2.0.0/24", "dev": "ipsec0"},
                           {"dst": "default", "via": "203.0.113.254", "dev": "wan0"}]},
        "r": {"role": "router",
              "interfaces": {"eth0": {"addresses": ["203.0.113.254/24"], "role": "wan"},
                             "eth1": {"addresses": ["198.51.100.254/24"], "role": "wan"}}},
        "gwb": {"role": "gateway",
                "interfaces": {"wan0": {"addresses": ["198.51.100.1/24"], "role": "wan"},
                               "lan0": {"addresses": ["10.2.0.1/24"]}},
                "routes": [{"dst": "default", "via": "198.51.100.254", "dev": "wan0"}]},
        "b": {"role": "host",
              "interfaces": {"eth0": {"addresses": ["10.2.0.10/24"]}},
              "routes": [{"dst": "default", "via": "10.2.0.1", "dev": "eth0"}]},
    },
    "links": [{"ends": ["a:eth0", "gwa:lan0"]}, {"ends": ["gwa:wan0", "r:eth0"]},
              {"ends": ["r:eth1", "gwb:wan0"]}, {"ends": ["gwb:lan0", "b:eth0"]}],
    "tunnels": [{"name": "ab", "encapsulation": "udp",
                 "left": {"node": "gwa", "address": "203.0.113.1", "interface": "ipsec0",
                          "subnets": ["10.1.0.0/24"], "spi_in": SPI_BA},
                 "right": {"node": "gwb", "address": "198.51.100.1",
                           "subnets": ["10.2.0.0/24"], "spi_in": SPI_AB}}],
}

# (point, form) of the request a → b and the reply b → a.
REQUEST_HOPS = [
    ("a:eth0", "clear"), ("gwa:lan0", "clear"), ("gwa:ipsec0", "clear"),
    ("gwa:wan0", "esp"), ("r:eth0", "esp"), ("r:eth1", "esp"), ("gwb:wan0", "esp"),
    ("gwb:lan0", "clear"), ("b:eth0", "clear"),
]
REQUEST_EDGES = ["wire", "forward", "encap", "wire", "forward", "wire", "decap", "wire"]
REPLY_HOPS = [
    ("b:eth0", "clear"), ("gwb:lan0", "clear"),
    ("gwb:wan0", "esp"), ("r:eth1", "esp"), ("r:eth0", "esp"), ("gwa:wan0", "esp"),
    ("gwa:ipsec0", "clear"), ("gwa:lan0", "clear"), ("a:eth0", "clear"),
]
REPLY_EDGES = ["wire", "encap", "wire", "forward", "wire", "decap", "forward", "wire"]
POINTS = [p for p, _ in REQUEST_HOPS]
HOP_NS = 10_000  # a packet moves one hop every 10 µs in these tests


def topology() -> Topology:
    return Topology.from_dict(TOPOLOGY, "minisite.toml")


def path(direction: Direction = Direction.REQUEST) -> ExpectedPath:
    topo = topology()
    if direction == Direction.REQUEST:
        return expected_path(topo, A, B)
    return expected_path(topo, B, A)


def observations(rows: list[dict[str, int]], points: list[str] | None = None) -> Observations:
    """Observations with one row per dict (``point`` given by name; unset columns 0)."""
    points = list(POINTS if points is None else points)
    obs = Observations.empty(len(rows), points)
    for i, row in enumerate(rows):
        for key, value in row.items():
            obs.cols[key][i] = points.index(value) if key == "point" else value
    return obs


def echo(point: str, ts: int, seq: int, *, reply: bool = False, run: int = RUN, kind: int = PING) -> dict[str, Any]:
    """A tagged ICMP echo request (or reply) in the clear."""
    src, dst = (B, A) if reply else (A, B)
    return {"point": point, "ts_ns": ts, "ipver": 4, "src": int(src), "dst": int(dst), "proto": 1,
            "cls": PacketClass.ECHO_REPLY if reply else PacketClass.ECHO_REQUEST,
            "icmp_type": 0 if reply else 8, "tag_kind": kind, "tag_run": run, "tag_seq": seq}


def udp(point: str, ts: int, src: IPv4Address = A, dst: IPv4Address = B) -> dict[str, Any]:
    """Untagged background traffic (inside the SA's selectors by default)."""
    return {"point": point, "ts_ns": ts, "ipver": 4, "src": int(src), "dst": int(dst), "proto": 17,
            "cls": PacketClass.UDP, "sport": 5000, "dport": 9}


def esp(point: str, ts: int, esp_seq: int, *, spi: int = SPI_AB, src: IPv4Address = GWA_WAN,
        dst: IPv4Address = GWB_WAN) -> dict[str, Any]:
    """An ESP-in-UDP packet of the request SA (by default)."""
    return {"point": point, "ts_ns": ts, "ipver": 4, "src": int(src), "dst": int(dst), "proto": 17,
            "cls": PacketClass.ESP, "sport": 4500, "dport": 4500, "udp_encap": True, "spi": spi, "esp_seq": esp_seq}


def request_rows(t: int, seq: int, esp_seq: int, hops: range | list[int] | None = None) -> list[dict[str, Any]]:
    """Request probe ``seq`` sent at ``t`` as every (given) hop of the request path sees it:
    the echo in the clear, ESP sequence ``esp_seq`` on the tunnel hops; hop h at t + h·10 µs."""
    return _along(REQUEST_HOPS, False, t, seq, esp_seq, hops)


def reply_rows(t: int, seq: int, esp_seq: int, hops: range | list[int] | None = None) -> list[dict[str, Any]]:
    """The same for the echo reply b → a (ESP of the reply SA, gwb → gwa)."""
    return _along(REPLY_HOPS, True, t, seq, esp_seq, hops)


def _along(path_hops: list[tuple[str, str]], reply: bool, t: int, seq: int, esp_seq: int,
           hops: range | list[int] | None) -> list[dict[str, Any]]:
    out = []
    for h in range(len(path_hops)) if hops is None else hops:
        point, form = path_hops[h]
        ts = t + h * HOP_NS
        if form == "clear":
            out.append(echo(point, ts, seq, reply=reply))
        elif reply:
            out.append(esp(point, ts, esp_seq, spi=SPI_BA, src=GWB_WAN, dst=GWA_WAN))
        else:
            out.append(esp(point, ts, esp_seq))
    return out
