"""``tracer.jsondoc.dumps`` writes exactly what ``json.dumps(doc, indent=2, ensure_ascii=False)``
writes (the goldens were written that way), also where the per-probe lists go through orjson:
odd strings, floats, several runs, keys in either order, and what orjson refuses or writes
otherwise. The lists said to hold no floats hold none by the schema."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tracer.jsondoc import BULK_KEYS, document, dumps, schema, write

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


def sent(rtt: float | None) -> dict[str, Any]:
    return {"seq": 1, "sent_us": 1_700_000_000_000_000, "size": 56, "rtt_ms": rtt, "error": None, "answer": ODD}


@pytest.mark.parametrize("rtts", [
    [0.123, 1.0, 0.0, -0.0, 12.5, 0.30000000000000004, 1e-4, 9999999999999998.0, None],
    [0.5, 1e-05],  # json writes an exponent, orjson would not
    [0.5, 1e16],
    [float("nan")],
    [float("inf")],
])
def test_floats_are_written_as_json_writes_them(rtts: list[float | None]) -> None:
    doc = document("replay", [{"probes": [probe(0)], "sent": [sent(x) for x in rtts]}])
    assert dumps(doc) == reference(doc)


def test_the_lists_without_floats_hold_no_numbers_but_integers() -> None:
    defs = schema()["$defs"]

    def number_types(node: Any, seen: set[str]) -> list[str]:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/") and ref not in seen:
                return number_types(defs[ref.rsplit("/", 1)[1]], seen | {ref})
            kinds = node.get("type", [])
            found = ["number"] if "number" in (kinds if isinstance(kinds, list) else [kinds]) else []
            return found + [t for v in node.values() for t in number_types(v, seen)]
        if isinstance(node, list):
            return [t for v in node for t in number_types(v, seen)]
        return []

    run = defs["run"]["properties"]
    assert all(number_types(run[k], set()) == [] for k, floats in BULK_KEYS.items() if not floats)
    assert number_types(run["sent"], set()) == ["number"]  # rtt_ms: the check can find one


def test_what_orjson_refuses_is_written_by_json() -> None:
    doc = document("replay", [{"probes": [{"seq": 2**70}], "observed": [{1: "int key"}]}])
    assert dumps(doc) == reference(doc)


def test_the_input_is_left_as_it_was() -> None:
    doc = document("replay", [{"probes": [probe(1)]}])
    before = reference(doc)
    dumps(doc)
    assert reference(doc) == before


def test_write_prints_what_dumps_returns(tmp_path: Path) -> None:
    doc = document("replay", [{"probes": [probe(q) for q in range(3)], "sent": [sent(0.5)]}])
    text = io.StringIO()
    write(doc, text)  # a text stream only
    assert text.getvalue() == dumps(doc) + "\n"
    with open(tmp_path / "out.json", "w", encoding="utf-8") as f:
        f.write("before ")  # what the stream held before is flushed first
        write(doc, f)  # orjson's bytes straight to the file beneath
    assert (tmp_path / "out.json").read_text(encoding="utf-8") == "before " + dumps(doc) + "\n"


def test_write_keeps_the_streams_error_handler(tmp_path: Path) -> None:
    # A C/POSIX locale makes stdout UTF-8 with surrogateescape: a path's undecodable byte prints
    # as print() would have printed it, not a UnicodeEncodeError halfway through the document.
    doc = document("replay", [{"inputs": ["/tmp/x\udcff.pcap"], "probes": [probe(0)]}])
    with open(tmp_path / "out.json", "w", encoding="utf-8", errors="surrogateescape") as f:
        write(doc, f)
    with open(tmp_path / "ref.json", "w", encoding="utf-8", errors="surrogateescape") as f:
        print(dumps(doc), file=f)
    assert (tmp_path / "out.json").read_bytes() == (tmp_path / "ref.json").read_bytes()
    assert b"/tmp/x\xff.pcap" in (tmp_path / "out.json").read_bytes()
