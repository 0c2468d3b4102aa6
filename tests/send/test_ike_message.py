"""IKE_SA_INIT probes as bytes: building, re-parsing, and reading what responders answer (no I/O)."""

from __future__ import annotations

import json
import struct
import tomllib
from argparse import Namespace
from ipaddress import IPv4Address
from pathlib import Path

import numpy as np
import pytest
from scapy.contrib.ikev2 import IKEv2, IKEv2_KE, IKEv2_Nonce, IKEv2_Notify, IKEv2_Proposal, IKEv2_SA, IKEv2_Transform
from scapy.layers.inet import IP, UDP

from tracer.analysis.analyze import _answers
from tracer.analysis.extract import PAD, extract
from tracer.model.observations import PacketClass
from tracer.model.probe import ProbeSpec
from tracer.model.tag import ProbeKind, ProbeTag, decode_ike_spi
from tracer.model.topology import Topology
from tracer.send import ike_message as ike
from tracer.send.ike_message import nat_hash, nat_note, nat_seen, parse_answer, sa_init_request, summarize

SRC, DST = IPv4Address("198.18.1.1"), IPv4Address("198.18.2.1")
SPORT = 40123
TAG = ProbeTag(0x8BADF00D, ProbeKind.IKE, 7)
ROOT = Path(__file__).resolve().parents[2]


def request(port: int = 500, tag: ProbeTag = TAG) -> bytes:
    return sa_init_request(tag, SRC, SPORT, DST, port, nonce=bytes(range(32)), ke=b"\x09" * 32)


def response(*payloads, spi_r: bytes = b"\x5e" * 8, spi_i: bytes | None = None, exch: int = 34) -> bytes:
    """A responder's answer to ``request()``, built with scapy."""
    msg = IKEv2(init_SPI=spi_i or TAG.ike_spi(), resp_SPI=spi_r, exch_type=exch, flags="Response", id=0)
    for p in payloads:
        msg = msg / p
    return bytes(msg)


def chosen_sa() -> IKEv2_SA:
    t = (IKEv2_Transform(transform_type=1, transform_id=12, length=12, key_length=128)
         / IKEv2_Transform(transform_type=3, transform_id=12)
         / IKEv2_Transform(transform_type=2, transform_id=5)
         / IKEv2_Transform(transform_type=4, transform_id=31))
    return IKEv2_SA(prop=IKEv2_Proposal(proposal=2, proto=1, trans_nb=4, trans=t))


# -- the request ---------------------------------------------------------------------------------


def test_tag_round_trips_through_the_initiator_spi():
    a = parse_answer(request())
    assert decode_ike_spi(a.spi_i) == TAG
    assert a.spi_r == bytes(8)
    assert (a.version, a.exch_type, a.flags, a.msg_id) == (0x20, 34, ike.FLAG_INITIATOR, 0)
    assert not a.is_response


def test_every_seq_has_its_own_spi():
    spis = {parse_answer(request(tag=ProbeTag(TAG.run, ProbeKind.IKE, s))).spi_i for s in range(100)}
    assert len(spis) == 100


def test_scapy_reparses_the_request():
    msg = IKEv2(request())
    assert msg.init_SPI == TAG.ike_spi() and msg.exch_type == 34 and msg.flags == 0x08
    assert msg.length == len(request())
    sa = msg[IKEv2_SA]
    props = [sa.prop, sa.prop.payload]
    assert [p.proposal for p in props] == [1, 2]
    for p, offered in zip(props, ike.PROPOSALS, strict=True):
        assert p.trans_nb == len(offered)
        got, t = [], p.trans
        while isinstance(t, IKEv2_Transform):
            got.append((t.transform_type, t.transform_id, t.key_length if t.length > 8 else None))
            t = t.payload
        assert tuple(got) == offered
    # AEAD and integrity never share a proposal (RFC 5282).
    assert {t[0] for t in ike.PROPOSALS[0]} == {ike.ENCR, ike.PRF, ike.DH}
    ke = msg[IKEv2_KE]
    assert ke.group == 31 and ke.ke == b"\x09" * 32
    assert msg[IKEv2_Nonce].nonce == bytes(range(32))
    n1 = msg[IKEv2_Notify]
    n2 = n1.payload
    assert (n1.type, n1.notify) == (16388, nat_hash(TAG.ike_spi(), bytes(8), SRC, SPORT))
    assert (n2.type, n2.notify) == (16389, nat_hash(TAG.ike_spi(), bytes(8), DST, 500))


def test_hand_parser_walks_the_same_chain_as_scapy():
    a = parse_answer(request())
    assert a.payloads == (33, 34, 40, 41, 41)
    assert a.ke_group == 31 and not a.truncated
    assert a.chosen[:2] == ("AES_GCM_16_128", "AES_GCM_16_256")  # the first proposal, as offered
    assert [n.name for n in a.notifies] == ["NAT_DETECTION_SOURCE_IP", "NAT_DETECTION_DESTINATION_IP"]


def test_random_ke_and_nonce_by_default():
    a, b = (sa_init_request(TAG, SRC, SPORT, DST, 500) for _ in range(2))
    assert len(a) == len(b) == len(request()) and a != b
    assert a[:28] == b[:28]  # same header: same tag


def test_nat_detection_hash_is_rfc7296():
    import hashlib

    want = hashlib.sha1(TAG.ike_spi() + bytes(8) + bytes([198, 18, 1, 1]) + struct.pack(">H", 4500)).digest()
    assert nat_hash(TAG.ike_spi(), bytes(8), SRC, 4500) == want


@pytest.mark.parametrize("port", [500, 4500])
def test_analysis_recognises_request_and_response(port):
    """The bytes we send (behind the non-ESP marker on 4500) carry the tag into the observation columns,
    and the response flag tells the analysis the direction."""
    marker = ike.NON_ESP_MARKER if port == 4500 else b""
    req = bytes(IP(src=str(SRC), dst=str(DST)) / UDP(sport=SPORT, dport=port) / (marker + request(port)))
    rsp = bytes(IP(src=str(DST), dst=str(SRC)) / UDP(sport=port, dport=SPORT)
                / (marker + response(chosen_sa(), IKEv2_KE(group=31, ke=bytes(32)))))
    buf = np.frombuffer(req + rsp + bytes(PAD), np.uint8)
    cols = extract(buf, np.array([0, len(req)]), np.array([len(req), len(rsp)], np.uint32), 228)
    assert list(cols["cls"]) == [PacketClass.IKE, PacketClass.IKE]
    assert list(cols["tag_kind"]) == [int(ProbeKind.IKE)] * 2
    assert list(cols["tag_run"]) == [TAG.run] * 2 and list(cols["tag_seq"]) == [TAG.seq] * 2
    assert [int(f) & 0x20 for f in cols["ike_flags"]] == [0, 0x20]


# -- answers -------------------------------------------------------------------------------------


def test_sa_init_response_summary():
    raw = response(
        chosen_sa(),
        IKEv2_KE(group=31, ke=bytes(32)),
        IKEv2_Nonce(nonce=bytes(32)),
        IKEv2_Notify(proto=0, type=16388, notify=bytes(20)),
        IKEv2_Notify(proto=0, type=16389, notify=bytes(20)),
        IKEv2_Notify(proto=0, type=16404),
    )
    a = parse_answer(raw)
    assert a.is_response and a.spi_r == b"\x5e" * 8 and a.ke_group == 31
    assert a.chosen == ("AES_CBC_128", "HMAC_SHA2_256_128", "PRF_HMAC_SHA2_256", "CURVE_25519")
    assert summarize(a) == ("IKE_SA_INIT response (SA, KE, Nonce, N(NAT_DETECTION_SOURCE_IP), "
                            "N(NAT_DETECTION_DESTINATION_IP), N(MULTIPLE_AUTH_SUPPORTED); "
                            "chose AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519)")


@pytest.mark.parametrize(
    ("notify", "text"),
    [
        (IKEv2_Notify(proto=0, type=14), "notify NO_PROPOSAL_CHOSEN"),
        (IKEv2_Notify(proto=0, type=17, notify=struct.pack(">H", 19)), "notify INVALID_KE_PAYLOAD (wants group 19)"),
        (IKEv2_Notify(proto=0, type=16390, notify=bytes(range(20))), "notify COOKIE"),
        (IKEv2_Notify(proto=0, type=7), "notify INVALID_SYNTAX"),
        (IKEv2_Notify(proto=0, type=24), "notify AUTHENTICATION_FAILED"),
        (IKEv2_Notify(proto=0, type=43), "notify TEMPORARY_FAILURE"),
    ],
)
def test_notify_answers(notify, text):
    a = parse_answer(response(notify, spi_r=bytes(8)))
    assert a.is_response and a.payloads == (41,)
    assert summarize(a) == text


def test_invalid_ke_payload_group_is_read_from_the_notify_data():
    a = parse_answer(response(IKEv2_Notify(proto=0, type=17, notify=b"\x00\x0e"), spi_r=bytes(8)))
    assert a.errors[0].data == b"\x00\x0e"
    assert summarize(a).endswith("(wants group 14)")


def test_error_notify_wins_over_other_payloads():
    a = parse_answer(response(IKEv2_Notify(proto=0, type=16390, notify=bytes(8)) / IKEv2_Notify(proto=0, type=14)))
    assert summarize(a) == "notify NO_PROPOSAL_CHOSEN"


def test_unknown_notify_type_is_named_by_number():
    assert summarize(parse_answer(response(IKEv2_Notify(proto=0, type=12345)))) == "notify type 12345"


def test_ikev1_answer_is_named():
    raw = bytearray(response(IKEv2_Notify(proto=0, type=14)))
    raw[17] = 0x10  # version 1.0
    assert summarize(parse_answer(bytes(raw))).startswith("IKEv1 message")


def append_raw(msg: bytes, ptype: int, body: bytes) -> bytes:
    """Append a payload of type ``ptype`` to a message whose last payload is its first (one payload)."""
    raw = bytearray(msg + struct.pack(">BBH", 0, 0, 4 + len(body)) + body)
    raw[28] = ptype  # the first payload's next_payload
    raw[24:28] = struct.pack(">I", len(raw))
    return bytes(raw)


def test_encrypted_payload_ends_the_chain():
    raw = append_raw(response(IKEv2_Notify(proto=0, type=16430), exch=35), 46, b"\x01" * 40)
    a = parse_answer(raw)
    assert a.payloads == (41, 46) and not a.truncated
    assert summarize(a) == "IKE_AUTH response (N, SK)"


@pytest.mark.parametrize("cut", [0, 10, 27])
def test_short_data_is_not_an_ike_message(cut):
    with pytest.raises(ValueError):
        parse_answer(request()[:cut])


def test_truncated_chain_is_flagged_not_fatal():
    a = parse_answer(request()[:100])
    assert a.truncated and a.payloads == ()
    a = parse_answer(request()[:-10])
    assert a.truncated and a.payloads == (33, 34, 40, 41)


def test_bad_payload_length_stops_the_walk():
    raw = bytearray(request())
    raw[28 + 2 : 28 + 4] = b"\x00\x02"  # SA payload length 2 < 4
    a = parse_answer(bytes(raw))
    assert a.truncated and a.payloads == ()


def test_nat_detection_in_answers():
    spi_r = b"\x5e" * 8
    honest = [IKEv2_Notify(proto=0, type=16388, notify=nat_hash(TAG.ike_spi(), spi_r, DST, 500)),
              IKEv2_Notify(proto=0, type=16389, notify=nat_hash(TAG.ike_spi(), spi_r, SRC, SPORT))]
    a = parse_answer(response(chosen_sa(), *honest, spi_r=spi_r))
    assert nat_seen(a, SRC, SPORT, DST, 500) == (False, False)
    assert nat_note(False, False) == ""
    # Seen from another port (a NAT rewrote it); and a responder faking NAT on its side.
    assert nat_seen(a, SRC, SPORT + 1, DST, 500) == (True, False)
    assert nat_seen(a, SRC, SPORT, DST, 4500) == (False, True)
    assert nat_note(True, True) == "; it sees us behind NAT; it signals NAT on its side (or forces UDP encapsulation)"
    assert nat_seen(parse_answer(response(IKEv2_Notify(proto=0, type=16390))), SRC, SPORT, DST, 500) == (None, None)


# -- the verdict line ----------------------------------------------------------------------------


def test_verdict_line_groups_answers():
    spec = ProbeSpec(1, ProbeKind.IKE, count=3, answers={0: "notify COOKIE", 1: "notify COOKIE", 2: "notify COOKIE"})
    assert _answers(spec) == ["responder answered 3/3: notify COOKIE"]
    spec = ProbeSpec(1, ProbeKind.IKE, count=3, answers={0: "IKE_SA_INIT response (SA)", 2: "notify COOKIE"})
    assert _answers(spec) == ["responder answered 2/3: 1× IKE_SA_INIT response (SA); 1× notify COOKIE"]
    assert _answers(ProbeSpec(1, ProbeKind.IKE, count=3, answers={})) == [
        "responder answered 0/3: no IKE answer reached the prober"]
    assert _answers(ProbeSpec(1, ProbeKind.PING, count=3)) == []


# -- which addresses ---------------------------------------------------------------------------------


def test_gateways_default_to_their_tunnel_endpoint_address():
    from tracer.probes.ike import gateway_args, tunnel_address

    doc = tomllib.loads((ROOT / "tests/data/site2site.toml").read_text())
    # west-gw gets a second WAN address that its tunnel (its IKE daemon) uses; the default
    # route still leaves from the first, which is what a plain node name resolves to.
    doc["nodes"]["west-gw"]["interfaces"]["wan0"]["addresses"].append("198.18.1.2/24")
    doc["tunnels"][0]["left"]["address"] = "198.18.1.2"
    topo = Topology.from_dict(doc)
    assert topo.resolve("west-gw")[1] == IPv4Address("198.18.1.1")
    assert tunnel_address(topo, "west-gw", "east-gw") == IPv4Address("198.18.1.2")
    assert tunnel_address(topo, "router") is None
    args = Namespace(src="west-gw", dst="east-gw", source=None)
    gateway_args(topo, args)
    assert (args.src, args.source, args.dst) == ("west-gw", "198.18.1.2", "198.18.2.1")
    # Explicit addresses and --source are the user's word.
    args = Namespace(src="west-gw", dst="198.18.2.1", source="198.18.1.1")
    gateway_args(topo, args)
    assert (args.source, args.dst) == ("198.18.1.1", "198.18.2.1")


# -- what charon really answered (recorded in the lab) --------------------------------------------


def test_recorded_charon_answer_parses_like_the_prober_said():
    from tracer.capture.pcapfile import read_capture

    run = ROOT / "captures/ike-ok"
    manifest = json.loads((run / "manifest.json").read_text())
    cap = read_capture(run / "west-gw_wan0.pcapng")
    cols = extract(cap.buf, cap.data_off, cap.caplen, cap.linktypes())
    rows = np.flatnonzero((cols["cls"] == PacketClass.IKE) & ((cols["ike_flags"] & 0x20) != 0)
                          & (cols["tag_run"] == manifest["run"]))
    assert len(rows) == manifest["count"]
    port = manifest["probe"]["port"]
    for r in rows:
        l3 = int(cols["l3_off"][r])
        ihl = (int(cap.buf[l3]) & 0x0F) * 4
        start = l3 + ihl + 8 + (4 if port == 4500 else 0)
        end = l3 + int(cols["ip_len"][r])
        a = parse_answer(bytes(cap.buf[start:end]))
        sent = manifest["probe"]["sent"][int(cols["tag_seq"][r])]
        assert sent["answer"].startswith(summarize(a))
        assert sent["responder_spi"] == f"0x{a.spi_r.hex()}"
