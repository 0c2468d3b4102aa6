"""``tracer replay captures/<scenario>``, the real command line on the recorded lab runs: the exit
code says delivered (0) or loss (1), and ``--json`` is one JSON document with the status and
summary that the text's first verdict line shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli.tracer_cmd import CAPTURES, ROOT, tracer
from tests.json_contract import one_run

# Scenario → (exit code, status, summary), written from what each recorded fault is (README table).
SCENARIOS = {
    "all-delivered": (0, "delivered", "3/3 echo requests delivered and answered (west → east)"),
    "ike-ok": (0, "delivered", "3/3 IKE_SA_INIT requests delivered and answered (west-gw → east-gw)"),
    "gw-forward-drop": (1, "loss", "3/3 echo requests lost inside west-gw between lan0 and ipsec0 (forward)"),
    "esp-blocked": (1, "loss", "3/3 echo requests lost inside router between eth0 and eth1 (forward)"),
    "decap-drop": (1, "loss", "3/3 echo requests lost inside east-gw between ipsec0 and lan0 (forward)"),
    "esp-input-drop": (1, "loss",
                       "3/3 echo requests lost inside east-gw between wan0 and ipsec0 (decap, tunnel west-east)"),
    "no-return-route": (1, "loss", "echo requests delivered; 3/3 echo replies lost at east, before leaving east:eth0"),
    "ike-blocked": (1, "loss", "3/3 echo requests lost inside router after arriving on eth0, having left west-gw by "
                           "wan0 in the clear instead of into ipsec0"),
    "asymmetric-return": (1, "loss", "echo requests delivered; 3/3 echo replies lost inside router after arriving on "
                                     "eth1, having left east-gw by wan0 in the clear instead of into ipsec0"),
    "asymmetric-return-routed": (0, "delivered", "3/3 echo requests delivered and answered (west → east)"),
    "routing-loop": (1, "loss", "1/1 echo requests lost in a routing loop between west-gw and router"),
    "rewired-router": (1, "loss", "3/3 echo requests lost inside east-gw between wan1 and ipsec0 (decap), having "
                                  "left router by eth2, which the topology does not have (expected: eth1)"),
    "selector-mismatch": (1, "loss", "3/3 echo requests lost at west-gw: west-gw routes 198.51.100.10 into ipsec0 "
                                     "(tunnel west-east), but 198.18.1.1 → 198.51.100.10 is outside the tunnel's "
                                     "selectors (192.0.2.0/24 ↔ 198.51.100.0/24): no SA carries it (selector mismatch)"),
    "nat-on-path": (0, "delivered", "3/3 echo requests delivered and answered (west → east)"),
    "ike-blocked-ike": (1, "loss", "3/3 IKE_SA_INIT requests lost inside router between eth0 and eth1 (forward)"),
    "mtu-blackhole": (1, "loss", "3/3 echo requests lost inside router between eth0 and eth1 (forward)"),
    "mtu-ladder-blackhole": (1, "loss", "path MTU 1200–1249 bytes: 1200-byte probes delivered, 1250-byte probes "
                                        "lost inside router between eth0 and eth1 (forward): a PMTUD blackhole"),
    "mtu-search-ok": (0, "delivered", "path MTU 1400 bytes: 1400-byte probes delivered, 1401-byte probes refused "
                                      "with ICMP fragmentation needed from west-gw (192.0.2.1), next-hop MTU 1400"),
    "mtu-search-blackhole": (1, "loss", "path MTU 1218 bytes: 1218-byte probes delivered, 1219-byte probes lost "
                                        "inside router between eth0 and eth1 (forward): a PMTUD blackhole"),
    "wrong-mac": (1, "loss", "3/3 echo requests lost inside east-gw between wan0 and ipsec0 (decap, tunnel west-east)"),
    "esp-output-drop": (1, "loss",
                        "3/3 echo requests lost inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)"),
    "no-peer-route": (1, "loss",
                      "3/3 echo requests lost inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)"),
    "strict-rpfilter": (1, "loss", "echo requests delivered; 3/3 echo replies lost inside west-gw between wan0 and "
                                   "lan0 (forward), having left east-gw by wan0 in the clear instead of into ipsec0"),
    "iface-down": (1, "loss", "3/3 echo requests lost inside router between eth0 and eth1 (forward)"),
    "dead-responder": (1, "loss", "IKE_SA_INIT requests delivered; 3/3 IKE responses lost at east-gw, before leaving "
                                  "east-gw:wan0"),
}


def test_every_recorded_scenario_is_listed() -> None:
    assert sorted(p.name for p in CAPTURES.iterdir() if (p / "manifest.json").exists()) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_replay_json_exit_code_status_summary(scenario: str) -> None:
    code, status, summary = SCENARIOS[scenario]
    r = tracer("replay", CAPTURES / scenario, "--json")
    assert (r.code, r.err) == (code, ""), r
    doc = one_run(r.out)
    assert (doc["status"], doc["summary"], doc["exit_code"]) == (status, summary, code)
    manifest = json.loads((CAPTURES / scenario / "manifest.json").read_text())
    assert (doc["run"], doc["kind"]) == (f"{manifest['run']:#010x}", manifest["kind"])


@pytest.mark.parametrize(("scenario", "word"), [("all-delivered", "OK   "), ("esp-blocked", "LOSS ")])
def test_replay_text_first_lines(scenario: str, word: str) -> None:
    code, _, summary = SCENARIOS[scenario]
    r = tracer("replay", CAPTURES / scenario)
    assert (r.code, r.err) == (code, ""), r
    manifest = json.loads((CAPTURES / scenario / "manifest.json").read_text())
    head, verdict = r.out.splitlines()[:2]
    assert head == f"tracer ping: west (192.0.2.10) → east (198.51.100.10)  run {manifest['run']:#010x}"
    assert verdict == f"{word} {summary}"


def test_replay_of_files_needs_no_manifest() -> None:
    # The esp-blocked captures as bare files plus the topology: same loss, and a warning that
    # without a manifest probes seen nowhere are not counted.
    run = CAPTURES / "esp-blocked"
    files = sorted(run.glob("*.pcapng"))
    assert len(files) == 10
    r = tracer("replay", "--topology", run / "topology.toml", *files, "--json")
    assert (r.code, r.err) == (1, ""), r
    doc = one_run(r.out)
    assert (doc["status"], doc["summary"]) == ("loss", SCENARIOS["esp-blocked"][2])
    assert doc["warnings"] == ["no manifest: probes seen in no capture at all are not counted"]


def test_replay_with_stdout_closed_exits_with_its_verdict() -> None:
    # `tracer replay … >&-`: sys.stdout is None; the verdict's exit code, no traceback.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tracer", "replay", str(CAPTURES / "all-delivered")], cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=lambda: os.close(1))
    assert (proc.returncode, proc.stderr) == (0, "")
