"""Structure-aware mutator for topology files (TOML), deterministic given a case number.

A seed topology is parsed into its dict; one to four mutations are applied where a person (or an
attacker) would make them — a key misspelt, dropped, or added where it does not belong; a value
replaced by a hostile one (wrong type, boolean, float, negative, huge, empty, NUL or newline,
path traversal, IPv6, prefix with host bits, deep nesting); a list element duplicated or
dropped (duplicate addresses, twin links, twin tunnels); a reference pointed at nothing (a link
end, a route's device or gateway, a tunnel's node); the links removed, a link to itself — then
it is written back as TOML, and sometimes damaged as text (cut short, a byte changed, a deep array).

``mutant(seeds, case)`` returns (seed name, TOML text, mutation descriptions).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import tomli_w

HOSTILE: tuple[Any, ...] = (
    -1, 0, 1, 1.5, float("inf"), True, False, 1 << 40, -(1 << 63), "", " ", "\x00", "a\nb", "../../x", "/abs/path",
    "x" * 300, "-oProxyCommand=x", "ünï", "0x", "0xc0ffee01", "default", "192.0.2.1", "192.0.2.1/24", "192.0.2.0/24",
    "300.1.1.1/24", "2001:db8::1/64", "0.0.0.0/0", "198.18.1.1", "a:b", "west:eth0", "west", "eth0", [], {}, [1, "a"],
    {"k": "v"}, [[[]]], ["192.0.2.1/24", "192.0.2.1/24"],
)
KEYS = ("name", "nodes", "links", "tunnels", "role", "interfaces", "addresses", "routes", "dst", "via", "dev", "ends",
        "mtu", "encapsulation", "keying", "left", "right", "node", "address", "interface", "subnets", "spi_in", "netns",
        "capture", "ssh", "ssh_port", "ike_vici", "esp_keys", "adresses", "gateway", "spi_out")


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into tables and arrays (to the value it holds)."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def _typo(key: str, rng: random.Random) -> str:
    if not key:
        return "x"
    i = rng.randrange(len(key))
    op = rng.randrange(4)
    if op == 0:
        return key[:i] + key[i + 1:] or "x"  # drop a letter: adresses
    if op == 1:
        return key[:i] + key[i] + key[i:]  # double one
    if op == 2 and len(key) > 1:
        j = min(i + 1, len(key) - 1)
        return key[:i] + key[j] + key[i] + key[j + 1:] if j != i else key + "s"
    return key.upper() if rng.random() < 0.3 else key + rng.choice(("s", "_", "1", " "))


def _containers(doc: Any) -> list[tuple[Any, ...]]:
    return [()] + [p for p in _paths(doc) if isinstance(_get(doc, p), dict | list)]


def _points(doc: dict[str, Any]) -> list[str]:
    nodes = doc.get("nodes") if isinstance(doc.get("nodes"), dict) else {}
    return [f"{n}:{i}" for n, v in nodes.items() if isinstance(v, dict) and isinstance(v.get("interfaces"), dict)
            for i in v["interfaces"]]


def mutate(doc: dict[str, Any], rng: random.Random, n: int) -> list[str]:
    """Apply ``n`` mutations to ``doc`` in place; their descriptions."""
    desc = []
    for _ in range(n):
        paths = _paths(doc)
        op = rng.randrange(10)
        if op == 0 and paths:  # a misspelt key
            p = rng.choice([p for p in paths if isinstance(p[-1], str)] or paths)
            parent = _get(doc, p[:-1])
            if isinstance(p[-1], str) and isinstance(parent, dict):
                new = _typo(p[-1], rng)
                parent[new] = parent.pop(p[-1])
                desc.append(f"rename {'.'.join(map(str, p))} → {new!r}")
        elif op == 1 and paths:  # a key dropped
            p = rng.choice(paths)
            parent = _get(doc, p[:-1])
            del parent[p[-1]]
            desc.append(f"drop {'.'.join(map(str, p))}")
        elif op in (2, 3, 4) and paths:  # a hostile value
            p = rng.choice(paths)
            value = copy.deepcopy(rng.choice(HOSTILE))
            _get(doc, p[:-1])[p[-1]] = value
            desc.append(f"set {'.'.join(map(str, p))} = {value!r:.40}")
        elif op == 5:  # a key added somewhere
            c = rng.choice(_containers(doc))
            target = _get(doc, c)
            if isinstance(target, dict):
                key = rng.choice(KEYS)
                target[key] = copy.deepcopy(rng.choice(HOSTILE))
                desc.append(f"add {'.'.join(map(str, (*c, key)))}")
        elif op == 6:  # a list element duplicated or dropped
            lists = [p for p in _paths(doc) if isinstance(_get(doc, p), list) and _get(doc, p)]
            if lists:
                p = rng.choice(lists)
                lst = _get(doc, p)
                i = rng.randrange(len(lst))
                if rng.random() < 0.6:
                    lst.insert(i, copy.deepcopy(lst[i]))
                    desc.append(f"duplicate {'.'.join(map(str, (*p, i)))}")
                else:
                    del lst[i]
                    desc.append(f"remove {'.'.join(map(str, (*p, i)))}")
        elif op == 7:  # a reference pointed at nothing, or at the wrong thing
            refs = [p for p in paths if p[-1] in ("dev", "node", "interface", "via", "address") or
                    (len(p) >= 2 and p[-2] == "ends")]
            if refs:
                p = rng.choice(refs)
                value = rng.choice([*_points(doc), "nowhere:eth9", "eth9", "ghost", "192.0.2.254", "203.0.113.77"])
                _get(doc, p[:-1])[p[-1]] = value
                desc.append(f"point {'.'.join(map(str, p))} at {value!r}")
        elif op == 8:  # the links: none, or one to itself
            if rng.random() < 0.5 or not doc.get("links"):
                doc.pop("links", None)
                desc.append("no links")
            elif isinstance(doc["links"], list) and isinstance(doc["links"][0], dict):
                pts = _points(doc) or ["a:b"]
                pt = rng.choice(pts)
                doc["links"][0]["ends"] = [pt, pt]
                desc.append(f"link {pt} to itself")
        else:  # an address copied onto another interface
            addrs = [p for p in paths if len(p) >= 2 and p[-2] == "addresses"]
            if len(addrs) >= 2:
                a, b = rng.sample(addrs, 2)
                _get(doc, b[:-1])[b[-1]] = _get(doc, a)
                desc.append(f"copy {'.'.join(map(str, a))} to {'.'.join(map(str, b))}")
    return desc


def semantic(doc: dict[str, Any], rng: random.Random, n: int) -> list[str]:
    """Mutations that keep the file well-formed but change what it means (routes, roles, selectors,
    links): most still load, so the paths, findings and rendering behind them get exercised too."""
    desc = []
    nodes = {k: v for k, v in doc.get("nodes", {}).items() if isinstance(v, dict)}
    for _ in range(n):
        if not nodes:
            break
        name = rng.choice(sorted(nodes))
        node = nodes[name]
        ifaces = sorted(node.get("interfaces", {}))
        routes = node.get("routes", [])
        op = rng.randrange(7)
        if op == 0 and routes:
            routes.pop(rng.randrange(len(routes)))
            desc.append(f"drop a route of {name}")
        elif op == 1 and routes and ifaces:
            r = rng.choice(routes)
            r["dev"] = rng.choice(ifaces)
            r.pop("via", None)
            desc.append(f"route {r.get('dst')} of {name} via {r['dev']}")
        elif op == 2:
            node["role"] = rng.choice(("host", "gateway", "router"))
            desc.append(f"{name} role {node['role']}")
        elif op == 3 and doc.get("tunnels"):
            t = rng.choice(doc["tunnels"])
            t["encapsulation"] = rng.choice(("udp", "esp"))
            t["keying"] = rng.choice(("ike", "manual"))
            side = t.get(rng.choice(("left", "right")), {})
            if isinstance(side, dict):
                side["subnets"] = rng.choice((["0.0.0.0/0"], ["198.18.0.0/15"], ["192.0.2.0/25"], ["203.0.113.0/24"]))
            desc.append(f"tunnel {t.get('name')} changed")
        elif op == 4 and len(doc.get("links", [])) > 1:
            doc["links"].pop(rng.randrange(len(doc["links"])))
            desc.append("drop a link")
        elif op == 5 and doc.get("tunnels"):
            doc["tunnels"].pop(rng.randrange(len(doc["tunnels"])))
            desc.append("drop a tunnel")
        elif routes or ifaces:
            dst = rng.choice(("0.0.0.0/0", "198.51.100.0/24", "192.0.2.0/24", "198.18.0.0/16", "203.0.113.0/24"))
            node.setdefault("routes", []).insert(0, {"dst": dst, "dev": rng.choice(ifaces)} if ifaces else {"dst": dst})
            desc.append(f"{name}: new route {dst}")
    return desc


def _text_damage(text: str, rng: random.Random) -> tuple[str, str]:
    op = rng.randrange(4)
    if op == 0:
        k = rng.randrange(len(text) + 1)
        return text[:k], f"cut to {k} characters"
    if op == 1:
        k = rng.randrange(len(text))
        ch = rng.choice(("\x00", "\n", "[", "]", "=", '"', "'", "\\", "#", "{", "\u202e", "\ufeff"))
        return text[:k] + ch + text[k + 1:], f"character {k} → {ch!r}"
    if op == 2:
        depth = rng.choice((50, 500, 5000))
        return text + f"\ndeep = {'[' * depth}{']' * depth}\n", f"array nested {depth} deep"
    return text.replace("[[links]]", "[links]", 1), "[[links]] written as [links]"


def mutant(seeds: Sequence[tuple[str, str]], case: int) -> tuple[str, str, list[str]]:
    """Seed name, mutated TOML text and what was done, for ``case`` (``random.Random(case)``)."""
    import tomllib

    rng = random.Random(case)
    name, text = seeds[rng.randrange(len(seeds))]
    doc = tomllib.loads(text)
    if rng.random() < 0.4:
        desc = semantic(doc, rng, rng.randint(1, 4))
    else:
        desc = mutate(doc, rng, rng.randint(1, 4))
    try:
        out = tomli_w.dumps(doc)
    except (TypeError, ValueError) as e:  # a value TOML cannot hold (inf is fine; nothing else today)
        out, desc = text, [*desc, f"(not representable: {e}; seed text kept)"]
    if rng.random() < 0.1:
        out, what = _text_damage(out, rng)
        desc.append(what)
    return name, out, desc
