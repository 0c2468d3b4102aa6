"""Confirm ESP associations with keys: decrypt the ESP rows of observations and read the probe tag inside.

Without keys, an ESP packet on an untrusted hop is tied to a probe by its
``(SPI, sequence)`` and timing (:mod:`tracer.analysis.correlate`). With the
SAs' keys, :func:`confirm` goes back to each ESP packet's bytes (the
observation's ``file`` and ``l3_off``), decrypts it and reports, per
``(SPI, seq)``, the probe tag and ICMP type of the inner packet — proof
instead of inference. :func:`tracer.wireshark.wireshark_decode` asks Wireshark
(tshark, through pyshark) for the same.

It logs nothing, and nothing they return contains key material.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from tracer.capture.pcapfile import CaptureIndex, read_capture
from tracer.columns import is_columns
from tracer.errors import CaptureError
from tracer.esp.decrypt import EspError, EspPlain, esp_offset, open_esp
from tracer.esp.keys import EspSA
from tracer.model.distinct import distinct
from tracer.model.observations import Observations, PacketClass
from tracer.model.tag import ProbeTag, decode

EspKey = tuple[int, int]  # (SPI, ESP sequence number)

_ECHO_TYPES = {4: (0, 8), 6: (129, 128)}  # ICMP / ICMPv6 echo reply, request


@dataclass(frozen=True)
class InnerPacket:
    """What was inside one ESP packet (tunnel mode: the inner IP packet)."""

    next_header: int  # ESP next header: 4 IPv4, 41 IPv6, 59 dummy; else transport mode
    src: str | None  # inner addresses (None in transport mode or when too short)
    dst: str | None
    proto: int | None  # inner IP protocol (1 ICMP, 58 ICMPv6, 6, 17, …)
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    icmp_seq: int | None = None
    tag: ProbeTag | None = None  # tracer probe tag at the start of an echo payload
    length: int = 0  # bytes of the inner packet


@dataclass
class Confirmation:
    """Per ``(SPI, seq)``: what decryption found, or why it failed.

    ``tags[(spi, seq)] = (tag or None, inner ICMP type or None)``; ``inner`` has
    the full :class:`InnerPacket`; ``failures[(spi, seq)]`` is a one-line reason
    ("integrity check failed (AES-GCM tag)", "capture truncated …"). A key is
    in exactly one of ``tags`` and ``failures``. ``rows`` counts the ESP rows
    that had an SA (one packet seen at several points is several rows);
    ``spis_without_sa`` the SPIs of ESP rows no SA covers.
    """

    tags: dict[EspKey, tuple[ProbeTag | None, int | None]] = field(default_factory=dict)
    inner: dict[EspKey, InnerPacket] = field(default_factory=dict)
    failures: dict[EspKey, str] = field(default_factory=dict)
    rows: int = 0
    spis_without_sa: set[int] = field(default_factory=set)

    @property
    def decrypted(self) -> int:
        return len(self.tags)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def tag(self, spi: int, seq: int) -> ProbeTag | None:
        """The probe tag inside ``(spi, seq)``; None if untagged, not decrypted or unknown."""
        found = self.tags.get((spi, seq))
        return found[0] if found else None

    def summary(self) -> str:
        """One line for humans (no keys, no payloads)."""
        text = f"ESP with keys: {self.decrypted} packets decrypted"
        if self.failed:
            reasons = sorted({r.split(": ", 1)[-1] for r in self.failures.values()})
            text += f", {self.failed} failed ({'; '.join(reasons[:3])})"
        if self.spis_without_sa:
            text += f"; no key for SPI {', '.join(f'0x{s:08x}' for s in sorted(self.spis_without_sa))}"
        return text


def confirm(obs: Observations, sas: Iterable[EspSA]) -> Confirmation:
    """Decrypt every ESP row of ``obs`` whose SPI has an SA; see :class:`Confirmation`.

    Each capture file in ``obs.sources`` is read once. A packet seen at several
    capture points is decrypted once; only if that copy fails are the others
    tried (one point may have cut it short). Raises :class:`CaptureError` if a
    source file cannot be read again.

    When several SAs share an SPI the outer addresses choose; a single SA is
    used whatever the addresses, because NAT may have rewritten them and the
    SPI is what identifies the SA on the wire (RFC 4301 4.1).
    """
    by_spi: dict[int, list[EspSA]] = {}
    for sa in sas:
        by_spi.setdefault(sa.spi, []).append(sa)
    out = Confirmation()
    if len(obs) == 0:
        return out
    rows = np.flatnonzero(obs["cls"] == PacketClass.ESP)
    # Columns extracted on an SSH host carry no packet bytes (the capture stayed there).
    remote = [f for f, s in enumerate(obs.sources) if is_columns(s)]
    if remote:
        rows = rows[~np.isin(obs["file"][rows], remote)]
    spi = obs["spi"][rows]
    has_sa = np.isin(spi, np.fromiter(by_spi, np.uint32, len(by_spi)))
    out.spis_without_sa = {int(s) for s in distinct(spi[~has_sa])}
    rows = rows[has_sa]
    out.rows = len(rows)
    if not len(rows):
        return out

    captures = _Captures(obs.sources)
    ends = _record_ends(obs, rows, captures)
    files, l3_off, ip_len = obs["file"][rows], obs["l3_off"][rows], obs["ip_len"][rows]
    spi, seq = obs["spi"][rows], obs["esp_seq"][rows]
    keys = (spi.astype(np.uint64) << np.uint64(32)) | seq.astype(np.uint64)
    order = np.argsort(keys, kind="stable")  # each packet's rows together, in observation order
    starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
    bounds = np.r_[starts, len(order)]

    for g in range(len(starts)):
        members = order[bounds[g] : bounds[g + 1]]
        key = (int(spi[members[0]]), int(seq[members[0]]))
        reason = ""
        for j in members.tolist():
            buf = captures[int(files[j])].buf
            start, stop = int(l3_off[j]), int(ends[j])
            want = start + int(ip_len[j]) if ip_len[j] else stop
            if want > stop:
                reason = reason or f"capture truncated at {stop - start} of {want - start} bytes (snaplen)"
                continue
            packet = buf[start:want].tobytes()
            try:
                plain = _open(by_spi[key[0]], packet)
            except EspError as err:
                reason = str(err)
                continue
            inner = parse_inner(plain)
            out.inner[key] = inner
            out.tags[key] = (inner.tag, inner.icmp_type)
            break
        else:
            out.failures[key] = reason or "no copy of the packet could be read"
    return out


def _open(candidates: list[EspSA], packet: bytes) -> EspPlain:
    esp = packet[esp_offset(packet) :]
    if len(candidates) > 1:
        src, dst = _outer_addresses(packet)
        matching = [sa for sa in candidates if sa.matches(src, dst)]
        candidates = matching + [sa for sa in candidates if sa not in matching]
    err: EspError | None = None
    for sa in candidates:
        try:
            return open_esp(sa, esp)
        except EspError as e:
            err = err or e
    assert err is not None
    raise err


def _outer_addresses(ip: bytes) -> tuple[str, str]:
    if ip[0] >> 4 == 6:
        return socket.inet_ntop(socket.AF_INET6, ip[8:24]), socket.inet_ntop(socket.AF_INET6, ip[24:40])
    return socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])


def _record_ends(obs: Observations, rows: np.ndarray, captures: _Captures) -> np.ndarray:
    """Where each row's captured frame ends in its file (so a short snapshot is never read past)."""
    ends = np.zeros(len(rows), np.int64)
    files = obs["file"][rows]
    for f in distinct(files).tolist():
        cap = captures[f]
        m = files == f
        rec = np.searchsorted(cap.data_off, obs["l3_off"][rows[m]], side="right") - 1
        ends[m] = cap.data_off[rec] + cap.caplen[rec].astype(np.int64)
    return ends


class _Captures(dict[int, CaptureIndex]):
    """The observations' capture files, each read (memory-mapped when large) at most once per call."""

    def __init__(self, sources: list[str]) -> None:
        super().__init__()
        self.sources = sources

    def __missing__(self, f: int) -> CaptureIndex:
        if not 0 <= f < len(self.sources):
            raise CaptureError(f"observations name capture file #{f}, but only {len(self.sources)} are known")
        cap = self[f] = read_capture(self.sources[f], check_linktypes=False)
        return cap


def parse_inner(plain: EspPlain) -> InnerPacket:
    """Addresses, protocol, ICMP fields and probe tag of a decrypted ESP payload."""
    nh, data = plain
    n = len(data)
    if nh == 4 and n >= 20 and data[0] >> 4 == 4:
        ihl = (data[0] & 0x0F) * 4
        proto = data[9]
        src, dst = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
        first = struct.unpack_from("!H", data, 6)[0] & 0x1FFF == 0
        l4, icmp, version = ihl, 1, 4
    elif nh == 41 and n >= 40 and data[0] >> 4 == 6:
        proto = data[6]
        src = socket.inet_ntop(socket.AF_INET6, data[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, data[24:40])
        first, l4, icmp, version = True, 40, 58, 6
    else:  # transport mode (or a TFC dummy): no inner IP header to read
        return InnerPacket(nh, None, None, None if nh in (4, 41, 59) else nh, length=n)
    if proto != icmp or not first or n < l4 + 8:
        return InnerPacket(nh, src, dst, proto, length=n)
    typ, code, ident, seq = struct.unpack_from("!BBxxHH", data, l4)  # type, code, checksum, id, seq
    tag = decode(data[l4 + 8 : l4 + 24]) if typ in _ECHO_TYPES[version] else None
    return InnerPacket(nh, src, dst, proto, typ, code, ident, seq, tag, n)


# --- Wireshark's view -----------------------------------------------------------------------------
