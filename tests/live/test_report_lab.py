"""``tracer report`` on a run of the real lab (root, namespaces, strongSwan): the bundle holds the
daemons' state and charon's log, and not one byte of the lab's real key material — the PSK in the
gateways' swanctl.conf and every ESP key in the lab's esp_sa file — searched in every file of the
bundle, in every spelling a key is written in (raw, hex, upper-case hex, strongSwan's spaced dump)."""

from __future__ import annotations

import io
import json
import re
import shutil
import stat
import tarfile
import time
from pathlib import Path

import pytest

from tests.json_contract import one_run, validated
from tracer.cli import main
from tracer.esp import read_esp_sa_file
from tracer.lab import GATEWAYS
from tracer.lab.layout import ESP_SA_FILE
from tracer.lab.strongswan import KEYS_LOG, SWANCTL_CONF

pytestmark = pytest.mark.lab

LAB = "rp"  # namespaces trc-rp-*


def lab_secrets(lab) -> list[bytes]:
    """The lab's real key material: each gateway's PSK and both keys of every ESP SA."""
    secrets = []
    for gw in GATEWAYS:
        conf = (lab.gateway_dir(gw) / SWANCTL_CONF).read_text()
        found = re.findall(r"^\s*secret = 0x([0-9a-f]+)\s*$", conf, re.M)
        assert len(found) == 1 and len(found[0]) == 64, f"{gw}: no PSK found in swanctl.conf"
        secrets.append(bytes.fromhex(found[0]))
    sas = read_esp_sa_file(lab.dir / ESP_SA_FILE)
    assert len(sas) >= 2  # both directions of the CHILD_SA
    for sa in sas:
        secrets += [k for k in (sa.enc_key, sa.auth_key) if k]
    assert all(len(s) >= 16 for s in secrets)
    return secrets


def needles(secret: bytes) -> set[bytes]:
    """Every 8-byte piece of ``secret`` as it could be written: raw, hex, HEX, 'AA BB', 'aa:bb'."""
    out = set()
    for i in range(len(secret) - 7):
        piece = secret[i:i + 8]
        h = piece.hex()
        out |= {piece, h.encode(), h.upper().encode()}
        pairs = [h[j:j + 2] for j in range(0, 16, 2)]
        for sep in (" ", ":"):
            out |= {sep.join(pairs).encode(), sep.join(pairs).upper().encode()}
    return out


def bundle_files(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def assert_no_secret(path: Path, secrets: list[bytes]) -> None:
    files = bundle_files(path)
    with tarfile.open(path) as tar:  # the archive itself, uncompressed: headers and padding too
        raw = io.BytesIO()
        for m in tar.getmembers():
            raw.write(m.name.encode())
    blobs = {**files, "(names)": raw.getvalue()}
    for secret in secrets:
        for needle in needles(secret):
            for name, data in blobs.items():
                assert needle not in data, f"key material in {name}"


def ping_run(lab, tmp_path: Path, capsys) -> Path:
    out = tmp_path / f"run{time.monotonic_ns()}"
    code = main(["ping", "--topology", str(lab.topology_path), "west", "east", "--out", str(out), "--json"])
    doc = one_run(capsys.readouterr().out)
    assert code == 0, doc["summary"]
    return out


def report(run: Path, bundle: Path, capsys) -> dict:
    assert main(["report", str(run), "-o", str(bundle), "--json"]) == 0
    return validated(capsys.readouterr().out)


def test_bundle_of_a_lab_run_holds_the_daemons_and_no_secret(lab, tmp_path, capsys):
    secrets = lab_secrets(lab)
    run = ping_run(lab, tmp_path, capsys)
    bundle = tmp_path / "report.tar.gz"
    full = report(run, bundle, capsys)
    doc = full["report"]
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    folder = doc["folder"]
    files = bundle_files(bundle)
    names = list(files)
    assert names[0] == f"{folder}/SUMMARY.txt"
    # Daemon status as `tracer lab status --json` shows it, and charon's log (never keys.log).
    status = validated(files[f"{folder}/lab/status.json"])["lab"]
    assert status["up"] and status["tunnel_up"] and status["name"] == LAB
    for gw in GATEWAYS:
        assert any(c["state"] == "INSTALLED" for sa in status["gateways"][gw]["ike_sas"] for c in sa["child_sas"])
        assert b"CHILD_SA west-east{" in files[f"{folder}/lab/{gw}/charon.log"]
    assert not any(n.endswith((KEYS_LOG, ESP_SA_FILE, "swanctl.conf")) for n in names)
    summary = files[f"{folder}/SUMMARY.txt"].decode()
    assert f"lab '{LAB}' is up (status in lab/status.json)" in summary
    assert "CHILD_SA west-east INSTALLED" in summary
    for node in ("west", "west-gw", "router", "east-gw", "east"):
        assert f"{folder}/run/netstate/{node}.json" in files
    manifest = json.loads((run / "manifest.json").read_text())
    for c in manifest["captures"]:
        assert files[f"{folder}/run/{c['file']}"] == (run / c["file"]).read_bytes()
    assert doc["verdict"]["status"] == full["runs"][0]["status"] == "delivered"
    assert_no_secret(bundle, secrets)


def test_key_files_copied_into_the_run_directory_stay_out(lab, tmp_path, capsys):
    """A careless user copies the lab's config, key log and SA file into the run directory: the
    bundle still holds none of their secrets (the topology names esp_sa; the rest is redacted)."""
    secrets = lab_secrets(lab)
    run = ping_run(lab, tmp_path, capsys)
    shutil.copy(lab.dir / ESP_SA_FILE, run / ESP_SA_FILE)  # the file the run's topology.toml names
    evidence = run / "evidence"
    evidence.mkdir(exist_ok=True)  # the run's own evidence snapshots are there already
    for gw in GATEWAYS:
        shutil.copy(lab.gateway_dir(gw) / SWANCTL_CONF, evidence / f"{gw}-swanctl.conf")
        shutil.copy(lab.gateway_dir(gw) / KEYS_LOG, evidence / f"{gw}-keys.txt")
    shutil.copy(lab.dir / ESP_SA_FILE, evidence / "sas.csv")
    # The search finds them where they are: every secret is in the planted files, as written there.
    planted = b"".join(p.read_bytes() for p in (run / ESP_SA_FILE, *evidence.iterdir()))
    assert all(any(n in planted for n in needles(s)) for s in secrets)
    bundle = tmp_path / "careless.tar.gz"
    doc = report(run, bundle, capsys)["report"]
    left = {x["file"]: x["why"] for x in doc["left_out"]}
    assert left[ESP_SA_FILE] == "key file named by the topology"
    assert left["evidence/sas.csv"] == "ESP SA file (esp_sa format, holds keys)"
    for gw in GATEWAYS:
        assert left[f"evidence/{gw}-keys.txt"] == "charon key log (IKE and ESP keys)"
        assert {"file": f"run/evidence/{gw}-swanctl.conf", "what": "pre-shared key or password", "count": 1} \
            in doc["redactions"]
    files = bundle_files(bundle)
    conf = files[f"{doc['folder']}/run/evidence/west-gw-swanctl.conf"].decode()
    assert "secret = REDACTED" in conf and "local_addrs = 198.18.1.1" in conf
    assert_no_secret(bundle, secrets)
