"""Problem-report bundles (tracer.run.report): redaction as pure functions over text, and bundles
of the recorded scenarios — SUMMARY.txt first, the verdict exactly as ``tracer replay`` prints it,
every capture byte for byte, secrets planted in a run directory never in the bundle."""

from __future__ import annotations

import io
import json
import shutil
import struct
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cli.tracer_cmd import CAPTURES, tracer
from tracer.cli.report import lab_name_of, make_bundle
from tracer.errors import BadInput
from tracer.run.report import (
    ESP_KEY,
    HEX_KEY,
    KEY_DUMP,
    PRIVATE_KEY,
    PSK,
    REDACTED,
    Bundle,
    log_window,
    redact_assignments,
    redact_esp_sa_lines,
    redact_hex,
    redact_key_dumps,
    redact_private_keys,
    redact_text,
    save,
    secret_file_reason,
    strip_pcapng_secrets,
    write_archive,
)

PSK_HEX = "5f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff"
ESP_KEY_HEX = "000102030405060708090a0b0c0d0e0f10111213"
PEM = """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBLxC0ExampleExampleExampleExampleExampleExampleExampleAAAA
-----END OPENSSH PRIVATE KEY-----
"""
SWANCTL = f"""connections {{
  west-east {{
    local_addrs = 198.18.1.1
    remote_addrs = 198.18.2.1
  }}
}}
secrets {{
  ike-west-east {{
    id-local = 198.18.1.1
    id-remote = 198.18.2.1
    secret = 0x{PSK_HEX}
  }}
}}
"""
ESP_SA = (
    "# Wireshark ESP SA table (esp_sa). Contains secret keys: keep it private.\n"
    f'"IPv4","198.18.1.1","198.18.2.1","0xc1a2b3c4","AES-GCM with 16 octet ICV [RFC4106]","0x{ESP_KEY_HEX}","NULL",""\n'
    '"IPv4","203.0.113.1","203.0.113.2","0x0000a001","AES-CBC [RFC3602]","sixteen-byte-key",'
    '"HMAC-SHA-256-128 [RFC4868]","0x404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"\n'
)
KEYS_LOG = """09[CHD] encryption initiator key => 20 bytes @ 0x7f3c5c001e30
09[CHD]    0: F2 76 D1 67 B8 28 3D 8E 3B 91 53 DF F9 A3 8A BE  .v.g.(=.;.S.....
09[CHD]   16: EE 43 D5 2A                                      .C.*
09[IKE] CHILD_SA west-east{1} established with SPIs c1a2b3c4_i c5d6e7f8_o and TS 192.0.2.0/24 === 198.51.100.0/24
"""
SECRETS = (PSK_HEX, ESP_KEY_HEX, "sixteen-byte-key", "404142434445464748494a4b4c4d4e4f", "F2 76 D1 67",
           "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE", "hunter2")


# --- redaction rules, one at a time ---------------------------------------------------------------------


def test_swanctl_psk_is_redacted_and_the_rest_kept() -> None:
    text, n = redact_assignments(SWANCTL)
    assert n == 1 and PSK_HEX not in text
    assert "    secret = REDACTED\n" in text
    assert "id-local = 198.18.1.1" in text and "remote_addrs = 198.18.2.1" in text


@pytest.mark.parametrize(
    ("line", "redacted"),
    [
        ('eap-carol { secret = "hunter2" }', 'eap-carol { secret = "REDACTED" }'),
        ("psk: hunter2", "psk: REDACTED"),
        ('{"password": "hunter2", "keying": "manual"}', '{"password": "REDACTED", "keying": "manual"}'),
        ("PreSharedKey=hunter2", "PreSharedKey=REDACTED"),
        ('198.18.1.1 198.18.2.1 : PSK "hunter2"', '198.18.1.1 198.18.2.1 : PSK "REDACTED"'),
        (": RSA west.pem hunter2", ": RSA REDACTED"),
        ("carol : EAP 'hunter2'", "carol : EAP 'REDACTED'"),
    ],
)
def test_secret_assignments_in_other_shapes(line: str, redacted: str) -> None:
    assert redact_assignments(line) == (redacted, 1)


def test_what_is_not_a_secret_is_left_alone() -> None:
    text = ('esp_keys = "esp_sa"\nkeying = "manual"\nsecrets {\n  ike-west-east {\nid-local = 198.18.1.1\n'
            "mac 02:00:00:00:00:01 spi 0xc1a2b3c4 run 0x12e10df3 ike spi 9a8b7c6d5e4f3a2b\n"
            "12:03:04 09[IKE] IKE_SA west-east[1] established between 198.18.1.1[198.18.1.1]...198.18.2.1\n")
    assert redact_text(text) == (text, {})


def test_redacting_twice_changes_nothing_more() -> None:
    once, counts = redact_text(SWANCTL + ESP_SA + KEYS_LOG + PEM)
    assert sum(counts.values()) > 0
    assert redact_text(once) == (once, {})


def test_esp_sa_lines_keep_everything_but_the_keys() -> None:
    text, n = redact_esp_sa_lines(ESP_SA)
    assert n == 3
    lines = text.splitlines()
    assert lines[0].startswith("# Wireshark ESP SA table")
    assert lines[1] == ('"IPv4","198.18.1.1","198.18.2.1","0xc1a2b3c4","AES-GCM with 16 octet ICV [RFC4106]",'
                        '"REDACTED","NULL",""')
    assert lines[2] == ('"IPv4","203.0.113.1","203.0.113.2","0x0000a001","AES-CBC [RFC3602]","REDACTED",'
                        '"HMAC-SHA-256-128 [RFC4868]","REDACTED"')


def test_strongswan_key_dump_lines_lose_hex_and_ascii_columns() -> None:
    text, n = redact_key_dumps(KEYS_LOG)
    assert n == 2
    assert "09[CHD]    0: REDACTED\n09[CHD]   16: REDACTED\n" in text
    assert "F2 76" not in text and ".v.g." not in text and "EE 43" not in text
    assert "established with SPIs c1a2b3c4_i c5d6e7f8_o" in text
    # The same dump in charon.log, with its time prefix.
    assert redact_key_dumps("12:00:01 09[CHD]    0: F2 76 D1 67 B8 28 3D 8E  .v.g.(=.") == ("12:00:01 09[CHD]    0: REDACTED", 1)


@pytest.mark.parametrize(
    "key",
    [f"0x{PSK_HEX}", PSK_HEX.upper(), ESP_KEY_HEX, ":".join(ESP_KEY_HEX[i:i + 2] for i in range(0, 40, 2)),
     " ".join(ESP_KEY_HEX[i:i + 2] for i in range(0, 40, 2))],
)
def test_hex_keys_anywhere_in_text(key: str) -> None:
    text, n = redact_hex(f"the key is {key} (do not share)")
    assert (text, n) == (f"the key is {REDACTED} (do not share)", 1)


def test_private_key_blocks() -> None:
    text, n = redact_private_keys(f"before\n{PEM}after\n")
    assert n == 1
    assert text == ("before\n-----BEGIN OPENSSH PRIVATE KEY-----\nREDACTED\n-----END OPENSSH PRIVATE KEY-----\nafter\n")
    # In JSON the newlines are escaped, and a block cut short still goes.
    assert redact_private_keys('{"k": "-----BEGIN RSA PRIVATE KEY-----\\nMIIEow\\n-----END RSA PRIVATE KEY-----"}')[1] == 1
    assert redact_private_keys("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE")[0] == (
        "-----BEGIN EC PRIVATE KEY-----\nREDACTED\n-----END EC PRIVATE KEY-----")
    # Public keys and certificates are not secrets.
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert redact_private_keys(cert) == (cert, 0)


def test_redact_text_counts_each_kind() -> None:
    text, counts = redact_text("\n".join((SWANCTL, ESP_SA, KEYS_LOG, PEM, "key 00112233445566778899aabbccddeeff")))
    assert counts == {PSK: 1, ESP_KEY: 3, KEY_DUMP: 2, PRIVATE_KEY: 1, HEX_KEY: 1}
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("keys.log", "", "key or secrets file (by its name)"),
        ("esp_sa", "", "key or secrets file (by its name)"),
        ("id_ed25519", PEM, "key or secrets file (by its name)"),
        ("notes.txt", PEM, "private key file"),
        ("drops.txt", f"drop +3\n{PEM}", None),  # a key inside other text: redacted, not left out
        ("charon-debug.txt", KEYS_LOG, "charon key log (IKE and ESP keys)"),
        ("sas.csv", ESP_SA, "ESP SA file (esp_sa format, holds keys)"),
        ("README.txt", "just notes\n", None),
        ("west.json", '{"pem": "-----BEGIN RSA PRIVATE KEY-----"}', None),  # redacted, not left out
    ],
)
def test_secret_files_by_name_and_content(name: str, text: str, why: str | None) -> None:
    assert secret_file_reason(name, text) == why


def _dsb(secret: bytes) -> bytes:
    """A pcapng Decryption Secrets Block (little-endian) carrying ``secret``."""
    body = struct.pack("<II", 0x544C534B, len(secret)) + secret + b"\0" * (-len(secret) % 4)
    return struct.pack("<II", 0x0000000A, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def _with_dsb(capture: bytes, secret: bytes) -> bytes:
    shb_len = struct.unpack_from("<I", capture, 4)[0]
    return capture[:shb_len] + _dsb(secret) + capture[shb_len:]


def test_pcapng_decryption_secrets_blocks_are_removed() -> None:
    original = (CAPTURES / "esp-blocked" / "router_eth0.pcapng").read_bytes()
    secret = b"CLIENT_RANDOM 00 11"
    stripped, n = strip_pcapng_secrets(_with_dsb(original, secret))
    assert (stripped, n) == (original, 1)
    assert strip_pcapng_secrets(original) == (original, 0)
    assert strip_pcapng_secrets(b"not a capture at all") == (b"not a capture at all", 0)
    assert strip_pcapng_secrets(original[:-3]) == (original[:-3], 0)  # truncated: left as it is


def test_log_window_keeps_the_lines_of_the_run() -> None:
    start = datetime(2026, 11, 27, 3, 3, 25, tzinfo=UTC)
    at = start.astimezone()

    def line(seconds: int, text: str) -> str:
        return f"{(at.replace(microsecond=0) + timedelta(seconds=seconds)).strftime('%H:%M:%S')} {text}"

    log = "\n".join((line(-60, "old"), line(-3, "before"), line(1, "during"), "  continuation", line(2, "sending"),
                     line(30, "later")))
    assert [ln.split(" ", 1)[-1].strip() for ln in log_window(log, start, 1.8)] == ["before", "during", "continuation", "sending"]


# --- bundles of recorded scenarios --------------------------------------------------------------------------


def _archive(bundle: Bundle) -> tarfile.TarFile:
    buf = io.BytesIO()
    write_archive(bundle, buf)
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r:gz")


def _files(tar: tarfile.TarFile) -> dict[str, bytes]:
    out = {}
    for m in tar.getmembers():
        if m.isfile():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name.split("/", 1)[1]] = f.read()
    return out


@pytest.mark.parametrize("scenario", ["esp-blocked", "all-delivered", "rewired-router", "ike-blocked-ike"])
def test_bundle_of_a_recorded_scenario(scenario: str) -> None:
    run_dir = CAPTURES / scenario
    tar = _archive(make_bundle(run_dir))
    members = tar.getmembers()
    assert members[0].isdir() and members[0].name == f"tracer-report-{scenario}"
    assert members[1].name == f"tracer-report-{scenario}/SUMMARY.txt"  # the first file
    assert all(m.mode == (0o700 if m.isdir() else 0o600) for m in members)
    files = _files(tar)
    replay = tracer("replay", run_dir)
    assert files["verdict.txt"].decode() == replay.out
    assert files["verdict.json"].decode() == tracer("replay", run_dir, "--json").out
    summary = files["SUMMARY.txt"].decode()
    assert replay.out in summary
    assert f"== verdict (tracer replay RUN_DIR, exit {replay.code}) " in summary
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for c in manifest["captures"]:
        assert files[f"run/{c['file']}"] == (run_dir / c["file"]).read_bytes(), c["file"]
        assert f"run/{c['file']}" in summary  # in the index
    every = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert sorted(n.removeprefix("run/") for n in files if n.startswith("run/")) == every
    for name in every:
        assert files[f"run/{name}"] == (run_dir / name).read_bytes()  # nothing to redact in them
    for tool in ("tracer", "python", "kernel", "tcpdump", "tshark", "charon", "ip"):
        assert any(line.startswith(tool + " ") for line in summary.splitlines()), tool
    assert "redacted: nothing" in summary
    assert f"lab '{lab_name_of(run_dir)}' is NOT up" in summary


def test_netstate_snapshots_are_in_the_bundle() -> None:
    files = _files(_archive(make_bundle(CAPTURES / "rewired-router")))
    for node in ("west", "west-gw", "router", "east-gw", "east"):
        state = json.loads(files[f"run/netstate/{node}.json"])
        assert state["node"] == node
    assert b"topology differs from the live network" in files["verdict.txt"]


def test_the_bundled_run_directory_replays_to_the_same_verdict(tmp_path: Path) -> None:
    out = save(make_bundle(CAPTURES / "esp-blocked"), tmp_path / "b.tar.gz")
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path, filter="data")
    r = tracer("replay", tmp_path / "tracer-report-esp-blocked" / "run")
    assert r.code == 1 and "LOSS  3/3 echo requests lost inside router between eth0 and eth1 (forward)" in r.out, r
    assert r.out == tracer("replay", CAPTURES / "esp-blocked").out


def _planted(tmp_path: Path) -> Path:
    """esp-blocked, with every kind of secret a careless user could leave in a run directory."""
    run_dir = tmp_path / "run"
    shutil.copytree(CAPTURES / "esp-blocked", run_dir)
    topo = run_dir / "topology.toml"
    topo.write_text('esp_keys = "lab.keys"\n' + topo.read_text().replace(
        'netns = "trc-rec-router"', 'netns = "trc-rec-router"\nssh = "root@router"\nssh_key = "router-id"'))
    (run_dir / "lab.keys").write_text(ESP_SA)  # named by the topology: never copied
    (run_dir / "router-id").write_text("not even a key, but the topology names it as one\nhunter2\n")
    (run_dir / "keys.log").write_text(KEYS_LOG)
    (run_dir / "esp_sa").write_text(ESP_SA)
    (run_dir / "id_ed25519").write_text(PEM)
    (run_dir / "secret.bin").write_bytes(b"\0\1binary" + bytes.fromhex(PSK_HEX))
    (run_dir / "passwd").symlink_to("/etc/passwd")
    evidence = run_dir / "evidence"
    evidence.mkdir()
    (evidence / "swanctl.conf").write_text(SWANCTL)
    (evidence / "charon.log").write_text("12:00:00 04[IKE] IKE_SA established\n" + KEYS_LOG)
    (evidence / "drops.txt").write_text("router: nft rule inet filter forward udp dport 4500 drop +3 packets\n"
                                        f"{PEM}password: hunter2\n")
    (run_dir / "check.json").write_text(json.dumps({"findings": [{"node": "router", "class": "firewall",
                                                                  "fix": "nft delete rule ..."}],
                                                    "esp_sa": ESP_SA.splitlines()[1]}))
    cap = run_dir / "router_eth0.pcapng"
    cap.write_bytes(_with_dsb(cap.read_bytes(), b"CLIENT_RANDOM " + PSK_HEX.encode()))
    return run_dir


def test_secrets_planted_in_a_run_directory_stay_out(tmp_path: Path) -> None:
    run_dir = _planted(tmp_path)
    bundle = make_bundle(run_dir)
    blob = b"".join(m.data for m in bundle.members)
    for secret in SECRETS:
        assert secret.encode() not in blob, secret
        assert secret.upper().encode() not in blob, secret
    assert bytes.fromhex(PSK_HEX) not in blob and bytes.fromhex(ESP_KEY_HEX) not in blob
    left = {x.file: x.why for x in bundle.left_out}
    assert left == {
        "lab.keys": "key file named by the topology",
        "router-id": "key file named by the topology",
        "keys.log": "key or secrets file (by its name)",
        "esp_sa": "key or secrets file (by its name)",
        "id_ed25519": "key or secrets file (by its name)",
        "secret.bin": "binary file that is not a capture: cannot be checked for secrets",
        "passwd": "a symlink: not followed",
        "evidence/charon.log": "charon key log (IKE and ESP keys)",  # a log at key level is a key log
    }
    files = {m.name: m.data.decode(errors="replace") for m in bundle.members}
    assert "    secret = REDACTED\n" in files["run/evidence/swanctl.conf"]
    assert "router: nft rule inet filter forward udp dport 4500 drop +3 packets" in files["run/evidence/drops.txt"]
    assert "nft delete rule" in files["run/check.json"]
    assert (CAPTURES / "esp-blocked" / "router_eth0.pcapng").read_bytes() == next(
        m.data for m in bundle.members if m.name == "run/router_eth0.pcapng")
    summary = files["SUMMARY.txt"]
    # Evidence and check results are shown in the summary (redacted), and every redaction is listed.
    assert "-- run/evidence/drops.txt\n  router: nft rule inet filter forward udp dport 4500 drop +3 packets" in summary
    assert "-- run/check.json" in summary and "nft delete rule" in summary
    for line in ("redacted: run/evidence/swanctl.conf: 1 × pre-shared key or password",
                 "redacted: run/router_eth0.pcapng: 1 × pcapng decryption secrets block",
                 "left out: lab.keys: key file named by the topology",
                 "left out: keys.log: key or secrets file (by its name)"):
        assert line in summary.splitlines(), line
    assert {(r.file, r.what) for r in bundle.redactions} >= {
        ("run/evidence/drops.txt", PRIVATE_KEY), ("run/evidence/drops.txt", PSK),
        ("run/check.json", HEX_KEY)}  # an esp_sa line quoted in JSON: its hex key still goes


def test_not_a_run_directory_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a run directory"):
        make_bundle(tmp_path)
    with pytest.raises(BadInput, match="no such run directory"):
        make_bundle(tmp_path / "nope")
