"""Live ``tracer ike`` against the lab's real strongSwan responder (root, namespaces, charon)."""

from __future__ import annotations

import json
import time

import pytest

from tests.json_contract import one_run
from tests.lab_faults import fault
from tracer.cli import main

pytestmark = pytest.mark.lab

LAB = "ik"  # namespaces trc-ik-*, distinct from other test modules' labs

# What charon 5.9 (IKE proposal aes128-sha256-x25519, encap = yes) answers our IKE_SA_INIT:
# it picks the AES-CBC proposal, and fakes its NAT-detection hash to force ESP-in-UDP.
SA_INIT_ANSWER = (
    "IKE_SA_INIT response (SA, KE, Nonce, N(NAT_DETECTION_SOURCE_IP), N(NAT_DETECTION_DESTINATION_IP), "
    "N(CHILDLESS_IKEV2_SUPPORTED), N(MULTIPLE_AUTH_SUPPORTED); "
    "chose AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519); "
    "it signals NAT on its side (or forces UDP encapsulation)"
)
TAG_SPI_PREFIX = "d702"  # IKE tag magic 0xD7, kind 2 (ike): every probe's initiator SPI


@pytest.fixture
def fresh(lab):
    """charon keeps each probe's half-open IKE_SA for 30 s and, from 3 of them per peer
    address, answers with COOKIE: drop earlier tests' half-open SAs so each test starts clean."""
    forget_probes(lab)
    return lab


def forget_probes(lab) -> None:
    from tracer.lab import strongswan

    gw = lab.gateway_dir("east-gw")
    for sa in strongswan.list_sas(gw):
        if sa.get("initiator-spi", "").startswith(TAG_SPI_PREFIX):
            strongswan.swanctl(gw, "--terminate", "--ike-id", sa["uniqueid"], "--force", "--loglevel", "-1")


def ike(lab, tmp_path, capsys, *extra, ends=("west-gw", "east-gw")):
    """Run tracer ike; (exit code, JSON verdict, manifest with the probe report as "probe")."""
    out = tmp_path / f"run{time.monotonic_ns()}"
    code = main(["ike", "--topology", str(lab.topology_path), *ends, "--out", str(out), "--json", *extra])
    doc = one_run(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / manifest["report"]).read_text())
    assert report["format"] == "tracer-probes/1" and report["kind"] == "ike" and report["interrupted"] is False
    return code, doc, manifest | {"probe": report}


def sa_snapshot(lab) -> dict[str, list[tuple]]:
    """Every IKE and CHILD SA that is not one of our probes' half-open ones, with its SPIs."""
    snap = {}
    for gw, entry in lab.status()["gateways"].items():
        snap[gw] = sorted(
            (sa["name"], sa["state"], sa["initiator_spi"], sa["responder_spi"],
             tuple(sorted((c["name"], c["state"], c["spi_in"], c["spi_out"]) for c in sa["child_sas"])))
            for sa in entry["ike_sas"] if not sa["initiator_spi"].startswith(TAG_SPI_PREFIX)
        )
    return snap


def probe_sas(lab) -> list[dict]:
    return [sa for sa in lab.status()["gateways"]["east-gw"]["ike_sas"] if sa["initiator_spi"].startswith(TAG_SPI_PREFIX)]


def all_seen(doc, direction: str) -> bool:
    probes = [p for p in doc["probes"] if p["direction"] == direction]
    return len(probes) == 3 and all(s == "seen" for p in probes for s in p["sightings"])


def test_sa_init_answered_and_existing_sas_untouched(fresh, tmp_path, capsys):
    lab = fresh
    before = sa_snapshot(lab)
    assert any(c[1] == "INSTALLED" for sa in before["east-gw"] for c in sa[4]), before
    code, doc, manifest = ike(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]
    assert doc["summary"] == "3/3 IKE_SA_INIT requests delivered and answered (west-gw → east-gw)"
    assert [h["point"] for h in doc["paths"]["request"]["hops"]] == [
        "west-gw:wan0", "router:eth0", "router:eth1", "east-gw:wan0"]
    assert all_seen(doc, "request") and all_seen(doc, "reply")
    assert f"responder answered 3/3: {SA_INIT_ANSWER}" in doc["diagnoses"]
    sent = manifest["probe"]["sent"]
    assert manifest["probe"]["options"]["port"] == 500 and manifest["src"] == "198.18.1.1" and manifest["dst"] == "198.18.2.1"
    assert all(s["answer"] == SA_INIT_ANSWER and s["rtt_ms"] > 0 and s["error"] is None for s in sent)
    spis = {s["responder_spi"] for s in sent}
    assert len(spis) == 3 and "0x0000000000000000" not in spis
    # Never completed: the responder holds our probes as half-open IKE_SAs, and nothing else changed.
    assert sa_snapshot(lab) == before
    half_open = probe_sas(lab)
    assert {f"0x{sa['responder_spi']}" for sa in half_open} == spis
    assert {sa["state"] for sa in half_open} == {"CONNECTING"}
    assert all(sa["child_sas"] == [] for sa in half_open)


def test_port_4500_with_non_esp_marker(fresh, tmp_path, capsys):
    lab = fresh
    before = sa_snapshot(lab)
    code, doc, manifest = ike(lab, tmp_path, capsys, "--port", "4500")
    assert code == 0, doc["summary"]
    assert all_seen(doc, "request") and all_seen(doc, "reply")
    assert f"responder answered 3/3: {SA_INIT_ANSWER}" in doc["diagnoses"]
    assert manifest["probe"]["options"]["port"] == 4500
    # charon took them on its NAT-T port.
    assert {sa["local"] for sa in probe_sas(lab)} == {"198.18.2.1[4500]"}
    assert sa_snapshot(lab) == before


def test_cookie_once_three_probes_are_half_open(fresh, tmp_path, capsys):
    # strongSwan's cookie_threshold_ip is 3: the second run within 30 s gets COOKIE, which
    # still proves the responder is there and parses IKE_SA_INIT. Addresses work as ends too.
    code, doc, _ = ike(fresh, tmp_path, capsys)
    assert code == 0 and f"responder answered 3/3: {SA_INIT_ANSWER}" in doc["diagnoses"]
    code, doc, manifest = ike(fresh, tmp_path, capsys, ends=("198.18.1.1", "198.18.2.1"))
    assert code == 0, doc["summary"]
    assert "responder answered 3/3: notify COOKIE" in doc["diagnoses"]
    assert {s["responder_spi"] for s in manifest["probe"]["sent"]} == {"0x0000000000000000"}
    assert len(probe_sas(fresh)) == 3  # a COOKIE answer costs the responder no state


def test_ike_blocked_is_located_at_the_router(lab, tmp_path, capsys):
    with fault(lab, "ike-blocked"):
        code, doc, manifest = ike(lab, tmp_path, capsys)
    assert code == 1, doc["summary"]
    assert doc["summary"] == "3/3 IKE_SA_INIT requests lost inside router between eth0 and eth1 (forward)"
    (f,) = [f for f in doc["findings"] if f["outcome"] == "lost"]
    assert (f["direction"], f["count"], f["total"], f["edge"]) == ("request", 3, 3, "forward")
    assert "responder answered 0/3: no IKE answer reached the prober" in doc["diagnoses"]
    assert all(s["answer"] is None for s in manifest["probe"]["sent"])


def test_same_gateway_twice_is_bad_input(lab, capsys):
    code = main(["ike", "--topology", str(lab.topology_path), "west-gw", "west-gw"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
