"""Every recorded lab scenario in captures/ replays to the verdict checked when it was recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.run.replay import load_run, replay_run

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
SCENARIOS = sorted(p for p in CAPTURES.iterdir() if (p / "manifest.json").exists()) if CAPTURES.exists() else []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_replays_to_expected_verdict(scenario):
    expected = json.loads((scenario / "manifest.json").read_text())["expected"]
    (v,) = replay_run(load_run([scenario]))
    assert v.status.value == expected["status"]
    assert v.exit_code == expected["exit_code"]
    lost = [(f.direction, f.where) for f in v.findings if f.outcome.value == "lost"]
    if expected["loss"] is None:
        assert lost == []
    else:
        assert lost[0] == (expected["loss"]["direction"], expected["loss"]["where"])


def test_every_lab_fault_has_a_recorded_scenario():
    from tracer.lab import FAULTS

    assert {p.name for p in SCENARIOS} >= {"all-delivered", *FAULTS}


def test_scenarios_are_small():
    for scenario in SCENARIOS:
        size = sum(p.stat().st_size for p in scenario.iterdir())
        assert size < 64 * 1024, f"{scenario.name} is {size} bytes"


def test_nat_on_the_path_is_noticed_and_followed():
    # A real stateless NAT on the lab's router: the ESP is followed across it by SPI and sequence.
    (v,) = replay_run(load_run([CAPTURES / "nat-on-path"]))
    assert v.status.value == "delivered"
    assert ("outer source rewritten 198.18.1.1:4500 → 198.18.2.254:1024 between router:eth0 and router:eth1 (NAT); "
            "the ESP was followed by SPI and sequence") in v.diagnoses
    assert all(s == "seen" for t in v.probes for s in t.sightings)
