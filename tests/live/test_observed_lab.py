"""Live, on the real lab: each class of "the network disagrees with the topology" (issue 9) is
named by its divergence and its true loss point — never by blaming a hop that forwarded the probe."""

from __future__ import annotations

import time

import pytest

from tests.json_contract import one_run
from tests.lab_faults import fault
from tracer.cli import main

pytestmark = pytest.mark.lab

LAB = "ob"  # namespaces trc-ob-*


def ping(lab, tmp_path, capsys, *extra: str, ends: tuple[str, str] = ("west", "east")) -> tuple[int, dict]:
    out = tmp_path / f"run{time.monotonic_ns()}"
    code = main(["ping", "--topology", str(lab.topology_path), *ends, "--out", str(out), "--json", *extra])
    return code, one_run(capsys.readouterr().out)


def finding(doc: dict, direction: str) -> dict:
    return next(f for f in doc["findings"] if f["direction"] == direction and f["outcome"] != "delivered")


def test_asymmetric_return_names_the_gateway_that_routed_around_the_tunnel(lab, tmp_path, capsys):
    with fault(lab, "asymmetric-return"):
        code, doc = ping(lab, tmp_path, capsys)
    assert code == 1, doc["summary"]
    f = finding(doc, "reply")
    assert f["divergence"] == "left east-gw by wan0 in the clear instead of into ipsec0"
    assert (f["last_seen"], f["where"]) == ("router:eth1", "inside router after arriving on eth1, having left east-gw "
                                                           "by wan0 in the clear instead of into ipsec0")
    assert f["reason"].startswith("tunnel west-east's SAs were up")  # not "is IKE up?": the SA was up
    # The live state shows the policy rule that did it.
    assert any(w.startswith("topology differs from the live network: east-gw:") for w in doc["warnings"])


def test_asymmetric_return_that_arrives_is_a_warning_not_a_loss(lab, tmp_path, capsys):
    with fault(lab, "asymmetric-return-routed"):
        code, doc = ping(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]
    (rep,) = [f for f in doc["findings"] if f["direction"] == "reply"]
    assert rep["divergence"] == ("left east-gw by wan0 in the clear instead of into ipsec0, "
                                 "and rejoined the expected path at west-gw:lan0")
    replies = [p for p in doc["probes"] if p["direction"] == "reply"]
    assert all("gap" not in p["sightings"] for p in replies)


def test_routing_loop_is_named_with_its_ttl(lab, tmp_path, capsys):
    with fault(lab, "routing-loop"):
        code, doc = ping(lab, tmp_path, capsys, "--count", "1", "--snaplen", "128")
    assert code == 1, doc["summary"]
    f = finding(doc, "request")
    assert f["where"] == "in a routing loop between west-gw and router"
    assert "routing loop between west-gw and router: seen 63 times on west-gw:wan0, TTL 63→1" in f["reason"]


def test_rewired_router_is_not_blamed_for_forwarding(lab, tmp_path, capsys):
    with fault(lab, "rewired-router"):
        code, doc = ping(lab, tmp_path, capsys)
    assert code == 1, doc["summary"]
    f = finding(doc, "request")
    assert f["divergence"] == "left router by eth2, which the topology does not have (expected: eth1)"
    assert f["where"].startswith("inside east-gw between wan1 and ipsec0 (decap)")
    assert all("router between" not in g["where"] for g in doc["findings"])
    assert "topology differs from the live network: router: interface eth2 (198.18.3.254/24) is not in the topology" \
        in doc["warnings"]


def test_nat_on_the_path_is_delivered_and_noticed(lab, tmp_path, capsys):
    with fault(lab, "nat-on-path"):
        code, doc = ping(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]
    assert ("outer source rewritten 198.18.1.1:4500 → 198.18.2.254:1024 between router:eth0 and router:eth1 (NAT); "
            "the ESP was followed by SPI and sequence") in doc["diagnoses"]


def test_selector_mismatch_is_named(lab, tmp_path, capsys):
    code, doc = ping(lab, tmp_path, capsys, "--source", "wan0", ends=("west-gw", "east"))
    assert code == 1, doc["summary"]
    f = finding(doc, "request")
    assert f["where"].startswith("at west-gw: west-gw routes 198.51.100.10 into ipsec0 (tunnel west-east), but "
                                 "198.18.1.1 → 198.51.100.10 is outside the tunnel's selectors")
    assert doc["paths"]["request"]["dst_node"] == "east"
