"""Faults the lab can inject: each one is real, at packet level, in one place.

A fault is data: nftables rules (one table ``inet tracer_fault`` per node
namespace, so clearing is a single ``delete table``), ``ip`` commands and
sysctls with their inverse, and a gateway whose IKE daemon the fault stops (the
lab restarts it when the fault is cleared). Every drop rule has a counter, so
``Lab.status()`` shows how many packets each fault actually ate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tracer import netns
from tracer.errors import BadInput
from tracer.lab import layout

NFT_TABLE = "tracer_fault"
MTU_SMALL = 1280


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    # node -> chain definitions placed inside "table inet tracer_fault { ... }"
    nft: dict[str, str] = field(default_factory=dict)
    # node -> ip -batch lines to apply, and the lines that undo them ("{ns:NODE}": that node's namespace)
    ip_apply: dict[str, list[str]] = field(default_factory=dict)
    ip_clear: dict[str, list[str]] = field(default_factory=dict)
    # node -> {sysctl path under /proc/sys: (value while the fault is active, value to restore)}
    sysctl: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    # The tunnel cannot (re)establish while the fault is active.
    stops_ike: bool = False
    # The gateway whose charon the fault stops (restarted, and the tunnel re-established, on clear).
    stops_charon: str | None = None


def _chain(hook: str, *rules: str) -> str:
    body = "\n    ".join(rules)
    return f"chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;\n    {body}\n  }}"


_east_default = layout.node("east").routes[-1]
_east_gw_default = layout.node("east-gw").routes[-1]  # via the router
_west_gw_wan = layout.node("west-gw").interfaces["wan0"].addresses[0].ip
_east_gw_wan = layout.node("east-gw").interfaces["wan0"].addresses[0].ip
_IKE_BLOCKED = _chain("forward", 'udp dport { 500, 4500 } counter drop comment "IKE and ESP-in-UDP"')
# A policy rule ahead of strongSwan's (priority 220) sends east's replies to the west LAN out
# the WAN by a table of its own: the SA stays up, the replies just never enter it.
_POLICY_TABLE = 100
_ROUTE_AROUND = {"east-gw": [
    f"rule add from {layout.EAST_LAN} to {layout.WEST_LAN} iif lan0 lookup {_POLICY_TABLE} pref {_POLICY_TABLE}",
    f"route add default via {_east_gw_default.via} dev {_east_gw_default.dev} table {_POLICY_TABLE}",
]}
_UNROUTE_AROUND = {"east-gw": [f"rule del pref {_POLICY_TABLE}", f"route flush table {_POLICY_TABLE}"]}
_ROUTE_BACK = {"router": [f"route add {layout.WEST_LAN} via {_west_gw_wan} dev eth0"]}
_UNROUTE_BACK = {"router": [f"route del {layout.WEST_LAN}"]}
_west_gw_default = layout.node("west-gw").routes[-1]
WRONG_MAC = "02:00:5e:00:53:99"  # documentation range (RFC 7042), no interface of the lab has it

_FAULTS = (
    Fault(
        "esp-blocked",
        "router drops ESP-in-UDP (UDP 4500 with a non-zero SPI) but lets IKE through: "
        "tunnel up, traffic lost between router:eth0 and router:eth1",
        # ESP-in-UDP starts with the SPI; IKE on 4500 starts with the 4-byte zero
        # non-ESP marker (RFC 3948), so @th,64,32 tells them apart.
        nft={"router": _chain("forward", 'udp dport 4500 @th,64,32 != 0 counter drop comment "ESP in UDP"')},
    ),
    Fault(
        "ike-blocked",
        "router drops UDP 500 and 4500, so no SA: west-gw has no tunnel route and leaks the "
        "cleartext via its default route; the router has no route to 198.51.100.0/24 (nor back "
        "for an ICMP error) and drops it silently",
        nft={"router": _IKE_BLOCKED},
        stops_ike=True,
    ),
    Fault(
        "asymmetric-return",
        "east-gw policy-routes east's replies out wan0 in the clear (a rule ahead of strongSwan's table 220) "
        "while the SA is up; the router has no route to 192.0.2.0/24 and drops them",
        ip_apply=_ROUTE_AROUND,
        ip_clear=_UNROUTE_AROUND,
    ),
    Fault(
        "asymmetric-return-routed",
        "as asymmetric-return, and the router routes 192.0.2.0/24 back to west-gw: the replies arrive, "
        "in the clear, around the tunnel",
        ip_apply=_ROUTE_AROUND | _ROUTE_BACK,
        ip_clear=_UNROUTE_AROUND | _UNROUTE_BACK,
    ),
    Fault(
        "rewired-router",
        "the router is re-wired: a new link router:eth2 - east-gw:wan1 (198.18.3.0/24) that the topology "
        "file does not have, the router sends ESP for east-gw out eth2, and east-gw drops what arrives on wan1",
        nft={"east-gw": _chain("input", 'iifname "wan1" counter drop comment "re-wired link"') + "\n  "
             + _chain("forward", 'iifname "wan1" counter drop comment "re-wired link"')},
        ip_apply={
            "router": ["link add eth2 type veth peer name wan1 netns {ns:east-gw}",
                       "addr add 198.18.3.254/24 dev eth2", "link set eth2 up",
                       f"route add {_east_gw_wan}/32 via 198.18.3.1 dev eth2"],
            "east-gw": ["addr add 198.18.3.1/24 dev wan1", "link set wan1 up"],
        },
        ip_clear={"router": ["link del eth2"]},
    ),
    Fault(
        "nat-on-path",
        "the router rewrites the outer source of west-gw's ESP-in-UDP as it leaves eth1 (stateless NAT to "
        "198.18.2.254:1024): delivered, and the rewrite is seen between router:eth0 and router:eth1",
        nft={"router": "chain nat {\n    type filter hook postrouting priority srcnat; policy accept;\n    "
             f'oifname "eth1" ip saddr {_west_gw_wan} udp dport 4500 @th,64,32 != 0 '
             'ip saddr set 198.18.2.254 udp sport set 1024 counter comment "NAT"\n  }'},
    ),
    Fault(
        "routing-loop",
        "IKE blocked (no SA, west-gw leaks the cleartext via its default route to the router) and the router "
        "routes 198.51.100.0/24 back to west-gw: each probe bounces between them until its TTL runs out",
        nft={"router": _IKE_BLOCKED},
        ip_apply={"router": [f"route add {layout.EAST_LAN} via {_west_gw_wan} dev eth0"]},
        ip_clear={"router": [f"route del {layout.EAST_LAN}"]},
        stops_ike=True,
    ),
    Fault(
        "no-return-route",
        "east has no default route, so its echo replies (to 192.0.2.0/24) are dropped inside east",
        ip_apply={"east": ["route del default"]},
        ip_clear={"east": [f"route replace default via {_east_default.via} dev {_east_default.dev}"]},
    ),
    Fault(
        "gw-forward-drop",
        "west-gw's firewall drops cleartext forwarded from lan0 into ipsec0 (before encryption)",
        nft={"west-gw": _chain("forward", 'iifname "lan0" oifname "ipsec0" counter drop comment "lan0 to tunnel"')},
    ),
    Fault(
        "decap-drop",
        "east-gw's firewall drops what comes out of ipsec0 (after decryption, before lan0)",
        nft={"east-gw": _chain("forward", 'iifname "ipsec0" counter drop comment "out of tunnel"')},
    ),
    Fault(
        "esp-input-drop",
        "east-gw drops incoming ESP-in-UDP before its IPsec stack: ESP reaches east-gw:wan0 but "
        "nothing is decapsulated (what a missing or wrong SA looks like from the wire)",
        nft={"east-gw": _chain("input", 'udp dport 4500 @th,64,32 != 0 counter drop comment "ESP before decap"')},
    ),
    Fault(
        "mtu-blackhole",
        f"router:eth1-east-gw:wan0 has MTU {MTU_SMALL} and the router drops the ICMP frag-needed it "
        "would send: small pings pass, large ones (ping -s 1300) vanish at the router",
        nft={
            "router": "\n  ".join(
                _chain(hook, 'icmp type destination-unreachable icmp code frag-needed counter drop comment "PMTUD"')
                for hook in ("output", "forward")
            )
        },
        ip_apply={"router": [f"link set eth1 mtu {MTU_SMALL}"], "east-gw": [f"link set wan0 mtu {MTU_SMALL}"]},
        ip_clear={"router": ["link set eth1 mtu 1500"], "east-gw": ["link set wan0 mtu 1500"]},
    ),
)

_EVIDENCE_FAULTS = (
    Fault(
        "wrong-mac",
        f"the router has a static neighbour entry for east-gw's address {_east_gw_wan} with a wrong MAC "
        f"({WRONG_MAC}): frames reach east-gw:wan0 and east-gw discards them as addressed to another host",
        ip_apply={"router": [f"neigh replace {_east_gw_wan} lladdr {WRONG_MAC} dev eth1 nud permanent"]},
        ip_clear={"router": [f"neigh del {_east_gw_wan} dev eth1"]},
    ),
    Fault(
        "esp-output-drop",
        "west-gw's OUTPUT chain drops the ESP-in-UDP its own charon sends (charon's sendto gets EPERM): "
        "the cleartext enters ipsec0 and no ESP leaves west-gw:wan0",
        nft={"west-gw": _chain("output", 'udp dport 4500 @th,64,32 != 0 counter drop comment "ESP out"')},
    ),
    Fault(
        "no-peer-route",
        f"west-gw loses its default route, hence its route to east-gw ({_east_gw_wan}): charon cannot send "
        "ESP (Network is unreachable) and nothing leaves west-gw:wan0",
        ip_apply={"west-gw": ["route del default"]},
        ip_clear={"west-gw": [f"route replace default via {_west_gw_default.via} dev {_west_gw_default.dev}"]},
    ),
    Fault(
        "strict-rpfilter",
        "as asymmetric-return-routed, and west-gw:wan0 filters by strict reverse path (rp_filter=1): the replies "
        "arriving in the clear on wan0 (their source is routed into ipsec0) are dropped by west-gw",
        ip_apply=_ROUTE_AROUND | _ROUTE_BACK,
        ip_clear=_UNROUTE_AROUND | _UNROUTE_BACK,
        sysctl={"west-gw": {"net/ipv4/conf/wan0/rp_filter": ("1", "0"), "net/ipv4/conf/all/rp_filter": ("1", "0")}},
    ),
    Fault(
        "iface-down",
        "east-gw:wan0 is down (ip link set wan0 down): ESP from the router has nowhere to arrive",
        ip_apply={"east-gw": ["link set wan0 down"]},
        ip_clear={"east-gw": ["link set wan0 up",
                              f"route replace default via {_east_gw_default.via} dev {_east_gw_default.dev}"]},
    ),
    Fault(
        "dead-responder",
        "east-gw's IKE daemon (charon) is stopped: nothing listens on UDP 500/4500 there, no IKE_SA can be "
        "set up, and the tunnel is gone",
        stops_ike=True,
        stops_charon="east-gw",
    ),
)

FAULTS_BY_NAME: dict[str, Fault] = {f.name: f for f in (*_FAULTS, *_EVIDENCE_FAULTS)}
FAULTS: dict[str, str] = {f.name: f.description for f in FAULTS_BY_NAME.values()}


def get(name: str) -> Fault:
    try:
        return FAULTS_BY_NAME[name]
    except KeyError:
        raise BadInput(f"unknown fault '{name}': choose one of {', '.join(FAULTS)}") from None


NsOf = Callable[[str], str]


def apply(fault: Fault, ns_of: NsOf) -> None:
    for node, chains in fault.nft.items():
        script = f"table inet {NFT_TABLE} {{\n  {chains}\n}}\n"
        netns.ns_run(ns_of(node), ["nft", "-f", "-"], input=script)
    for node, lines in fault.ip_apply.items():
        netns.ip_batch([_with_namespaces(line, ns_of) for line in lines], ns=ns_of(node))
    for node, values in fault.sysctl.items():
        _sysctl(ns_of(node), {k: v for k, (v, _) in values.items()})


def _with_namespaces(line: str, ns_of: NsOf) -> str:
    return re.sub(r"\{ns:([a-z0-9-]+)\}", lambda m: ns_of(m.group(1)), line)


def clear(fault: Fault, ns_of: NsOf) -> None:
    for node in fault.nft:
        # "add" then "delete" makes clearing idempotent on nft versions without "destroy".
        netns.ns_run(ns_of(node), ["nft", "-f", "-"], input=f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")
    for node, lines in fault.ip_clear.items():
        netns.ip_batch(lines, ns=ns_of(node), check=False)
    for node, values in fault.sysctl.items():
        _sysctl(ns_of(node), {k: v for k, (_, v) in values.items()}, check=False)


def _sysctl(ns: str, values: dict[str, str], check: bool = True) -> None:
    """Write /proc/sys values inside ``ns`` (a namespace's own net.* sysctls)."""
    script = "; ".join(f"echo {v} > /proc/sys/{k}" for k, v in values.items())
    netns.ns_run(ns, ["sh", "-c", script], check=check)


def counters(fault: Fault, ns_of: NsOf) -> dict[str, int]:
    """Packets dropped so far by the fault's nft rules, per node."""
    out: dict[str, int] = {}
    for node in fault.nft:
        proc = netns.ns_run(ns_of(node), ["nft", "-j", "list", "table", "inet", NFT_TABLE], check=False)
        if proc.returncode != 0:
            continue
        total = 0
        for item in json.loads(proc.stdout).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"].get("packets", 0))
        out[node] = total
    return out

