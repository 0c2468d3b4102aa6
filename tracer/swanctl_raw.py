"""swanctl's ``--raw`` rendering of vici messages, parsed into nested dicts (pure).

Shared by the lab (which drives its own charons) and the evidence source that reads any
gateway's SAs (``tracer.evidence.strongswan``), so neither imports the other.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\{|\}|[^\s{}=]+=\[[^\]]*\]|[^\s{}=]+=[^\s{}]*|[^\s{}]+")


def parse_raw(text: str) -> dict[str, Any]:
    """Parse swanctl's ``--raw`` rendering of a vici message into nested dicts.

    ``{a {k=v l=[x y]}}`` -> ``{"a": {"k": "v", "l": ["x", "y"]}}``.
    """
    tokens = _TOKEN.findall(text)
    pos = 0

    def section() -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens):
            tok = tokens[pos]
            pos += 1
            if tok == "}":
                return out
            if tok == "{":
                continue  # the outer brace of the message
            if "=" in tok:
                key, _, value = tok.partition("=")
                out[key] = value[1:-1].split() if value.startswith("[") else value
            elif pos < len(tokens) and tokens[pos] == "{":
                pos += 1
                out[tok] = section()
        return out

    return section()


def list_sas_events(out: str) -> list[dict[str, Any]]:
    """IKE_SAs with their CHILD_SAs from the output of ``swanctl --list-sas --raw``."""
    sas: list[dict[str, Any]] = []
    for line in out.splitlines():
        if line.startswith("list-sa event") and "{" in line:
            for name, body in parse_raw(line[line.index("{") :]).items():
                sas.append({"name": name, **body})
    return sas
