"""Explain on hand-built snapshots: only what grew in proportion at the located hop is cited."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from tracer.analysis.explain import explain, uncaptured
from tracer.model.direction import Direction
from tracer.model.evidence import AFTER, BEFORE, EVENTS, Counter, Drop, Evidence, Snapshot
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
    assert f.reason == "east-gw:ipsec0 is down (operstate DOWN)"


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


def drop(reason: str, node: str, dev: str | None, seq: int | None = None, esp: tuple[int, int] | None = None,
         function: str = "nft_do_chain") -> Drop:
    return Drop(reason, 1, function, dev, 4026531840, node, IPv4Address("198.18.1.1"), IPv4Address("198.18.2.1"),
                1 if seq is not None else 17, 0, run=0x5EED if seq is not None else None, seq=seq,
                icmp_type=8 if seq is not None else None, spi=esp[0] if esp else None, esp_seq=esp[1] if esp else None)


def events(node: str, *drops: Drop, unavailable: str | None = None) -> list[Snapshot]:
    return [Snapshot("dropreasons", node, EVENTS, drops=drops, unavailable=unavailable)]


def test_kernel_drops_of_the_probes_are_the_strongest_evidence_and_name_the_rule():
    f = run(lost("router:eth0", "router:eth1", "forward"),
            snaps("nft", "router", [rule(5)], [rule(8)]),
            events("router", *(drop("NETFILTER_DROP", "router", "eth0", esp=(0x9CAC2A24, s)) for s in (4, 5, 6))))
    assert f.evidence[0] == "router: kernel dropped 3/3 (NETFILTER_DROP in nft_do_chain, dev eth0)"
    assert f.reason == ('router: kernel dropped 3/3 (NETFILTER_DROP in nft_do_chain, dev eth0): '
                        'nft rule "inet tracer_fault forward udp dport 4500 drop" +3 packets')


def test_a_drop_reason_is_explained_and_other_probes_or_directions_are_not_counted():
    ours = [drop("OTHERHOST", "east-gw", "wan0", seq=s, function="ip_rcv_core") for s in (0, 1)]
    theirs = [drop("OTHERHOST", "east-gw", "wan0", seq=7, function="ip_rcv_core"),  # not one of the finding's
              replace(ours[0], icmp_type=0)]  # the reply with the same seq: the other direction
    f = run(lost("east-gw:wan0", "east-gw:ipsec0", "decap", "likely: ESP arrived but nothing came out"),
            events("east-gw", *ours, *theirs), events("router", drop("OTHERHOST", "router", "eth1", seq=2)))
    assert f.evidence == ("east-gw: kernel dropped 2/3 (OTHERHOST in ip_rcv_core, dev wan0)",)
    assert f.reason == ("east-gw: kernel dropped 2/3 (OTHERHOST in ip_rcv_core, dev wan0): "
                        "the frames were not addressed to east-gw's MAC")


def test_drop_reasons_unavailable_are_said_once():
    why = "needs root (BPF and the skb:kfree_skb tracepoint): run tracer with sudo"
    f = run(lost("router:eth0", "router:eth1", "forward"), events("router", unavailable=why),
            snaps("nft", "router", [rule(5)], [rule(8)]))
    assert f.evidence[-1] == f"kernel drop reasons unavailable ({why})"
    assert f.reason.startswith("router's firewall dropped them")


def test_a_point_not_captured_because_its_link_is_down_is_where_they_were_lost():
    f = Finding(REQ, Outcome.INCONCLUSIVE, 3, 3, "somewhere between router:eth1 and east-gw:wan0", "router:eth1",
                "east-gw:wan0", None, "east-gw:wan0 was not captured", (0, 1, 2))
    capture = Snapshot("capture", "east-gw", EVENTS, notes=("east-gw:wan0 not captured: tcpdump: That device is not up",))
    out = run(f, snaps("links", "east-gw", [], [], links={"wan0": "DOWN"}), [capture])
    assert out.outcome == Outcome.LOST and out.where == "on the wire router:eth1 → east-gw:wan0"
    assert out.reason == "east-gw:wan0 is down (operstate DOWN)"
    assert uncaptured(Evidence.of([capture])) == ["east-gw:wan0 not captured: tcpdump: That device is not up"]


def test_a_link_without_carrier_blames_its_wire_peer_that_is_down():
    f = run(lost("router:eth0", "router:eth1", "forward"),
            snaps("links", "router", [], [], links={"eth1": "DOWN"}),
            snaps("links", "east-gw", [], [], links={"wan0": "DOWN"}))
    assert f.reason == "east-gw:wan0 is down (operstate DOWN): router:eth1, its link peer, is DOWN"
    assert f.evidence == ("router: eth1 is DOWN", "east-gw: wan0 is DOWN")


def test_ike_responses_lost_where_no_daemon_listens():
    f = Finding(Direction.REPLY, Outcome.LOST, 3, 3, "at east-gw", "east-gw:wan0", None, None,
                "likely: east-gw did not answer", (0, 1, 2))
    out = run(f, snaps("sockets", "east-gw", [], []))
    assert out.reason == "east-gw's IKE daemon is not running: nothing listens on UDP 500 or 4500 in its namespace"
    alive = run(f, snaps("sockets", "east-gw", [], [], lines=("udp 0.0.0.0:500 charon pid 7",)))
    assert alive == f


def test_a_leak_past_a_tunnel_end_without_ike_daemon_names_the_dead_daemon():
    f = Finding(REQ, Outcome.LOST, 3, 3, "inside router after arriving on eth0", "router:eth0", None, "forward",
                "no SA or policy on west-gw covered it: is its IKE SA up?", (0, 1, 2),
                divergence="left west-gw by wan0 in the clear instead of into ipsec0")
    out = run(f, snaps("sockets", "east-gw", [], []),
              snaps("sockets", "router", [], [], notes=("not a tunnel end: its IKE sockets are not read",)))
    assert out.evidence == ("east-gw: nothing listens on UDP 500 or 4500 in its namespace (ss -ulnp)",)
    assert out.reason == ("no SA or policy on west-gw covered it: is its IKE SA up?; east-gw's IKE daemon is not "
                          "running (nothing listens on UDP 500 or 4500 in its namespace): no SA can be negotiated")
    alive = run(f, snaps("sockets", "east-gw", [], [], lines=("udp 0.0.0.0:500 charon pid 7",)))
    assert alive == f
