"""Live MTU probes on the real lab: the blackhole link is found, the tunnel overhead measured, and
the gateway's own "fragmentation needed" (ipsec0 has MTU 1400) is named with its sender."""

from __future__ import annotations

import json

import pytest

from tests.lab_faults import fault
from tracer.cli import main

pytestmark = pytest.mark.lab

LAB = "mt"


def mtu(lab, tmp_path, capsys, name, *extra):
    code = main(["mtu", "--topology", str(lab.topology_path), "west", "east", "--out", str(tmp_path / name),
                 "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def size(s: int, delivered: int, where: str | None = None, error: str | None = None) -> dict:
    return {"size": s, "sent": 1, "delivered": delivered, "where": where, "error": error}


ROUTER = "inside router between eth0 and eth1 (forward)"
WEST_GW = "inside west-gw between lan0 and ipsec0 (forward)"
# kernel-libipsec, aes128gcm16 in UDP 4500: 20 IP + 8 UDP + 8 ESP + 8 IV + 2..5 trailer + 16 ICV, padded.
TUNNEL = {"esp_overhead": 64, "encap_point": "west-gw:ipsec0"}


def test_blackhole_link_is_named(lab, tmp_path, capsys):
    with fault(lab, "mtu-blackhole"):
        code, doc = mtu(lab, tmp_path, capsys, "run", "--sizes", "576,1000,1200,1250,1300")
    assert (code, doc["status"], doc["kind"]) == (1, "loss", "mtu")
    assert doc["summary"] == ("path MTU below 1250 bytes: 1200-byte probes delivered, "
                              f"1250-byte probes lost {ROUTER}")
    assert doc["mtu"] == {
        "sizes": [size(576, 1), size(1000, 1), size(1200, 1), size(1250, 0, ROUTER), size(1300, 0, ROUTER)],
        "largest_delivered": 1200, "smallest_lost": 1250, **TUNNEL}
    # 3 requests and 3 replies delivered, 2 requests lost after their ESP left west-gw: 8 carriers.
    assert doc["diagnoses"] == [
        "ESP with keys: 8 packets decrypted",
        "ESP decrypted with keys: 8 probe carriers identified by the tag inside",
        f"1250-byte probes vanish {ROUTER} while 1200-byte ones pass, and no ICMP 'fragmentation needed' came "
        "back: a PMTUD blackhole (a link MTU below the packet size, with its ICMP errors filtered or never sent)",
    ]
    assert doc["warnings"] == []


def test_healthy_lab_tunnel_mtu(lab, tmp_path, capsys):
    # ipsec0 (kernel-libipsec's TUN) has MTU 1400. The first 1450-byte DF probe is stopped at
    # west-gw, which answers with a frag-needed from its LAN address; west's stack learns the path
    # MTU from it (nothing else in this fresh lab sent west anything that large).
    code, doc = mtu(lab, tmp_path, capsys, "first", "--sizes", "1000,1400,1450")
    assert (code, doc["status"]) == (1, "loss")
    assert doc["summary"] == f"path MTU below 1450 bytes: 1400-byte probes delivered, 1450-byte probes lost {WEST_GW}"
    assert doc["mtu"] == {"sizes": [size(1000, 1), size(1400, 1), size(1450, 0, WEST_GW)],
                          "largest_delivered": 1400, "smallest_lost": 1450, **TUNNEL}
    assert sorted(d for d in doc["diagnoses"] if d.startswith("ICMP ")) == [
        "ICMP fragmentation needed from 192.0.2.1 about the probe, next-hop MTU 1400, seen at west-gw:lan0",
        "ICMP fragmentation needed from 192.0.2.1 about the probe, next-hop MTU 1400, seen at west:eth0",
    ]
    assert doc["diagnoses"][-1] == (
        f"1450-byte probes vanish {WEST_GW} while 1400-byte ones pass; an ICMP 'fragmentation needed' was sent "
        "(see above): path MTU discovery is working")

    # Again: now west's own stack refuses the 1450-byte probe (EMSGSIZE) before it leaves.
    code, doc = mtu(lab, tmp_path, capsys, "again", "--sizes", "1000,1400,1450")
    assert (code, doc["status"]) == (1, "loss")
    assert doc["summary"] == ("path MTU below 1450 bytes: 1400-byte probes delivered, "
                              "1450-byte probes refused by the sender (Message too long)")
    assert doc["mtu"]["sizes"] == [size(1000, 1), size(1400, 1),
                                   size(1450, 0, "at west, before leaving west:eth0", "Message too long")]
    assert (doc["mtu"]["largest_delivered"], doc["mtu"]["smallest_lost"]) == (1400, 1450)
    assert not any(d.startswith("ICMP ") for d in doc["diagnoses"])
