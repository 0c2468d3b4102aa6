"""``tracer mtu`` on the real lab: the exact path MTU, compared with what the lab's links really
allow (read from the lab, not written down): on the healthy path the gateway's ipsec0 (a
kernel-libipsec TUN) limits it and says so with 'fragmentation needed'; with the mtu-blackhole
fault the router's 1280-byte link does, silently. Few probes, no dependence on the kernel's
path-MTU cache, and the run's merged run.pcapng opens with comments and the dissected tag."""

from __future__ import annotations

import json
import re

import pytest

from tests.capture.test_pcapng_writer import tshark_rows
from tests.json_contract import one_run
from tests.lab_faults import fault
from tests.run.test_merged import LUA
from tracer import netns
from tracer.analysis.mtu import _padded
from tracer.cli import main
from tracer.lab.faults import MTU_SMALL

pytestmark = pytest.mark.lab

LAB = "ph"
ROUTER = "inside router between eth0 and eth1 (forward)"
WEST_GW = "inside west-gw between lan0 and ipsec0 (forward)"


def mtu(lab, tmp_path, capsys, name, *extra):
    code = main(["mtu", "--topology", str(lab.topology_path), "west", "east", "--out", str(tmp_path / name),
                 "--json", *extra])
    return code, one_run(capsys.readouterr().out)


def link_mtu(lab, node: str, iface: str) -> int:
    out = netns.ip(["-o", "link", "show", iface], lab.namespace(node)).stdout
    return int(re.search(r" mtu (\d+)", out).group(1))


def probes_sent(tmp_path, name) -> list[dict]:
    return json.loads((tmp_path / name / "probes.json").read_text())["sent"]


def test_healthy_path_is_exact_and_named_twice_over(lab, tmp_path, capsys):
    truth = link_mtu(lab, "west-gw", "ipsec0")  # the tunnel interface: the narrowest hop for cleartext
    for name in ("first", "again"):  # again: west's kernel has now learnt a PMTU; the search must not care
        code, doc = mtu(lab, tmp_path, capsys, name)
        m = doc["mtu"]
        assert (code, doc["status"]) == (0, "delivered"), doc["summary"]
        assert (m["path_mtu"], m["exact"], m["blackhole"]) == (truth, True, False)
        assert doc["summary"] == (f"path MTU {truth} bytes: {truth}-byte probes delivered, {truth + 1}-byte probes "
                                  f"refused with ICMP fragmentation needed from west-gw (192.0.2.1), next-hop MTU {truth}")
        assert m["limit"] == WEST_GW and (m["bottleneck"], m["bottleneck_mtu"]) == ("west-gw:ipsec0", truth)
        assert {(f["node"], f["next_hop_mtu"], f["about"], f["reached_source"]) for f in m["frag_needed"]} == {
            ("west-gw", truth, "probe", True)}
        assert m["tunnel"]["point"] == "west-gw:ipsec0" and m["tunnel"]["udp"] is True  # the lab's NAT-T
        sent = probes_sent(tmp_path, name)
        assert len(sent) <= 6 and not any(s["error"] for s in sent)  # no EMSGSIZE from a cached PMTU


def test_blackhole_is_exact_and_names_the_link(lab, tmp_path, capsys):
    with fault(lab, "mtu-blackhole"):
        code, doc = mtu(lab, tmp_path, capsys, "bh")
    m = doc["mtu"]
    t = m["tunnel"]
    assert t["block"] and t["fixed"], t  # the search's sizes pin the ESP padding block down
    # The truth: the largest inner packet whose ESP packet still fits the fault's link.
    truth = max(n for n in range(576, 1500) if t["fixed"] + _padded(n, t["block"]) <= MTU_SMALL)
    assert (code, doc["status"]) == (1, "loss")
    assert (m["path_mtu"], m["exact"], m["blackhole"], m["limit"]) == (truth, True, True, ROUTER)
    assert (m["bottleneck"], m["bottleneck_mtu"]) == ("router:eth1", MTU_SMALL)
    assert doc["summary"] == (f"path MTU {truth} bytes: {truth}-byte probes delivered, {truth + 1}-byte probes lost "
                              f"{ROUTER}: a PMTUD blackhole")
    assert any(d.startswith(f"{truth + 1}-byte probes vanish {ROUTER}") and "router:eth1 has MTU 1280" in d
               for d in doc["diagnoses"])
    assert len(probes_sent(tmp_path, "bh")) <= 20

    # The merged capture: the last point that saw the smallest lost probe says so, and the
    # Lua dissector reads the tag of every probe packet.
    merged = tmp_path / "bh" / "run.pcapng"
    rows = tshark_rows(merged, "frame.interface_name", "tracer.kind", "frame.comment",
                       options=("-X", f"lua_script:{LUA}", "-Y", "tracer"))
    assert rows and {r[1] for r in rows} == {"3"}
    assert any(r[0] == "west:eth0" and "request: delivered" in r[2] for r in rows)
    # The probes too big for the router's link were last seen as ESP (no tag outside) at its eth0;
    # the 1500-byte one, too big for ipsec0, at west-gw:lan0.
    last = tshark_rows(merged, "frame.interface_name", "frame.comment",
                       options=("-Y", 'frame.comment contains "last seen here"'))
    assert {p for p, _c in last} == {"router:eth0", "west-gw:lan0"}
    assert all("(ESP SPI" in c and c.endswith(f"last seen here: lost {ROUTER}") for p, c in last if p == "router:eth0")
    assert [c.endswith(f"last seen here: lost {WEST_GW}") for p, c in last if p == "west-gw:lan0"] == [True]

def test_a_ladder_still_works_and_a_refused_size_is_not_a_loss(lab, tmp_path, capsys):
    code, doc = mtu(lab, tmp_path, capsys, "ladder", "--sizes", "1000,1400,1450")
    m = doc["mtu"]
    assert (code, doc["status"]) == (0, "delivered")
    assert (m["path_mtu"], m["smallest_lost"], m["exact"]) == (1400, 1450, False)
    assert doc["summary"].startswith("path MTU 1400–1449 bytes: 1400-byte probes delivered, 1450-byte probes refused "
                                     "with ICMP fragmentation needed from west-gw")
