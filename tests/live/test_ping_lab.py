"""Live traced pings on the real lab (root, namespaces, strongSwan): every fault is located."""

from __future__ import annotations

import json
import time

import pytest

from tests.json_contract import one_run
from tests.lab_faults import fault
from tracer.cli import main

pytestmark = pytest.mark.lab

LAB = "tp"  # namespaces trc-tp-*, distinct from a user's default lab


def ping(lab, tmp_path, capsys, *extra):
    out = tmp_path / f"run{time.monotonic_ns()}"
    code = main(["ping", "--topology", str(lab.topology_path), "west", "east", "--out", str(out), "--json", *extra])
    doc = one_run(capsys.readouterr().out)
    return code, doc, out


def lost(doc, direction):
    return [f for f in doc["findings"] if f["direction"] == direction and f["outcome"] == "lost"]


def test_healthy_lab_all_delivered(lab, tmp_path, capsys):
    code, doc, out = ping(lab, tmp_path, capsys, "--plot", str(tmp_path / "fig.png"))
    assert (tmp_path / "fig.png").stat().st_size > 10_000  # --plot drew the verdict
    assert code == 0, doc["summary"]
    assert doc["status"] == "delivered"
    # Ten capture points per direction, every probe seen at each, ESP tied by (SPI, seq).
    req = [p for p in doc["probes"] if p["direction"] == "request"]
    assert len(req) == 3 and all(s == "seen" for p in req for s in p["sightings"])
    assert all(p["esp"][3] is not None for p in req)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["captures"]) == 10 and all(c["drops"] == 0 for c in manifest["captures"])
    # The lab's topology names its key file: ESP is decrypted by default, and the tag inside
    # each ESP packet agrees with the keyless (SPI, seq) association.
    assert "ESP decrypted with keys: 6 probe carriers identified by the tag inside" in doc["notes"]
    assert not any("disagreed" in d for d in doc["notes"])
    assert not (out / "esp_sa").exists() and "esp_sa" not in (out / "manifest.json").read_text()
    # Keys for every SA the daemons reported: the probes left 0.05 s apart, not 0.2.
    assert json.loads((out / "probes.json").read_text())["options"]["interval"] == 0.05


def test_without_keys_probes_keep_the_encap_window(lab, tmp_path, capsys):
    # Keyless, an ESP carrier is told from the next probe's by time: 0.2 s apart.
    code, doc, out = ping(lab, tmp_path, capsys, "--no-decrypt")
    assert code == 0, doc["summary"]
    assert json.loads((out / "probes.json").read_text())["options"]["interval"] == 0.2
    code, doc, out = ping(lab, tmp_path, capsys, "--interval", "0.3")
    assert code == 0 and json.loads((out / "probes.json").read_text())["options"]["interval"] == 0.3


@pytest.mark.parametrize(
    ("fault_name", "direction", "where", "extra"),
    [
        ("gw-forward-drop", "request", "inside west-gw between lan0 and ipsec0 (forward)", ()),
        ("esp-blocked", "request", "inside router between eth0 and eth1 (forward)", ()),
        ("decap-drop", "request", "inside east-gw between ipsec0 and lan0 (forward)", ()),
        ("esp-input-drop", "request", "inside east-gw between wan0 and ipsec0 (decap, tunnel west-east)", ()),
        ("no-return-route", "reply", "at east, before leaving east:eth0", ()),
        ("mtu-blackhole", "request", "inside router between eth0 and eth1 (forward)", ("--size", "1300", "--df")),
    ],
)
def test_fault_is_located(lab, tmp_path, capsys, fault_name, direction, where, extra):
    with fault(lab, fault_name):
        code, doc, _ = ping(lab, tmp_path, capsys, *extra)
    assert code == 1, doc["summary"]
    (f,) = lost(doc, direction)
    assert (f["where"], f["count"], f["total"]) == (where, 3, 3)


def test_mtu_blackhole_passes_small_probes(lab, tmp_path, capsys):
    with fault(lab, "mtu-blackhole"):
        code, doc, _ = ping(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]


def test_ike_blocked_names_leak(lab, tmp_path, capsys):
    with fault(lab, "ike-blocked"):
        code, doc, _ = ping(lab, tmp_path, capsys)
    assert code == 1, doc["summary"]
    f = lost(doc, "request")[0]
    # Believe the packets: they left west-gw in the clear and died in the router, which has no route.
    assert f["where"] == ("inside router after arriving on eth0, "
                          "having left west-gw by wan0 in the clear instead of into ipsec0")
    assert f["divergence"] == "left west-gw by wan0 in the clear instead of into ipsec0"
    assert f["reason"].startswith("no SA or policy on west-gw covered 192.0.2.10 → 198.51.100.10, which tunnel "
                                  "west-east should carry: is its IKE SA up?")
    assert (f["last_seen"], f["first_missed"]) == ("router:eth0", None)


def test_gateway_private_side_source(lab, tmp_path, capsys):
    # FreeS/WAN guide 5.2: test the tunnel from the gateway's private address.
    out = tmp_path / "gw"
    code = main(["ping", "--topology", str(lab.topology_path), "west-gw", "east", "--source", "lan0",
                 "--out", str(out), "--json"])
    doc = one_run(capsys.readouterr().out)
    assert code == 0, doc["summary"]
    assert doc["paths"]["request"]["hops"][0]["point"] == "west-gw:ipsec0"


def test_bad_node_name_is_one_line_exit_2(lab, capsys):
    code = main(["ping", "--topology", str(lab.topology_path), "west", "nowhere"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "neither a node" in err


def test_ctrl_c_keeps_valid_captures(lab, tmp_path):
    import signal
    import subprocess
    import sys

    from tracer.capture.pcapfile import read_capture

    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "ping", "--topology", str(lab.topology_path), "west",
                             "east", "--count", "100", "--interval", "0.1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until probes are on the wire (the first capture holds packets beyond its 24-byte header),
    # not for a fixed time: the sniffers and the kernel drop-reason tracer start at their own pace.
    raw = out / "west_eth0.tmp.pcap"
    deadline = time.monotonic() + 20
    while not (raw.exists() and raw.stat().st_size > 24 + 3 * 100) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    # One line: the interrupt, and that the verdict printed covers the probes sent.
    assert err.count("\n") == 1 and err.startswith("tracer: interrupted; the verdict covers the probes sent"), err
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["captures"]) == 10
    for c in manifest["captures"]:
        cap = read_capture(out / c["file"])
        assert len(cap.ts_ns) > 0, c["point"]
    assert not list(out.glob("*.tmp.pcap"))
