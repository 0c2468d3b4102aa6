"""The ``--flow`` filter: a small tcpdump-like language that picks the traffic to trace.

Grammar (words are case-insensitive; ``and`` binds tighter than ``or``; ``&&``, ``||`` and ``!``
may stand for ``and``, ``or`` and ``not``; only IPv4 rows are ever selected)::

    expr    := term ("or" term)*
    term    := factor ("and" factor)*
    factor  := "not" factor | "(" expr ")" | primitive
    primitive := "icmp" | "udp" | "tcp" | "esp"
               | "host" NAME_OR_ADDRESS          (either end; a node name means any of its addresses)
               | "port" NUMBER                   (either end; UDP and TCP)

``icmp`` selects ICMP (errors are never a flow of their own: they are tied to the packet they
quote), ``esp`` ESP and ESP-in-UDP, ``udp`` all of UDP (ESP-in-UDP too, as in pcap-filter).
Evaluated on observation columns, one boolean per row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

import numpy as np

from tracer.errors import BadInput
from tracer.model.observations import Observations, PacketClass

PROTOCOLS = ("icmp", "udp", "tcp", "esp")
_TOKEN = re.compile(r"\s*(\(|\)|!(?!=)|[^\s()!]+)")


@dataclass(frozen=True)
class Prim:
    word: str  # a protocol, "host" or "port"
    arg: str | None = None


@dataclass(frozen=True)
class Not:
    inner: Expr


@dataclass(frozen=True)
class Op:
    op: str  # "and" | "or"
    left: Expr
    right: Expr


Expr = Prim | Not | Op


def parse(text: str) -> Expr:
    """The filter's syntax tree; BadInput naming what was wrong and where."""
    tokens = [m.group(1) for m in _TOKEN.finditer(text)]
    if not tokens:
        raise BadInput("--flow: empty filter (example: 'icmp and host west and host east')")
    p = _Parser(text, tokens)
    expr = p.expr()
    if p.i < len(tokens):
        raise p.error(f"unexpected '{tokens[p.i]}'")
    return expr


class _Parser:
    def __init__(self, text: str, tokens: list[str]) -> None:
        self.text, self.tokens, self.i = text, tokens, 0

    def error(self, what: str) -> BadInput:
        return BadInput(f"--flow '{self.text}': {what} (words: {', '.join(PROTOCOLS)}, host X, port N, and, or, not, "
                        "parentheses)")

    def peek(self) -> str | None:
        return self.tokens[self.i].lower() if self.i < len(self.tokens) else None

    def take(self) -> str:
        if self.i >= len(self.tokens):
            raise self.error("ends too early")
        self.i += 1
        return self.tokens[self.i - 1]

    def expr(self) -> Expr:
        e = self.term()
        while self.peek() in ("or", "||"):
            self.take()
            e = Op("or", e, self.term())
        return e

    def term(self) -> Expr:
        e = self.factor()
        while self.peek() in ("and", "&&"):
            self.take()
            e = Op("and", e, self.factor())
        return e

    def factor(self) -> Expr:
        word = self.take()
        low = word.lower()
        if low in ("not", "!"):
            return Not(self.factor())
        if word == "(":
            e = self.expr()
            if self.take() != ")":
                raise self.error("missing ')'")
            return e
        if low in PROTOCOLS:
            return Prim(low)
        if low == "host":
            return Prim("host", self.take())
        if low == "port":
            arg = self.take()
            if not arg.isdigit() or not 0 < int(arg) < 65536:
                raise self.error(f"port '{arg}' is not a number from 1 to 65535")
            return Prim("port", arg)
        raise self.error(f"unknown word '{word}'")


def mask(expr: Expr, obs: Observations, addresses: Callable[[str], list[IPv4Address]]) -> np.ndarray:
    """Rows the filter selects. ``addresses``: a host word's addresses (a node's, or the address
    itself); it raises BadInput for a name it does not know."""
    if isinstance(expr, Op):
        a, b = mask(expr.left, obs, addresses), mask(expr.right, obs, addresses)
        return a & b if expr.op == "and" else a | b
    if isinstance(expr, Not):
        return (obs["ipver"] == 4) & ~mask(expr.inner, obs, addresses)  # the filter speaks IPv4 only
    ip4 = obs["ipver"] == 4
    if expr.word == "host":
        assert expr.arg is not None
        want = np.array([int(a) for a in addresses(expr.arg)], np.uint32)
        return ip4 & (np.isin(obs["src"], want) | np.isin(obs["dst"], want))
    if expr.word == "port":
        port = int(expr.arg or 0)
        return ip4 & np.isin(obs["proto"], (6, 17)) & ((obs["sport"] == port) | (obs["dport"] == port))
    if expr.word == "esp":
        return ip4 & (obs["cls"] == PacketClass.ESP)
    return ip4 & (obs["proto"] == {"icmp": 1, "udp": 17, "tcp": 6}[expr.word])
