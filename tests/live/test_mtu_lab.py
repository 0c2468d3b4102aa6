"""Live MTU probes on the real lab: the blackhole link is found, the tunnel overhead measured."""

from __future__ import annotations

import json

import pytest

from tests.lab_faults import fault
from tracer.cli import main

pytestmark = pytest.mark.lab

LAB = "mt"


def mtu(lab, tmp_path, capsys, *extra):
    code = main(["mtu", "--topology", str(lab.topology_path), "west", "east", "--out", str(tmp_path / "run"),
                 "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_blackhole_link_is_named(lab, tmp_path, capsys):
    with fault(lab, "mtu-blackhole"):
        code, doc = mtu(lab, tmp_path, capsys, "--sizes", "576,1000,1200,1250,1300")
    m = doc["mtu"]
    assert code == 1
    assert (m["largest_delivered"], m["smallest_lost"]) == (1200, 1250)
    lost = {r["size"]: r["where"] for r in m["sizes"] if r["delivered"] == 0}
    assert lost == {1250: "inside router between eth0 and eth1 (forward)", 1300: "inside router between eth0 and eth1 (forward)"}
    # kernel-libipsec, aes128gcm16 in UDP 4500: 20 IP + 8 UDP + 8 ESP + 8 IV + 2..5 trailer + 16 ICV, padded.
    assert m["esp_overhead"] == 64 and m["encap_point"] == "west-gw:ipsec0"
    assert doc["summary"].startswith("path MTU below 1250 bytes: 1200-byte probes delivered")
    assert any("PMTUD blackhole" in d for d in doc["diagnoses"])


def test_healthy_lab_tunnel_mtu(lab, tmp_path, capsys):
    code, doc = mtu(lab, tmp_path, capsys, "--sizes", "1000,1400,1450")
    m = doc["mtu"]
    # ipsec0 (kernel-libipsec's TUN) has MTU 1400: 1450 is stopped at west-gw with a frag-needed,
    # or refused by west's own stack once it has learnt that path MTU.
    assert code == 1 and m["largest_delivered"] == 1400 and m["smallest_lost"] == 1450
    r1450 = next(r for r in m["sizes"] if r["size"] == 1450)
    assert r1450["error"] == "Message too long" or r1450["where"] == "inside west-gw between lan0 and ipsec0 (forward)"
