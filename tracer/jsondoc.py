"""The JSON contract: every ``--json`` output is one document of one shape (docs/json.md).

    {"schema": "tracer-json/1", "tracer": VERSION, "command": "replay", "exit_code": 1,
     "error": null, "runs": [RUN, ...], <command-specific objects>}

``runs`` holds one verdict per probe run (:meth:`tracer.model.verdict.Verdict.to_dict`), empty
for commands that analyse none (``check``, ``lab status``). What only one command has goes in
an object named after it (``check``, ``lab``, ``report``, ``trace``), never loose at the top.
The schema, shipped beside this module, is the contract's text; tests validate every command
against it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any, BinaryIO, TextIO

from tracer import __version__

SCHEMA = "tracer-json/1"
SCHEMA_FILE = "tracer.schema.json"


def document(command: str, runs: list[dict[str, Any]] | None = None, exit_code: int = 0,
             **objects: object) -> dict[str, Any]:
    return {"schema": SCHEMA, "tracer": __version__, "command": command, "exit_code": exit_code,
            "error": None, "runs": list(runs or []), **objects}


def error_document(command: str | None, message: str, exit_code: int) -> dict[str, Any]:
    """What ``--json`` prints on stdout when a command fails (the same line goes to stderr)."""
    return document(command or "tracer", exit_code=exit_code) | {"error": {"message": message, "exit_code": exit_code}}


# Run keys that can hold one object per probe (100k in a probe-heavy run) → whether they hold
# floats. json's indented encoder is pure Python (~10 s for 100k probes); orjson writes the same
# text in C, floats included, except where json writes an exponent (1e-05, 1e+16: orjson writes
# 0.00001, 1e16): a list with such a float stays with json.
BULK_KEYS = {"probes": False, "observed": False, "sent": True}


def dumps(doc: dict[str, Any]) -> str:
    """The document as ``json.dumps(doc, indent=2, ensure_ascii=False)`` writes it, byte for byte."""
    return "".join(p if isinstance(p, str) else p.decode() for p in _pieces(doc))


def write(doc: dict[str, Any], out: TextIO) -> None:
    """``print(dumps(doc), file=out)`` without the whole text in memory at once (100k probes make
    a quarter of a gigabyte): piece by piece, orjson's bytes straight to a binary stream beneath."""
    utf8 = (getattr(out, "encoding", None) or "").lower().replace("-", "") == "utf8"
    binary: BinaryIO | None = getattr(out, "buffer", None) if utf8 else None  # (else: as print encodes)
    # The stream's own error handler: under a C/POSIX locale stdout is UTF-8 with surrogateescape,
    # so a path's undecodable bytes print as they did through print().
    errors = getattr(out, "errors", None) or "strict"
    if binary is not None:
        out.flush()
    for p in _pieces(doc):
        if binary is None:
            out.write(p if isinstance(p, str) else p.decode())
        else:
            binary.write(p.encode("utf-8", errors) if isinstance(p, str) else p)
    if binary is not None:
        binary.write(b"\n")
        binary.flush()
    else:
        out.write("\n")


def _pieces(doc: dict[str, Any]) -> Iterator[str | bytes]:
    """The text of ``dumps``, in pieces: json's own for the document, orjson's for the bulk lists."""
    mark = f"\x00bulk-{uuid.uuid4().hex}-"  # a string no document holds (json writes its NUL as \u0000)
    bulk: dict[str, tuple[str, list[Any]]] = {}  # token → (key, its list)

    def cut(run: dict[str, Any]) -> dict[str, Any]:
        run = dict(run)
        for k in BULK_KEYS:
            if run.get(k):
                token = f"{mark}{len(bulk)}"
                bulk[token], run[k] = (k, run[k]), token
        return run

    if any(r.get(k) for r in doc.get("runs") or [] for k in BULK_KEYS):
        doc = doc | {"runs": [cut(r) for r in doc["runs"]]}
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    pos = 0
    for at, token in sorted((text.index(json.dumps(t)), t) for t in bulk):
        line = text[text.rfind("\n", 0, at) + 1:at]
        key, items = bulk[token]
        yield text[pos:at]
        yield _bulk(items, len(line) - len(line.lstrip(" ")), BULK_KEYS[key])
        pos = at + len(json.dumps(token))
    yield text[pos:]


def _bulk(items: list[Any], indent: int, floats: bool) -> str | bytes:
    """``items`` as json's indented encoder writes them as a value on a line indented ``indent``
    (UTF-8 bytes when orjson wrote them)."""
    import orjson

    if not floats or _plain_floats(items):
        try:
            return orjson.dumps(items, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n" + b" " * indent)
        except TypeError:  # what orjson refuses (a key that is no string, a huge int): json's way
            pass
    return json.dumps(items, indent=2, ensure_ascii=False).replace("\n", "\n" + " " * indent)


def _plain_floats(items: list[Any]) -> bool:
    """Whether every float in ``items`` is one json writes without an exponent (0, or 1e-4 ≤ |x| <
    1e16; not NaN or infinite): there json and orjson write the same shortest digits alike."""
    stack: list[Any] = [items]
    while stack:
        x = stack.pop()
        for v in x.values() if isinstance(x, dict) else x:
            if isinstance(v, float):
                if not (v == 0 or 1e-4 <= abs(v) < 1e16):
                    return False
            elif isinstance(v, dict | list | tuple):
                stack.append(v)
    return True


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every document validates against."""
    return json.loads(resources.files("tracer").joinpath(SCHEMA_FILE).read_text())
