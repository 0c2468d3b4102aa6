"""A node's firewall: ``nft -j list ruleset`` (chains with hooks and policies, rules with their
JSON expressions and counters) and its text form ``nft -a list ruleset`` (joined by rule handle,
counter values and comments removed, so the text names the rule, not its history); and
``iptables-save -c`` where iptables is installed and has rules.

Two readers over one parse: :func:`read`, the trace's snapshot source (rule counters; a rule
whose verdict is ``drop`` or ``reject`` is marked ``drop``: its counter growing in proportion
to the lost probes at the located hop is the firewall saying it ate them), and
:func:`ruleset`, ``tracer check``'s view of the chains and rules. Parsing is pure.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tracer.evidence import nodecmd
from tracer.model.checkstate import NftChain, NftRule, NftRuleset, Unavailable
from tracer.model.evidence import Counter, Snapshot
from tracer.model.topology import Node, Topology

NAME = "nft"
_DROP_VERDICTS = ("drop", "reject")
_HANDLE = re.compile(r"\s+# handle (\d+)\s*$")
_STATS = re.compile(r"\s+counter packets \d+ bytes \d+|\s+comment \"[^\"]*\"")
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


def ruleset(node: Node, topo_source: str = "") -> NftRuleset | Unavailable:
    """The chains and rules ``tracer check`` judges, or why they could not be read."""
    try:
        doc = nodecmd.output(node, ["nft", "-j", "list", "ruleset"], topo_source).stdout
        text = nodecmd.output(node, ["nft", "-a", "list", "ruleset"], topo_source).stdout
    except nodecmd.Unavailable as e:
        return Unavailable(str(e))
    try:
        return parse(json.loads(doc or "{}"), text)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return Unavailable(f"unexpected 'nft -j' output ({type(e).__name__}: {e})")


def parse(doc: dict[str, Any], text: str = "") -> NftRuleset:
    """The ruleset from ``nft -j list ruleset``'s JSON and (optional) ``nft -a list ruleset``'s text."""
    texts = rule_texts(text)
    chains, rules = [], []
    for item in doc.get("nftables", []):
        if "chain" in item:
            c = item["chain"]
            chains.append(NftChain(str(c["family"]), str(c["table"]), str(c["name"]), c.get("hook"),
                                   str(c.get("policy", "accept")), _prio(c.get("prio", 0))))
        elif "rule" in item:
            r = item["rule"]
            key = (str(r["family"]), str(r["table"]), str(r["chain"]), int(r["handle"]))
            rules.append(NftRule(*key, expr=tuple(r.get("expr", [])), text=texts.get(key, ""),
                                 comment=r.get("comment")))
    return NftRuleset(tuple(chains), tuple(rules))


def _prio(value: Any) -> int:
    if isinstance(value, int):
        return value
    return {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}.get(str(value), 0)


def rule_texts(text: str) -> dict[tuple[str, str, str, int], str]:
    """(family, table, chain, handle) -> the rule as ``nft -a list ruleset`` prints it, without
    its counter values, its comment and its handle."""
    out: dict[tuple[str, str, str, int], str] = {}
    family = table = chain = ""
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"table (\S+) (\S+) \{", line):
            family, table, chain = m.group(1), m.group(2), ""
        elif m := re.match(r"chain (\S+) \{", line):
            chain = m.group(1)
        elif chain and (m := _HANDLE.search(line)):
            out[(family, table, chain, int(m.group(1)))] = _STATS.sub("", line[: m.start()]).strip()
        elif line == "}" and chain:
            chain = ""
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
