"""Live state at trace time, on the real lab (root, namespaces, strongSwan): a healthy run
records the nodes' state and finds no difference; a router re-wired through a new eth2 is
captured there too (a witness) and named; a policy rule that sends traffic around the tunnel
is named with the route the kernel really takes; in SSH mode east-gw is read over SSH."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.json_contract import one_run
from tracer import netns
from tracer.capture.pcapfile import read_capture
from tracer.cli import main
from tracer.lab import Lab

pytestmark = pytest.mark.lab

LAB = "ls"  # namespaces trc-ls-*; the extra namespace below is trc-ls-x-w (no lab node has a '-' there)
WITNESS_NS = "trc-ls-x-w"
DIFFERS = "topology differs from the live network: "
PATH_POINTS = {"west:eth0", "west-gw:lan0", "west-gw:ipsec0", "west-gw:wan0", "router:eth0", "router:eth1",
               "east-gw:wan0", "east-gw:ipsec0", "east-gw:lan0", "east:eth0"}


def ping(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, Path]:
    out = tmp_path / f"run{time.monotonic_ns()}"
    code = main(["ping", "--topology", str(lab.topology_path), "west", "east", "--out", str(out), "--json"])
    doc = one_run(capsys.readouterr().out)
    return code, doc, out


def captures(out: Path) -> dict[str, dict]:
    return {c["point"]: c for c in json.loads((out / "manifest.json").read_text())["captures"]}


@pytest.fixture
def rewired_router(lab: Lab) -> Iterator[None]:
    """router gets eth2 (198.18.3.254/24), a veth to a namespace of ours with nothing else in it."""
    netns.delete(WITNESS_NS)
    netns.add(WITNESS_NS)
    try:
        netns.ip_batch([f"link add eth2 type veth peer name veth0 netns {WITNESS_NS}",
                        "addr add 198.18.3.254/24 dev eth2", "link set eth2 up"], ns=lab.namespace("router"))
        netns.ip_batch(["link set veth0 up"], ns=WITNESS_NS)
        yield
    finally:
        # Delete the pair from the router's side first: a namespace's devices go asynchronously.
        netns.ip(["link", "del", "eth2"], ns=lab.namespace("router"), check=False)
        netns.delete(WITNESS_NS)
    assert "eth2" not in netns.ip(["-j", "link", "show"], ns=lab.namespace("router")).stdout


def test_healthy_run_records_live_state_and_finds_no_difference(lab: Lab, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, out = ping(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["netstate"] == "netstate" and "netstate_unread" not in manifest
    assert sorted(p.name for p in (out / "netstate").iterdir()) == [
        "east-gw.json", "east.json", "router.json", "west-gw.json", "west.json"]
    assert (out / "netstate").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (out / "netstate").iterdir())
    state = json.loads((out / "netstate" / "west-gw.json").read_text())
    assert state["format"] == "tracer-netstate/1" and state["netns"] == lab.namespace("west-gw")
    assert {"table": "220", "dst": "198.51.100.0/24", "dev": "ipsec0"}.items() <= next(
        r for r in state["routes"] if r["table"] == "220").items()
    assert not [w for w in doc["warnings"] if w.startswith(DIFFERS) or "witness" in w]
    assert set(captures(out)) == PATH_POINTS  # every live interface of the lab's nodes is on the paths


def test_a_new_router_interface_is_captured_and_named(lab: Lab, rewired_router: None, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, out = ping(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]
    caps = captures(out)
    assert set(caps) == PATH_POINTS | {"router:eth2"}
    assert caps["router:eth2"]["file"] == "router_eth2.pcapng" and caps["router:eth2"]["drops"] == 0
    cap = read_capture(out / "router_eth2.pcapng")
    assert cap.interfaces[0].name == "router:eth2"
    assert doc["warnings"][0] == DIFFERS + "router: interface eth2 (198.18.3.254/24) is not in the topology"
    assert "router:eth2 is not in the topology: used as a witness only" in doc["warnings"]
    # The same run directory replays to the same warnings.
    assert main(["replay", str(out), "--json"]) == 0
    assert one_run(capsys.readouterr().out)["warnings"] == doc["warnings"]


def test_a_policy_rule_is_named_with_the_route_the_kernel_takes(lab: Lab, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    ns = lab.namespace("east-gw")
    netns.ip_batch(["rule add from 198.51.100.0/24 table 100 pref 100",
                    "route add 192.0.2.0/24 via 198.18.2.254 dev wan0 table 100"], ns=ns)
    try:
        code, doc, _ = ping(lab, tmp_path, capsys)
    finally:
        netns.ip_batch(["rule del pref 100", "route flush table 100"], ns=ns)
    assert code == 1, doc["summary"]  # the replies leave east-gw in the clear and die at the router
    assert doc["warnings"][:2] == [
        DIFFERS + "east-gw: the kernel routes 192.0.2.0/24 via 198.18.2.254 dev wan0 (table 100, rule from "
                  "198.51.100.0/24), the topology via ipsec0",
        DIFFERS + "east-gw: policy rule 100: from 198.51.100.0/24 lookup 100 is not in the topology",
    ]


def test_ssh_mode_reads_east_gw_over_ssh(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab.up(ssh=True)  # last in this module: the lab keeps its SSH mode until torn down
    code, doc, out = ping(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]
    state = json.loads((out / "netstate" / "east-gw.json").read_text())
    assert state["host"] == "root@203.0.113.2" and state["netns"] is None
    # The management interface sshd listens on is real, and not in the topology: named, and witnessed.
    assert doc["warnings"][0] == DIFFERS + "east-gw: interface mgmt0 (203.0.113.2/24) is not in the topology"
    caps = captures(out)
    assert set(caps) == PATH_POINTS | {"east-gw:mgmt0"}
    assert caps["east-gw:mgmt0"]["backend"] == "ssh" and caps["east-gw:wan0"]["backend"] == "ssh"
