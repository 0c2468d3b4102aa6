"""``tracer topology check`` and ``tracer topology path`` through the real command line."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tests.cli.tracer_cmd import CAPTURES, TOPOLOGY, assert_bad_input, tracer
from tests.json_contract import validated
from tracer.cli.render import render_text
from tracer.model.direction import Direction
from tracer.run.replay import load_run, replay_run


def site(tmp_path: Path, change=None) -> Path:
    """The site-to-site test topology, edited by ``change(dict)``, as a file."""
    data = tomllib.loads(TOPOLOGY.read_text())
    if change:
        change(data)
    out = tmp_path / "site.toml"
    out.write_text(tomli_w.dumps(data))
    return out


def test_check_lists_the_capture_points_and_exits_0():
    r = tracer("topology", "check", TOPOLOGY)
    assert r.code == 0 and r.err == "", r
    lines = r.out.splitlines()
    assert lines[0] == f"{TOPOLOGY}: valid: 5 nodes, 4 links, 1 tunnel, 10 capture points"
    assert "  west-gw:ipsec0  tunnel device of west-east" in lines
    assert "  west:eth0       192.0.2.10/24  ↔ west-gw:lan0" in lines
    assert not [ln for ln in lines if ln.startswith(("warning:", "error:"))]


def test_check_json():
    r = tracer("topology", "check", TOPOLOGY, "--json")
    doc = validated(r.out)["topology_check"]
    assert r.code == 0 and doc["valid"] and doc["tunnels"] == ["west-east"]
    assert {"point": "east-gw:ipsec0", "addresses": [], "peer": None, "tunnel": "west-east"} in doc["capture_points"]


def test_a_misspelt_key_is_bad_input_with_a_did_you_mean(tmp_path):
    def misspell(d):
        d["nodes"]["west"]["interfaces"]["eth0"]["adresses"] = d["nodes"]["west"]["interfaces"]["eth0"].pop("addresses")

    f = site(tmp_path, misspell)
    line = (f"tracer: {f}: nodes.west.interfaces.eth0.adresses: unknown key in nodes.west.interfaces.eth0; "
            "did you mean 'addresses'?")
    assert_bad_input(tracer("topology", "check", f), line)
    # Every command that loads a topology says the same.
    assert_bad_input(tracer("topology", "path", f, "west", "east"), line)
    assert_bad_input(tracer("replay", "--topology", f, *sorted((CAPTURES / "all-delivered").glob("*.pcapng"))), line)
    r = tracer("topology", "check", f, "--json")
    full = validated(r.out)
    assert r.code == 2 and full["topology_check"] == {"valid": False, "error": line.removeprefix("tracer: ")}
    assert full["error"] == {"message": line.removeprefix("tracer: "), "exit_code": 2} and r.err == line + "\n"


def test_no_route_back_is_a_warning_not_an_error(tmp_path):
    """A destination host with no routes: valid (a verdict explains it), and check says who cannot answer."""
    f = site(tmp_path, lambda d: d["nodes"]["east"].pop("routes"))
    r = tracer("topology", "check", f)
    assert r.code == 0, r
    assert "warning: east has no route back to 192.0.2.10 (west): its replies to west go nowhere" in r.out.splitlines()
    r = tracer("topology", "path", f, "west", "east")
    assert r.code == 0
    assert "reply path (0 capture points)  [topology: east has no route to 192.0.2.10]" in r.out


def test_a_host_that_would_forward_is_invalid(tmp_path):
    """A route walk the flow graph forbids: every verdict over it would be refused, so check exits 2."""
    def host_router(d):
        d["nodes"]["router"]["role"] = "host"

    r = tracer("topology", "check", site(tmp_path, host_router))
    assert r.code == 2
    assert any(ln.startswith("error: west → east: the routes send packets router:eth0 → router:eth1 (forward)")
               for ln in r.out.splitlines()), r.out


def test_unknown_gateway_and_empty_selector_are_warnings(tmp_path):
    def change(d):
        d["nodes"]["router"]["routes"] = [{"dst": "203.0.113.0/24", "via": "198.18.2.9", "dev": "eth1"}]
        d["tunnels"][0]["right"]["subnets"].append("10.9.0.0/16")

    r = tracer("topology", "check", site(tmp_path, change))
    assert r.code == 0
    lines = r.out.splitlines()
    assert ("warning: router: route 203.0.113.0/24 via 198.18.2.9: no node of the topology has that address; "
            "packets go to east-gw:wan0, the other end of eth1's link") in lines
    assert any(ln.startswith("warning: tunnel west-east: right subnet 10.9.0.0/16 (east-gw) holds no address") for ln in lines)


def test_path_is_the_verdicts_path_text():
    """The hop and edge lines of 'topology path' are the verdict's own, for the same topology and endpoints."""
    r = tracer("topology", "path", CAPTURES / "all-delivered" / "topology.toml", "west", "198.51.100.10")
    assert r.code == 0 and r.err == ""
    verdict = render_text(replay_run(load_run([CAPTURES / "all-delivered"]), None, None, None, None)[0]).splitlines()
    shown = r.out.splitlines()
    assert shown[0] == "west (192.0.2.10) → east (198.51.100.10)"
    for direction in (Direction.REQUEST, Direction.REPLY):
        head = f"{direction} path (10 capture points)"
        assert head in shown and head in verdict
    # Edge lines are identical; hop lines agree on the point (the verdict adds what it saw).
    edges = [ln for ln in shown if ln.strip().startswith("│")]
    assert edges == [ln for ln in verdict if ln.strip().startswith("│")] and len(edges) == 18
    hops = [ln.split()[0] for ln in shown if ln.startswith("  ") and ":" in ln.split()[0]]
    assert hops == [ln.split()[0] for ln in verdict if ln.startswith("  ") and ":" in ln.split()[0]]
    assert "  west-gw:wan0              ESP-in-UDP, tunnel west-east" in shown


def test_path_json_and_bad_endpoints():
    r = tracer("topology", "path", TOPOLOGY, "192.0.2.10", "east", "--json")
    doc = validated(r.out)["topology_path"]
    assert doc["src_node"] == "west" and doc["dst"] == "198.51.100.10"
    assert doc["paths"]["request"]["edges"][:3] == ["wire", "forward", "encap"]
    assert doc["paths"]["reply"]["hops"][-1]["point"] == "west:eth0"
    assert_bad_input(tracer("topology", "path", TOPOLOGY, "west", "nowhere"),
                     f"tracer: {TOPOLOGY}: 'nowhere' is neither a node (west, west-gw, router, east-gw, east) "
                     "nor an IPv4 address")
    assert_bad_input(tracer("topology", "path", TOPOLOGY, "west", "192.0.2.10"),
                     "tracer: 192.0.2.10 → 192.0.2.10: both on west; the path crosses no capture point")


def _spi(d, value):
    d["tunnels"][0]["left"]["spi_in"] = value


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("links"), "links: no links"),
    (lambda d: d["links"][0].update(ends=["west:eth0", "west:eth0"]), r"links\[0\].ends: both ends are west:eth0"),
    (lambda d: d["nodes"]["east"]["interfaces"]["eth0"].update(addresses=["192.0.2.10/24"]),
     "192.0.2.10 is also an address of west:eth0"),
    (lambda d: _spi(d, -1), r"tunnels\[0\].left.spi_in: expected an integer from 1 to 4294967295"),
    (lambda d: _spi(d, 1.5), r"tunnels\[0\].left.spi_in: expected an integer"),
    (lambda d: _spi(d, True), r"tunnels\[0\].left.spi_in: expected an integer"),
    (lambda d: d["nodes"]["west"]["routes"][0].update(via="203.0.113.9"), "the gateway points to nothing"),
    (lambda d: d["tunnels"][0]["right"].update(node="ghost"), r"tunnels\[0\].right.node: unknown node 'ghost'"),
    (lambda d: d["nodes"].update({"a\x00b": {"interfaces": {"e": {}}}}), r"'a\\x00b' is not a valid node name"),
])
def test_hostile_topologies_are_one_line_exit_2_everywhere(tmp_path, change, message):
    """Issue 13's refused topologies: check, path and replay all say one line and exit 2."""
    f = site(tmp_path, change)
    for args in (("topology", "check", f), ("topology", "path", f, "west", "east"),
                 ("replay", "--topology", f, *sorted((CAPTURES / "all-delivered").glob("*.pcapng")))):
        r = tracer(*args)
        assert r.code == 2 and r.out == "" and r.err.count("\n") == 1, (args, r)
        assert re.search(message, r.err), (message, r.err)


def test_deeply_nested_toml_is_bad_input(tmp_path):
    f = tmp_path / "deep.toml"
    f.write_text(f"name = 'x'\ndeep = {'[' * 3000}{']' * 3000}\n")
    assert_bad_input(tracer("topology", "check", f), f"tracer: {f}: not a topology (arrays or tables nested too deep)")


def test_a_destination_without_routes_gets_a_verdict(tmp_path):
    """Issue 13: a routeless destination crashed every replay; it is a valid topology, and the verdict speaks."""
    f = site(tmp_path, lambda d: d["nodes"]["east"].pop("routes"))
    r = tracer("replay", "--topology", f, *sorted((CAPTURES / "all-delivered").glob("*.pcapng")))
    assert r.code == 0 and r.err == "", r  # the replies were seen all the way back: delivered
    assert "OK    3/3 echo requests delivered and answered (west → east)" in r.out, r.out
    assert "east has no route to 192.0.2.10" in r.out


def test_discover_exits_2_when_what_it_wrote_does_not_load(tmp_path, monkeypatch, capsys):
    """Two sites that both use 192.0.2.1: the file is written (to edit), the loader's reason is a note, and the
    exit code is the one 'topology check' gives the file, not 0. The reading half (root, namespaces) is replaced
    by hand-built 'ip -j' states; inference, the loader and the command are the real ones."""
    import argparse

    from tests.analysis.test_infer_topology import connected, iface, state
    from tracer import discover
    from tracer.analysis.infer_topology import Seen, infer
    from tracer.cli.topology import run_discover

    a = state("a", [iface("eth0", 2, "192.0.2.1/24", kind=None)], [connected("eth0", "192.0.2.0/24")])
    b = state("b", [iface("eth0", 2, "192.0.2.1/24", kind=None)], [connected("eth0", "192.0.2.0/24")])
    monkeypatch.setattr(discover, "discover", lambda patterns, name, ssh: infer(
        name, [Seen("a", a, False, netns="site-a"), Seen("b", b, False, netns="site-b")]))
    out = tmp_path / "found.toml"
    args = argparse.Namespace(netns=["site-*"], ssh=[], ssh_netns=None, ssh_key=None, ssh_port=None,
                              ssh_known_hosts=None, name="two", out=out)
    assert run_discover(args) == 2
    err = capsys.readouterr().err
    assert "note: the discovered topology: nodes.b.interfaces.eth0.addresses: 192.0.2.1 is also an address of " \
           "a:eth0 (duplicate address): edit it before use" in err
    assert tomllib.loads(out.read_text())["nodes"]["b"]["interfaces"]["eth0"]["addresses"] == ["192.0.2.1/24"]
