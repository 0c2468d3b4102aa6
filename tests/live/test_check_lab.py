"""``tracer check`` on the real lab (root, namespaces, strongSwan): the healthy lab passes every
check; each configuration fault is found before any probe is sent — esp-blocked and ike-blocked
by the router's firewall (and no SA), asymmetric-return by east-gw's policy route, mtu-blackhole
by the MTU check; and on namespaces of our own, a router with ip_forward off."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.json_contract import validated
from tests.lab_faults import fault
from tests.own_netns import own_namespaces
from tracer import netns
from tracer.cli import main
from tracer.lab import Lab

pytestmark = pytest.mark.lab

LAB = "ck"  # namespaces trc-ck-*; ours below are trc-ck-x-* (no lab node has a '-' there)


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    code = main(["check", "--json", *args])
    doc = validated(capsys.readouterr().out)
    assert doc["exit_code"] == code and doc["command"] == "check" and doc["runs"] == []
    return code, doc["check"]["checks"]


def failures(checks: list[dict]) -> list[tuple[str, str]]:
    return [(c["node"], c["check"]) for c in checks if c["status"] == "fail"]


def test_healthy_lab_passes_every_check(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = check(capsys, "-t", str(lab.topology_path))
    assert code == 0, [c for c in checks if c["status"] != "ok"]
    assert {c["status"] for c in checks} == {"ok"}
    done = {(c["node"], c["check"]) for c in checks}
    for gw in ("west-gw", "east-gw"):
        assert {(gw, k) for k in ("forwarding", "rp_filter", "ike-daemon", "sa", "route", "mtu", "firewall")} <= done
    sa = next(c for c in checks if (c["node"], c["check"]) == ("west-gw", "sa"))
    assert "CHILD_SA west-east INSTALLED" in sa["detail"] and "SPIs in 0x" in sa["detail"]
    # Text form: one OK line per check, and -q leaves only the summary.
    assert main(["check", "-t", str(lab.topology_path), "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"{len(checks)} checks on 5 nodes: {len(checks)} ok, 0 failed")


def test_esp_blocked_is_the_routers_firewall(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with fault(lab, "esp-blocked"):
        code, checks = check(capsys, "-t", str(lab.topology_path))
        assert main(["check", "-t", str(lab.topology_path), "-q", "router"]) == 1
        text = capsys.readouterr().out
    assert code == 1 and failures(checks) == [("router", "firewall")]
    fw = next(c for c in checks if c["status"] == "fail")
    assert fw["detail"].startswith('nft rule "inet tracer_fault forward udp dport 4500 @th,64,32 != 0x0 drop" drops '
                                   "ESP-in-UDP between west-gw and east-gw")
    assert "IKE" not in fw["detail"] and fw["fix"].startswith("remove or narrow it")
    assert text.startswith('FAIL  router  firewall  nft rule "inet tracer_fault forward udp dport 4500')


def test_ike_blocked_is_the_firewall_and_no_sa(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with fault(lab, "ike-blocked"):
        code, checks = check(capsys, "-t", str(lab.topology_path))
    assert code == 1
    found = failures(checks)
    assert ("router", "firewall") in found and ("west-gw", "sa") in found and ("east-gw", "sa") in found
    fw = next(c for c in checks if (c["node"], c["check"]) == ("router", "firewall"))
    assert "drops IKE (UDP 500), IKE on UDP 4500, ESP-in-UDP between west-gw and east-gw" in fw["detail"]
    sa = next(c for c in checks if (c["node"], c["check"]) == ("west-gw", "sa"))
    assert sa["detail"].startswith("no CHILD_SA installed for tunnel west-east")


def test_asymmetric_return_is_east_gws_policy_route(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with fault(lab, "asymmetric-return"):
        code, checks = check(capsys, "-t", str(lab.topology_path))
    assert code == 1 and failures(checks) == [("east-gw", "route")]
    route = next(c for c in checks if c["status"] == "fail")
    assert route["detail"].startswith("198.51.100.0/24 → 192.0.2.0/24 arriving on lan0 goes via 198.18.2.254 dev wan0 "
                                      "(table 100, policy rule 100:")
    assert "around tunnel west-east" in route["detail"] and "ip rule del pref 100" in route["fix"]


def test_mtu_blackhole_is_the_mtu_check(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with fault(lab, "mtu-blackhole"):
        code, checks = check(capsys, "-t", str(lab.topology_path))
    assert code == 1 and set(failures(checks)) == {("router", "mtu"), ("east-gw", "mtu")}
    mtu = next(c for c in checks if (c["node"], c["check"], c["status"]) == ("router", "mtu", "fail"))
    assert "router:eth1 has MTU 1280, below the 1464 bytes" in mtu["detail"]


OWN = {"h1": "trc-ck-x-h1", "r": "trc-ck-x-r", "h2": "trc-ck-x-h2"}
OWN_TOPOLOGY = """\
name = "fwd"
[nodes.h1]
role = "host"
netns = "trc-ck-x-h1"
interfaces.eth0 = { addresses = ["198.18.10.10/24"] }
routes = [{ dst = "default", via = "198.18.10.1", dev = "eth0" }]
[nodes.r]
role = "router"
netns = "trc-ck-x-r"
interfaces.eth0 = { addresses = ["198.18.10.1/24"] }
interfaces.eth1 = { addresses = ["198.18.11.1/24"] }
[nodes.h2]
role = "host"
netns = "trc-ck-x-h2"
interfaces.eth0 = { addresses = ["198.18.11.10/24"] }
routes = [{ dst = "default", via = "198.18.11.1", dev = "eth0" }]
[[links]]
ends = ["h1:eth0", "r:eth0"]
[[links]]
ends = ["r:eth1", "h2:eth0"]
"""


def test_router_with_ip_forward_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with own_namespaces(OWN.values()):
        netns.ip_batch([f"link add eth0 type veth peer name eth0 netns {OWN['r']}",
                        "addr add 198.18.10.10/24 dev eth0", "link set eth0 up",
                        "route add default via 198.18.10.1 dev eth0"], ns=OWN["h1"])
        netns.ip_batch([f"link add eth0 type veth peer name eth1 netns {OWN['r']}",
                        "addr add 198.18.11.10/24 dev eth0", "link set eth0 up",
                        "route add default via 198.18.11.1 dev eth0"], ns=OWN["h2"])
        netns.ip_batch(["addr add 198.18.10.1/24 dev eth0", "addr add 198.18.11.1/24 dev eth1",
                        "link set eth0 up", "link set eth1 up"], ns=OWN["r"])
        netns.write_sysctls(OWN["r"], {"net.ipv4.ip_forward": "0"})
        topo = tmp_path / "fwd.toml"
        topo.write_text(OWN_TOPOLOGY)
        code, checks = check(capsys, "-t", str(topo))
        assert code == 1 and failures(checks) == [("r", "forwarding")]
        f = next(c for c in checks if c["status"] == "fail")
        assert f["detail"] == "net.ipv4.ip_forward is 0: this router forwards nothing"
        assert f["fix"].startswith("ip netns exec trc-ck-x-r sysctl -w net.ipv4.ip_forward=1")
        netns.write_sysctls(OWN["r"], {"net.ipv4.ip_forward": "1"})
        code, checks = check(capsys, "-t", str(topo))
        assert code == 0, [c for c in checks if c["status"] != "ok"]
