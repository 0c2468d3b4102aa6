"""``tracer topology discover --ssh`` on the lab in SSH mode: east-gw read over a real OpenSSH session
(from the management namespace, with the lab's key and pinned host key), the other nodes from their
namespaces. Its veth peers cannot be seen over SSH, so its links come from shared subnets; its charon
is found in the session's namespace and asked over vici. The result gives the lab file's paths."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.cli.tracer_cmd import tracer
from tests.live.test_discover_lab import all_paths, ident
from tracer.lab import Lab
from tracer.topofile import load_topology

pytestmark = pytest.mark.lab

LAB = "pbs"  # namespaces trc-pbs-*
LAB_SSH = True


def test_an_ssh_host_is_read_over_ssh(lab: Lab, tmp_path: Path) -> None:
    theirs = load_topology(lab.topology_path)
    gw = theirs.nodes["east-gw"]
    assert gw.ssh and gw.ssh_netns and gw.ssh_key and gw.ssh_known_hosts
    out = tmp_path / "discovered.toml"
    r = tracer("topology", "discover", "--netns", f"trc-{LAB}-west*", "--netns", f"trc-{LAB}-router",
               "--netns", f"trc-{LAB}-east", "--ssh", f"east-gw={gw.ssh}", "--ssh-netns", gw.ssh_netns,
               "--ssh-key", Path(lab.topology_path).parent / gw.ssh_key,
               "--ssh-known-hosts", Path(lab.topology_path).parent / gw.ssh_known_hosts, "-o", out)
    assert r.code == 0, r
    mine = load_topology(out)
    doc = tomllib.loads(out.read_text())
    assert doc["nodes"]["east-gw"]["ssh"] == gw.ssh and doc["nodes"]["east-gw"]["capture"] == "ssh"
    assert "netns" not in doc["nodes"]["east-gw"]
    # Read over SSH: its interfaces (the management one too, which leads nowhere in the topology).
    assert sorted(mine.nodes["east-gw"].interfaces) == ["ipsec0", "lan0", "mgmt0", "wan0"]
    assert mine.nodes["east-gw"].role == "gateway"
    eg = f"trc-{LAB}-eastgw"

    def who(topo, node: str) -> str:
        return eg if node == "east-gw" else ident(topo, node)

    # Only the lab's nodes compared (the discovered file has no other), by identity.
    assert all_paths(mine, lambda n: who(mine, n)) == all_paths(theirs, lambda n: who(theirs, n))
