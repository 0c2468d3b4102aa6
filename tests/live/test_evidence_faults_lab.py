"""The evidence faults on the real lab (root, namespaces, strongSwan kernel-libipsec, bpftrace on
``skb:kfree_skb``): for each, ``tracer check`` finds the misconfiguration before any probe is
sent, and the trace names the hop *and* cites what proves the cause — the kernel's drop reason,
the firewall rule counter, the link state, the IKE daemon's log line or its missing socket."""

from __future__ import annotations

import time

import pytest

from tests.json_contract import one_run, validated
from tests.lab_faults import fault
from tracer.cli import main
from tracer.lab import Lab

pytestmark = pytest.mark.lab

LAB = "e2"  # namespaces trc-e2-*


def trace(lab: Lab, tmp_path, capsys, command: str = "ping", ends: tuple[str, str] = ("west", "east")) -> tuple[int, dict]:
    out = tmp_path / f"run{time.monotonic_ns()}"
    code = main([command, "--topology", str(lab.topology_path), *ends, "--out", str(out), "--json"])
    return code, one_run(capsys.readouterr().out)


def lost(doc: dict) -> dict:
    (f,) = [f for f in doc["findings"] if f["outcome"] == "lost"]
    return f


def check_failures(lab: Lab, capsys) -> list[tuple[str, str, str]]:
    code = main(["check", "--json", "-t", str(lab.topology_path)])
    doc = validated(capsys.readouterr().out)
    fails = [(c["node"], c["check"], c["detail"]) for c in doc["check"]["checks"] if c["status"] == "fail"]
    assert code == (1 if fails else 0)
    return fails


def test_wrong_mac_is_dropped_as_otherhost_and_check_finds_the_static_entry(lab, tmp_path, capsys):
    with fault(lab, "wrong-mac"):
        fails = check_failures(lab, capsys)
        code, doc = trace(lab, tmp_path, capsys)
    assert [(n, c) for n, c, _ in fails] == [("router", "neighbour")]
    assert "static neighbour entry 198.18.2.1 lladdr 02:00:5e:00:53:99 on eth1" in fails[0][2]
    assert code == 1
    f = lost(doc)
    assert f["where"] == "inside east-gw between wan0 and ipsec0 (decap, tunnel west-east)"
    assert "east-gw: kernel dropped 3/3 (OTHERHOST in ip_rcv_core, dev wan0)" in f["evidence"]
    assert f["reason"].endswith("the frames were not addressed to east-gw's MAC")


def test_esp_output_drop_cites_the_drop_the_rule_and_charons_eperm(lab, tmp_path, capsys):
    with fault(lab, "esp-output-drop"):
        code, doc = trace(lab, tmp_path, capsys)
    assert code == 1
    f = lost(doc)
    assert f["where"] == "inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)"
    assert f["reason"] == ('west-gw: kernel dropped 3/3 (NETFILTER_DROP in nft_do_chain): nft rule "inet tracer_fault '
                           'output udp dport 4500 @th,64,32 != 0x0 drop" (ESP out) +3 packets')
    assert any(e.startswith("west-gw: IKE daemon logged:") and e.endswith("Operation not permitted")
               for e in f["evidence"]), f["evidence"]


def test_no_peer_route_cites_out_no_routes_and_charons_log_and_check_finds_it(lab, tmp_path, capsys):
    with fault(lab, "no-peer-route"):
        fails = check_failures(lab, capsys)
        code, doc = trace(lab, tmp_path, capsys)
    assert ("west-gw", "peer-route") in [(n, c) for n, c, _ in fails]
    assert code == 1
    f = lost(doc)
    assert f["where"] == "inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)"
    assert f["reason"] == "west-gw's kernel counted them as dropped: Ip OutNoRoutes (no route for sending) +3"
    assert any(e.endswith("error writing to socket: Network is unreachable") for e in f["evidence"]), f["evidence"]


def test_strict_rpfilter_drop_is_cited_and_check_finds_it(lab, tmp_path, capsys):
    with fault(lab, "strict-rpfilter"):
        fails = check_failures(lab, capsys)
        code, doc = trace(lab, tmp_path, capsys)
    assert {("west-gw", "rp_filter"), ("east-gw", "route")} <= {(n, c) for n, c, _ in fails}
    assert code == 1
    f = lost(doc)
    assert f["direction"] == "reply" and f["where"].startswith("inside west-gw between wan0 and lan0 (forward)")
    assert "west-gw: kernel dropped 3/3 (IP_RPFILTER in ip_rcv_finish_core, dev wan0)" in f["evidence"]
    assert f["reason"].endswith("the reverse-path filter (rp_filter) rejected their source on wan0")


def test_iface_down_is_a_finding_not_a_refusal(lab, tmp_path, capsys):
    with fault(lab, "iface-down"):
        fails = check_failures(lab, capsys)
        code, doc = trace(lab, tmp_path, capsys)
    assert {("east-gw", "link"), ("router", "link")} <= {(n, c) for n, c, _ in fails}
    assert code == 1, doc["summary"]
    f = lost(doc)
    assert f["where"] == "inside router between eth0 and eth1 (forward)"
    assert f["reason"] == "east-gw:wan0 is down (operstate DOWN): router:eth1, its link peer, is DOWN"
    assert "east-gw:wan0" in doc["unobserved"]
    assert any(w.startswith("east-gw:wan0 not captured: tcpdump: wan0: That device is not up")
               for w in doc["warnings"]), doc["warnings"]


def test_dead_responder_is_named_and_the_lab_restarts_it(lab, tmp_path, capsys):
    with fault(lab, "dead-responder"):
        fails = check_failures(lab, capsys)
        code, doc = trace(lab, tmp_path, capsys, "ike", ("west-gw", "east-gw"))
        ping_code, ping = trace(lab, tmp_path, capsys)  # no SA: the ping leaks, and the dead daemon is why
    assert ping_code == 1 and not lost(ping)["reason"].startswith("likely")
    assert "east-gw's IKE daemon is not running" in lost(ping)["reason"]
    assert "east-gw:ipsec0" in ping["unobserved"]  # its TUN device died with charon: a finding, not exit 4
    assert ("east-gw", "ike-daemon") in [(n, c) for n, c, _ in fails]
    assert code == 1
    f = lost(doc)
    assert (f["direction"], f["where"]) == ("reply", "at east-gw, before leaving east-gw:wan0")
    assert f["reason"] == ("east-gw's IKE daemon is not running: nothing listens on UDP 500 or 4500 in its "
                           "namespace")
    status = lab.status()
    assert status["up"] and status["tunnel_up"] and all(c["alive"] for c in status["charon"].values())


def test_healthy_lab_check_and_trace_have_no_drop(lab, tmp_path, capsys):
    assert check_failures(lab, capsys) == []
    code, doc = trace(lab, tmp_path, capsys)
    assert code == 0 and all(not f["evidence"] for f in doc["findings"])
