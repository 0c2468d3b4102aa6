"""``tracer.jsondoc.dumps`` writes exactly what ``json.dumps(doc, indent=2, ensure_ascii=False)``
writes (the goldens were written that way), also where the per-probe lists go through orjson:
odd strings, several runs, keys in either order, and what orjson refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tracer.jsondoc import document, dumps

ODD = "é → ✗ \"q\" \\ \n\t\b\f\x01\x7f\u2028 \U0001f600"


def reference(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


def probe(seq: int) -> dict[str, Any]:
    return {"seq": seq, "direction": "request", "outcome": "lost", "last_seen": ODD, "first_missed": None,
            "sightings": ["seen", "missed"], "times_us": [1_700_000_000_000_000 + seq, None],
            "esp": [None, {"spi": 0xC0000001, "seq": seq}], "empty": [], "nothing": {}}


@pytest.mark.parametrize("runs", [
    [],
    [{"run": "0x1", "probes": [], "observed": [], "rtt": {"avg_ms": 1e-05}}],
    [{"run": "0x1", "probes": [probe(q) for q in range(3)], "rtt": {"avg_ms": 1e-05, "max_ms": 1e16},
      "observed": [{"seen": [{"point": ODD, "ttl": 64}]}]}],
    [{"observed": [{"a": 1}], "probes": [probe(0)]}, {"probes": [probe(7)], "summary": ODD}],
])
def test_the_same_text_as_json_writes(runs: list[dict[str, Any]]) -> None:
    doc = document("replay", runs, 1, capture_map=[{"file": ODD}])
    assert dumps(doc) == reference(doc)


def test_what_orjson_refuses_is_written_by_json() -> None:
    doc = document("replay", [{"probes": [{"seq": 2**70}], "observed": [{1: "int key"}]}])
    assert dumps(doc) == reference(doc)


def test_the_input_is_left_as_it_was() -> None:
    doc = document("replay", [{"probes": [probe(1)]}])
    before = reference(doc)
    dumps(doc)
    assert reference(doc) == before
