"""Probe tags: how a probe is recognised at every hop.

ICMP echo tag (16 bytes, first bytes of the echo payload; the echo reply
carries the same payload back, so requests and replies share the tag)::

    0      4        5       6          10        14       16
    +------+--------+-------+----------+---------+--------+
    | TRC1 | kind   | flags | run (BE) | seq (BE)| check  |
    +------+--------+-------+----------+---------+--------+

* ``TRC1``: magic, also the format version.
* ``kind``: 1 ping, 2 ike, 3 mtu (see :class:`ProbeKind`); any other non-zero
  byte is a kind some module registered (tracer.probes).
* ``flags``: reserved, 0.
* ``run``: 32-bit run id, random per run, so runs never mix.
* ``seq``: 32-bit probe sequence number within the run.
* ``check``: 16-bit one's-complement-free sum (mod 2**16) of the seven
  big-endian 16-bit words before it, xor 0x5A5A. Magic plus check make a
  false positive on random payloads about 1 in 2**48.

IKE tag (the 8-byte IKE initiator SPI, because an IKE_SA_INIT has no room
we control that every responder echoes back; the responder copies the
initiator SPI into its answer)::

    0     1      2         6        8
    +-----+------+---------+--------+
    | 0xD7| kind | run(BE) | seq(BE)|
    +-----+------+---------+--------+

The IKE tag carries the low 32 bits of the run and 16 bits of seq; the
magic byte plus kind plus a known run make collisions with random SPIs
negligible within one run.

The tag is independent of the IP version: it lives above IP.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"TRC1"
TAG_LEN = 16
ECHO_OVERHEAD = 28  # IPv4 header + ICMP echo header: echo payload + 28 = the packet an MTU meets
IKE_MAGIC = 0xD7
_CHECK_XOR = 0x5A5A


class ProbeKind(IntEnum):
    PING = 1
    IKE = 2
    MTU = 3
    FLOW = 0xF0  # never on the wire: the synthetic runs of untagged non-echo flows (analysis/identity.py)


@dataclass(frozen=True, slots=True)
class ProbeTag:
    """The tag a tracer probe carries: run id, kind and sequence number."""

    run: int
    kind: int  # a ProbeKind for the built-in kinds
    seq: int

    def encode(self) -> bytes:
        """The 16-byte ICMP payload tag."""
        head = MAGIC + struct.pack(">BBII", int(self.kind), 0, self.run, self.seq)
        return head + struct.pack(">H", tag_check(head))

    def ike_spi(self) -> bytes:
        """The 8-byte IKE initiator SPI that carries this tag."""
        return struct.pack(">BBIH", IKE_MAGIC, int(self.kind), self.run, self.seq & 0xFFFF)


def tag_check(head14: bytes) -> int:
    """Check word over the first 14 bytes of a tag."""
    words = struct.unpack(">7H", head14)
    return (sum(words) & 0xFFFF) ^ _CHECK_XOR


def decode(payload: bytes) -> ProbeTag | None:
    """Parse a tag at the start of ``payload``; None if it is not one of ours."""
    if len(payload) < TAG_LEN or payload[:4] != MAGIC:
        return None
    if struct.unpack(">H", payload[14:16])[0] != tag_check(payload[:14]):
        return None
    kind, _flags, run, seq = struct.unpack(">BBII", payload[4:14])
    return ProbeTag(run, _kind(kind), seq) if kind else None


def decode_ike_spi(spi: bytes) -> ProbeTag | None:
    """Parse an IKE initiator SPI; None if it is not a tracer tag."""
    if len(spi) != 8 or spi[0] != IKE_MAGIC:
        return None
    _m, kind, run, seq = struct.unpack(">BBIH", spi)
    return ProbeTag(run, _kind(kind), seq) if kind else None


def _kind(code: int) -> int:
    """The built-in kinds as their enum (readable in reprs), others as the plain byte."""
    return ProbeKind(code) if code in ProbeKind._value2member_map_ else code


def icmp_id_for(run: int) -> int:
    """ICMP echo identifier used by every probe of a run (the seq field carries
    the probe seq). ICMP errors quote only these 8 bytes of the ICMP header,
    not the tag, so this is how an error is tied back to a run."""
    return (run ^ (run >> 16)) & 0xFFFF
