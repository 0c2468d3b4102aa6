"""Replay of a run directory with live state: differences from the topology come first among
the verdict's warnings; witness captures of interfaces the topology lacks are accepted on
nodes it has; old run directories (no netstate) replay as before. Synthetic runs
(tests/synth.py), hand-built live states, hand-written lines."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from tests.synth import Scenario, build
from tracer.capture.pcapng_writer import write_pcapng
from tracer.cli import main
from tracer.errors import BadInput
from tracer.model.netstate import KERNEL_RULES, LiveInterface, LiveRoute, NodeState
from tracer.run.manifest import CaptureEntry, Manifest, read_manifest, write_manifest, write_netstate
from tracer.run.replay import load_run, replay_run

ROUTER = NodeState(
    "router",
    (LiveInterface("lo", 1, True, True, "UNKNOWN", 65536, (IPv4Interface("127.0.0.1/8"),)),
     LiveInterface("eth0", 2, True, True, "UP", 1500, (IPv4Interface("198.18.1.254/24"),), "veth"),
     LiveInterface("eth1", 3, True, True, "UP", 1500, (IPv4Interface("198.18.2.254/24"),), "veth"),
     LiveInterface("eth2", 4, True, True, "UP", 1500, (IPv4Interface("198.18.3.254/24"),), "veth")),
    (LiveRoute("main", IPv4Network("198.18.1.0/24"), dev="eth0", proto="kernel"),
     LiveRoute("main", IPv4Network("198.18.2.0/24"), dev="eth1", proto="kernel"),
     LiveRoute("main", IPv4Network("198.18.3.0/24"), dev="eth2", proto="kernel"),
     LiveRoute("main", IPv4Network("192.0.2.0/24"), dev="eth2", via=IPv4Address("198.18.3.1"), proto="static")),
    KERNEL_RULES,
)
DIFF_ETH2 = "topology differs from the live network: router: interface eth2 (198.18.3.254/24) is not in the topology"
DIFF_ROUTE = ("topology differs from the live network: router: the live route 192.0.2.0/24 via 198.18.3.1 dev eth2 "
              "(table main) is not in the topology")


def _with_netstate(run_dir: Path, states: dict[str, NodeState], unread: dict[str, str] | None = None) -> None:
    m = read_manifest(run_dir)
    m.netstate = write_netstate(run_dir, states)
    m.netstate_unread = unread or {}
    write_manifest(run_dir, m)


def test_an_old_run_directory_has_no_live_state(tmp_path: Path) -> None:
    run_dir = build(Scenario(), tmp_path / "run")
    loaded = load_run([run_dir])
    assert loaded.manifest.netstate is None and loaded.netstate == {}
    (v,) = replay_run(loaded)
    assert v.status.value == "delivered" and not any("topology differs" in w for w in v.warnings)


def test_differences_come_first_among_the_warnings(tmp_path: Path) -> None:
    run_dir = build(Scenario(), tmp_path / "run")
    _with_netstate(run_dir, {"router": ROUTER}, {"east-gw": "ssh root@192.0.2.99: no answer within 10 s"})
    assert os.stat(run_dir / "netstate").st_mode & 0o777 == 0o700
    assert os.stat(run_dir / "netstate" / "router.json").st_mode & 0o777 == 0o600
    assert json.loads((run_dir / "manifest.json").read_text())["netstate"] == "netstate"
    loaded = load_run([run_dir])
    assert loaded.netstate == {"router": ROUTER}
    (v,) = replay_run(loaded)
    assert v.status.value == "delivered"
    assert list(v.warnings[:3]) == [
        DIFF_ETH2,
        DIFF_ROUTE,
        "east-gw: live state not read (ssh root@192.0.2.99: no answer within 10 s); not compared with the topology",
    ]
    assert v.to_dict()["warnings"][:2] == [DIFF_ETH2, DIFF_ROUTE]  # in JSON too


def test_the_text_verdict_shows_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = build(Scenario(), tmp_path / "run")
    _with_netstate(run_dir, {"router": ROUTER})
    assert main(["replay", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {DIFF_ETH2}\nwarning: {DIFF_ROUTE}\n" in out


def test_a_healthy_live_state_adds_nothing(tmp_path: Path) -> None:
    run_dir = build(Scenario(), tmp_path / "run")
    healthy = replace(ROUTER, interfaces=ROUTER.interfaces[:3], routes=ROUTER.routes[:2])
    _with_netstate(run_dir, {"router": healthy})
    (plain,) = replay_run(load_run([build(Scenario(), tmp_path / "plain")]))
    (v,) = replay_run(load_run([run_dir]))
    assert v.warnings == plain.warnings


def _add_capture(run_dir: Path, point: str, packets: list[bytes]) -> None:
    """A pcapng named ``point`` holding ``packets`` (Ethernet), listed in the manifest."""
    name = point.replace(":", "_") + ".pcapng"
    ts = 1_700_000_000_000_500_000
    frames = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800)) + p for p in packets]
    write_pcapng(run_dir / name, [(ts + k, f, len(f)) for k, f in enumerate(frames)], if_name=point, linktype=1, drops=0)
    m = read_manifest(run_dir)
    m.captures.append(CaptureEntry(point, name, 0))
    write_manifest(run_dir, m)


LEAKED = bytes(IP(src="192.0.2.10", dst="198.51.100.10") / ICMP())


def test_witness_capture_of_an_interface_the_topology_lacks(tmp_path: Path) -> None:
    # The router really has eth2 and something crossed it: the capture is kept as a witness.
    run_dir = build(Scenario(), tmp_path / "run")
    _add_capture(run_dir, "router:eth2", [LEAKED])
    loaded = load_run([run_dir])
    assert "router:eth2" in loaded.observations.points
    (v,) = replay_run(loaded)
    assert v.status.value == "delivered"
    assert "router:eth2 is not in the topology: used as a witness only" in v.warnings
    assert "router:eth2" not in v.unobserved and "router:eth2" not in {h.point for p in v.paths.values() for h in p.hops}


def test_a_capture_on_a_node_the_topology_lacks_is_still_refused(tmp_path: Path) -> None:
    run_dir = build(Scenario(), tmp_path / "run")
    _add_capture(run_dir, "core:eth0", [LEAKED])
    with pytest.raises(BadInput) as e:
        load_run([run_dir])
    assert str(e.value) == (f"capture point 'core:eth0' is not an interface of topology {run_dir / 'topology.toml'} "
                            "(name captures node:iface, or map them in a manifest)")


def test_a_broken_snapshot_costs_its_comparison_not_the_verdict(tmp_path: Path) -> None:
    run_dir = build(Scenario(), tmp_path / "run")
    _with_netstate(run_dir, {"router": ROUTER, "west": replace(ROUTER, node="east")})
    (run_dir / "netstate" / "router.json").write_text('{"format": "tracer-netstate/1", "node": "router", "rules": 5}')
    (v,) = replay_run(load_run([run_dir]))
    assert v.status.value == "delivered"
    assert list(v.warnings[:2]) == [  # in the topology's node order
        f"{run_dir}/netstate/west.json: holds the state of 'east', not 'west'; not compared with the topology",
        f"{run_dir}/netstate/router.json: malformed live network state (TypeError: 'int' object is not iterable); "
        "not compared with the topology",
    ]


@pytest.mark.parametrize("folder", ["../elsewhere", "/etc", "."])
def test_the_netstate_folder_is_a_plain_name(tmp_path: Path, folder: str) -> None:
    run_dir = build(Scenario(), tmp_path / "run")
    _with_netstate(run_dir, {"router": ROUTER})
    doc = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps(doc | {"netstate": folder}))
    (v,) = replay_run(load_run([run_dir]))
    assert v.warnings[0] == f"{run_dir}/manifest.json: netstate '{folder}' is not a folder name; live state not read"


def test_manifest_round_trip_keeps_the_netstate_keys(tmp_path: Path) -> None:
    tmp_path.joinpath("x").mkdir()
    m = Manifest(run=1, netstate="netstate", netstate_unread={"east-gw": "why"})
    write_manifest(tmp_path / "x", m)
    back = read_manifest(tmp_path / "x")
    assert (back.netstate, back.netstate_unread, back.extra) == ("netstate", {"east-gw": "why"}, {})
    write_manifest(tmp_path / "x", Manifest(run=1))
    assert "netstate" not in (tmp_path / "x" / "manifest.json").read_text()
