"""The pure parts of recording a live trace: which sniffer failures the network explains (a
finding) and which are tracer's own environment (exit 4), and what the capture snapshot says."""

from __future__ import annotations

from tracer.lab import layout
from tracer.model.evidence import EVENTS, Counter, Snapshot
from tracer.model.netstate import LiveInterface, NodeState
from tracer.run.record import capture_failures, network_explains, tunnel_spis

TOPO = layout.topology("t")


def test_a_down_or_missing_interface_explains_a_sniffer_that_did_not_start():
    east = NodeState("east-gw", (LiveInterface("wan0", 2, False, False, "DOWN"), LiveInterface("lan0", 3, True, True,
                                                                                              "UP")), (), ())
    states = {"east-gw": east}
    assert network_explains(states, "east-gw:wan0")  # down
    assert network_explains(states, "east-gw:ipsec0")  # gone (a dead kernel-libipsec charon)
    assert not network_explains(states, "east-gw:lan0")  # up: something else is wrong (tcpdump, a key)
    assert not network_explains(states, "west-gw:wan0")  # the node could not be read: no excuse either


def test_capture_failures_become_one_snapshot_per_node():
    snaps = capture_failures(TOPO, {
        "east-gw:wan0": "sniffer on east-gw:wan0 did not start: tcpdump: wan0: That device is not up"})
    assert snaps == [Snapshot("capture", "east-gw", EVENTS,
                              notes=("east-gw:wan0 not captured: tcpdump: wan0: That device is not up",))]


def test_tunnel_spis_come_from_the_daemons_and_the_topology():
    sa = Counter("x", "sa", "CHILD_SA x", 0, spi=0xC0FFEE01, way="in")
    assert tunnel_spis(TOPO, [Snapshot("strongswan", "west-gw", counters=(sa,))]) >= {0xC0FFEE01}
