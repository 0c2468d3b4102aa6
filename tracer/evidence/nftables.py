"""A node's nftables ruleset for ``tracer check``: chains with their hooks and policies, and
rules with their JSON expressions (``nft -j list ruleset``) and their text as nft prints it
(``nft -a list ruleset``, joined by rule handle; counter statistics and comments removed,
so the text names the rule, not its history). The parsing (:func:`parse`) is pure."""

from __future__ import annotations

import json
import re
from typing import Any

from tracer.evidence import noderun
from tracer.model.checkstate import NftChain, NftRule, NftRuleset, Unavailable
from tracer.model.topology import Node

_HANDLE = re.compile(r"\s+# handle (\d+)\s*$")
_STATS = re.compile(r"\s+counter packets \d+ bytes \d+|\s+comment \"[^\"]*\"")


def read(node: Node, topo_source: str = "") -> NftRuleset | Unavailable:
    try:
        doc = noderun.run(node, ["nft", "-j", "list", "ruleset"], topo_source).stdout
        text = noderun.run(node, ["nft", "-a", "list", "ruleset"], topo_source).stdout
    except noderun.Unreadable as e:
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


def rule_texts(text: str) -> dict[tuple[str, str, str, int], str]:
    """(family, table, chain, handle) → the rule as ``nft -a list ruleset`` prints it."""
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


def _prio(value: Any) -> int:
    if isinstance(value, int):
        return value
    return {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}.get(str(value), 0)
