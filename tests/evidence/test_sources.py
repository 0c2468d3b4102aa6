"""Evidence sources on real command output: namespaces created here (``trc-ev-*``), real ``ip``,
``nft`` and /proc, then the registry's before/after with a node it cannot read."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tracer import evidence
from tracer.evidence import links, nft, snmp
from tracer.model.evidence import ProbeMatch
from tracer.model.topology import Interface, Node, Topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root (CI runs as root)")

RULES = """table inet trc_ev {
  chain output {
    type filter hook output priority filter; policy accept;
    ip daddr 10.99.0.2 udp dport 4500 counter drop comment "ESP in UDP"
    ip daddr 10.99.0.2 counter accept
  }
}
"""


def sh(ns: str, *argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True, check=check)


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"trc-ev-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        sh(name, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        for cmd in (["addr", "add", "10.99.0.1/24", "dev", "v0"], ["addr", "add", "10.99.0.2/24", "dev", "v1"],
                    ["link", "set", "v0", "up"], ["link", "set", "v1", "up"], ["link", "set", "lo", "up"]):
            sh(name, "ip", *cmd)
        sh(name, "nft", "-f", "-", stdin=RULES)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def node(ns: str) -> Node:
    return Node("box", "router", {"v0": Interface("box", "v0")}, netns=ns)


def topo(ns: str) -> Topology:
    return Topology("t", {"box": node(ns), "gone": Node("gone", "host", {"eth0": Interface("gone", "eth0")},
                                                          netns="trc-ev-missing")}, (), ())


def send_udp(ns: str, n: int) -> None:
    code = ("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({n}):\n    try:\n        s.sendto(b'x', ('10.99.0.2', 4500))\n"
            "    except PermissionError:\n        pass\n")  # EPERM: the drop rule said no
    sh(ns, "python3", "-c", code, check=False)


def value(snap, key):
    return next(c.value for c in snap.counters if c.key == key)


def test_nft_rule_counters_with_their_text(ns):
    before = nft.read(topo(ns), node(ns))
    send_udp(ns, 3)
    after = nft.read(topo(ns), node(ns))
    (drop,) = [c for c in after.counters if c.drop]
    assert drop.text == 'nft rule "inet trc_ev output ip daddr 10.99.0.2 udp dport 4500 drop" (ESP in UDP)'
    assert value(after, drop.key) - value(before, drop.key) == 3
    assert [c.drop for c in after.counters] == [True, False]  # the accept rule is context, not a drop


def test_links_counters_and_state(ns):
    snap = links.read(topo(ns), node(ns))
    assert snap.links["v0"] == "UP" and snap.links["lo"] == "UNKNOWN"
    sh(ns, "ip", "link", "set", "v1", "down")
    snap = links.read(topo(ns), node(ns))
    assert snap.links["v0"] == "LOWERLAYERDOWN" and snap.links["v1"] == "DOWN"
    kinds = {c.key: c.drop for c in snap.counters if c.iface == "v0"}
    assert kinds == {"v0:rx_packets": False, "v0:rx_dropped": True, "v0:rx_errors": True,
                     "v0:tx_packets": False, "v0:tx_dropped": True, "v0:tx_errors": True}


def test_snmp_counters_are_the_namespaces_own(ns):
    before = snmp.read(topo(ns), node(ns))
    for _ in range(2):
        sh(ns, "ping", "-c1", "-W1", "203.0.113.9", check=False)  # no route in this namespace
    after = snmp.read(topo(ns), node(ns))
    assert value(after, "Ip OutNoRoutes") - value(before, "Ip OutNoRoutes") == 2
    no_route = next(c for c in after.counters if c.key == "IpExt InNoRoutes")
    assert no_route.drop and no_route.text == "IpExt InNoRoutes (no route)"
    assert any(c.key == "TcpExt IPReversePathFilter" and c.drop for c in after.counters)
    xfrm = os.path.exists("/proc/net/xfrm_stat")
    assert any(c.key.startswith("Xfrm ") for c in after.counters) == xfrm
    assert bool(after.notes) != xfrm  # said when the kernel has no xfrm statistics


def test_registry_never_fails_and_says_why(ns):
    snaps = evidence.before(topo(ns), ["box", "gone"])
    by = {(s.source, s.node): s for s in snaps}
    assert {s for s, _ in by} == {m.NAME for m in evidence.snapshot_sources()}
    assert by[("nft", "box")].unavailable is None and by[("nft", "box")].counters
    assert "trc-ev-missing" in (by[("nft", "gone")].unavailable or "")
    assert by[("strongswan", "box")].unavailable == "no ike_vici for this node in the topology"
    started = evidence.start(topo(ns), ["box"], ProbeMatch(0x5EED0D14))
    evidence.ready(started, time.monotonic() + 20)
    drops, log = evidence.stop(topo(ns), started)
    assert (log.source, log.unavailable) == ("ikelog", "no ike_log for this node in the topology")
    assert (drops.source, drops.node, drops.unavailable, drops.drops) == ("dropreasons", "box", None, ())
