"""Live network state of a node: ``ip -j`` addresses, links, routes of every table, policy rules.

Read inside the node's local network namespace with :mod:`tracer.netns` (``ip -n NS``, no
shell), or on its host over SSH (one ``ip -batch`` session through
:func:`tracer.ssh_client.ssh_argv`), at the start of a live trace. The parsing of ``ip``'s
JSON is pure (:func:`parse`) so it is tested on real output without a namespace.

IPv4 only (``ip -4``), like the rest of tracer. A veth peer is named by the peer's ifindex
and namespace id; the id is turned into the namespace's name with ``ip netns list-id`` so
the analysis can tell which node the other end is in (local namespaces only: a remote
host's namespace names mean nothing here).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from tracer import netns
from tracer.errors import EnvironmentProblem, TracerError
from tracer.model.netstate import DEFAULT_NET, LinkPeer, LiveInterface, LiveRoute, NextHop, NodeState, PolicyRule
from tracer.model.topology import Node, Topology
from tracer.ssh_client import CONNECT_TIMEOUT, ssh_argv, topology_relative

SSH_TIMEOUT = CONNECT_TIMEOUT + 5.0  # seconds for the whole SSH session: connect, then four instant commands

# (what, ip arguments after the global options); the same four locally and in the SSH batch.
QUERIES = (
    ("links", ["link", "show"]),
    ("addresses", ["addr", "show"]),
    ("routes", ["route", "show", "table", "all"]),
    ("rules", ["rule", "show"]),
)
IP_OPTIONS = ["-4", "-d", "-j"]  # IPv4, link details (veth peers, kinds), JSON

# ``ip -j rule`` keys: those the model evaluates, and those that are not selectors at all.
# Any other key is a selector we do not evaluate (ipproto, sport, uidrange, l3mdev, ...).
_RULE_MODELLED = {"priority", "not", "src", "srclen", "dst", "dstlen", "iif", "oif", "fwmark", "fwmask",
                  "table", "action", "goto", "suppress_prefixlen"}
_RULE_NOT_SELECTORS = {"protocol", "flow", "realms", "suppress_ifgroup", "unresolved", "nat", "masquerade"}


class SnapshotError(EnvironmentProblem):
    """The live state of a node could not be read (the message is the reason, one line)."""


def snapshot(node: Node) -> NodeState:
    """The live state of ``node`` in its local namespace (``node.netns``; None: this one).
    SnapshotError with a one-line reason when ``ip`` fails, hangs or says something unreadable."""
    answers = {what: _ip_json(args, node.netns) for what, args in QUERIES}
    nsids = _ip_json(["-j", "netns", "list-id"], node.netns, options=False)
    return _parse_or_fail(node.name, answers, nsids, netns=node.netns)


def snapshot_ssh(node: Node, topo_source: str, timeout: float = SSH_TIMEOUT) -> NodeState:
    """The live state of ``node`` read on its SSH host: one session running ``ip -batch``.
    SnapshotError with a one-line reason when the host cannot be reached or says something unreadable."""
    if not node.ssh:
        raise SnapshotError(f"{node.name} has no ssh target")
    # The remote login shell may be anything: hand the line to sh, with the sbin dirs a
    # non-login PATH may lack. -force: every query runs even if one fails (counted below).
    line = f'PATH="$PATH:/usr/sbin:/sbin"; exec ip {" ".join(IP_OPTIONS)} -force -batch -'
    argv = ssh_argv(node.ssh, f"exec sh -c {shlex.quote(line)}", node.ssh_netns,
                    topology_relative(topo_source, node.ssh_key), node.ssh_port,
                    topology_relative(topo_source, node.ssh_known_hosts))
    batch = "".join(" ".join(args) + "\n" for _, args in QUERIES)
    try:
        proc = subprocess.run(argv, input=batch, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SnapshotError(f"ssh {node.ssh}: no answer within {timeout:.0f} s") from None
    except OSError as e:
        raise SnapshotError(f"ssh {node.ssh}: cannot run ssh ({e.strerror})") from None
    docs = _json_stream(proc.stdout)
    if len(docs) != len(QUERIES):
        err = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()
        raise SnapshotError(f"ssh {node.ssh}: 'ip -j' answered {len(docs)} of {len(QUERIES)} queries "
                            f"({err[-1][:200] if err else 'no output'})")
    answers = {what: doc for (what, _), doc in zip(QUERIES, docs, strict=True)}
    return _parse_or_fail(node.name, answers, None, host=node.ssh)


def snapshot_nodes(topo: Topology, nodes: Iterable[str]) -> tuple[dict[str, NodeState], dict[str, str]]:
    """Each node read the way it is captured (over SSH for ``capture = "ssh"``, else in its
    namespace): the states, and for the nodes that could not be read, why. Never raises.
    The nodes are read in parallel (each read is a few ``ip`` processes or one SSH session)."""
    states: dict[str, NodeState] = {}
    unread: dict[str, str] = {}

    def one(name: str) -> None:
        node = topo.nodes[name]
        try:
            states[name] = snapshot_ssh(node, topo.source) if node.capture_backend == "ssh" else snapshot(node)
        except TracerError as e:
            unread[name] = str(e)
        except Exception as e:  # best effort: a surprise here must not cost the trace
            unread[name] = f"{type(e).__name__}: {e}"

    names = list(dict.fromkeys(nodes))
    if names:
        with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
            list(pool.map(one, names))
    return {n: states[n] for n in names if n in states}, {n: unread[n] for n in names if n in unread}


def parse(
    node: str,
    links: Any,
    addresses: Any,
    routes: Any,
    rules: Any,
    nsids: Any = None,
    netns: str | None = None,
    host: str | None = None,
    taken: str | None = None,
) -> NodeState:
    """A NodeState from the decoded JSON of ``ip -j -d link``, ``ip -j addr``, ``ip -j route show
    table all``, ``ip -j rule`` and (optional) ``ip -j netns list-id``. Entries that are not IPv4
    are skipped; ValueError, TypeError or KeyError if the documents are not what ``ip`` prints."""
    names = {int(e["nsid"]): str(e["name"]) for e in _list(nsids or []) if e.get("name") is not None}
    addrs: dict[str, list[IPv4Interface]] = {}
    for link in _list(addresses):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                addrs.setdefault(link["ifname"], []).append(IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
    interfaces = tuple(_interface(link, addrs.get(link["ifname"], []), names) for link in _list(links))
    parsed_routes = tuple(r for r in (_route(e) for e in _list(routes)) if r is not None)
    parsed_rules = tuple(_rule(e) for e in _list(rules))
    return NodeState(node, tuple(sorted(interfaces, key=lambda i: i.ifindex)), parsed_routes, parsed_rules,
                     netns=netns, host=host, taken=taken or datetime.now(UTC).isoformat())


def _interface(link: dict[str, Any], addrs: list[IPv4Interface], nsid_names: dict[int, str]) -> LiveInterface:
    flags = link.get("flags", [])
    kind = (link.get("linkinfo") or {}).get("info_kind")
    peer = None
    if kind == "veth":
        if "link_index" in link:
            nsid = link.get("link_netnsid")
            peer = LinkPeer(ifindex=int(link["link_index"]), netnsid=nsid,
                            netns=nsid_names.get(nsid) if nsid is not None else None)
        elif isinstance(link.get("link"), str):
            peer = LinkPeer(name=link["link"])  # both ends in this namespace
    mtu = link.get("mtu")
    return LiveInterface(
        name=str(link["ifname"]), ifindex=int(link["ifindex"]), admin_up="UP" in flags, carrier="LOWER_UP" in flags,
        operstate=str(link.get("operstate", "UNKNOWN")), mtu=int(mtu) if mtu is not None else None,
        addresses=tuple(addrs), kind=kind, peer=peer,
        mac=str(link["address"]) if link.get("link_type") == "ether" and link.get("address") else None,
    )


def _addr(value: Any) -> IPv4Address | None:
    if isinstance(value, dict):  # RTA_VIA: {"family": "inet", "host": "..."}
        value = value.get("host")
    try:
        return IPv4Address(value) if value is not None else None
    except ValueError:
        return None


def _route(e: dict[str, Any]) -> LiveRoute | None:
    dst_s = e.get("dst")
    try:
        dst = DEFAULT_NET if dst_s == "default" else IPv4Network(dst_s)
    except (ValueError, TypeError):
        return None  # not IPv4 (ip -4 should not print any, but a remote ip may be old)
    hops = tuple(NextHop(h.get("dev"), _addr(h.get("gateway") or h.get("via"))) for h in e.get("nexthops", []))
    first = hops[0] if hops else NextHop(e.get("dev"), _addr(e.get("gateway") or e.get("via")))
    metric = e.get("metric")
    flags = (e.get("nexthops") or [e])[0].get("flags") or []  # ip -j: "flags": ["onlink"], per hop when multipath
    return LiveRoute(
        table=str(e.get("table", "main")), dst=dst, type=str(e.get("type", "unicast")), dev=first.dev, via=first.via,
        proto=e.get("protocol"), scope=e.get("scope"), metric=int(metric) if metric is not None else None,
        prefsrc=_addr(e.get("prefsrc")), nexthops=hops, onlink="onlink" in flags,
    )


def _prefix(e: dict[str, Any], key: str) -> IPv4Network | None:
    value = e.get(key)
    if value is None or value == "all":
        return None
    return IPv4Network(f"{value}/{e.get(key + 'len', 32)}", strict=False)


def _hex(value: Any) -> int | None:
    return None if value is None else int(str(value), 0)


def _rule(e: dict[str, Any]) -> PolicyRule:
    other = tuple(sorted(f"{k}={'' if v is None else v}" for k, v in e.items()
                         if k not in _RULE_MODELLED and k not in _RULE_NOT_SELECTORS))
    action = str(e.get("action", "goto" if "goto" in e else "lookup"))
    goto = e.get("goto")
    return PolicyRule(
        priority=int(e.get("priority", 0)), action=action, table=str(e["table"]) if "table" in e else None,
        src=_prefix(e, "src"), dst=_prefix(e, "dst"), iif=e.get("iif"), oif=e.get("oif"),
        fwmark=_hex(e.get("fwmark")), fwmask=_hex(e.get("fwmask")), invert="not" in e,
        goto=int(goto) if goto is not None else None,
        suppress_prefixlen=int(e["suppress_prefixlen"]) if "suppress_prefixlen" in e else None, other=other,
    )


def _list(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise TypeError("expected a JSON array of objects")
    return doc


def _parse_or_fail(node: str, answers: dict[str, Any], nsids: Any, netns: str | None = None,
                   host: str | None = None) -> NodeState:
    try:
        return parse(node, answers["links"], answers["addresses"], answers["routes"], answers["rules"], nsids,
                     netns=netns, host=host)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SnapshotError(f"unexpected 'ip -j' output ({type(e).__name__}: {e})") from None


def _ip_json(args: list[str], ns: str | None, options: bool = True) -> Any:
    try:
        proc = netns.ip([*(IP_OPTIONS if options else []), *args], ns=ns)
    except TracerError as e:  # EnvironmentProblem: not found, failed, timed out (netns.ip bounds it)
        raise SnapshotError(str(e)) from None
    try:
        return json.loads(proc.stdout or "[]")
    except ValueError:
        raise SnapshotError(f"'ip {' '.join(args)}' printed no JSON (iproute2 too old for -j?)") from None


def _json_stream(text: str) -> list[Any]:
    """The JSON documents ``ip -j -batch`` prints one after another; stops at the first non-JSON."""
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        try:
            doc, i = decoder.raw_decode(text, i)
        except ValueError:
            return docs
        docs.append(doc)

