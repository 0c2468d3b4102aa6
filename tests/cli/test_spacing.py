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
from tracer.topofile import load_topology

TOPO = load_topology(TOPOLOGY)
SPIS = frozenset({0xC0000001, 0xC0000002})


def keys(tmp_path: Path, spis: set[int]) -> Path:
    path = tmp_path / "esp_sa"
    write_esp_sa_file(path, [EspSA("*", "*", spi, GCM16, bytes(20)) for spi in sorted(spis)])
    return path


def test_keys_for_every_sa_let_probes_go_close(tmp_path: Path) -> None:
    assert spacing(TOPO, SPIS, keys(tmp_path, set(SPIS)))
    assert spacing(TOPO, SPIS, keys(tmp_path, {*SPIS, 0x1234}))  # keys for other SAs too


def test_an_sa_without_keys_keeps_the_window(tmp_path: Path) -> None:
    assert not spacing(TOPO, SPIS, keys(tmp_path, {0xC0000001}))
    assert not spacing(TOPO, SPIS, None)


def test_no_sa_reported_keeps_the_window(tmp_path: Path) -> None:
    # An SA the trace itself brings up (trap policies) has no keys yet: carriers are told by time.
    assert not spacing(TOPO, frozenset(), keys(tmp_path, set(SPIS)))


def test_an_unreadable_key_file_keeps_the_window(tmp_path: Path) -> None:
    bad = tmp_path / "esp_sa"
    bad.write_text("not an esp_sa line\n")
    assert not spacing(TOPO, SPIS, bad)


def test_no_tunnel_no_window() -> None:
    assert spacing(dataclasses.replace(TOPO, tunnels=()), frozenset(), None)


def test_ping_interval_is_chosen_unless_given() -> None:
    parser = build_parser()
    assert parser.parse_args(["ping", "west", "east"]).interval is None  # chosen by spacing()
    assert parser.parse_args(["ping", "west", "east", "-i", "0.5"]).interval == 0.5
    assert parser.parse_args(["mtu", "west", "east"]).interval == 0.1
    assert parser.parse_args(["ike", "west-gw", "east-gw"]).interval == 0.2
