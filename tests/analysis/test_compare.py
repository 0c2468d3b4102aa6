"""compare: hand-written sightings on the netsite paths (tests/analysis/netsite.py) → the
divergence from the expected path and the loop words, exactly as a verdict says them.

Request path h1 → h2 (``*`` ESP)::

    h1:eth0  edge1:lan0  edge1:xfrm0  edge1:wan0*  core1:eth0*  core1:eth1*  edge2:wan0*  edge2:lan0  h2:eth0

Reply path h2 → h1::

    h2:eth0  edge2:lan0  edge2:wan0*  core1:eth1*  core1:eth0*  edge1:wan0*  edge1:xfrm0  edge1:lan0  h1:eth0
"""

from __future__ import annotations

import pytest

from tests.analysis.netsite import H1, H2, T0, topology
from tracer.analysis.compare import divergence, leak_cause, loop_text
from tracer.analysis.observed import find_loop
from tracer.model.observed import Divergence, Form, Loop, Place, Seen
from tracer.model.path import ExpectedPath, expected_path

CLEAR, ESP = Form.CLEAR, Form.ESP
EXPECTED, LEAK, OFF, UNMAPPED = Place.EXPECTED, Place.LEAK, Place.OFF_PATH, Place.UNMAPPED
TOPO = topology()


def request_path() -> ExpectedPath:
    return expected_path(TOPO, H1, H2)


def reply_path() -> ExpectedPath:
    return expected_path(TOPO, H2, H1)


def seen(*steps: tuple[str, Form, Place] | tuple[str, Form, Place, int]) -> tuple[Seen, ...]:
    """Sightings 10 µs apart; TTL 64 unless given."""
    return tuple(Seen(s[0], T0 + i * 10_000, s[1], s[2], s[3] if len(s) > 3 else 64)  # type: ignore[misc]
                 for i, s in enumerate(steps))


START = (("h1:eth0", CLEAR, EXPECTED), ("edge1:lan0", CLEAR, EXPECTED))
TO_CORE1 = (*START, ("edge1:xfrm0", CLEAR, EXPECTED), ("edge1:wan0", ESP, EXPECTED), ("core1:eth0", ESP, EXPECTED))


def test_no_divergence_on_the_expected_path():
    assert divergence(TOPO, request_path(), seen(*TO_CORE1), None) is None


def test_leak_at_a_device_based_tunnel_end_names_its_device():
    s = seen(*START, ("edge1:wan0", CLEAR, LEAK), ("core1:eth0", CLEAR, LEAK))
    assert divergence(TOPO, request_path(), s, None) == Divergence(
        "leak", "edge1:lan0", "edge1:wan0", "left edge1 by wan0 in the clear instead of into xfrm0")


def test_leak_at_a_policy_based_tunnel_end_names_the_tunnel():
    s = seen(("h2:eth0", CLEAR, EXPECTED), ("edge2:lan0", CLEAR, EXPECTED), ("edge2:wan0", CLEAR, LEAK))
    assert divergence(TOPO, reply_path(), s, None) == Divergence(
        "leak", "edge2:lan0", "edge2:wan0", "left edge2 by wan0 in the clear instead of into tunnel t12")


def test_leak_that_rejoins_says_where():
    s = seen(*START, ("edge1:wan0", CLEAR, LEAK), ("core1:eth0", CLEAR, LEAK), ("core1:eth1", CLEAR, LEAK),
             ("edge2:wan0", CLEAR, LEAK), ("edge2:lan0", CLEAR, EXPECTED), ("h2:eth0", CLEAR, EXPECTED))
    assert divergence(TOPO, request_path(), s, None) == Divergence(
        "leak", "edge1:lan0", "edge1:wan0",
        "left edge1 by wan0 in the clear instead of into xfrm0, and rejoined the expected path at edge2:lan0",
        "edge2:lan0")


def test_other_interface_of_a_router_on_the_path():
    s = seen(*TO_CORE1, ("core1:eth2", ESP, OFF), ("core2:eth2", ESP, OFF))
    assert divergence(TOPO, request_path(), s, None) == Divergence(
        "off-path", "core1:eth0", "core1:eth2", "left core1 by eth2 instead of eth1")
    back = seen(("h2:eth0", CLEAR, EXPECTED), ("edge2:lan0", CLEAR, EXPECTED), ("edge2:wan0", ESP, EXPECTED),
                ("core1:eth1", ESP, EXPECTED), ("core1:eth2", ESP, OFF))
    assert divergence(TOPO, reply_path(), back, None) == Divergence(
        "off-path", "core1:eth1", "core1:eth2", "left core1 by eth2 instead of eth0")


def test_device_based_end_sending_out_another_wan_names_the_device_it_skipped():
    s = seen(*START, ("edge1:wan1", CLEAR, OFF), ("core2:eth0", CLEAR, OFF))
    assert divergence(TOPO, request_path(), s, None) == Divergence(
        "off-path", "edge1:lan0", "edge1:wan1", "left edge1 by wan1 instead of xfrm0")


def test_policy_based_end_sending_out_another_wan_names_its_real_exit():
    s = seen(("h2:eth0", CLEAR, EXPECTED), ("edge2:lan0", CLEAR, EXPECTED), ("edge2:wan1", CLEAR, OFF))
    assert divergence(TOPO, reply_path(), s, None) == Divergence(
        "off-path", "edge2:lan0", "edge2:wan1", "left edge2 by wan1 instead of wan0")


def test_a_node_the_expected_path_does_not_cross():
    # core1:eth2 not captured: the first sighting off the path is already on core2.
    s = seen(*TO_CORE1, ("core2:eth2", ESP, OFF))
    assert divergence(TOPO, request_path(), s, None) == Divergence(
        "off-path", "core1:eth0", "core2:eth2",
        "went through core2 (core2:eth2) after core1:eth0, which the expected path does not cross")
    # Nothing of the expected path saw it first: no "after".
    assert divergence(TOPO, request_path(), seen(("core2:eth0", CLEAR, OFF)), None) == Divergence(
        "off-path", None, "core2:eth0", "went through core2 (core2:eth0), which the expected path does not cross")


def test_the_wrong_form_at_a_point_of_the_path():
    s = seen(*START, ("edge1:xfrm0", ESP, OFF))
    assert divergence(TOPO, request_path(), s, None) == Divergence(
        "off-path", "edge1:lan0", "edge1:xfrm0", "crossed edge1:xfrm0 as esp where it should be in the clear")


def test_interface_the_topology_lacks():
    s = seen(*TO_CORE1, ("core1:eth9", ESP, UNMAPPED))
    assert divergence(TOPO, request_path(), s, None) == Divergence(
        "not-in-topology", "core1:eth0", "core1:eth9",
        "left core1 by eth9, which the topology does not have (expected: eth1)")
    # On a node the expected path does not cross, there is nothing to expect instead.
    s = seen(*START, ("edge1:wan1", CLEAR, OFF), ("core2:eth7", CLEAR, UNMAPPED))
    assert divergence(TOPO, request_path(), s, None).text == "left edge1 by wan1 instead of xfrm0"  # the first off
    s = seen(*START, ("core2:eth7", CLEAR, UNMAPPED))
    assert divergence(TOPO, request_path(), s, None) == Divergence(
        "not-in-topology", "edge1:lan0", "core2:eth7", "left core2 by eth7, which the topology does not have")


def test_a_loop_over_points_of_the_path_is_the_divergence():
    s = seen(("h1:eth0", CLEAR, EXPECTED, 64), ("edge1:lan0", CLEAR, EXPECTED, 64),
             ("edge1:lan0", CLEAR, EXPECTED, 63), ("h1:eth0", CLEAR, EXPECTED, 63),
             ("h1:eth0", CLEAR, EXPECTED, 62), ("edge1:lan0", CLEAR, EXPECTED, 62))
    loop = find_loop(s)
    assert loop == Loop(("h1", "edge1"), "h1:eth0", 3, 64, 62)
    assert divergence(TOPO, request_path(), s, loop) == Divergence(
        "loop", "edge1:lan0", "h1:eth0", "routing loop between h1 and edge1: seen 3 times on h1:eth0, TTL 64→62")


def test_a_loop_does_not_claim_a_rejoin_in_words():
    s = seen(*START, ("edge1:wan0", CLEAR, LEAK, 63), ("core1:eth0", CLEAR, LEAK, 63),
             ("core1:eth1", CLEAR, LEAK, 62), ("edge2:wan0", CLEAR, LEAK, 62), ("edge2:lan0", CLEAR, EXPECTED, 61),
             ("edge2:wan0", CLEAR, LEAK, 60), ("core1:eth1", CLEAR, LEAK, 60))
    loop = find_loop(s)
    assert loop == Loop(("core1", "edge2"), "core1:eth1", 2, 62, 60)
    assert divergence(TOPO, request_path(), s, loop) == Divergence(
        "leak", "edge1:lan0", "edge1:wan0", "left edge1 by wan0 in the clear instead of into xfrm0", "edge2:lan0")


def test_find_loop_ignores_esp_and_single_ttls():
    s = seen(*TO_CORE1, ("core1:eth0", ESP, EXPECTED), ("core1:eth1", ESP, EXPECTED))
    assert find_loop(s) is None
    same_ttl = seen(*START, ("edge1:lan0", CLEAR, EXPECTED))  # seen twice with one TTL: a duplicate capture
    assert find_loop(same_ttl) is None


@pytest.mark.parametrize(("loop", "text"), [
    (Loop(("core1",), "core1:eth2", 3, 5, 3), "routing loop at core1: seen 3 times on core1:eth2, TTL 5→3"),
    (Loop(("core1", "core2"), "core2:eth2", 31, 62, 2),
     "routing loop between core1 and core2: seen 31 times on core2:eth2, TTL 62→2"),
    (Loop(("core1", "core2"), "core1:eth2", 62, 62, 1, "203.0.113.1"),
     "routing loop between core1 and core2: seen 62 times on core1:eth2, TTL 62→1, ICMP time exceeded from 203.0.113.1"),
    (Loop(("edge1", "core1", "core2"), "edge1:wan0", 20, 63, 6, "192.0.2.2"),
     "routing loop between edge1 and core1 and core2: seen 20 times on edge1:wan0, TTL 63→6, "
     "ICMP time exceeded from 192.0.2.2"),
])
def test_loop_text(loop: Loop, text: str):
    assert loop_text(loop) == text


@pytest.mark.parametrize(("keying", "sa_seen", "cause"), [
    ("ike", False, "no SA or policy on edge1 covered 198.18.1.10 → 198.18.2.10, which tunnel t12 should carry: "
                   "is its IKE SA up? (swanctl --list-sas on edge1)"),
    ("manual", False, "no SA or policy on edge1 covered 198.18.1.10 → 198.18.2.10, which tunnel t12 should carry: "
                      "are its SAs and policies installed? (ip xfrm state; ip xfrm policy on edge1)"),
    ("manual", True, "tunnel t12's SAs were up (its ESP crossed the network during the run), yet edge1 sent "
                     "198.18.1.10 → 198.18.2.10 around it: a route or policy rule that wins over the tunnel's "
                     "(ip rule; ip route show table all on edge1)"),
])
def test_leak_cause(keying: str, sa_seen: bool, cause: str):
    topo = topology(keying)
    assert leak_cause(topo, expected_path(topo, H1, H2), "edge1:wan0", sa_seen) == cause


def test_no_leak_cause_where_no_tunnel_is_expected():
    assert leak_cause(TOPO, request_path(), "edge1:lan0", False) is None
    assert leak_cause(TOPO, request_path(), "core2:eth0", True) is None
