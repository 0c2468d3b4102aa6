"""End to end: synthetic captures on the 5-node topology → replay → the right hop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.json_contract import one_run
from tests.synth import POINTS, Scenario, build
from tracer.cli import main
from tracer.model.verdict import Outcome, Sighting, Status
from tracer.run.replay import load_run, replay_run


def verdict_of(sc: Scenario, tmp_path: Path):
    run_dir = build(sc, tmp_path / "run")
    (v,) = replay_run(load_run([run_dir]))
    return v


def lost(v, direction):
    return [f for f in v.findings if f.direction == direction and f.outcome == Outcome.LOST]


def test_all_delivered(tmp_path):
    v = verdict_of(Scenario(), tmp_path)
    assert v.status == Status.DELIVERED
    assert v.summary.startswith("3/3 echo requests delivered and answered")
    assert v.exit_code == 0
    # Every hop of both directions saw every probe, ESP hops via (SPI, seq).
    assert all(s == "seen" for t in v.probes for s in t.sightings)
    esp_ids = {t.esp[3] for t in v.probes if t.direction == "request"}
    assert esp_ids == {(0xC0000001, 1), (0xC0000001, 2), (0xC0000001, 3)}


@pytest.mark.parametrize(
    ("after", "where", "edge"),
    [
        ("west-gw:lan0", "inside west-gw between lan0 and ipsec0 (forward)", "forward"),
        ("west-gw:ipsec0", "inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)", "encap"),
        ("router:eth1", "on the wire router:eth1 → east-gw:wan0", "wire"),
        ("east-gw:wan0", "inside east-gw between wan0 and ipsec0 (decap, tunnel west-east)", "decap"),
        ("east-gw:lan0", "on the wire east-gw:lan0 → east:eth0", "wire"),
    ],
)
def test_request_lost(tmp_path, after, where, edge):
    v = verdict_of(Scenario(drop_after={("request", after): None}), tmp_path)
    assert v.status == Status.LOSS and v.exit_code == 1
    (f,) = lost(v, "request")
    assert (f.count, f.total, f.where, f.edge, f.last_seen) == (3, 3, where, edge, after)
    assert v.summary == f"3/3 echo requests lost {where}"
    assert not lost(v, "reply")  # replies were never sent: not a second loss


def test_reply_lost_on_wire(tmp_path):
    v = verdict_of(Scenario(drop_after={("reply", "west-gw:lan0"): None}), tmp_path)
    (f,) = lost(v, "reply")
    assert f.where == "on the wire west-gw:lan0 → west:eth0"
    assert v.summary == "echo requests delivered; 3/3 echo replies lost on the wire west-gw:lan0 → west:eth0"


def test_no_reply_sent(tmp_path):
    v = verdict_of(Scenario(drop_at_source={"reply": None}), tmp_path)
    (f,) = lost(v, "reply")
    assert f.where == "at east, before leaving east:eth0"
    assert "received the request but no reply left" in f.reason


def test_partial_loss_names_the_seqs(tmp_path):
    v = verdict_of(Scenario(count=5, drop_after={("request", "router:eth0"): {1, 3}}), tmp_path)
    (f,) = lost(v, "request")
    assert (f.count, f.total, f.seqs, f.edge) == (2, 5, (1, 3), "forward")
    assert any(g.outcome == Outcome.DELIVERED and g.count == 3 for g in v.findings if g.direction == "request")


def test_capture_gap_is_not_loss(tmp_path):
    v = verdict_of(Scenario(gaps={("request", "router:eth0", 1), ("reply", "west-gw:ipsec0", 2)}), tmp_path)
    assert v.status == Status.DELIVERED
    req1 = next(t for t in v.probes if t.direction == "request" and t.seq == 1)
    assert req1.sightings[POINTS.index("router:eth0")] == "gap"


def test_missing_capture_makes_adjacent_loss_inconclusive(tmp_path):
    sc = Scenario(drop_after={("request", "west-gw:ipsec0"): None}, omit={"west-gw:wan0"})
    v = verdict_of(sc, tmp_path)
    assert v.status == Status.INCONCLUSIVE and v.exit_code == 3
    assert "west-gw:wan0" in v.unobserved
    f = next(f for f in v.findings if f.direction == "request")
    assert f.outcome == Outcome.INCONCLUSIVE
    assert "west-gw:wan0 was not captured" in f.reason


def test_missing_capture_elsewhere_does_not_block_verdict(tmp_path):
    v = verdict_of(Scenario(drop_after={("request", "east-gw:wan0"): None}, omit={"west:eth0"}), tmp_path)
    assert v.status == Status.LOSS
    assert lost(v, "request")[0].edge == "decap"


def test_sniffer_drops_make_silence_inconclusive(tmp_path):
    sc = Scenario(drop_after={("request", "router:eth0"): None}, sniffer_drops={"router:eth1": 7})
    v = verdict_of(sc, tmp_path)
    assert v.status == Status.INCONCLUSIVE
    assert v.drops == {"router:eth1": 7}
    assert "router:eth1 had sniffer drops" in v.findings[0].reason


def test_raw_esp(tmp_path):
    v = verdict_of(Scenario(raw_esp=True, drop_after={("request", "router:eth0"): None}), tmp_path)
    (f,) = lost(v, "request")
    assert f.where == "inside router between eth0 and eth1 (forward)"


def test_background_long_before_probes_keeps_association(tmp_path):
    # Background in the SA whose ESP left before the probe entered: FIFO rules it out.
    v = verdict_of(Scenario(background=3, drop_after={("request", "router:eth0"): None}), tmp_path)
    assert v.status == Status.LOSS
    assert lost(v, "request")[0].where == "inside router between eth0 and eth1 (forward)"


def test_background_inside_the_encap_window_is_said_not_guessed(tmp_path):
    # Background entering the SA while the probe is inside the gateway: which ESP packet is
    # the probe's is ambiguous, so the ESP hops are "unknown" rather than guessed.
    v = verdict_of(Scenario(background=2, background_offset_ns=20_000), tmp_path)
    assert v.status == Status.DELIVERED  # seen after decap, so delivered regardless
    assert {t.sightings[3] for t in v.probes if t.direction == "request"} == {Sighting.GAP}
    sc = Scenario(background=2, background_offset_ns=20_000, drop_after={("request", "router:eth0"): None})
    v2 = verdict_of(sc, tmp_path / "b")
    assert v2.status == Status.INCONCLUSIVE
    assert "could not be tied to the probe" in v2.findings[0].reason


@pytest.mark.parametrize("esp_lost", [False, True])
def test_close_probes_without_keys_are_said_not_guessed(tmp_path, esp_lost):
    # Probes closer together than the encap window (0.2 s): the next probe's ESP packet falls in
    # a lost probe's window, so without keys which probe it carried cannot be told (dropped
    # before encryption, or encrypted and lost before wan0): inconclusive, never another hop.
    lose = {"esp_lost": {"request": {1}}} if esp_lost else {"drop_after": {("request", "west-gw:ipsec0"): {1}}}
    v = verdict_of(Scenario(count=5, spacing_ns=50_000_000, **lose), tmp_path)
    assert v.status == Status.INCONCLUSIVE and v.exit_code == 3, v.summary
    assert all(f.last_seen == "west-gw:ipsec0" for f in lost(v, "request"))
    # 0.2 s apart (the keyless default) the same loss is located.
    v = verdict_of(Scenario(count=5, **lose), tmp_path / "apart")
    assert v.status == Status.LOSS and v.exit_code == 1, v.summary
    assert v.summary == "1/5 echo requests lost inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)"


@pytest.mark.parametrize("esp_lost", [False, True])
def test_close_probes_with_keys_are_located(tmp_path, esp_lost):
    # With keys every ESP packet at wan0 is opened: none carried the lost probe, however close.
    lose = {"esp_lost": {"request": {1}}} if esp_lost else {"drop_after": {("request", "west-gw:ipsec0"): {1}}}
    sc = Scenario(count=5, spacing_ns=50_000_000, esp_key=KEY, **lose)
    run = build(sc, tmp_path / "run")
    v = replay_run(load_run([run]), esp_keys=tmp_path / "run.esp_sa")[0]
    assert v.status == Status.LOSS and v.exit_code == 1, v.summary
    assert v.summary == "1/5 echo requests lost inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)"


@pytest.mark.parametrize("keyed", [True, False])
def test_a_close_neighbour_missing_from_the_clear_capture_lends_no_carrier(tmp_path, keyed):
    # Probe 1 dies before encryption and probe 2 is missing from the ipsec0 capture: probe 1
    # is alone in its window and would take probe 2's ESP packet, which decryption (or the far
    # side) names as probe 2's. One packet carries one probe: never "lost inside east-gw".
    sc = Scenario(count=5, spacing_ns=50_000_000, esp_key=KEY if keyed else None,
                  drop_after={("request", "west-gw:ipsec0"): {1}}, gaps={("request", "west-gw:ipsec0", 2)})
    run = build(sc, tmp_path / "run")
    (v,) = replay_run(load_run([run]), esp_keys=tmp_path / "run.esp_sa" if keyed else None)
    assert not [f for f in lost(v, "request") if "east-gw" in f.where], v.summary
    if keyed:
        assert v.summary == "1/5 echo requests lost inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)"
    else:
        assert v.status == Status.INCONCLUSIVE, v.summary


def test_leak_in_clear_that_still_arrives_is_a_divergence_not_a_loss(tmp_path):
    v = verdict_of(Scenario(leak=True), tmp_path)
    assert v.status == Status.DELIVERED
    req, rep = (next(f for f in v.findings if f.direction == d) for d in ("request", "reply"))
    assert req.divergence == ("left west-gw by wan0 in the clear instead of into ipsec0, "
                              "and rejoined the expected path at east-gw:lan0")
    assert rep.divergence == ("left east-gw by wan0 in the clear instead of into ipsec0, "
                              "and rejoined the expected path at west-gw:lan0")
    t = next(t for t in v.probes if t.direction == "request")
    # The ESP hops saw it in the clear (a leak) or not at all (it went around them): never "gap".
    assert [s.value for s in t.sightings] == ["seen", "seen", "elsewhere", "leaked", "leaked", "leaked", "leaked",
                                              "elsewhere", "seen", "seen"]


def test_cli_json_and_exit_code(tmp_path, capsys):
    run_dir = build(Scenario(drop_after={("request", "west-gw:lan0"): None}), tmp_path / "run")
    code = main(["replay", str(run_dir), "--json"])
    doc = one_run(capsys.readouterr().out)
    assert code == 1
    assert doc["status"] == "loss"
    assert doc["findings"][0]["where"] == "inside west-gw between lan0 and ipsec0 (forward)"
    assert doc["paths"]["request"]["hops"][3]["esp"]["tunnel"] == "west-east"


def test_cli_text_output(tmp_path, capsys):
    run_dir = build(Scenario(drop_after={("request", "west-gw:lan0"): None}), tmp_path / "run")
    assert main(["replay", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "LOSS  3/3 echo requests lost inside west-gw between lan0 and ipsec0 (forward)" in out
    assert "✗ lost here" in out


def test_replay_files_without_manifest(tmp_path, capsys):
    run_dir = build(Scenario(drop_after={("reply", "router:eth1"): None}), tmp_path / "run")
    files = sorted(str(p) for p in run_dir.glob("*.pcapng"))
    code = main(["replay", "--topology", str(run_dir / "topology.toml"), *files])
    out = capsys.readouterr().out
    assert code == 1
    assert "3/3 echo replies lost inside router between eth1 and eth0 (forward)" in out
    assert "no manifest" in out


def test_local_send_error_is_the_reason(tmp_path):
    sc = Scenario(drop_at_source={"request": {1, 2}}, send_errors={1: "Message too long", 2: "Message too long"})
    v = verdict_of(sc, tmp_path)
    (f,) = lost(v, "request")
    assert (f.where, f.seqs) == ("at west, before leaving west:eth0", (1, 2))
    assert f.reason == "sending failed on west: Message too long"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("garbage", "{run}/west_eth0.pcapng: not a pcap or pcapng file (starts with 67617262)"),
        ("empty", "{run}/west_eth0.pcapng: empty file (no capture header)"),
        ("missing-file-in-manifest", "{run}/manifest.json: capture file 'router_eth0.pcapng' for router:eth0 is missing"),
        ("unknown-point", "no capture is of an interface of topology {tmp}/other.toml: {run}/router_eth0.pcapng: "
                          "pcapng name 'router:eth0': the topology has no node router (and 1 more)"),
        ("bad-topology", "{run}/topology.toml: nodes.a.role: 'switch' is not one of host, gateway, router"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case, message):
    run_dir = build(Scenario(), tmp_path / "run")
    args = ["replay", str(run_dir)]
    if case in ("garbage", "empty"):
        (run_dir / "west_eth0.pcapng").write_bytes(b"garbage!" * 10 if case == "garbage" else b"")
    elif case == "missing-file-in-manifest":
        (run_dir / "router_eth0.pcapng").unlink()
    elif case == "unknown-point":
        # The router is called core in this topology (its role stays router), so router:eth0 is unknown;
        # a capture of a node the topology lacks is only unused, but with no other capture there is nothing.
        files = sorted(str(p) for p in run_dir.glob("router_*.pcapng"))
        other = tmp_path / "other.toml"
        other.write_text((run_dir / "topology.toml").read_text().replace("nodes.router", "nodes.core")
                         .replace('"router:', '"core:'))
        args = ["replay", "--topology", str(other), *files]
    else:
        (run_dir / "topology.toml").write_text('[nodes.a]\nrole = "switch"\n')
    assert main(args) == 2
    assert capsys.readouterr().err == "tracer: " + message.format(run=run_dir, tmp=tmp_path) + "\n"


KEY = bytes(range(20))  # 16-byte AES key + 4-byte salt


@pytest.mark.parametrize("raw_esp", [False, True])
def test_keys_pin_a_loss_that_keyless_association_cannot(tmp_path, raw_esp):
    # Background traffic in the SA next to every probe: without keys the ESP hops are
    # unknown and the loss between the gateways is inconclusive; with keys the tag inside
    # each ESP packet identifies it, and the loss is located.
    sc = Scenario(background=2, background_offset_ns=20_000, esp_key=KEY, raw_esp=raw_esp,
                  drop_after={("request", "router:eth0"): None})
    run_dir = build(sc, tmp_path / "run")
    (keyless,) = replay_run(load_run([run_dir]))
    assert keyless.status == Status.INCONCLUSIVE
    (with_keys,) = replay_run(load_run([run_dir]), esp_keys=tmp_path / "run.esp_sa")
    assert with_keys.status == Status.LOSS
    (f,) = lost(with_keys, "request")
    assert f.where == "inside router between eth0 and eth1 (forward)"
    assert f.reason.startswith("likely: router did not forward the ESP (SPI 0xc0000001)")
    assert "ESP decrypted with keys: 3 probe carriers identified by the tag inside" in with_keys.notes


def test_keys_cli_and_no_key_in_output(tmp_path, capsys):
    run_dir = build(Scenario(esp_key=KEY), tmp_path / "run")
    assert main(["replay", str(run_dir), "--esp-keys", str(tmp_path / "run.esp_sa"), "--json"]) == 0
    out = capsys.readouterr().out
    doc = one_run(out)
    assert "ESP decrypted with keys: 6 probe carriers identified by the tag inside" in doc["notes"]
    assert KEY.hex() not in out.lower()


def test_keys_prove_absence_at_encap(tmp_path):
    # The gateway drops the probe between ipsec0 and ESP while background keeps the SA busy:
    # without keys the ESP hops are ambiguous; with keys every ESP packet there was opened and
    # none was the probe, so the loss is at the encap point.
    sc = Scenario(background=2, background_offset_ns=20_000, esp_key=KEY, drop_after={("request", "west-gw:ipsec0"): None})
    run_dir = build(sc, tmp_path / "run")
    (keyless,) = replay_run(load_run([run_dir]))
    assert keyless.status == Status.INCONCLUSIVE
    (with_keys,) = replay_run(load_run([run_dir]), esp_keys=tmp_path / "run.esp_sa")
    (f,) = lost(with_keys, "request")
    assert f.where == "inside west-gw between ipsec0 and wan0 (encap, tunnel west-east)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--src", "nope"], "'nope' is not an IPv4 address"),
        (["--run", "zz"], "run id 'zz' is not a number"),
        (["--src", "192.0.2.10", "--dst", "192.0.2.10"], "the path crosses no capture point"),
    ],
)
def test_bad_option_values_are_one_line_exit_2(tmp_path, capsys, extra, message):
    run_dir = build(Scenario(), tmp_path / "run")
    assert main(["replay", str(run_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_src_alone_takes_dst_from_the_captures(tmp_path, capsys):
    run_dir = build(Scenario(), tmp_path / "run")
    files = sorted(str(p) for p in run_dir.glob("*.pcapng"))
    assert main(["replay", "--topology", str(run_dir / "topology.toml"), "--src", "192.0.2.10", *files]) == 0
    assert "3/3 echo requests delivered and answered (west → east)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["mtu", "--sizes", "1,x", "west", "east"], ["ping", "west", "east", "--snaplen", "10"]])
def test_live_commands_refuse_bad_values_before_capturing(tmp_path, capsys, argv):
    assert main([*argv, "--topology", str(Path(__file__).parent / "data" / "site2site.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tracer: "), err
