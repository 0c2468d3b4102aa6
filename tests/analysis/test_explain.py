"""Explain on hand-built snapshots: only what grew in proportion at the located hop is cited."""

from __future__ import annotations

from ipaddress import IPv4Address

from tracer.analysis.explain import explain
from tracer.model.direction import Direction
from tracer.model.evidence import AFTER, BEFORE, Counter, Evidence, Snapshot
from tracer.model.flowgraph import EdgeKind
from tracer.model.path import Esp, ExpectedPath, Hop
from tracer.model.verdict import Finding, Outcome

REQ = Direction.REQUEST
ESP = Esp("west-east", IPv4Address("198.18.1.1"), IPv4Address("198.18.2.1"), 0x9CAC2A24, True)


def path() -> ExpectedPath:
    hops = (Hop("west-gw:wan0", "west-gw", ESP), Hop("router:eth0", "router", ESP), Hop("router:eth1", "router", ESP),
            Hop("east-gw:wan0", "east-gw", ESP), Hop("east-gw:ipsec0", "east-gw"))
    edges = (EdgeKind.WIRE, EdgeKind.FORWARD, EdgeKind.WIRE, EdgeKind.DECAP)
    return ExpectedPath(IPv4Address("192.0.2.10"), IPv4Address("198.51.100.10"), hops, edges, True, "delivered")


def rule(value: int, text: str = 'nft rule "inet tracer_fault forward udp dport 4500 drop"', drop: bool = True) -> Counter:
    return Counter("nft inet tracer_fault forward 2", "rule", text, value, drop=drop)


def snaps(source: str, node: str, before: list[Counter], after: list[Counter], **kw) -> list[Snapshot]:
    return [Snapshot(source, node, BEFORE, tuple(before), **kw), Snapshot(source, node, AFTER, tuple(after), **kw)]


def lost(last: str, missed: str, edge: str, reason: str = "likely: router did not forward it") -> Finding:
    return Finding(REQ, Outcome.LOST, 3, 3, "somewhere", last, missed, edge, reason, (0, 1, 2))


def run(f: Finding, *groups: list[Snapshot]) -> Finding:
    (out,) = explain([f], {REQ: path()}, [], Evidence.of([s for g in groups for s in g]))
    return out


def test_a_drop_rule_that_counted_the_lost_probes_is_cited_in_place_of_the_guess():
    f = run(lost("router:eth0", "router:eth1", "forward"), snaps("nft", "router", [rule(5)], [rule(8)]))
    assert f.evidence == ('router: nft rule "inet tracer_fault forward udp dport 4500 drop" +3 packets',)
    assert f.reason == ("router's firewall dropped them: "
                        'nft rule "inet tracer_fault forward udp dport 4500 drop" +3 packets')


def test_counters_elsewhere_out_of_proportion_or_not_drops_are_left_out():
    f = lost("router:eth0", "router:eth1", "forward")
    out = run(f,
              snaps("nft", "east", [rule(0)], [rule(3)]),  # not at the located hop
              snaps("nft", "router", [rule(0)], [rule(1)]),  # grew less than the loss
              snaps("snmp", "router", [Counter("Ip InNoRoutes", "snmp", "Ip InNoRoutes", 0, drop=True)],
                    [Counter("Ip InNoRoutes", "snmp", "Ip InNoRoutes", 500, drop=True)]),  # far more: someone else's
              snaps("links", "router", [Counter("eth0:rx_packets", "link", "eth0 rx_packets", 0, iface="eth0")],
                    [Counter("eth0:rx_packets", "link", "eth0 rx_packets", 3, iface="eth0")]))  # not a drop
    assert out == f  # nothing moved that explains it: the guess stays "likely"
    assert out.reason.startswith("likely: ")


def test_snmp_and_link_state_at_the_edge_are_evidence():
    f = run(lost("east-gw:wan0", "east-gw:ipsec0", "decap", "likely: ESP arrived but nothing came out"),
            snaps("snmp", "east-gw", [Counter("IpExt InNoRoutes", "snmp", "IpExt InNoRoutes (no route)", 7, drop=True)],
                  [Counter("IpExt InNoRoutes", "snmp", "IpExt InNoRoutes (no route)", 10, drop=True)]),
            snaps("links", "east-gw", [], [], links={"ipsec0": "DOWN", "lan0": "DOWN"}))
    assert f.evidence == ("east-gw: ipsec0 is DOWN", "east-gw: IpExt InNoRoutes (no route) +3")
    assert f.reason == "east-gw:ipsec0 is DOWN (link state)"


def sa(value: int, unit: str, spi: int = 0x9CAC2A24) -> Counter:
    return Counter(f"west-east 0x{spi:08x} {unit}-in", "sa", f"CHILD_SA west-east SPI 0x{spi:08x}", value, unit=unit,
                   spi=spi, way="in")


def test_a_child_sa_that_counted_nothing_while_esp_arrived():
    before = [sa(1000, "bytes"), sa(10, "packets"), sa(0, "bytes", 0x1111), sa(0, "packets", 0x1111)]
    after = [sa(1000, "bytes"), sa(10, "packets"), sa(300, "bytes", 0x1111), sa(3, "packets", 0x1111)]
    f = run(lost("east-gw:wan0", "east-gw:ipsec0", "decap", "likely: ESP arrived but nothing came out"),
            snaps("strongswan", "east-gw", before, after),
            snaps("nft", "east-gw", [rule(0, 'nft rule "inet tracer_fault input udp dport 4500 drop"')],
                  [rule(3, 'nft rule "inet tracer_fault input udp dport 4500 drop"')]))
    # The path's SPI picks the SA; the firewall is cited first, the SA beside it.
    assert f.evidence == ('east-gw: nft rule "inet tracer_fault input udp dport 4500 drop" +3 packets',
                          "east-gw: CHILD_SA west-east SPI 0x9cac2a24 bytes in +0 while ESP arrived")
    assert f.reason.startswith("east-gw's firewall dropped them")


def test_no_child_sa_at_all():
    f = run(lost("east-gw:wan0", "east-gw:ipsec0", "decap", None), snaps("strongswan", "east-gw", [], []))
    assert (f.evidence, f.reason) == (("east-gw: no CHILD_SA installed (IKE daemon)",),
                                      "east-gw has no CHILD_SA (IKE daemon)")


def test_observations_in_the_reason_are_kept_and_the_guess_replaced():
    f = run(lost("router:eth0", "router:eth1", "forward", "the network said: ICMP; likely: router did not forward it"),
            snaps("nft", "router", [rule(0)], [rule(3)]))
    assert f.reason == ('the network said: ICMP; router\'s firewall dropped them: '
                        'nft rule "inet tracer_fault forward udp dport 4500 drop" +3 packets')


def test_unavailable_sources_are_said_and_unconfigured_ike_is_not():
    f = lost("router:eth0", "router:eth1", "forward")
    out = run(f, [Snapshot("nft", "router", BEFORE, unavailable="nft is not installed"),
                  Snapshot("nft", "router", AFTER, unavailable="nft is not installed"),
                  Snapshot("strongswan", "router", BEFORE, unavailable="no ike_vici for this node in the topology")])
    assert out.evidence == ("router: nft unavailable (nft is not installed)",)
    assert out.reason == f.reason


def test_ike_log_error_lines_during_the_trace():
    f = run(lost("west-gw:lan0", "west-gw:wan0", "encap", "likely: no SA"),
            [Snapshot("ikelog", "west-gw", "events", lines=("12:00:01 09[IKE] sending keep alive",
                                                            "12:00:02 11[NET] error writing to socket: Network is unreachable"))])
    assert f.evidence == ("west-gw: IKE daemon logged: 12:00:02 11[NET] error writing to socket: Network is unreachable",)


def test_delivered_findings_and_no_evidence_are_untouched():
    ok = Finding(REQ, Outcome.DELIVERED, 3, 3, "delivered to east")
    assert explain([ok], {REQ: path()}, [], Evidence.of(snaps("nft", "router", [rule(0)], [rule(3)]))) == [ok]
    f = lost("router:eth0", "router:eth1", "forward")
    assert explain([f], {REQ: path()}, [], None) == [f]
