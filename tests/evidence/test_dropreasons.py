"""Kernel drop reasons: the generated bpftrace script attached to the real ``skb:kfree_skb``
tracepoint while real packets are dropped in namespaces of our own (trc-dr-*), for real
reasons: an nft forward rule, a missing route, a frame sent to the wrong MAC address. Only
our probes (this run's tag, the tunnels' SPIs) are reported; untagged traffic dropped by the
same rule is not; bpftrace is gone after stop. Plus the pure parts (reason names from the
tracepoint's format, the script's lines) fed with data."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.own_netns import own_namespaces
from tracer import netns
from tracer.evidence import dropreasons
from tracer.evidence.dropreasons import (
    _READY_ENV,
    Session,
    attach,
    node_inodes,
    parse_line,
    reason_names,
    script,
    tracepoint_format,
)
from tracer.model.evidence import Drop, ProbeMatch
from tracer.model.tag import ProbeKind, ProbeTag
from tracer.model.topology import Node, Topology
from tracer.send.echo import echo_request

NS = {"a": "trc-dr-a", "r": "trc-dr-r", "b": "trc-dr-b"}
RUN = 0x5EED0D12
OTHER_RUN = 0x5EED0D13
SPI = 0xC0FFEE01
OTHER_SPI = 0xC0FFEE02
A, R0, R1, B = "198.18.60.2", "198.18.60.1", "198.18.61.1", "198.18.61.2"
NOWHERE = "198.18.62.1"  # r has no route there
WRONG_MAC = "02:00:5e:10:00:99"

# a:eth0 ── r:r0 | r:r1 ── b:eth0; r forwards but drops everything for b in its forward chain.
NFT = """
table inet trc_dr {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip daddr 198.18.61.2 counter drop
  }
}
"""

TOPO = Topology("dr", {
    "a": Node("a", "host", {}, netns=NS["a"]),
    "r": Node("r", "router", {}, netns=NS["r"]),
    "b": Node("b", "host", {}, netns=NS["b"]),
    "far": Node("far", "host", {}, ssh="root@203.0.113.9"),
})

# Echo seqs, one per way of dying (and one delivered).
FORWARD_RULE, NO_ROUTE, OTHERHOST, DELIVERED = 1, 2, 3, 4


@pytest.fixture(scope="module")
def network() -> Iterator[None]:
    with own_namespaces(NS.values(), "needs root (network namespaces, BPF)"):
        # Every veth is created inside our namespaces (never in the root namespace).
        netns.ip_batch([f"link add eth0 type veth peer name r0 netns {NS['r']}", f"addr add {A}/24 dev eth0",
                        "link set eth0 up", "link set lo up", f"route add default via {R0} dev eth0"], ns=NS["a"])
        netns.ip_batch([f"link add r1 type veth peer name eth0 netns {NS['b']}", f"addr add {R0}/24 dev r0",
                        f"addr add {R1}/24 dev r1", "link set r0 up", "link set r1 up", "link set lo up"], ns=NS["r"])
        netns.ip_batch([f"addr add {B}/24 dev eth0", "link set eth0 up", "link set lo up",
                        f"route add default via {R1} dev eth0"], ns=NS["b"])
        netns.write_sysctls(NS["r"], {"net.ipv4.ip_forward": "1"})
        netns.ns_run(NS["r"], ["nft", "-f", "-"], input=NFT)
        yield
    assert not any(netns.exists(ns) for ns in NS.values())


def _echo(dst: str, payload_tag: ProbeTag | None, seq: int = 0) -> None:
    """One ICMP echo request from a: tagged like tracer's probes, or with a plain payload."""
    with netns.netns_socket(NS["a"], socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        if payload_tag is not None:
            data = echo_request(payload_tag, 64)
        else:
            data = bytes([8, 0, 0, 0, 0x12, 0x34]) + struct.pack(">H", seq) + b"not a probe, just a ping".ljust(56, b".")
            csum = _inet_checksum(data)
            data = data[:2] + struct.pack(">H", csum) + data[4:]
        s.sendto(data, (dst, 0))


def _inet_checksum(data: bytes) -> int:
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _esp(spi: int, seq: int, udp: bool) -> None:
    """An ESP packet from a to b (raw IP protocol 50, or in UDP to port 4500): SPI, sequence, junk."""
    body = struct.pack(">II", spi, seq) + bytes(range(48))
    if udp:
        with netns.netns_socket(NS["a"], socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(body, (B, 4500))
    else:
        with netns.netns_socket(NS["a"], socket.AF_INET, socket.SOCK_RAW, 50) as s:
            s.sendto(body, (B, 0))


@dataclass
class Recorded:
    session: Session
    drops: list[Drop]
    pid: int


@pytest.fixture(scope="module", params=["spis-given", "spis-learned"])
def recorded(network: None, request: pytest.FixtureRequest) -> Recorded:
    """One session over every scenario: start, send, stop. With the SPIs given at start (the
    kernel matches them), or learned after start as a trace does (the kernel matches every SPI,
    the session keeps the tunnels')."""
    learned = request.param == "spis-learned"
    session = attach(ProbeMatch(RUN, None if learned else frozenset({SPI})), TOPO, ["a", "r", "b", "far"])
    assert session.unavailable is None, session.status
    if learned:
        session.learn(frozenset({SPI}))
    pid = session.pid
    assert pid is not None
    try:
        _echo(B, ProbeTag(RUN, ProbeKind.PING, FORWARD_RULE))  # r: nft forward rule
        _echo(B, None, seq=FORWARD_RULE)  # untagged, same rule
        _echo(B, ProbeTag(OTHER_RUN, ProbeKind.PING, FORWARD_RULE))  # another run's probe, same rule
        _echo(NOWHERE, ProbeTag(RUN, ProbeKind.PING, NO_ROUTE))  # r: no route
        _echo(R0, ProbeTag(RUN, ProbeKind.PING, DELIVERED))  # answered by r: nothing dropped
        _esp(SPI, 7, udp=False)
        _esp(SPI, 8, udp=True)
        _esp(OTHER_SPI, 9, udp=False)  # not one of our tunnels
        # Last: a's static neighbour entry for its gateway with a wrong MAC; r discards the frame.
        netns.ip(["neigh", "replace", R0, "lladdr", WRONG_MAC, "dev", "eth0", "nud", "permanent"], ns=NS["a"])
        _echo(B, ProbeTag(RUN, ProbeKind.PING, OTHERHOST))
        time.sleep(0.3)  # the replies come back and the last drops reach bpftrace's buffer
    finally:
        drops = session.stop()
        netns.ip(["neigh", "del", R0, "dev", "eth0"], ns=NS["a"], check=False)
    print(f"\nbpftrace start-up (compile and attach): {session.startup_s:.2f} s")
    for d in drops:
        print(f"  {d}")
    return Recorded(session, drops, pid)


def _probe_drops(rec: Recorded, seq: int) -> list[Drop]:
    return [d for d in rec.drops if d.run == RUN and d.seq == seq]


def test_forward_rule_drop_is_netfilter_drop_at_the_router(recorded: Recorded) -> None:
    [d] = _probe_drops(recorded, FORWARD_RULE)
    assert (d.reason, d.node, d.device) == ("NETFILTER_DROP", "r", "r0")
    assert d.netns_inode == os.stat(f"/run/netns/{NS['r']}").st_ino
    assert (d.src, d.dst, d.protocol, d.icmp_type, d.kind) == (IPv4Address(A), IPv4Address(B), 1, 8, ProbeKind.PING)
    assert d.function == "nft_do_chain"
    assert abs(d.time_ns - time.time_ns()) < 60e9  # wall clock, like the captures


def test_missing_route_is_a_no_route_drop_at_the_router(recorded: Recorded) -> None:
    [d] = _probe_drops(recorded, NO_ROUTE)
    assert "NOROUTE" in d.reason and d.reason.startswith("IP_")
    assert (d.node, d.device, d.dst) == ("r", "r0", IPv4Address(NOWHERE))


def test_wrong_mac_is_otherhost_at_the_receiver(recorded: Recorded) -> None:
    [d] = _probe_drops(recorded, OTHERHOST)
    assert (d.reason, d.node, d.device) == ("OTHERHOST", "r", "r0")


def test_esp_of_our_tunnels_by_spi_and_sequence(recorded: Recorded) -> None:
    esp = sorted((d.protocol, d.spi, d.esp_seq, d.reason, d.node, d.device) for d in recorded.drops if d.spi is not None)
    assert esp == [(17, SPI, 8, "NETFILTER_DROP", "r", "r0"), (50, SPI, 7, "NETFILTER_DROP", "r", "r0")]


def test_only_our_probes_are_reported(recorded: Recorded) -> None:
    # The untagged ping, the other run's probe and the other SPI died by the same rule, unreported;
    # the delivered probe's reply (freed by ping_rcv after the raw socket took its copy) is no loss.
    assert sorted((d.seq or 0, d.esp_seq or 0) for d in recorded.drops) == [
        (0, 7), (0, 8), (FORWARD_RULE, 0), (NO_ROUTE, 0), (OTHERHOST, 0)]
    assert recorded.session.problems == []
    # The delivered probe's reply was freed after delivery: kept aside, not reported as a drop.
    # (The raw socket got its copy; ping_rcv frees the original, the socket's close purges its queue.)
    assert {(d.seq, d.icmp_type, d.node, d.reason) for d in recorded.session.delivered} <= {
        (DELIVERED, 0, "a", "NO_SOCKET"), (DELIVERED, 0, "a", "QUEUE_PURGE")}
    assert recorded.session.delivered


def test_stop_leaves_no_bpftrace(recorded: Recorded) -> None:
    assert recorded.session.pid is None
    assert not Path(f"/proc/{recorded.pid}").exists()  # exited and reaped
    assert recorded.session.stop() == recorded.drops  # stopping twice is harmless


def test_startup_cost_is_measured(recorded: Recorded) -> None:
    assert recorded.session.startup_s is not None and 0 < recorded.session.startup_s < 20


def test_remote_nodes_are_unavailable_and_the_rest_mapped(network: None) -> None:
    inodes, unseen = node_inodes(TOPO)
    assert sorted(inodes.values()) == ["a", "b", "r"]
    assert inodes[os.stat(f"/run/netns/{NS['a']}").st_ino] == "a"
    assert unseen == {"far": "captured over SSH: kernel drop reasons are read on this host only"}


def test_script_exits_by_itself_after_max_s(network: None) -> None:
    session = attach(ProbeMatch(RUN), TOPO, ["a"], max_s=1)
    assert session.unavailable is None, session.status
    pid = session.pid
    assert pid is not None
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text() \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session.stop() == []
    assert session.problems and session.problems[0].startswith("bpftrace exited early (status 0)")
    assert not Path(f"/proc/{pid}").exists()


def test_a_trace_that_does_not_wait_is_told_what_was_missed(network: None) -> None:
    """--drop-reasons-wait shorter than the compile: the trace goes on; a drop before the attach
    is not seen and the session says when it attached; stopped before the attach, it says so."""
    session = attach(ProbeMatch(RUN), TOPO, ["a", "r", "b"], wait=False)
    assert session.wait_ready(time.monotonic(), give_up=False) is False  # compiling: not given up
    assert session.unavailable is None and session.pid is not None
    early = ProbeTag(RUN, ProbeKind.PING, 900)
    _echo(NOWHERE, early)  # dropped at r (no route) while bpftrace compiles
    deadline = time.monotonic() + 20
    while not session._reader.attached and time.monotonic() < deadline:
        time.sleep(0.05)
    late = ProbeTag(RUN, ProbeKind.PING, 901)
    _echo(NOWHERE, late)
    time.sleep(0.3)
    drops = session.stop()
    assert [d.seq for d in drops] == [901]  # the early one was not seen, and that is said:
    assert session.startup_s is not None and session.startup_s > 0
    assert any("after the probes began" in p and "drops of probes sent before then are not seen" in p
               for p in session.problems), session.problems

    never = attach(ProbeMatch(RUN), TOPO, ["a"], wait=False)
    pid = never.pid
    assert never.wait_ready(time.monotonic(), give_up=False) is False
    t = time.monotonic()
    assert never.stop() == []
    assert time.monotonic() - t < 2.0  # killed while compiling, not waited for
    assert never.unavailable is not None and "not attached before the trace ended" in never.unavailable
    assert not Path(f"/proc/{pid}").exists()


# -- unavailable: the trace goes on ---------------------------------------------------------


def test_no_bpftrace_is_unavailable_not_an_error(tmp_path: Path) -> None:
    session = attach(ProbeMatch(RUN), bpftrace=str(tmp_path / "bpftrace"))
    assert session.status == f"unavailable: '{tmp_path / 'bpftrace'}' not found: install it (Debian: apt-get install bpftrace)"
    assert session.pid is None and session.stop() == []


def test_a_bpftrace_that_fails_is_unavailable(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (the check for root comes first)")
    fake = tmp_path / "bpftrace"
    fake.write_text("#!/bin/sh\necho 'ERROR: no BPF for you' >&2\nexit 1\n")
    fake.chmod(0o755)
    session = attach(ProbeMatch(RUN), bpftrace=str(fake))
    assert session.status == "unavailable: bpftrace: ERROR: no BPF for you"
    assert session.pid is None and session.stop() == []


# -- pure parts ---------------------------------------------------------------------------

FORMAT = """name: kfree_skb
ID: 2310
format:
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, \
{ 12, "NETFILTER_DROP" }, { 13, "OTHERHOST" }, { 88, "IP_INNOROUTES" }, { 128, "MAX" })
"""


def test_reason_names_come_from_the_print_fmt() -> None:
    assert reason_names(FORMAT) == {2: "NOT_SPECIFIED", 12: "NETFILTER_DROP", 13: "OTHERHOST", 88: "IP_INNOROUTES",
                                    128: "MAX"}


def test_reason_names_of_this_kernel() -> None:
    if os.geteuid() != 0:
        pytest.skip("tracefs is readable by root only")
    fmt, why = tracepoint_format()
    assert fmt is not None, why
    names = reason_names(fmt)
    assert {"NETFILTER_DROP", "OTHERHOST", "IP_RPFILTER", "NEIGH_FAILED", "PKT_TOO_BIG"} <= set(names.values())


def _words(data: bytes) -> list[str]:
    return [str(int.from_bytes(data[i:i + 4], "little")) for i in range(0, 16, 4)]


def test_parse_line_of_a_tagged_echo_and_of_esp() -> None:
    tag = ProbeTag(RUN, ProbeKind.MTU, 77).encode()
    addr = [str(int.from_bytes(IPv4Address(a).packed, "little")) for a in (A, B)]
    line = " ".join(["DR1", "1000", "13", "4026532000", "r0", "ip_rcv_core", "1", *addr, *_words(tag), "8"])
    d = parse_line(line, {13: "OTHERHOST"}, {4026532000: "r"}, RUN, clock=5)
    assert d == Drop("OTHERHOST", 13, "ip_rcv_core", "r0", 4026532000, "r", IPv4Address(A), IPv4Address(B), 1, 1005,
                     run=RUN, seq=77, kind=ProbeKind.MTU, icmp_type=8)
    assert Drop.from_dict(d.to_dict()) == d
    assert str(d) == f"r:r0 OTHERHOST in ip_rcv_core: probe {RUN:08x}/77 {A} → {B}"
    # A tag whose check word is wrong (the kernel matched magic and run only), another run: no drop.
    broken = tag[:15] + bytes([tag[15] ^ 1])
    assert parse_line(line.replace(" ".join(_words(tag)), " ".join(_words(broken))), {}, {}, RUN, 0) is None
    assert parse_line(line, {}, {}, OTHER_RUN, 0) is None
    esp = struct.pack(">II", SPI, 9) + bytes(8)
    line = " ".join(["DR1", "1", "99", "0", "-", "xfrm_input", "50", *addr, *_words(esp), "0"])
    d = parse_line(line, {}, {}, RUN, 0)
    assert d is not None and (d.reason, d.device, d.netns_inode, d.node, d.spi, d.esp_seq, d.run) == (
        "REASON_99", None, None, None, SPI, 9, None)
    assert parse_line("Attaching 2 probes...", {}, {}, RUN, 0) is None


def test_script_matches_magic_run_and_spis_in_the_kernel() -> None:
    text = script(ProbeMatch(RUN, frozenset({SPI}), (4500, 4501)), max_s=60)
    le = {"magic": int.from_bytes(b"TRC1", "little"), "run": int.from_bytes(RUN.to_bytes(4, "big"), "little"),
          "spi": int.from_bytes(SPI.to_bytes(4, "big"), "little")}
    assert all(str(v) in text for v in le.values())
    assert f"$dport == {socket.htons(4501)}" in text and "interval:s:60 { exit(); }" in text
    assert "$spi" not in script(ProbeMatch(RUN))  # no SPIs: no ESP matching at all
    assert "$spi != 0" in script(ProbeMatch(RUN, None))  # not known yet: every SPI, kept by learn()


def _fake_bpftrace(tmp_path: Path, lines: list[str], stderr: list[str]) -> str:
    """A stand-in for bpftrace that prints ``lines`` (and ``stderr``), says it attached, then
    waits to be stopped: what the session makes of bpftrace's output, without a kernel. The
    lines come before the marker: a stop right after attaching would otherwise race them."""
    fake = tmp_path / "bpftrace"
    out = "".join(f"echo '{line}'\n" for line in lines)
    err = "".join(f"echo '{line}' >&2\n" for line in stderr)
    fake.write_text(f"#!/bin/sh\n{out}{err}echo {_READY_ENV} >&2\nexec sleep 30\n")
    fake.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize("learned", [True, False])
def test_esp_drops_are_left_out_with_a_note_when_the_spis_were_never_learned(tmp_path: Path, learned: bool) -> None:
    """A trace that fails before it learns its tunnels' SPIs (evidence before raised, Ctrl-C):
    the kernel side matched every SPI, so an ESP drop may be another tunnel's."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the check for root comes first)")
    addr = [str(int.from_bytes(IPv4Address(a).packed, "little")) for a in (A, B)]
    tag = ProbeTag(RUN, ProbeKind.PING, 5).encode()
    echo = " ".join(["DR1", "1000", "2", "0", "r0", "ip_rcv_core", "1", *addr, *_words(tag), "8"])
    esp = " ".join(["DR1", "2000", "2", "0", "-", "xfrm_input", "50", *addr,
                    *_words(struct.pack(">II", OTHER_SPI, 9) + bytes(8)), "0"])
    session = attach(ProbeMatch(RUN, None), bpftrace=_fake_bpftrace(tmp_path, [echo, esp], []))
    assert session.unavailable is None, session.status
    if learned:
        session.learn(frozenset({OTHER_SPI}))
    drops = session.stop()
    assert [d.seq for d in drops if d.run == RUN] == [5]
    assert [d.spi for d in drops if d.spi is not None] == ([OTHER_SPI] if learned else [])
    unattributed = [p for p in session.problems if "ESP drops could not be attributed" in p]
    assert unattributed == ([] if learned else
                            ["1 ESP drops could not be attributed: this trace never learned its tunnels' SPIs, "
                             "so they were left out"])


def test_lost_events_are_in_the_evidence(tmp_path: Path) -> None:
    """bpftrace's "Lost N events" (its perf buffer overflowed): the snapshot's notes say drops may be missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the check for root comes first)")
    topo = Topology("lost", {"here": Node("here", "host", {})})  # this namespace
    session = attach(ProbeMatch(RUN), topo, bpftrace=_fake_bpftrace(tmp_path, ["Lost 3 events"], ["Lost 4 events"]))
    assert session.unavailable is None, session.status
    [snap] = dropreasons.stop(topo, session)
    assert snap.node == "here" and snap.unavailable is None
    assert snap.notes == ("bpftrace lost 7 events (its buffer overflowed): drops may be missing",)
