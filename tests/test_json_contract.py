"""The JSON contract (docs/json.md): the schema shipped in the package is a valid JSON Schema,
every golden verdict and every offline command's ``--json`` output validates against it, errors
under ``--json`` are documents too, and the fields mean one thing everywhere (run ids in hex,
times in integer µs below 2^53, ``last_seen`` a capture point of the probe's path). The live
commands (ping, ike, mtu, check, lab status, report on a lab run) are validated where the live
tests run them (tests/json_contract.py)."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import jsonschema
import pytest

from tests.cli.tracer_cmd import CAPTURES, ROOT, TOPOLOGY, tracer
from tests.json_contract import one_run, validated
from tracer.jsondoc import SCHEMA_FILE, schema

GOLDEN = sorted((ROOT / "tests" / "golden").glob("*.json"))
MAX_EXACT = 2**53 - 1


def test_the_schema_is_a_valid_schema_shipped_as_package_data() -> None:
    doc = schema()
    jsonschema.validators.validator_for(doc).check_schema(doc)
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert SCHEMA_FILE in cfg["options.package_data"]["tracer"].split()
    assert doc["properties"]["schema"]["const"] == "tracer-json/1"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_every_golden_verdict_validates(path: Path) -> None:
    doc = validated(path.read_text())
    assert doc["command"] == "replay" and doc["error"] is None
    manifest = json.loads((CAPTURES / path.stem / "manifest.json").read_text())
    (run,) = doc["runs"]
    assert run["run"] == f"{manifest['run']:#010x}"  # the same text as `tracer replay` shows and --run takes
    assert doc["exit_code"] == run["exit_code"]
    for p in run["probes"]:
        # last_seen / first_missed: capture points of the probe's own path, never indices.
        points = [h["point"] for h in run["paths"][p["direction"]]["hops"]]
        assert p["last_seen"] is None or p["last_seen"] in points
        assert p["first_missed"] is None or p["first_missed"] in points
        assert all(t is None or 10**15 < t <= MAX_EXACT for t in p["times_us"])  # µs since the epoch, exact
    for s in run["sent"]:
        assert s["sent_us"] is None or 10**15 < s["sent_us"] <= MAX_EXACT


def test_a_loss_verdict_says_what_the_topology_expected_not_delivered() -> None:
    run = json.loads((ROOT / "tests" / "golden" / "gw-forward-drop.json").read_text())["runs"][0]
    assert run["status"] == "loss" and run["paths"]["request"]["expected_delivery"] is True
    assert "delivered" not in run["paths"]["request"]  # the ambiguous key is gone


def test_ike_answer_and_rtt_are_structured() -> None:
    run = one_run(tracer("replay", CAPTURES / "ike-ok", "--json").out)
    (answer,) = run["ike"]["answers"]
    assert (run["ike"]["sent"], run["ike"]["answered"], answer["seqs"]) == (3, 3, [0, 1, 2])
    assert answer["answer"].startswith("IKE_SA_INIT response (SA, KE, Nonce")
    assert "NAT_DETECTION_SOURCE_IP" in answer["notifies"] and answer["peer_nat"] is True
    rtts = [s["rtt_ms"] for s in run["sent"]]
    assert rtts == [1.388543, 1.311599, 1.881677]  # ms, from the recorded capture's timestamps
    assert run["rtt"]["count"] == 3 and run["rtt"]["min_ms"] == min(rtts) and run["rtt"]["max_ms"] == max(rtts)
    assert (run["rtt"]["min_ms"], run["rtt"]["avg_ms"], run["rtt"]["max_ms"]) == (1.311599, 1.527273, 1.881677)


def test_mtu_result_is_structured() -> None:
    run = one_run(tracer("replay", CAPTURES / "mtu-ladder-blackhole", "--json").out)
    m = run["mtu"]
    assert m["largest_delivered"] is not None and m["smallest_lost"] is not None
    assert m["largest_delivered"] < m["smallest_lost"]
    assert all(r["delivered"] <= r["sent"] for r in m["sizes"])


@pytest.mark.parametrize(
    ("args", "code", "command"),
    [
        (("replay", "captures/nope", "--json"), 2, "replay"),
        (("replay", "--json"), 2, "replay"),
        (("replay", "captures/all-delivered", "--run", "zz", "--json"), 2, "replay"),
        (("ping", "west", "east", "--lab", "pfnone", "--json"), 4, "ping"),
        (("mtu", "west", "east", "--topology", "nope.toml", "--json"), 2, "mtu"),
        (("check", "--lab", "pfnone", "--json"), 4, "check"),
        (("lab", "fault", "nosuchfault", "--name", "pfnone", "--json"), 2, "lab fault"),
    ],
)
def test_errors_under_json_are_a_document_on_stdout_and_a_line_on_stderr(args, code, command) -> None:
    r = tracer(*args)
    assert r.code == code, r
    assert r.err.startswith("tracer: ") and r.err.count("\n") == 1, r.err
    doc = validated(r.out)
    assert doc["error"] == {"message": r.err.strip().removeprefix("tracer: "), "exit_code": code}
    assert (doc["command"], doc["exit_code"], doc["runs"]) == (command, code, [])


def test_no_json_no_document() -> None:
    r = tracer("replay", "captures/nope")
    assert (r.code, r.out) == (2, "")


def test_check_and_lab_status_validate() -> None:
    # Offline: check reads whatever the topology's nodes are here; a lab that is not up is exit 4.
    r = tracer("check", "-t", TOPOLOGY, "--json")
    doc = validated(r.out)
    assert doc["command"] == "check" and doc["exit_code"] == r.code and doc["check"]["checks"]
    r = tracer("lab", "status", "--name", "pfnone", "--json")
    doc = validated(r.out)
    assert (r.code, doc["exit_code"], doc["lab"]["up"], doc["lab"]["name"]) == (4, 4, False, "pfnone")


def test_report_validates(tmp_path: Path) -> None:
    r = tracer("report", CAPTURES / "esp-blocked", "-o", tmp_path / "b.tar.gz", "--json")
    doc = validated(r.out)
    assert doc["command"] == "report" and doc["runs"][0]["status"] == "loss"
    assert doc["report"]["path"] == str(tmp_path / "b.tar.gz")


def test_a_command_specific_object_is_allowed_and_a_wrong_type_is_not() -> None:
    # How other commands extend the contract (docs/json.md, "Extending"): an object of their own
    # at the top level validates; the known keys keep their types.
    doc = json.loads((ROOT / "tests" / "golden" / "all-delivered.json").read_text())
    validated(json.dumps(doc | {"topology": {"path": "lab.toml"}}))
    with pytest.raises(AssertionError, match="schema error"):
        validated(json.dumps(doc | {"topology": "lab.toml"}))
    bad = json.loads(json.dumps(doc))
    bad["runs"][0]["run"] = 12345
    with pytest.raises(AssertionError, match="schema error"):
        validated(json.dumps(bad))
