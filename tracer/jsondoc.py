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
from importlib import resources
from typing import Any

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


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every document validates against."""
    return json.loads(resources.files("tracer").joinpath(SCHEMA_FILE).read_text())
