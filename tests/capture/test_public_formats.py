"""Captures not made by tracer, in the link types people hand in: recorded here with the real
tools (tcpdump, dumpcap) in two namespaces of this test's own, then read and mapped to capture
points the way `tracer replay -t TOPO FILES…` does.

a:a0 ── veth ── b:b0, plus a TUN device a:tun0 that this test drives itself. The files:

=====================  ========================================  =================================
file                   recorded with                             link type / mapped by
=====================  ========================================  =================================
b_b0.pcap              tcpdump -i b0 (a sends 802.1Q frames too)  Ethernet with VLAN tags / name
b-any.pcap             tcpdump -y LINUX_SLL2 -i any               SLL2 / unused by name, --point
cooked.pcap            tcpdump -y LINUX_SLL -i any                SLL / --points MAPFILE
a-tun0.pcap            tcpdump -i tun0                            raw IP / file name
a_lo.pcap              tcpdump -i lo (a pings itself)             Linux loopback / unused
a.pcapng               dumpcap -i a0 -i lo -i tun0                3 interfaces, split / pcapng names
=====================  ========================================  =================================

Whether the untagged pings are then *analysed* is another matter (tracer replay of plain pings);
here every file must load, and each of its interfaces land on the right point or be unused.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import numpy as np
import pytest

from tests.own_netns import own_namespaces
from tracer import netns
from tracer.capture.pcapfile import read_capture
from tracer.model.observations import PacketClass
from tracer.run.replay import load_run

NS = {"a": "trc-pc-a", "b": "trc-pc-b"}
A, B = "198.18.70.1", "198.18.70.2"
TUN, TUN_PEER = "198.18.71.1", "198.18.71.9"  # tun0's address; the far end that "sends" into it
VA, VB = "198.18.72.1", "198.18.72.2"  # inside the 802.1Q frames (VLAN 10)
TOPOLOGY = f"""
name = "pc"
[nodes.a]
role = "host"
[nodes.a.interfaces.a0]
addresses = ["{A}/24"]
[nodes.a.interfaces.tun0]
addresses = ["{TUN}/24"]
[nodes.b]
role = "host"
[nodes.b.interfaces.b0]
addresses = ["{B}/24", "{VB}/24"]
[[links]]
ends = ["a:a0", "b:b0"]
"""
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000


def _csum(data: bytes) -> int:
    total = sum(struct.unpack(f">{len(data) // 2}H", data + b"\0" * (len(data) % 2)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo(src: str, dst: str, seq: int) -> bytes:
    """An IPv4 ICMP echo request (a plain one, no tracer tag)."""
    icmp = struct.pack(">BBHHH", 8, 0, 0, 0x77, seq) + b"public-format corpus".ljust(32, b".")
    icmp = icmp[:2] + struct.pack(">H", _csum(icmp)) + icmp[4:]
    head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0,
                       IPv4Address(src).packed, IPv4Address(dst).packed)
    return head[:10] + struct.pack(">H", _csum(head)) + head[12:] + icmp


def _mac(ns: str, dev: str) -> bytes:
    out = netns.ns_run(ns, ["cat", f"/sys/class/net/{dev}/address"]).stdout.strip()
    return bytes.fromhex(out.replace(":", ""))


def _start(ns: str, argv: list[str], ready: str) -> subprocess.Popen[bytes]:
    """Start a capture tool and wait until it says it is capturing (at most 10 s)."""
    proc = netns.ns_popen(ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen, deadline = b"", time.monotonic() + 10
    while ready.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None or not select.select([proc.stderr], [], [], left)[0]:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{argv[0]} did not start: {seen.decode(errors='replace')}")
        seen += os.read(proc.stderr.fileno(), 4096)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("public")
    with own_namespaces(NS.values()):
        netns.ip_batch([f"link add a0 type veth peer name b0 netns {NS['b']}", f"addr add {A}/24 dev a0",
                        "link set a0 up", "link set lo up"], ns=NS["a"])
        netns.ip_batch([f"addr add {B}/24 dev b0", "link set b0 up", "link set lo up"], ns=NS["b"])
        with netns.entered(NS["a"]):  # the TUN device is made in the namespace of the thread that opens it
            tun = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"tun0", IFF_TUN | IFF_NO_PI))
            netns.ip_batch([f"addr add {TUN}/24 dev tun0", "link set tun0 up"], ns=NS["a"])
            tcpdump = ["tcpdump", "-U", "--immediate-mode", "-n", "-s", "0"]
            for ns, args, file in [
                ("b", ["-i", "b0"], "b_b0.pcap"),
                ("b", ["-y", "LINUX_SLL2", "-i", "any"], "b-any.pcap"),
                ("b", ["-y", "LINUX_SLL", "-i", "any"], "cooked.pcap"),
                ("a", ["-i", "tun0"], "a-tun0.pcap"),
                ("a", ["-i", "lo"], "a_lo.pcap"),
            ]:
                procs.append(_start(NS[ns], [*tcpdump, *args, "-w", str(out / file)], "listening on"))
            procs.append(_start(NS["a"], ["dumpcap", "-i", "a0", "-i", "lo", "-i", "tun0", "-w", str(out / "a.pcapng")],
                                "Capturing on"))
            time.sleep(0.5)  # dumpcap says "Capturing on" before its last interface is open
            netns.ns_run(NS["a"], ["ping", "-c", "3", "-i", "0.2", B])  # over the veth
            netns.ns_run(NS["a"], ["ping", "-c", "2", "-i", "0.2", A])  # to itself: over lo
            for seq in (1, 2, 3):  # into tun0 from "outside": the kernel answers back out of tun0
                os.write(tun, echo(TUN_PEER, TUN, seq))
            with netns.netns_socket(NS["a"], socket.AF_PACKET, socket.SOCK_RAW) as s:  # 802.1Q, VLAN 10
                s.bind(("a0", 0))
                for seq in (1, 2, 3):
                    s.send(_mac(NS["b"], "b0") + _mac(NS["a"], "a0") + b"\x81\x00\x00\x0a\x08\x00" + echo(VA, VB, seq))
            time.sleep(0.5)  # the last replies reach the sniffers
        finally:
            for p in procs:
                _stop(p)
            os.close(tun)
        (out / "topology.toml").write_text(TOPOLOGY)
        yield out


def _rows(loaded, point: str, cls: PacketClass, src: str, dst: str) -> int:
    obs = loaded.observations
    m = ((obs["point"] == obs.point_index(point)) & (obs["cls"] == cls)
         & (obs["src"] == int(IPv4Address(src))) & (obs["dst"] == int(IPv4Address(dst))))
    return int(np.count_nonzero(m))


def test_link_types_are_the_ones_the_tools_write(corpus):
    linktypes = {f: [i.linktype for i in read_capture(corpus / f).interfaces]
                 for f in ("b_b0.pcap", "b-any.pcap", "cooked.pcap", "a-tun0.pcap", "a_lo.pcap", "a.pcapng")}
    assert linktypes["b_b0.pcap"] == [1] and linktypes["a_lo.pcap"] == [1]  # Linux lo is Ethernet-framed
    assert linktypes["b-any.pcap"] == [276] and linktypes["cooked.pcap"] == [113]
    assert linktypes["a-tun0.pcap"][0] in (12, 101)  # LINKTYPE_RAW (DLT_RAW is 12 or 14 in files of some systems)
    assert linktypes["a.pcapng"] == [1, 1, linktypes["a-tun0.pcap"][0]]
    names = [i.name for i in read_capture(corpus / "a.pcapng").interfaces]
    assert names == ["a0", "lo", "tun0"]


def test_every_file_is_read_and_mapped(corpus):
    files = [corpus / f for f in ("b_b0.pcap", "b-any.pcap", "a-tun0.pcap", "a_lo.pcap", "a.pcapng")]
    (corpus / "points.toml").write_text('"b:b0" = "cooked.pcap"\n')
    loaded = load_run(files, corpus / "topology.toml", [("b:b0", corpus / "cooked.pcap")])
    got = {m.label.removeprefix(f"{corpus}/"): (m.point, m.how) for m in loaded.mapping}
    assert got == {
        "b_b0.pcap": ("b:b0", "file name"),
        "b-any.pcap": (None, "unused"),  # 'any' is no interface of b
        "a-tun0.pcap": ("a:tun0", "file name"),
        "a_lo.pcap": (None, "unused"),
        "a.pcapng#0 (a0)": ("a:a0", "pcapng name"),
        "a.pcapng#1 (lo)": (None, "unused"),
        "a.pcapng#2 (tun0)": ("a:tun0", "pcapng name"),
        "cooked.pcap": ("b:b0", "option"),
    }
    assert set(loaded.observations.points) == {"a:a0", "a:tun0", "b:b0"}
    # The packets behind each mapping, extracted through each link type, counted against Wireshark's
    # reading of the same files (dumpcap may open its interfaces a moment after it says "Capturing on").
    echo, reply = PacketClass.ECHO_REQUEST, PacketClass.ECHO_REPLY
    a0, tun0 = "frame.interface_name == a0", "frame.interface_name == tun0"
    for point, cls, src, dst, parts, least in [
        ("a:a0", echo, A, B, [("a.pcapng", a0)], 1),
        ("b:b0", echo, A, B, [("b_b0.pcap", ""), ("cooked.pcap", "")], 6),
        ("b:b0", reply, B, A, [("b_b0.pcap", ""), ("cooked.pcap", "")], 6),
        ("b:b0", echo, VA, VB, [("b_b0.pcap", "vlan.id == 10"), ("cooked.pcap", "")], 6),  # tag put back by tcpdump
        ("a:tun0", echo, TUN_PEER, TUN, [("a-tun0.pcap", ""), ("a.pcapng", tun0)], 4),  # raw IP
        ("a:tun0", reply, TUN, TUN_PEER, [("a-tun0.pcap", ""), ("a.pcapng", tun0)], 4),
        ("a:a0", echo, A, A, [], 0),  # a's pings to itself stayed on lo, which is unused
    ]:
        want = sum(_tshark_count(corpus / f, cls, src, dst, extra) for f, extra in parts)
        assert _rows(loaded, point, cls, src, dst) == want >= least, (point, cls, src, dst)


def _tshark_count(path: Path, cls: PacketClass, src: str, dst: str, extra: str) -> int:
    icmp_type = 8 if cls == PacketClass.ECHO_REQUEST else 0
    flt = f"icmp.type == {icmp_type} && ip.src == {src} && ip.dst == {dst}" + (f" && {extra}" if extra else "")
    out = subprocess.run(["tshark", "-r", str(path), "-Y", flt, "-T", "fields", "-e", "frame.number"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return len(out.split())


def test_sll2_any_capture_mapped_by_option_and_lo_by_option_is_a_witness(corpus):
    loaded = load_run([], corpus / "topology.toml", [("b:b0", corpus / "b-any.pcap"), ("a:lo", corpus / "a_lo.pcap")])
    assert [(m.point, m.how, m.why) for m in loaded.mapping] == [
        ("b:b0", "option", ""), ("a:lo", "option", "not in the topology: used as a witness only")]
    # -i any sees b0's frames once, the VLAN ones included (b has no VLAN device to hand them to)
    assert _rows(loaded, "b:b0", PacketClass.ECHO_REQUEST, A, B) == 3 == _tshark_count(
        corpus / "b-any.pcap", PacketClass.ECHO_REQUEST, A, B, "")
    assert _rows(loaded, "b:b0", PacketClass.ECHO_REQUEST, VA, VB) == 3
    assert _rows(loaded, "a:lo", PacketClass.ECHO_REQUEST, A, A) == 2
