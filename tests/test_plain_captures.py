"""Captures not made by tracer: plain tcpdump on every interface of the lab (lo too) while a plain
``ping -c 3`` ran in west (scripts/record_plain_captures.py), one lab fault each, files named
``node_iface.pcap``. No tag, no manifest, no renaming: replay maps the files by their names (lo
unused), finds the echo flow by identifier and sequence and names the hop the fault is at."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.tracer_cmd import tracer
from tests.json_contract import one_run
from tracer.run.replay import load_run, replay_run

PLAIN = Path(__file__).resolve().parents[1] / "captures" / "plain"
TOPOLOGY = PLAIN / "topology.toml"

# recording → (--flow filter or None, status, (direction, where) of the loss): what each lab fault
# is (tracer/lab/faults.py), the same hop the tagged recordings of scripts/record_scenarios.py name.
TRUTH: dict[str, tuple[str | None, str, tuple[str, str] | None]] = {
    "all-delivered": (None, "delivered", None),
    "gw-forward-drop": (None, "loss", ("request", "inside west-gw between lan0 and ipsec0 (forward)")),
    "esp-blocked": (None, "loss", ("request", "inside router between eth0 and eth1 (forward)")),
    "esp-input-drop": (None, "loss", ("request", "inside east-gw between wan0 and ipsec0 (decap, tunnel west-east)")),
    "no-return-route": (None, "loss", ("reply", "at east, before leaving east:eth0")),
    "asymmetric-return": (None, "loss", ("reply", "inside router after arriving on eth1, having left east-gw by wan0 in "
                                         "the clear instead of into ipsec0")),
    # east-gw source-NATs what leaves lan0: followed across, by IP ID and echo sequence.
    "snat-east-gw": (None, "delivered", None),
    # Three UDP queries from west to an echo server on east, with west-gw's forward drop.
    "udp-gw-forward-drop": ("udp and host west and host east", "loss",
                            ("request", "inside west-gw between lan0 and ipsec0 (forward)")),
}


def files(name: str) -> list[Path]:
    return sorted((PLAIN / name).glob("*.pcap"))


def test_every_recording_has_its_truth():
    assert {p.name for p in PLAIN.iterdir() if p.is_dir()} == set(TRUTH)


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_hand_captures_replay_to_the_faults_hop(name):
    flow, status, loss = TRUTH[name]
    loaded = load_run(files(name), TOPOLOGY)
    # Every file by its name, node_iface; the loopback captures unused.
    assert sorted(Path(m.file).name for m in loaded.mapping if m.point is None) == sorted(
        f"{n}_lo.pcap" for n in ("east", "east-gw", "router", "west", "west-gw"))
    assert all(Path(m.file).stem == m.point.replace(":", "_") for m in loaded.mapping if m.point)
    (v,) = replay_run(loaded, flow=flow)
    assert (v.kind, v.status.value) == ("ping" if flow is None else "flow", status)
    start = "ICMP echo 192.0.2.10 → 198.51.100.10 id " if flow is None else "UDP 192.0.2.10:"
    assert v.flow is not None and v.flow.startswith(start)
    lost = [(f.direction, f.where) for f in v.findings if f.outcome.value == "lost"]
    assert lost == ([] if loss is None else [loss])
    assert {f.count for f in v.findings if f.outcome.value == "lost"} <= {3}


def test_the_flow_is_followed_across_a_source_nat():
    (v,) = replay_run(load_run(files("snat-east-gw"), TOPOLOGY))
    assert all(s == "seen" for t in v.probes for s in t.sightings)  # east:eth0 saw them from 198.51.100.1
    (note,) = [d for d in v.diagnoses if d.startswith("NAT")]
    assert note.startswith("NAT at east-gw: the flow continues as ICMP echo 198.51.100.1 → 198.51.100.10 id ")
    assert note.endswith(" (followed by IP ID and echo sequence)")


def test_udp_is_traced_only_when_asked_for():
    r = tracer("replay", "-t", TOPOLOGY, *files("udp-gw-forward-drop"))
    assert r.code == 5 and r.err.startswith("tracer: no traffic of interest in the captures")


def test_plain_captures_are_small():
    for name in TRUTH:
        size = sum(p.stat().st_size for p in files(name))
        assert size < 16 * 1024, f"{name}: {size} bytes"


def test_command_line_on_plain_captures():
    r = tracer("replay", "-t", TOPOLOGY, *files("gw-forward-drop"), "--json")
    assert (r.code, r.err) == (1, "")
    v = one_run(r.out)
    assert v["flow"].startswith("ICMP echo 192.0.2.10 → 198.51.100.10")
    assert v["findings"][0]["where"] == "inside west-gw between lan0 and ipsec0 (forward)"


def test_nothing_to_trace_has_its_own_exit_code():
    # Only the router's captures of a failed ping: ESP between the gateways, no echo in the clear.
    r = tracer("replay", "-t", TOPOLOGY, *(PLAIN / "esp-blocked").glob("router_*.pcap"))
    assert (r.code, r.out) == (5, "")
    assert r.err == ("tracer: no traffic of interest in the captures: no tracer probe and no ICMP echo between two "
                     "nodes of the topology (pick other traffic with --flow, e.g. --flow 'udp and host A and host B')\n")
    # The ESP itself is traffic a filter can pick: every ESP packet is then a probe of its own.
    r = tracer("replay", "-t", TOPOLOGY, *(PLAIN / "esp-blocked").glob("router_*.pcap"), "--flow", "esp", "--json")
    assert r.code == 1, r.err
    v = one_run(r.out)
    assert (v["kind"], v["summary"]) == ("flow", "3/3 packets there lost inside router between eth0 and eth1 (forward)")
