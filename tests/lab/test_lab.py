"""The built-in lab, for real: namespaces, strongSwan, ESP on the wire, faults.

Tests marked ``lab`` share one lab (module fixture) and run in file order:
the last one tears it down and checks nothing is left.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from tracer import netns
from tracer.errors import EXIT_ENVIRONMENT, EnvironmentProblem, LabError
from tracer.lab import Lab, faults, layout, strongswan
from tracer.lab.state import STATE_FILE, read_state
from tracer.model.topology import Topology

LAB = "t1"  # namespaces trc-t1-*; the module's lab comes from tests/conftest.py

WEST_HOST = "192.0.2.10"
EAST_HOST = "198.51.100.10"


# -- helpers ---------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo(lab: Lab, dst: str = EAST_HOST, count: int = 2, size: int = 56, df: bool = False, timeout: float = 1.0) -> int:
    """Send ICMP echoes from the west host; return how many replies came back.

    A raw socket opened in west's namespace through tracer.netns: no process
    per ping, and exact control over size and DF.
    """
    sock = netns.netns_socket(lab.namespace("west"), socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with sock:
        if df:
            sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
        ident = random.randrange(1, 0xFFFF)
        for seq in range(count):
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = bytes(size)
            sock.sendto(struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq) + payload, (dst, 0))
        got: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(got) < count and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                pkt = sock.recv(65535)
            except TimeoutError:
                break
            ihl = (pkt[0] & 0x0F) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", pkt[ihl : ihl + 8])
            if typ == 0 and rid == ident:
                got.add(rseq)
        return len(got)


class Sniffer:
    """tcpdump in a lab namespace, started and confirmed listening before use."""

    def __init__(self, ns: str, iface: str, bpf: str, count: int, pcap: Path | None = None) -> None:
        argv = ["tcpdump", "-n", "-i", iface, "--immediate-mode", "-c", str(count), "-l"]
        argv += ["-w", str(pcap)] if pcap else []
        self.proc = netns.ns_popen(ns, [*argv, bpf], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        # tcpdump says "listening on ..." once the filter is attached.
        seen = ""
        while "listening on" not in seen:
            line = self.proc.stderr.readline()
            if not line:
                self.proc.kill()
                pytest.fail(f"tcpdump did not start: {seen}")
            seen += line

    def finish(self, timeout: float = 3.0) -> str:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


# -- no root needed --------------------------------------------------------------------


def test_not_root_is_an_environment_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem, match="root") as err:
        Lab("t3").up()
    assert err.value.exit_code == EXIT_ENVIRONMENT


# -- the real lab ------------------------------------------------------------------------


@pytest.mark.lab
def test_up_brings_the_tunnel_up(lab: Lab) -> None:
    st = lab.status()
    assert st["up"] and st["tunnel_up"] and st["fault"] is None
    assert sorted(netns.list_with_prefix("trc-t1-")) == sorted(lab.namespaces.values())
    west = st["gateways"]["west-gw"]["ike_sas"][0]["child_sas"][0]
    east = st["gateways"]["east-gw"]["ike_sas"][0]["child_sas"][0]
    assert west["state"] == east["state"] == "INSTALLED"
    assert west["encap"] and west["protocol"] == "ESP"
    assert (west["spi_in"], west["spi_out"]) == (east["spi_out"], east["spi_in"])
    assert "198.51.100.0/24 dev ipsec0 table 220" in st["routes"]["west-gw"]
    json.dumps(st)  # JSON-serialisable


@pytest.mark.lab
def test_topology_file_is_written(lab: Lab) -> None:
    text = lab.topology_path.read_text()
    assert text.startswith("# Topology of tracer lab 't1', written by 'tracer lab up'.\n")
    topo = lab.topology()
    assert Topology.from_dict(tomllib.loads(text), source=topo.source) == topo
    # The layout's topology, plus where each gateway's IKE daemon can be read (evidence fields).
    bare = {n: replace(node, ike_vici=None, ike_log=None) for n, node in topo.nodes.items()}
    assert replace(topo, nodes=bare) == layout.topology("t1")
    assert all(topo.nodes[gw].ike_vici and topo.nodes[gw].ike_log for gw in layout.GATEWAYS)
    assert topo.nodes["east"].netns == lab.namespace("east")


@pytest.mark.lab
def test_up_is_idempotent(lab: Lab) -> None:
    before = lab.status()["gateways"]["west-gw"]["ike_sas"]
    assert lab.up() == lab.topology_path  # no rebuild, no re-key: same SPIs
    assert lab.status()["gateways"]["west-gw"]["ike_sas"][0]["child_sas"][0]["spi_in"] == before[0]["child_sas"][0]["spi_in"]


@pytest.mark.lab
def test_ping_through_the_tunnel(lab: Lab) -> None:
    if not shutil.which("ping"):
        pytest.fail("ping not installed: apt-get install iputils-ping")
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.namespace("west"), "ping", "-c", "2", "-W", "2", EAST_HOST],
        capture_output=True, text=True, timeout=10,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.lab
def test_router_sees_only_esp_in_udp(lab: Lab) -> None:
    # Everything IPv4 on the router's west side (but NAT-T keepalives, UDP
    # length 9): 2 requests + 2 replies, all ESP in UDP 4500.
    sniff = Sniffer(lab.namespace("router"), "eth0", "ip and not (udp port 4500 and udp[4:2] = 9)", count=4)
    assert echo(lab, count=2) == 2
    lines = sniff.finish().splitlines()
    spi_out = lab.status()["gateways"]["west-gw"]["ike_sas"][0]["child_sas"][0]["spi_out"]
    assert len(lines) == 4, lines
    assert all("4500 > " in ln and "UDP-encap: ESP" in ln for ln in lines), lines
    assert sum(f"spi={spi_out}" in ln for ln in lines) == 2, lines
    assert not any("ICMP" in ln for ln in lines)


@pytest.mark.lab
def test_logged_child_sa_keys_decrypt_the_wire(lab: Lab, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    pcap = tmp_path / "esp.pcap"
    sniff = Sniffer(lab.namespace("router"), "eth0", "udp src port 4500 and src host 198.18.1.1 and udp[8:4] != 0", 1, pcap)
    assert echo(lab, count=1) == 1
    sniff.finish()
    data = pcap.read_bytes()
    frame = data[24 + 16 :]  # pcap header, record header
    ip = frame[14:]
    esp = ip[(ip[0] & 0x0F) * 4 + 8 :]
    spi, _seq = struct.unpack("!II", esp[:8])

    west = lab.child_sa_keys("west-gw")[-1]
    east = lab.child_sa_keys("east-gw")[-1]
    assert west.spi_out == east.spi_in == spi
    assert west.encr_initiator == east.encr_initiator and len(west.encr_initiator) == 20
    # west-gw initiated the IKE_SA, so its first CHILD_SA sends with the initiator key.
    key, salt = west.encr_initiator[:16], west.encr_initiator[16:]
    plain = AESGCM(key).decrypt(salt + esp[8:16], esp[16:], esp[:8])  # RFC 4106
    pad_len, next_header = plain[-2], plain[-1]
    inner = plain[: -2 - pad_len]
    assert next_header == 4  # IPv4 in tunnel mode
    assert socket.inet_ntoa(inner[12:16]) == WEST_HOST and socket.inet_ntoa(inner[16:20]) == EAST_HOST


def _fault_breaks_ping(lab: Lab, name: str) -> None:
    assert echo(lab, count=1) == 1, "lab must work before the fault"
    lab.set_fault(name)
    st = lab.status()
    assert st["fault"] == name
    if name == "mtu-blackhole":
        assert echo(lab, count=2, size=56, df=True) == 2  # small packets still pass
        assert echo(lab, count=2, size=1300, df=True) == 0  # large ones vanish
    else:
        assert echo(lab, count=2) == 0
    drops = lab.status().get("fault_drops", {})
    for node in faults.get(name).nft:
        assert drops.get(node, 0) > 0, f"{name}: no packet dropped on {node}: {drops}"


@pytest.mark.lab
@pytest.mark.parametrize(
    "name", ["esp-blocked", "gw-forward-drop", "decap-drop", "esp-input-drop", "mtu-blackhole", "no-return-route"]
)
def test_fault_breaks_and_clear_restores(lab: Lab, name: str) -> None:
    _fault_breaks_ping(lab, name)
    assert lab.status()["tunnel_up"]  # these faults leave IKE alone
    lab.clear_fault()
    assert lab.status()["fault"] is None
    assert echo(lab, count=2, size=1300, df=True) == 2


@pytest.mark.lab
def test_no_return_route_really_removes_the_route(lab: Lab) -> None:
    lab.set_fault("no-return-route")
    try:
        assert not any(r.startswith("default") for r in lab.status()["routes"]["east"])
    finally:
        lab.clear_fault()
    assert "default via 198.51.100.1 dev eth0" in lab.status()["routes"]["east"]


@pytest.mark.lab
def test_ike_blocked_tears_the_tunnel_down_and_leaks_cleartext(lab: Lab) -> None:
    # The request leaves west-gw in the clear by its default route (no SA, no
    # table-220 route) and dies at the router, which has no route onwards.
    lab.set_fault("ike-blocked")
    st = lab.status()
    assert not st["tunnel_up"]
    assert not any("table 220" in r for r in st["routes"]["west-gw"])
    sniff = Sniffer(lab.namespace("router"), "eth0", "icmp", count=1)
    assert echo(lab, count=1) == 0
    assert f"{WEST_HOST} > {EAST_HOST}: ICMP echo request" in sniff.finish()
    assert lab.status()["fault_drops"]["router"] > 0  # IKE retransmits
    lab.clear_fault()
    st = lab.status()
    assert st["tunnel_up"] and st["fault"] is None
    assert echo(lab, count=2) == 2


@pytest.mark.lab
def test_up_with_fault_on_running_lab_then_up_clears(lab: Lab) -> None:
    lab.up(fault="decap-drop")
    assert lab.status()["fault"] == "decap-drop" and echo(lab, count=1) == 0
    lab.up()
    assert lab.status()["fault"] is None and echo(lab, count=1) == 1


@pytest.mark.lab
def test_failed_up_cleans_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    broken = Lab("t2", state_dir=tmp_path)
    started: list[int] = []
    real_start = strongswan.start_charon

    def start(ns: str, gw_dir: Path) -> subprocess.Popen[bytes]:
        proc = real_start(ns, gw_dir)
        started.append(proc.pid)
        return proc

    def fail_load(gw_dir: Path) -> None:
        raise LabError("injected failure")

    monkeypatch.setattr(strongswan, "start_charon", start)
    monkeypatch.setattr(strongswan, "load", fail_load)
    with pytest.raises(LabError, match="injected"):
        broken.up()
    assert len(started) == 2  # it got as far as both charons
    assert netns.list_with_prefix("trc-t2-") == []
    assert not any(_running(pid) for pid in started)
    assert not broken.dir.exists()


@pytest.mark.lab
def test_unreadable_state_is_refused_but_down_still_cleans_up(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    broken = Lab("t5", state_dir=tmp_path)
    broken.dir.mkdir()
    (broken.dir / STATE_FILE).write_text('{"name": "t5", "version": 99}')
    netns.add(broken.namespace("west"))  # something a lab of another tracer version left behind
    try:
        for action in (broken.up, broken.status, broken.clear_fault):
            with pytest.raises(LabError, match=r"lab state not understood \(version 99, .*'tracer lab down --name t5'"):
                action()
        broken.down()
        assert netns.list_with_prefix("trc-t5-") == [] and not broken.dir.exists()
    finally:
        netns.delete(broken.namespace("west"))


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, merely not reaped yet


@pytest.mark.lab
def test_down_from_another_process_leaves_nothing(lab: Lab) -> None:
    state = read_state(lab.dir / STATE_FILE)
    assert state is not None and state.namespaces == lab.namespaces
    pids = [p.pid for p in state.charon.values()]
    assert all(_running(pid) for pid in pids)
    code = f"from tracer.lab import Lab; Lab({lab.name!r}).down()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=Path(__file__).parents[2])
    assert netns.list_with_prefix(layout.ns_prefix(lab.name)) == []
    assert not any(_running(pid) for pid in pids)
    assert not lab.dir.exists()
    assert lab.status()["up"] is False
    lab.down()  # idempotent
