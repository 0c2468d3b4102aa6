"""Tagged IKEv2 IKE_SA_INIT probes: "is the responder there, and what does it say?"

The modern form of FreeS/WAN's "stuck at STATE_MAIN_I1: open port 500" test.
scapy builds an IKE_SA_INIT request whose initiator SPI is the probe tag
(:meth:`ProbeTag.ike_spi`); every responder copies that SPI into its answer,
so requests and answers are recognisable at every capture point. A UDP socket
created in the initiating gateway's namespace, bound to its address and an
ephemeral port (charon already owns 500 and 4500 there; responders answer the
request's source port), sends it to the responder's port 500, or 4500 behind
the 4-byte non-ESP marker (RFC 3948).

The exchange is never completed: no IKE_AUTH follows, so the responder only
keeps a half-open IKE_SA until its half-open timeout (strongSwan: 30 s) and
existing IKE and CHILD SAs are untouched. The KE payload is random bytes of
the right length: nobody ever needs the shared secret.

This module is pure: message building (:func:`sa_init_request`) and answer
parsing (:func:`parse_answer`, by hand, so it also reads what scapy would not).
Sending is :mod:`tracer.send.ike`.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from scapy.contrib.ikev2 import (
    IKEv2,
    IKEv2_KE,
    IKEv2_Nonce,
    IKEv2_Notify,
    IKEv2_Proposal,
    IKEv2_SA,
    IKEv2_Transform,
    IKEv2NotifyMessageTypes,
)

from tracer.model.tag import ProbeTag

IKE_PORT = 500
NATT_PORT = 4500
NON_ESP_MARKER = bytes(4)  # before IKE on port 4500, so it is not taken for ESP (RFC 3948)
HEADER_LEN = 28

IKE_SA_INIT = 34
FLAG_INITIATOR = 0x08
FLAG_RESPONSE = 0x20

EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL", 43: "IKE_INTERMEDIATE"}

# Payload type → short name, as Wireshark and charon's log write them.
PAYLOADS = {
    33: "SA", 34: "KE", 35: "IDi", 36: "IDr", 37: "CERT", 38: "CERTREQ", 39: "AUTH", 40: "Nonce", 41: "N",
    42: "D", 43: "V", 44: "TSi", 45: "TSr", 46: "SK", 47: "CP", 48: "EAP", 53: "SKF",
}
PAYLOAD_SA, PAYLOAD_KE, PAYLOAD_NOTIFY = 33, 34, 41

# Notify message types (IANA "IKEv2 Notify Message Types"): errors below 16384, status above.
# scapy's table is the complete one; its newest entries carry an "IV2_NOTIFY_" prefix.
NOTIFY_NAMES = {k: v.removeprefix("IV2_NOTIFY_") for k, v in IKEv2NotifyMessageTypes.items()}
N_INVALID_KE_PAYLOAD = 17
N_NAT_SOURCE, N_NAT_DESTINATION, N_COOKIE = 16388, 16389, 16390

# Transform types and the IDs we offer (RFC 7296 3.3.2, IANA "IKEv2 Parameters").
ENCR, PRF, INTEG, DH = 1, 2, 3, 4
KEY_LENGTH_ATTR = 14
ENCR_AES_CBC, ENCR_AES_GCM_16 = 12, 20
PRF_SHA2_256, PRF_SHA2_384 = 5, 6
AUTH_SHA2_256_128, AUTH_SHA2_384_192 = 12, 13
GROUP_CURVE25519, GROUP_ECP256, GROUP_MODP2048 = 31, 19, 14

TRANSFORM_NAMES = {
    ENCR: {3: "3DES", 12: "AES_CBC", 13: "AES_CTR", 18: "AES_GCM_8", 19: "AES_GCM_12", 20: "AES_GCM_16",
           28: "CHACHA20_POLY1305"},
    PRF: {2: "PRF_HMAC_SHA1", 4: "PRF_AES128_XCBC", 5: "PRF_HMAC_SHA2_256", 6: "PRF_HMAC_SHA2_384",
          7: "PRF_HMAC_SHA2_512"},
    INTEG: {2: "HMAC_SHA1_96", 5: "AES_XCBC_96", 12: "HMAC_SHA2_256_128", 13: "HMAC_SHA2_384_192",
            14: "HMAC_SHA2_512_256"},
    DH: {2: "MODP_1024", 5: "MODP_1536", 14: "MODP_2048", 15: "MODP_3072", 16: "MODP_4096", 19: "ECP_256",
         20: "ECP_384", 21: "ECP_521", 31: "CURVE_25519", 32: "CURVE_448"},
}

# What we offer: broad enough that any sanely configured modern responder finds a
# match, so a NO_PROPOSAL_CHOSEN really says "its configuration is unusual". AEAD
# and integrity transforms may not share a proposal (RFC 5282), hence two.
GROUPS = (GROUP_CURVE25519, GROUP_ECP256, GROUP_MODP2048)
PROPOSALS: tuple[tuple[tuple[int, int, int | None], ...], ...] = (
    (
        (ENCR, ENCR_AES_GCM_16, 128), (ENCR, ENCR_AES_GCM_16, 256),
        (PRF, PRF_SHA2_256, None), (PRF, PRF_SHA2_384, None),
        *((DH, g, None) for g in GROUPS),
    ),
    (
        (ENCR, ENCR_AES_CBC, 128), (ENCR, ENCR_AES_CBC, 256),
        (PRF, PRF_SHA2_256, None), (PRF, PRF_SHA2_384, None),
        (INTEG, AUTH_SHA2_256_128, None), (INTEG, AUTH_SHA2_384_192, None),
        *((DH, g, None) for g in GROUPS),
    ),
)
KE_GROUP = GROUP_CURVE25519  # the KE payload's group: the first one offered, as initiators do
KE_LEN = 32  # an X25519 public value
NONCE_LEN = 32


# -- building ------------------------------------------------------------------------------------


def nat_hash(spi_i: bytes, spi_r: bytes, addr: IPv4Address, port: int) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | port) (RFC 7296 2.23)."""
    return hashlib.sha1(spi_i + spi_r + addr.packed + struct.pack(">H", port)).digest()


def _proposal(number: int, transforms: tuple[tuple[int, int, int | None], ...]) -> IKEv2_Proposal:
    chain = None
    for ttype, tid, keylen in transforms:
        t = (IKEv2_Transform(transform_type=ttype, transform_id=tid, length=12, key_length=keylen) if keylen
             else IKEv2_Transform(transform_type=ttype, transform_id=tid, length=8))
        chain = t if chain is None else chain / t
    return IKEv2_Proposal(proposal=number, proto=1, trans_nb=len(transforms), trans=chain)


def sa_init_request(
    tag: ProbeTag,
    src: IPv4Address,
    sport: int,
    dst: IPv4Address,
    dport: int,
    nonce: bytes | None = None,
    ke: bytes | None = None,
) -> bytes:
    """The IKE_SA_INIT request for ``tag`` (the IKE message only; no non-ESP marker).

    ``src:sport → dst:dport`` are what the NAT-detection hashes cover: with
    them the responder can tell us whether it sees our packets NATed.
    """
    spi_i, spi_r = tag.ike_spi(), bytes(8)
    sa = None
    for number, transforms in enumerate(PROPOSALS, 1):
        p = _proposal(number, transforms)
        sa = p if sa is None else sa / p
    msg = (
        IKEv2(init_SPI=spi_i, resp_SPI=spi_r, exch_type=IKE_SA_INIT, flags="Initiator", id=0)
        / IKEv2_SA(prop=sa)
        / IKEv2_KE(group=KE_GROUP, ke=ke if ke is not None else os.urandom(KE_LEN))
        / IKEv2_Nonce(nonce=nonce if nonce is not None else os.urandom(NONCE_LEN))
        / IKEv2_Notify(proto=0, type=N_NAT_SOURCE, notify=nat_hash(spi_i, spi_r, src, sport))
        / IKEv2_Notify(proto=0, type=N_NAT_DESTINATION, notify=nat_hash(spi_i, spi_r, dst, dport))
    )
    return bytes(msg)


# -- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notify:
    type: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return NOTIFY_NAMES.get(self.type, f"type {self.type}")

    @property
    def is_error(self) -> bool:
        return self.type < 16384


@dataclass(frozen=True)
class IkeAnswer:
    """What a responder said, parsed from one IKE message."""

    spi_i: bytes
    spi_r: bytes
    version: int  # major.minor byte, 0x20 for IKEv2
    exch_type: int
    flags: int
    msg_id: int
    payloads: tuple[int, ...]  # payload types in chain order
    notifies: tuple[Notify, ...] = ()
    chosen: tuple[str, ...] = ()  # the transforms of the SA payload's (first) proposal
    ke_group: int | None = None
    truncated: bool = False  # the chain ran past the end of the data

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def errors(self) -> tuple[Notify, ...]:
        return tuple(n for n in self.notifies if n.is_error)

    def notify(self, ntype: int) -> Notify | None:
        return next((n for n in self.notifies if n.type == ntype), None)


def parse_answer(data: bytes) -> IkeAnswer:
    """Parse an IKE message (no non-ESP marker). ValueError if it is not one."""
    if len(data) < HEADER_LEN:
        raise ValueError(f"{len(data)} bytes: shorter than an IKE header")
    spi_i, spi_r = data[:8], data[8:16]
    nxt, version, exch, flags, msg_id, length = struct.unpack(">BBBBII", data[16:28])
    if length < HEADER_LEN:
        raise ValueError(f"IKE length {length} is shorter than the header")
    end = min(length, len(data))
    payloads: list[int] = []
    notifies: list[Notify] = []
    chosen: tuple[str, ...] = ()
    ke_group = None
    truncated = length > len(data)
    off = HEADER_LEN
    # SK (46) and SKF (53) encrypt everything behind them: the chain ends there for us.
    while nxt and version >= 0x20:
        if off + 4 > end:
            truncated = True
            break
        this = nxt
        nxt, _crit, plen = struct.unpack(">BBH", data[off : off + 4])
        if plen < 4 or off + plen > end:
            truncated = True
            break
        body = data[off + 4 : off + plen]
        payloads.append(this)
        if this == PAYLOAD_NOTIFY and len(body) >= 4:
            spi_size = body[1]
            ntype = struct.unpack(">H", body[2:4])[0]
            notifies.append(Notify(ntype, bytes(body[4 + spi_size :])))
        elif this == PAYLOAD_SA and not chosen:
            chosen = _first_proposal(body)
        elif this == PAYLOAD_KE and len(body) >= 2:
            ke_group = struct.unpack(">H", body[:2])[0]
        off += plen
        if this in (46, 53):
            break
    return IkeAnswer(spi_i, spi_r, version, exch, flags, msg_id, tuple(payloads), tuple(notifies), chosen, ke_group,
                     truncated)


def _first_proposal(body: bytes) -> tuple[str, ...]:
    """Transform names of the first proposal in an SA payload body (a response has one)."""
    if len(body) < 8:
        return ()
    plen, spi_size, ntrans = struct.unpack(">H", body[2:4])[0], body[6], body[7]
    off, end = 8 + spi_size, min(plen, len(body))
    out = []
    for _ in range(ntrans):
        if off + 8 > end:
            break
        tlen = struct.unpack(">H", body[off + 2 : off + 4])[0]
        ttype, tid = body[off + 4], struct.unpack(">H", body[off + 6 : off + 8])[0]
        name = TRANSFORM_NAMES.get(ttype, {}).get(tid, f"type{ttype}/{tid}")
        attrs = body[off + 8 : off + max(tlen, 8)]
        if len(attrs) >= 4 and struct.unpack(">H", attrs[:2])[0] == 0x8000 | KEY_LENGTH_ATTR:
            name += f"_{struct.unpack('>H', attrs[2:4])[0]}"
        out.append(name)
        off += max(tlen, 8)
    return tuple(out)


def summarize(a: IkeAnswer) -> str:
    """One short line: what the responder said.

    "IKE_SA_INIT response (SA, KE, Nonce, N(…); chose AES_CBC_128/…)",
    "notify NO_PROPOSAL_CHOSEN", "notify INVALID_KE_PAYLOAD (wants group 19)".
    The responder SPI is left out (it differs per probe) so equal answers
    read equal; it is kept beside the answer in the manifest.
    """
    if a.version < 0x20:
        return f"IKEv{a.version >> 4} message (exchange {a.exch_type}): the responder speaks only IKEv1?"
    exch = EXCHANGES.get(a.exch_type, f"exchange {a.exch_type}")
    errors = a.errors
    if errors or (a.notifies and a.payloads == (PAYLOAD_NOTIFY,) * len(a.payloads)):
        # A bare notify: an error, or COOKIE ("ask again with this cookie"). Name them all.
        shown = errors or a.notifies
        return "notify " + ", ".join(_notify_text(n) for n in shown)
    if a.exch_type == IKE_SA_INIT and a.is_response:
        names = [PAYLOADS.get(p, str(p)) for p in a.payloads if p != PAYLOAD_NOTIFY]
        names += [f"N({n.name})" for n in a.notifies]
        chose = f"; chose {'/'.join(a.chosen)}" if a.chosen else ""
        return f"IKE_SA_INIT response ({', '.join(names)}{chose})"
    kind = "response" if a.is_response else "request"
    return f"{exch} {kind} ({', '.join(PAYLOADS.get(p, str(p)) for p in a.payloads)})"


def _notify_text(n: Notify) -> str:
    if n.type == N_INVALID_KE_PAYLOAD and len(n.data) >= 2:
        return f"{n.name} (wants group {struct.unpack('>H', n.data[:2])[0]})"
    return n.name


def nat_seen(a: IkeAnswer, src: IPv4Address, sport: int, dst: IPv4Address, dport: int) -> tuple[bool | None, bool | None]:
    """(responder saw us NATed, responder is NATed), from its NAT-detection hashes (RFC 7296 2.23).

    Its NAT_DETECTION_DESTINATION_IP hashes the address and port it saw us at,
    its NAT_DETECTION_SOURCE_IP the ones it sent from; None where it sent none.
    A responder may also fake the second to force UDP encapsulation
    (strongSwan ``encap = yes``).
    """
    d, s = a.notify(N_NAT_DESTINATION), a.notify(N_NAT_SOURCE)
    us = None if d is None else d.data != nat_hash(a.spi_i, a.spi_r, src, sport)
    them = None if s is None else s.data != nat_hash(a.spi_i, a.spi_r, dst, dport)
    return us, them


def nat_note(us: bool | None, them: bool | None) -> str:
    notes = []
    if us:
        notes.append("it sees us behind NAT")
    if them:
        notes.append("it signals NAT on its side (or forces UDP encapsulation)")
    return "".join(f"; {n}" for n in notes)
