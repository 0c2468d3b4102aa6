"""The JSON contract in tests: every ``--json`` output a test reads goes through :func:`validated`
(the schema shipped in the package, docs/json.md), so each command's JSON is checked wherever a
test runs it."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema

from tracer.jsondoc import SCHEMA, schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema(), format_checker=cls.FORMAT_CHECKER)


def validated(text: str) -> dict[str, Any]:
    """The document ``text`` holds, after checking it against the schema (raises on any mismatch)."""
    doc = json.loads(text)
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.absolute_path)) or "(top)"
        raise AssertionError(f"{len(errors)} schema error(s); first at {where}: {e.message}")
    assert doc["schema"] == SCHEMA
    return doc


def one_run(text: str) -> dict[str, Any]:
    """The single run of a validated document (a trace, or a replay of one run)."""
    doc = validated(text)
    assert len(doc["runs"]) == 1, [r["run"] for r in doc["runs"]]
    return doc["runs"][0]
