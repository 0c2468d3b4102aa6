"""The IKE daemon's SAs on a node: strongSwan through its vici socket (``swanctl --list-sas
--raw --uri URI``), locally or on the node's SSH host. How to reach the daemon is the
node's ``ike_vici`` (a socket path or a vici URI), when the topology gives it. The parsing
(:func:`parse`) is pure."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tracer.evidence import noderun
from tracer.model.checkstate import ChildSa, IkeSa, IkeState, Unavailable
from tracer.model.topology import Node

NOT_IN_TOPOLOGY = "how to reach its IKE daemon is not in the topology"


def vici_uri(value: str) -> str:
    """A socket path or a URI → a vici URI (``unix:///path``, ``tcp://host:port``)."""
    return value if "://" in value else f"unix://{value}"


def read(node: Node, uri: str | None, topo_source: str = "", conf: Path | None = None) -> IkeState | Unavailable:
    """The SAs of ``node``'s daemon at ``uri``; ``conf``: a strongswan.conf for swanctl (else the system's)."""
    if not uri:
        return Unavailable(NOT_IN_TOPOLOGY)
    env = {**os.environ, "STRONGSWAN_CONF": str(conf)} if conf is not None and not noderun.over_ssh(node) else None
    try:
        out = noderun.run(node, ["swanctl", "--list-sas", "--raw", "--noblock", "--uri", uri], topo_source, env=env)
    except noderun.Unreadable as e:
        return Unavailable(str(e))
    return IkeState(parse(out.stdout), uri)


def parse(text: str) -> tuple[IkeSa, ...]:
    """``list-sa event {NAME {... child-sas {...}}}`` lines of ``swanctl --list-sas --raw``."""
    sas = []
    for line in text.splitlines():
        if not line.startswith("list-sa event") or "{" not in line:
            continue
        for name, body in parse_raw(line[line.index("{"):]).items():
            if isinstance(body, dict):
                sas.append(_ike(name, body))
    return tuple(sas)


def _ike(name: str, d: dict[str, Any]) -> IkeSa:
    children = tuple(_child(c) for c in (d.get("child-sas") or {}).values() if isinstance(c, dict))
    return IkeSa(str(d.get("name", name)) if "name" in d else name, str(d.get("state", "")),
                 d.get("local-host"), d.get("remote-host"), children)


def _child(d: dict[str, Any]) -> ChildSa:
    return ChildSa(str(d.get("name", "")), str(d.get("state", "")), _spi(d.get("spi-in")), _spi(d.get("spi-out")),
                   str(d.get("protocol", "ESP")), d.get("encap") == "yes", d.get("encr-alg"),
                   tuple(_list(d.get("local-ts"))), tuple(_list(d.get("remote-ts"))))


def _spi(value: Any) -> int | None:
    try:
        return int(str(value), 16) if value else None
    except ValueError:
        return None


def _list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []


_TOKEN = re.compile(r"\{|\}|[^\s{}=]+=\[[^\]]*\]|[^\s{}=]+=[^\s{}]*|[^\s{}]+")


def parse_raw(text: str) -> dict[str, Any]:
    """swanctl's ``--raw`` rendering of a vici message → nested dicts
    (``{a {k=v l=[x y]}}`` → ``{"a": {"k": "v", "l": ["x", "y"]}}``)."""
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
                continue
            if "=" in tok:
                key, _, value = tok.partition("=")
                out[key] = value[1:-1].split() if value.startswith("[") else value
            elif pos < len(tokens) and tokens[pos] == "{":
                pos += 1
                out[tok] = section()
        return out

    return section()
