"""Live, on a network tracer has never seen: built by hand here (ip netns/veth, no ``tracer lab``), with
none of the lab's names or addresses — nodes alpha, core1..core3, omega; interfaces uplink, p1, p2,
lan7, bypass; 203.0.113.0/24 and 198.18.0.0/15; the reply taking a bypass link (asymmetric). Used as a
new user would: ``topology discover`` → ``check`` → ``path``; plain tcpdump on every interface and
iputils ping, replayed (and mergecap'd); then ``tracer ping`` on the discovered file."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cli.tracer_cmd import tracer
from tests.own_netns import own_namespaces
from tracer import netns

pytestmark = pytest.mark.lab

PREFIX = "trc-gx-"
NODES = ("alpha", "core1", "core2", "core3", "omega")
NS = {n: PREFIX + n for n in NODES}
# (node, iface, address) ↔ (node, iface, address)
LINKS = [
    (("alpha", "uplink", "203.0.113.10/24"), ("core1", "p1", "203.0.113.1/24")),
    (("core1", "p2", "198.18.10.1/30"), ("core2", "p1", "198.18.10.2/30")),
    (("core2", "p2", "198.18.10.5/30"), ("core3", "p1", "198.18.10.6/30")),
    (("core3", "lan7", "198.19.7.1/24"), ("omega", "uplink", "198.19.7.77/24")),
    (("core1", "bypass", "198.18.20.1/30"), ("core3", "bypass", "198.18.20.2/30")),
]
ROUTES = {
    "alpha": ["default via 203.0.113.1 dev uplink"],
    "omega": ["default via 198.19.7.1 dev uplink"],
    "core1": ["198.19.7.0/24 via 198.18.10.2 dev p2"],
    "core2": ["198.19.7.0/24 via 198.18.10.6 dev p2", "203.0.113.0/24 via 198.18.10.1 dev p1"],
    "core3": ["203.0.113.0/24 via 198.18.20.1 dev bypass"],  # replies go round core2
}
REQUEST = ["alpha:uplink", "core1:p1", "core1:p2", "core2:p1", "core2:p2", "core3:p1", "core3:lan7", "omega:uplink"]
REPLY = ["omega:uplink", "core3:lan7", "core3:bypass", "core1:bypass", "core1:p1", "alpha:uplink"]
DROP = "lost inside core2 between p1 and p2 (forward)"
NFT_DROP = "table inet gx {\n chain fw {\n  type filter hook forward priority 0;\n  icmp type echo-request drop\n }\n}\n"


def build() -> None:
    for n in NODES:
        netns.ip_batch(["link set lo up"], ns=NS[n])
    for (a, ia, aa), (b, ib, ab) in LINKS:
        netns.ip_batch([f"link add {ia} type veth peer name {ib} netns {NS[b]}", f"addr add {aa} dev {ia}",
                        f"link set {ia} up"], ns=NS[a])
        netns.ip_batch([f"addr add {ab} dev {ib}", f"link set {ib} up"], ns=NS[b])
    for n, routes in ROUTES.items():
        netns.ip_batch([f"route add {r}" for r in routes], ns=NS[n])
    for n in ("core1", "core2", "core3"):
        netns.write_sysctls(NS[n], {"net.ipv4.ip_forward": "1"})


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The network, and the topology ``tracer topology discover`` writes of it."""
    with own_namespaces(NS.values()):
        build()
        path = tmp_path_factory.mktemp("gx") / "topo.toml"
        r = tracer("topology", "discover", "--netns", PREFIX + "*", "-o", path)
        assert r.code == 0, r
        yield path


def ns_run(node: str, *cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", NS[node], *cmd], input=stdin, capture_output=True, text=True,
                          timeout=30)


@contextmanager
def nft_drop(node: str) -> Iterator[None]:
    assert ns_run(node, "nft", "-f", "-", stdin=NFT_DROP).returncode == 0
    try:
        yield
    finally:
        ns_run(node, "nft", "delete", "table", "inet", "gx")


def hand_captures(out: Path) -> list[Path]:
    """Plain tcpdump on every interface of every node (lo too), ``node_iface.pcap``, around iputils ping -c 3."""
    out.mkdir()
    procs = []
    try:
        for n in NODES:
            for iface in _links(n):
                procs.append(subprocess.Popen(["ip", "netns", "exec", NS[n], "tcpdump", "--immediate-mode", "-U", "-q",
                                               "-i", iface,
                                               "-w", str(out / f"{n}_{iface}.pcap")],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10  # tcpdump opens its file once it captures; then a moment to settle
        while time.monotonic() < deadline and len(list(out.glob("*.pcap"))) < len(procs):
            time.sleep(0.05)
        time.sleep(0.5)
        ns_run("alpha", "ping", "-c", "3", "-i", "0.2", "-W", "1", "198.19.7.77")
        time.sleep(1.0)  # without --immediate-mode and this pause, SIGINT can lose the last packets
    finally:
        for p in procs:  # only the tcpdumps started here, by PID
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=10)
    return sorted(out.glob("*.pcap"))


def _links(node: str) -> list[str]:
    lines = ns_run(node, "ip", "-o", "link", "show").stdout.splitlines()
    return [line.split(": ")[1].split("@")[0] for line in lines]


def hops(text: str, title: str) -> list[str]:
    """The capture points of one path section of ``tracer topology path``'s text."""
    section = text.split(title, 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines()[2:] if line.startswith("  ") and ":" in line.split()[0]]


def test_discovered_topology_checks_and_gives_the_asymmetric_paths(topo: Path) -> None:
    text = topo.read_text()
    for n in NODES:
        assert f'netns = "{NS[n]}"' in text  # what tracer ping needs to capture and send
    r = tracer("topology", "check", topo)
    assert r.code == 0 and "valid: 5 nodes, 5 links, 0 tunnels, 10 capture points" in r.out, r
    r = tracer("topology", "path", topo, "alpha", "omega")
    assert r.code == 0, r
    assert hops(r.out, "request path") == REQUEST
    assert hops(r.out, "reply path") == REPLY


def test_hand_captures_replay_to_the_dropping_hop(topo: Path, tmp_path: Path) -> None:
    clean = hand_captures(tmp_path / "clean")
    r = tracer("replay", "-t", topo, *clean)
    assert r.code == 0 and "OK    3/3 echo requests delivered and answered (alpha → omega)" in r.out, r
    with nft_drop("core2"):
        files = hand_captures(tmp_path / "drop")
    assert {f.name for f in files} >= {"alpha_uplink.pcap", "core2_p1.pcap", "core3_bypass.pcap", "omega_lo.pcap"}
    r = tracer("replay", "-t", topo, *files)
    assert r.code == 1 and f"LOSS  3/3 echo requests {DROP}" in r.out, r
    # Without the capture after the drop, the evidence cannot tell core2 from the wire after it.
    r = tracer("replay", "-t", topo, *[f for f in files if f.name != "core2_p2.pcap"])
    assert r.code == 3 and "INCONCLUSIVE 3/3 echo requests inconclusive: somewhere between core2:p1 and core3:p1" \
        in r.out, r
    # mergecap of tcpdump's pcap files: one interface holding every hop, which no capture point stands for.
    merged = tmp_path / "merged.pcapng"
    subprocess.run(["mergecap", "-w", str(merged), *map(str, files)], check=True, capture_output=True, timeout=30)
    r = tracer("replay", "-t", topo, merged)
    assert r.code == 2 and "it holds the same packets at several hops" in r.err and not r.out, r


def test_tracer_ping_names_the_same_hop(topo: Path, tmp_path: Path) -> None:
    r = tracer("ping", "alpha", "omega", "-t", topo, "-q", "-o", tmp_path / "ok")
    assert r.code == 0 and "3/3 echo requests delivered and answered" in r.out, r
    assert hops(r.out, "reply path") == REPLY
    with nft_drop("core2"):
        r = tracer("ping", "alpha", "omega", "-t", topo, "-q", "-o", tmp_path / "drop")
    assert r.code == 1 and f"LOSS  3/3 echo requests {DROP}" in r.out, r
    assert "core2: kernel dropped 3/3 (NETFILTER_DROP" in r.out, r


def test_transit_dumpcap_is_placed_by_its_node_not_by_addresses(topo: Path, tmp_path: Path) -> None:
    """dumpcap -i p1 -i p2 on core2 (p1 is on three nodes): named after its node it is core2's; unnamed,
    its packets (all past a router) must not place it on a host's link by their source's subnet."""
    out = tmp_path / "dc"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # dumpcap may write as another user
    f = out / "capture.pcapng"
    p = subprocess.Popen(["ip", "netns", "exec", NS["core2"], "dumpcap", "-q", "-i", "p1", "-i", "p2", "-w", str(f)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not f.exists():
            time.sleep(0.05)
        time.sleep(0.5)
        ns_run("alpha", "ping", "-c", "3", "-i", "0.2", "-W", "1", "198.19.7.77")
        time.sleep(1.0)  # time for dumpcap to write the last packets before SIGINT
    finally:
        p.send_signal(signal.SIGINT)  # only the dumpcap started here, by PID
        p.wait(timeout=10)
    r = tracer("replay", "-t", topo, f, "--json")
    assert r.code == 2 and "every IPv4 packet in it had crossed a router" in r.err, r
    named = out / "core2.pcapng"
    f.rename(named)
    r = tracer("replay", "-t", topo, named)
    # Mapped; the replies go round core2 (bypass), where this file cannot see them: inconclusive.
    assert r.code == 3 and "→ core2:p1" in r.out and "→ core2:p2" in r.out, r
