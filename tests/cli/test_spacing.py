"""How far apart a live trace's probes leave by default (tracer.cli.trace.spacing): closer than
the encap window only when no ESP carrier has to be told from the next probe's by time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.synth import TOPOLOGY
from tracer.cli import build_parser
from tracer.cli.trace import spacing
from tracer.esp import EspSA, write_esp_sa_file
from tracer.esp.keys import GCM16
from tracer.model.evidence import Counter, Snapshot
from tracer.topofile import load_topology

TOPO = load_topology(TOPOLOGY)
WE, EW = 0xC0000001, 0xC0000002


def sa(node: str, spi: int, way: str) -> Snapshot:
    return Snapshot("strongswan", node, counters=(Counter(f"sa {spi:x}", "sa", "CHILD_SA", 0, spi=spi, way=way),))


BOTH = [sa("west-gw", WE, "out"), sa("west-gw", EW, "in"), sa("east-gw", WE, "in"), sa("east-gw", EW, "out")]


def keys(tmp_path: Path, spis: set[int]) -> Path:
    path = tmp_path / "esp_sa"
    write_esp_sa_file(path, [EspSA("*", "*", spi, GCM16, bytes(20)) for spi in sorted(spis)])
    return path


def test_the_topology_names_the_tunnel_ends() -> None:
    assert {e.node for t in TOPO.tunnels for e in (t.left, t.right)} == {"west-gw", "east-gw"}


def test_keys_for_every_sa_let_probes_go_close(tmp_path: Path) -> None:
    assert spacing(TOPO, BOTH, keys(tmp_path, {WE, EW}))
    assert spacing(TOPO, BOTH, keys(tmp_path, {WE, EW, 0x1234}))  # keys for other SAs too


def test_an_sa_without_keys_keeps_the_window(tmp_path: Path) -> None:
    assert not spacing(TOPO, BOTH, keys(tmp_path, {WE}))
    assert not spacing(TOPO, BOTH, None)


def test_a_tunnel_end_without_an_sa_keeps_the_window(tmp_path: Path) -> None:
    # An SA the probes themselves bring up (trap policies) has no keys yet: carriers told by time.
    assert not spacing(TOPO, [], keys(tmp_path, {WE, EW}))
    assert not spacing(TOPO, BOTH[:2], keys(tmp_path, {WE, EW}))  # east-gw reported none


def test_an_unreadable_key_file_keeps_the_window(tmp_path: Path) -> None:
    bad = tmp_path / "esp_sa"
    bad.write_text("not an esp_sa line\n")
    assert not spacing(TOPO, BOTH, bad)


def test_no_tunnel_no_window() -> None:
    assert spacing(dataclasses.replace(TOPO, tunnels=()), [], None)


def test_ping_interval_is_chosen_unless_given() -> None:
    parser = build_parser()
    assert parser.parse_args(["ping", "west", "east"]).interval is None  # chosen by spacing()
    assert parser.parse_args(["ping", "west", "east", "-i", "0.5"]).interval == 0.5
    assert parser.parse_args(["mtu", "west", "east"]).interval == 0.1
    assert parser.parse_args(["ike", "west-gw", "east-gw"]).interval == 0.2


HUB = load_topology(Path(__file__).parents[1] / "data" / "hub.toml")  # other names, two tunnels


def test_every_tunnel_end_of_another_network_must_report_an_sa(tmp_path: Path) -> None:
    hq, b7, b9 = sa("hq-fw", 0x51, "out"), sa("branch7", 0x52, "out"), sa("branch9", 0x53, "out")
    key_file = keys(tmp_path, {0x51, 0x52, 0x53})
    assert spacing(HUB, [hq, b7, b9], key_file)
    assert not spacing(HUB, [hq, b7], key_file)  # branch9's tunnel has no SA before the probes
    assert not spacing(HUB, [hq, b7, b9], keys(tmp_path, {0x51, 0x52}))  # branch9's SA has no key
