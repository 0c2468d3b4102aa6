"""Topology files: writing a Topology (tomli-w) is the exact inverse of reading one."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.synth import TOPOLOGY
from tracer.errors import TopologyError
from tracer.lab import layout
from tracer.model.topology import Topology
from tracer.topofile import dump_topology, load_topology, save_topology, topology_to_dict

# Every optional field set once: ssh keys, a link MTU, a policy-based end (no interface), an SPI.
EVERYTHING = {
    "name": "everything",
    "esp_keys": "keys/esp_sa",
    "nodes": {
        "a": {
            "role": "gateway",
            "netns": "nsa",
            "capture": "ssh",
            "ssh": "root@192.0.2.50",
            "ssh_netns": "mgmt",
            "ssh_key": "id_ed25519",
            "ssh_port": 2222,
            "ssh_known_hosts": "known_hosts",
            "interfaces": {
                "eth0": {"addresses": ["192.0.2.1/24", "192.0.2.2/24"], "role": "wan"},
                "eth1": {"addresses": ["10.0.0.1/8"]},
            },
            "routes": [{"dst": "default", "via": "192.0.2.254", "dev": "eth0"}, {"dst": "10.1.0.0/16", "dev": "eth1"}],
        },
        "b": {"interfaces": {"eth0": {"addresses": ["192.0.2.3/24"], "role": "wan"}, "lo": {"addresses": ["10.9.0.1/16"]}}},
    },
    "links": [{"ends": ["a:eth0", "b:eth0"], "mtu": 1400}],
    "tunnels": [
        {
            "name": "ab",
            "encapsulation": "esp",
            "left": {"node": "a", "address": "192.0.2.1", "subnets": ["10.0.0.0/8"], "spi_in": "0xc0ffee01"},
            "right": {"node": "b", "address": "192.0.2.3", "interface": "lo", "subnets": ["10.9.0.0/16"], "spi_in": 7},
        }
    ],
}


def _round_trip(topo: Topology) -> Topology:
    """Through the dict and through TOML text, as a file would go."""
    assert Topology.from_dict(topology_to_dict(topo), source=topo.source) == topo
    return Topology.from_dict(tomllib.loads(dump_topology(topo)), source=topo.source)


@pytest.mark.parametrize(
    "topo",
    [load_topology(TOPOLOGY), layout.topology("t1"), Topology.from_dict(EVERYTHING, source="everything")],
    ids=["site2site", "lab", "everything"],
)
def test_to_dict_is_the_inverse_of_from_dict(topo: Topology) -> None:
    assert _round_trip(topo) == topo


def test_unset_fields_are_left_out() -> None:
    doc = topology_to_dict(load_topology(TOPOLOGY))
    assert "esp_keys" not in doc and "netns" not in doc["nodes"]["west"]
    assert doc["nodes"]["router"].keys() == {"role", "interfaces"}  # no routes
    assert doc["nodes"]["west-gw"]["interfaces"]["ipsec0"] == {"role": "tunnel"}  # no addresses
    assert doc["nodes"]["west"]["routes"] == [{"dst": "0.0.0.0/0", "via": "192.0.2.1", "dev": "eth0"}]
    assert doc["links"][0] == {"ends": ["west:eth0", "west-gw:lan0"]}
    everything = topology_to_dict(Topology.from_dict(EVERYTHING))
    assert everything["tunnels"][0]["left"]["spi_in"] == "0xc0ffee01"
    assert "interface" not in everything["tunnels"][0]["left"]


def test_save_writes_a_header_and_loads_back(tmp_path: Path) -> None:
    topo = Topology.from_dict(EVERYTHING)
    path = tmp_path / "t.toml"
    save_topology(topo, path, header="written by a test\n\nsecond paragraph")
    text = path.read_text()
    assert text.startswith("# written by a test\n#\n# second paragraph\n\n")
    assert load_topology(path) == Topology.from_dict(EVERYTHING, source=str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["t.toml"]  # no temporary left behind


def test_a_written_file_is_still_checked_on_load(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    save_topology(load_topology(TOPOLOGY), path)
    path.write_text(path.read_text().replace('dev = "wan0"', 'dev = "wan9"', 1))
    with pytest.raises(TopologyError, match="has no interface 'wan9'"):
        load_topology(path)
