"""Evidence on the real lab: the verdict cites the counter that ate the probes (real nft, real
strongSwan SAs through the lab's vici sockets), and a healthy run cites nothing."""

from __future__ import annotations

import json
import stat
import time

import pytest

from tests.json_contract import one_run
from tests.lab_faults import fault
from tracer.cli import main

pytestmark = pytest.mark.lab

LAB = "ev"  # namespaces trc-ev-*


def ping(lab, tmp_path, capsys):
    out = tmp_path / f"run{time.monotonic_ns()}"
    code = main(["ping", "--topology", str(lab.topology_path), "west", "east", "--out", str(out), "--json"])
    return code, one_run(capsys.readouterr().out), out


def lost(doc):
    (f,) = [f for f in doc["findings"] if f["outcome"] == "lost"]
    return f


def test_healthy_run_cites_nothing_and_keeps_the_snapshots(lab, tmp_path, capsys):
    code, doc, out = ping(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]
    assert all(not f["evidence"] for f in doc["findings"])
    assert not any("likely" in (f["reason"] or "") for f in doc["findings"])
    manifest = json.loads((out / "manifest.json").read_text())
    folder = out / manifest["evidence"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert "before.nft.router.json" in files and "after.strongswan.east-gw.json" in files
    drops = json.loads((folder / "events.dropreasons.router.json").read_text())
    assert drops["unavailable"] is None and drops["drops"] == []  # nothing of ours dropped
    assert manifest["events_ready_s"] < manifest["sniffers_ready_s"] + 3.0  # bpftrace compiled while they started
    assert all(stat.S_IMODE((folder / f).stat().st_mode) == 0o600 for f in files)
    sa = json.loads((folder / "after.strongswan.east-gw.json").read_text())
    assert sa["unavailable"] is None and any(c["kind"] == "sa" for c in sa["counters"])
    router_sa = json.loads((folder / "before.strongswan.router.json").read_text())
    assert router_sa["unavailable"] == "no ike_vici for this node in the topology"


def test_esp_blocked_cites_the_routers_rule(lab, tmp_path, capsys):
    with fault(lab, "esp-blocked"):
        code, doc, _ = ping(lab, tmp_path, capsys)
    assert code == 1, doc["summary"]
    f = lost(doc)
    line = 'router: nft rule "inet tracer_fault forward udp dport 4500 @th,64,32 != 0x0 drop" (ESP in UDP) +3 packets'
    assert line in f["evidence"]
    # The kernel's own word on these very ESP packets comes first, naming the rule that counted them.
    assert "router: kernel dropped 3/3 (NETFILTER_DROP in nft_do_chain, dev eth0)" in f["evidence"]
    assert f["reason"] == f"router: kernel dropped 3/3 (NETFILTER_DROP in nft_do_chain, dev eth0): {line[8:]}"


def test_gw_forward_drop_cites_west_gws_forward_rule(lab, tmp_path, capsys):
    with fault(lab, "gw-forward-drop"):
        code, doc, _ = ping(lab, tmp_path, capsys)
    assert code == 1, doc["summary"]
    f = lost(doc)
    assert ('west-gw: nft rule "inet tracer_fault forward iifname "lan0" oifname "ipsec0" drop" (lan0 to tunnel) '
            "+3 packets") in f["evidence"]
    assert "west-gw: kernel dropped 3/3 (NETFILTER_DROP in nft_do_chain, dev lan0)" in f["evidence"]
    assert f["reason"].startswith("west-gw: kernel dropped 3/3 (NETFILTER_DROP in nft_do_chain, dev lan0): nft rule")


def test_esp_input_drop_cites_east_gws_input_rule_and_the_idle_child_sa(lab, tmp_path, capsys):
    with fault(lab, "esp-input-drop"):
        code, doc, _ = ping(lab, tmp_path, capsys)
    assert code == 1, doc["summary"]
    f = lost(doc)
    assert ('east-gw: nft rule "inet tracer_fault input udp dport 4500 @th,64,32 != 0x0 drop" (ESP before decap) '
            "+3 packets") in f["evidence"]
    sa = [e for e in f["evidence"] if e.startswith("east-gw: CHILD_SA west-east SPI 0x")]
    assert len(sa) == 1 and sa[0].endswith(" bytes in +0 while ESP arrived"), f["evidence"]
    assert f["reason"].startswith("east-gw: kernel dropped 3/3 (NETFILTER_DROP in nft_do_chain, dev wan0): nft rule")
