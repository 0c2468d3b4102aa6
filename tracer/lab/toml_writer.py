"""A tiny TOML emitter (the stdlib reads TOML but cannot write it).

It covers what a topology needs: tables, arrays of tables, strings, integers,
booleans, floats and flat arrays of those. Within a table, plain values come
first, then sub-tables, then arrays of tables, which is the order TOML needs
for the output to round-trip through ``tomllib``.
"""

from __future__ import annotations

import json
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dumps(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    _table(doc, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _string(k)


def _string(s: str) -> str:
    # A JSON string is a valid TOML basic string for everything we emit
    # (JSON escapes are a subset of TOML's; non-ASCII is escaped as \\uXXXX).
    return json.dumps(s)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as a TOML value")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    for k, v in table.items():
        if not isinstance(v, dict) and not _is_table_array(v):
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        if isinstance(v, dict):
            sub = [*path, _key(k)]
            # A table holding only sub-tables needs no header of its own.
            if not v or any(not isinstance(x, dict) and not _is_table_array(x) for x in v.values()):
                lines += ["", f"[{'.'.join(sub)}]"]
            _table(v, sub, lines)
    for k, v in table.items():
        if _is_table_array(v):
            sub = [*path, _key(k)]
            for item in v:
                lines += ["", f"[[{'.'.join(sub)}]]"]
                _table(item, sub, lines)
