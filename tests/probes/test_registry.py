"""Probe kinds: adding a fourth kind is one module and one registration line.

The kind below is that module: a ProbeType subclass and ``register(...)``. Nothing else in
tracer changes, yet replay recognises its tag, names it in verdicts and the command line
grows a subcommand for it. The registry entry is removed after each test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracer.probes
from tests.synth import POINTS, TOPOLOGY, Scenario, build
from tracer.cli import build_parser
from tracer.errors import BadInput, NoTraffic
from tracer.model.verdict import Status
from tracer.probes import ProbeType, all_types, probe_type, register
from tracer.run.replay import load_run, replay_run

REPO = Path(__file__).resolve().parents[2]


# -- the fourth kind: this is all it takes -------------------------------------------------------
class Echo4(ProbeType):
    """Tagged ICMP echo, like ping, under its own tag kind byte (the default carrier)."""

    code = 200
    name = "echo4"
    nouns = ("test requests", "test replies")
    help = "test probes of tests/probes/test_registry.py"


def register_echo4() -> ProbeType:
    return register(Echo4())
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def echo4() -> Iterator[ProbeType]:
    all_types()  # the built-in kinds are loaded first, as in any command
    try:
        yield register_echo4()
    finally:
        tracer.probes._REGISTRY.pop(200, None)


def scenario(**kw: Any) -> Scenario:
    return Scenario(kind=200, kind_name="echo4", **kw)


def test_unregistered_kind_is_unknown(tmp_path):
    run_dir = build(scenario(), tmp_path / "run")
    with pytest.raises(BadInput, match=r"^unknown probe kind 'echo4' \(known: ping, ike, mtu, flow\)$"):
        load_run([run_dir])
    files = [run_dir / f"{p.replace(':', '_')}.pcapng" for p in POINTS]
    loaded = load_run(files, TOPOLOGY)
    # Probes of a kind nobody registered are not untagged traffic either: nothing to trace.
    with pytest.raises(NoTraffic, match="no traffic of interest in the captures: no tracer probe and no ICMP echo"):
        replay_run(loaded)


def test_registered_kind_is_replayed_and_named(echo4, tmp_path):
    assert probe_type("echo4") is echo4 and probe_type(200) is echo4
    (v,) = replay_run(load_run([build(scenario(), tmp_path / "run")]))
    assert (v.kind, v.status, v.run) == ("echo4", Status.DELIVERED, 0x5EED0001)
    assert v.summary == "3/3 test requests delivered and answered (west → east)"
    assert v.to_dict()["kind"] == "echo4"


def test_registered_kind_names_its_replies_in_a_loss(echo4, tmp_path):
    sc = scenario(drop_after={("reply", "west-gw:lan0"): None})
    (v,) = replay_run(load_run([build(sc, tmp_path / "run")]))
    assert v.status == Status.LOSS
    assert v.summary == "test requests delivered; 3/3 test replies lost on the wire west-gw:lan0 → west:eth0"


def test_registered_kind_is_found_without_a_manifest(echo4, tmp_path):
    run_dir = build(scenario(), tmp_path / "run")
    files = [run_dir / f"{p.replace(':', '_')}.pcapng" for p in POINTS]
    (v,) = replay_run(load_run(files, TOPOLOGY))
    assert (v.kind, v.status) == ("echo4", Status.DELIVERED)
    assert v.summary == "3/3 test requests delivered and answered (west → east)"


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_cli_has_a_subcommand_for_the_kind(echo4):
    parser = build_parser()
    assert subcommands(parser) == ["replay", "check", "topology", "ping", "ike", "mtu", "echo4", "watch", "lab", "plot", "report"]
    args = parser.parse_args(["echo4", "west", "east", "--count", "5"])
    assert (args.command, args.src, args.dst, args.count, args.interval) == ("echo4", "west", "east", 5, 0.2)
    assert "test probes of tests/probes/test_registry.py" in parser.format_help()


def test_cli_without_the_kind():
    assert subcommands(build_parser()) == ["replay", "check", "topology", "ping", "ike", "mtu", "watch", "lab", "plot", "report"]


def test_registering_a_taken_code_under_another_name_raises():
    all_types()

    class Impostor(Echo4):
        code = 1
        name = "impostor"

    with pytest.raises(ValueError, match=r"^probe tag kind 1 is taken by 'ping'$"):
        register(Impostor())
    assert probe_type(1).name == "ping"
    with pytest.raises(BadInput):
        probe_type("impostor")


@pytest.mark.parametrize("code", [0, 256])
def test_code_must_fit_the_tag_byte(code):
    out_of_range = type("OutOfRange", (Echo4,), {"code": code})
    with pytest.raises(ValueError, match=rf"^probe tag kind {code}: must fit the tag's kind byte \(1-255\)$"):
        register(out_of_range())
    assert code not in tracer.probes._REGISTRY


def test_registering_the_same_kind_again_is_harmless(echo4):
    assert register_echo4().name == "echo4"
    assert [t.name for t in all_types()] == ["ping", "ike", "mtu", "echo4", "flow"]


def test_registering_a_taken_name_under_another_code_raises():
    all_types()

    class Shadow(Echo4):
        code = 201
        name = "ping"

    try:
        with pytest.raises(ValueError, match="ping"):
            register(Shadow())
    finally:
        tracer.probes._REGISTRY.pop(201, None)


def test_registering_a_taken_code_before_any_lookup_raises():
    code = """
from tracer.probes import ProbeType, register, all_types
class NotPing(ProbeType):
    code = 1
    name = "notping"
    nouns = ("a", "b")
try:
    register(NotPing())
    print("accepted")
except ValueError as e:
    print("refused:", e)
print(*[t.name for t in all_types()])
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout == "refused: probe tag kind 1 is taken by 'ping'\nping ike mtu flow\n", out.stdout + out.stderr


def test_a_kind_cannot_shadow_another_subcommand():
    class Lab(Echo4):
        code = 202
        name = "lab"

    with pytest.raises(ValueError, match="probe kind name 'lab' is taken by a subcommand"):
        register(Lab())
    assert 202 not in tracer.probes._REGISTRY
