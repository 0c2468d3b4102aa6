"""Lab state: typed, written as JSON, read back equal; older files read; anything else refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.errors import LabError
from tracer.lab.process import Proc
from tracer.lab.state import LabState, SshMode, read_state, write_state

FULL = LabState(
    name="t1",
    namespaces={"west": "trc-t1-west", "west-gw": "trc-t1-westgw"},
    charon={"west-gw": Proc(101, 5000), "east-gw": Proc(102, None)},
    fault="esp-blocked",
    ssh=SshMode("trc-t1-mgmt", Proc(103, 5002)),
)

# What tracer wrote before LabState existed (no "version"): still readable, so its labs can be taken down.
OLDER = {
    "name": "t1",
    "namespaces": {"west": "trc-t1-west"},
    "charon": {"west-gw": {"pid": 101, "start": 5000}},
    "fault": None,
    "ssh": {"netns": "trc-t1-mgmt", "sshd": None},
}


@pytest.mark.parametrize("state", [FULL, LabState("t1"), LabState("t1", ssh=SshMode("trc-t1-mgmt"))],
                         ids=["full", "empty", "ssh-recorded"])
def test_json_round_trip(state: LabState) -> None:
    assert LabState.from_json(state.to_json()) == state


def test_json_shape_is_the_one_older_tracers_read() -> None:
    doc = json.loads(FULL.to_json())
    assert doc["version"] == 1
    assert doc["charon"]["west-gw"] == {"pid": 101, "start": 5000}
    assert doc["ssh"] == {"netns": "trc-t1-mgmt", "sshd": {"pid": 103, "start": 5002}}
    assert "ssh" not in json.loads(LabState("t1").to_json())


def test_older_state_is_read() -> None:
    state = LabState.from_json(json.dumps(OLDER))
    assert state == LabState("t1", {"west": "trc-t1-west"}, {"west-gw": Proc(101, 5000)}, None,
                             SshMode("trc-t1-mgmt"))
    assert LabState.from_json(json.dumps({k: v for k, v in OLDER.items() if k != "ssh"})).ssh is None


@pytest.mark.parametrize(
    ("text", "why", "down"),
    [
        ("{", "not JSON", "down"),
        ("[]", "'list' object has no attribute 'get'", "down"),
        (json.dumps({**OLDER, "version": 2}), "version 2, this tracer reads 1", "down --name t1"),
        (json.dumps({k: v for k, v in OLDER.items() if k != "charon"}), "no 'charon'", "down --name t1"),
        (json.dumps({**OLDER, "charon": {"west-gw": {"pid": "101"}}}), "bad process record", "down --name t1"),
        (json.dumps({**OLDER, "fault": 3}), "expected a string", "down --name t1"),
        (json.dumps({**OLDER, "name": "x\ny", "version": 2}), "version 2", "down"),  # not a lab name: not repeated
    ],
)
def test_anything_else_is_refused_in_one_line(text: str, why: str, down: str) -> None:
    with pytest.raises(LabError) as err:
        LabState.from_json(text, source="/run/tracer/lab-t1/state.json")
    msg = str(err.value)
    assert "\n" not in msg and why in msg, msg
    assert msg.startswith("/run/tracer/lab-t1/state.json: lab state not understood (")
    assert msg.endswith(f"run 'tracer lab {down}' to remove that lab")


def test_the_default_lab_needs_no_name_option() -> None:
    with pytest.raises(LabError, match=r"run 'tracer lab down' to remove"):
        LabState.from_json(json.dumps({**OLDER, "name": "lab", "version": 9}))


def test_read_and_write(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert read_state(path) is None
    assert write_state(path, FULL) is FULL
    assert read_state(path) == FULL
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
