"""The parsers of ``tracer check``'s evidence sources, on real output of sysctl files, ``ss``,
``nft`` and ``swanctl`` (copied from the lab), and one source read in a namespace of our own."""

from __future__ import annotations

import pytest

from tests.own_netns import own_namespaces
from tracer.evidence import nft, sockets, strongswan, sysctl
from tracer.model.checkstate import Unavailable
from tracer.model.topology import Interface, Node

SS = """\
UNCONN 0      0      0.0.0.0:4500 0.0.0.0:* users:(("charon",pid=13373,fd=14))
UNCONN 0      0      0.0.0.0:500  0.0.0.0:* users:(("charon",pid=13373,fd=13))
UNCONN 0      0         [::]:4500    [::]:* users:(("charon",pid=13373,fd=12))
UNCONN 0      0      127.0.0.53%lo:53  0.0.0.0:*
"""
NFT_JSON = {"nftables": [
    {"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "tracer_fault", "handle": 1}},
    {"chain": {"family": "inet", "table": "tracer_fault", "name": "forward", "handle": 1, "type": "filter",
               "hook": "forward", "prio": 0, "policy": "accept"}},
    {"rule": {"family": "inet", "table": "tracer_fault", "chain": "forward", "handle": 2, "comment": "ESP in UDP",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 4500}},
                       {"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]}}]}
NFT_TEXT = """\
table inet tracer_fault { # handle 1
\tchain forward { # handle 1
\t\ttype filter hook forward priority filter; policy accept;
\t\tudp dport 4500 @th,64,32 != 0x0 counter packets 3 bytes 492 drop comment "ESP in UDP" # handle 2
\t}
}
"""
SWANCTL = ("list-sa event {west-east {uniqueid=3 version=2 state=ESTABLISHED local-host=198.18.1.1 local-port=4500 "
           "remote-host=198.18.2.1 remote-port=4500 child-sas {west-east-2 {name=west-east uniqueid=2 reqid=1 "
           "state=INSTALLED mode=TUNNEL protocol=ESP encap=yes spi-in=bed3c109 spi-out=262cb70d encr-alg=AES_GCM_16 "
           "local-ts=[192.0.2.0/24] remote-ts=[198.51.100.0/24]}}}}\nlist-sas reply {}\n")


def test_sysctl_lines() -> None:
    s = sysctl.parse("/proc/sys/net/ipv4/ip_forward:1\n/proc/sys/net/ipv4/conf/wan0/rp_filter:1\n"
                     "/proc/sys/net/ipv4/conf/all/rp_filter:2\ngrep: x: No such file\n")
    assert s.get("net.ipv4.ip_forward") == 1 and s.rp_filter("wan0") == 2 and s.rp_filter("nope") == 2


def test_ss_lines() -> None:
    socks = sockets.parse(SS)
    assert [(s.address, s.port, s.process, s.pid) for s in socks] == [
        ("0.0.0.0", 4500, "charon", 13373), ("0.0.0.0", 500, "charon", 13373), ("::", 4500, "charon", 13373),
        ("127.0.0.53", 53, None, None)]


def test_nft_json_and_text() -> None:
    rs = nft.parse(NFT_JSON, NFT_TEXT)
    assert [(c.name, c.hook, c.policy) for c in rs.chains] == [("forward", "forward", "accept")]
    (rule,) = rs.rules
    assert rule.text == "udp dport 4500 @th,64,32 != 0x0 drop" and rule.comment == "ESP in UDP"
    assert rule.expr[-1] == {"drop": None}


def test_swanctl_raw() -> None:
    (sa,) = strongswan.ike_sas(SWANCTL)
    assert (sa.name, sa.state, sa.local) == ("west-east", "ESTABLISHED", "198.18.1.1")
    (child,) = sa.children
    assert (child.spi_in, child.spi_out, child.encap, child.local_ts) == (0xBED3C109, 0x262CB70D, True, ("192.0.2.0/24",))
    assert strongswan.state(Node("gw", "gateway", {}), None) == Unavailable(strongswan.NOT_IN_TOPOLOGY)
    assert strongswan.vici_uri("/run/x.vici") == "unix:///run/x.vici" and strongswan.vici_uri("tcp://h:1") == "tcp://h:1"


@pytest.mark.lab
def test_read_in_a_namespace_of_our_own() -> None:
    ns = "trc-ck-ev"
    with own_namespaces([ns]):
        node = Node("r", "router", {"lo": Interface("r", "lo")}, netns=ns)
        s = sysctl.read(node)
        assert not isinstance(s, Unavailable) and s.get("net.ipv4.ip_forward") == 0
        assert sockets.listening(node) == ()
        rs = nft.ruleset(node)
        assert not isinstance(rs, Unavailable) and rs.rules == ()
