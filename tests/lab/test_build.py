"""Building the lab's network from its Topology, for real (namespaces trc-t4-*, no charon), and the netns helpers it uses."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest

from tracer import netns
from tracer.errors import EnvironmentProblem
from tracer.lab import build, layout
from tracer.model.topology import Topology

LAB = "t4"


@pytest.mark.lab
def test_netns_helpers() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ns = "trc-t9n-a"
    netns.delete(ns)
    home = os.readlink("/proc/thread-self/ns/net")
    netns.add(ns)
    try:
        assert netns.exists(ns) and ns in netns.list_with_prefix("trc-t9n-")
        netns.write_sysctls(ns, {"net.ipv4.ip_forward": "1"})
        assert netns.ns_run(ns, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
        with netns.netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(OSError):  # lo is down and there is no route: a fresh namespace
                sock.connect(("192.0.2.1", 9))
        assert os.readlink("/proc/thread-self/ns/net") == home  # we came back
        with pytest.raises(EnvironmentProblem, match="failed"):
            netns.ns_run(ns, ["false"])
    finally:
        netns.delete(ns)
    assert not netns.exists(ns)
    with pytest.raises(EnvironmentProblem, match="does not exist"):
        netns.netns_socket(ns)


@pytest.fixture
def network() -> Iterator[Topology]:
    """The lab's network without strongSwan: namespaces, links, addresses, routes."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = layout.topology(LAB)
    prefix = layout.ns_prefix(LAB)

    def remove() -> None:
        netns.ip_batch([f"netns delete {ns}" for ns in netns.list_with_prefix(prefix)], check=False)

    remove()
    try:
        build.add_namespaces(n.netns for n in topo.nodes.values() if n.netns)
        build.wire(topo)
        yield topo
    finally:
        remove()
    assert netns.list_with_prefix(prefix) == []


def _ping(ns: str, dst: str) -> bool:
    return netns.ns_run(ns, ["ping", "-c", "1", "-W", "1", dst], check=False).returncode == 0


@pytest.mark.lab
def test_wire_builds_what_the_topology_says(network: Topology) -> None:
    if not shutil.which("ping"):
        pytest.fail("ping not installed: apt-get install iputils-ping")
    ns = {name: n.netns or "" for name, n in network.nodes.items()}
    assert sorted(netns.list_with_prefix(layout.ns_prefix(LAB))) == sorted(ns.values())
    # Static routes only: the routes into ipsec0 are charon's (table 220), and so is ipsec0 itself.
    assert set(build.routes(ns["west-gw"])) == {"default via 198.18.1.254 dev wan0", "192.0.2.0/24 dev lan0",
                                               "198.18.1.0/24 dev wan0"}
    assert build.routes(ns["router"]) == ["198.18.1.0/24 dev eth0", "198.18.2.0/24 dev eth1"]
    assert "ipsec0" not in netns.ip(["-o", "link", "show"], ns=ns["west-gw"]).stdout
    for name, n in network.nodes.items():
        forwarding = netns.ns_run(ns[name], ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()
        assert forwarding == ("1" if layout.forwards(n) else "0"), name
        assert netns.ns_run(ns[name], ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]).stdout.strip() == "1"
    # Every link carries packets: each host reaches its gateway's far side, the router both gateways.
    assert _ping(ns["west"], "198.18.1.1") and _ping(ns["east"], "198.18.2.1")
    assert _ping(ns["router"], "198.18.1.1") and _ping(ns["router"], "198.18.2.1")
    # Without the tunnel west's packets to east die at the router, which has no route there.
    assert not _ping(ns["west"], "198.51.100.10")
