"""Firewall rule counters: ``nft -j list ruleset`` (rules with counters, by table, chain and
handle) named by the rule's own text from ``nft -a list ruleset``; and ``iptables-save -c``
where iptables is installed and has rules.

A rule whose verdict is ``drop`` or ``reject`` is marked ``drop``: its counter growing in
proportion to the lost probes at the located hop is the firewall saying it ate them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tracer.evidence import nodecmd
from tracer.model.evidence import Counter, Snapshot
from tracer.model.topology import Node, Topology

NAME = "nft"
_DROP_VERDICTS = ("drop", "reject")
_HANDLE = re.compile(r"\s*# handle (\d+)\s*$")
_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+ ?")
_IPT_RULE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")


def read(topo: Topology, node: Node) -> Snapshot:
    doc = json.loads(nodecmd.run(topo, node, ["nft", "-j", "list", "ruleset"]) or "{}")
    text = nodecmd.run(topo, node, ["nft", "-a", "list", "ruleset"])
    counters = list(parse_nft(doc, text))
    notes: list[str] = []
    try:
        saved = nodecmd.run(topo, node, ["iptables-save", "-c"])
    except nodecmd.Unavailable as e:
        notes.append(f"iptables rules not read ({e})")
    else:
        counters += parse_iptables(saved)
    return Snapshot(NAME, node.name, counters=tuple(counters), notes=tuple(notes))


def rule_texts(text: str) -> dict[tuple[str, str, str, int], str]:
    """(family, table, chain, handle) -> the rule as ``nft -a list ruleset`` prints it, without
    its counter values, its comment and its handle."""
    out: dict[tuple[str, str, str, int], str] = {}
    table: tuple[str, str] | None = None
    chain: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"table (\S+) (\S+) \{", line):
            table, chain = (m.group(1), m.group(2)), None
        elif m := re.match(r"chain (\S+) \{", line):
            chain = m.group(1)
        elif line == "}":
            chain = None if chain is not None else chain
        elif table and chain and (h := _HANDLE.search(line)):
            body = _COUNTER.sub("", line[: h.start()]).strip()
            body = re.sub(r'\s*comment ".*"$', "", body)
            out[(*table, chain, int(h.group(1)))] = body
    return out


def parse_nft(doc: Any, text: str = "") -> list[Counter]:
    """One counter per rule that counts, from ``nft -j list ruleset`` (and its text form for names)."""
    texts = rule_texts(text)
    out = []
    for item in doc.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule.get("expr", [])
        counter = next((e["counter"] for e in exprs if isinstance(e, dict) and isinstance(e.get("counter"), dict)), None)
        if counter is None:
            continue
        family, table, chain, handle = rule["family"], rule["table"], rule["chain"], int(rule["handle"])
        drop = any(isinstance(e, dict) and any(v in e for v in _DROP_VERDICTS) for e in exprs)
        body = texts.get((family, table, chain, handle), f"handle {handle}")
        comment = f" ({rule['comment']})" if rule.get("comment") else ""
        out.append(Counter(f"nft {family} {table} {chain} {handle}", "rule",
                           f'nft rule "{family} {table} {chain} {body}"{comment}', int(counter.get("packets", 0)),
                           drop=drop))
    return out


def parse_iptables(text: str) -> list[Counter]:
    """One counter per rule of ``iptables-save -c`` (``[packets:bytes] -A CHAIN ...``)."""
    out = []
    table = "filter"
    seen: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif m := _IPT_RULE.match(line):
            chain, spec = m.group(3), m.group(4)
            n = seen[f"{table} {chain}"] = seen.get(f"{table} {chain}", 0) + 1
            drop = bool(re.search(r"-j (DROP|REJECT)\b", spec))
            out.append(Counter(f"iptables {table} {chain} {n}", "rule", f'iptables rule "-t {table} -A {chain} {spec}"',
                               int(m.group(1)), drop=drop))
    return out
