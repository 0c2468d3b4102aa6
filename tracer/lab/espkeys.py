"""The lab's CHILD_SA keys as ESP SAs (Wireshark esp_sa format), read from charon's key log.

Only tracer's analysis reads them (``tracer ping`` on the lab decrypts by default); they
never go into output, logs or run directories.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tracer.errors import LabError
from tracer.esp.keys import GCM16, EspSA, write_esp_sa_file
from tracer.lab import layout, strongswan


class LabFiles(Protocol):
    """What the key export needs of a lab (tracer.lab.Lab has it): its name and directories."""

    name: str
    dir: Path

    def gateway_dir(self, gw: str) -> Path: ...

# strongSwan algorithm names (as logged: "using AES_GCM_16 for encryption") → Wireshark's.
_SWAN_ENC = {
    "AES_GCM_16": GCM16,
    "AES_GCM_12": "AES-GCM with 12 octet ICV [RFC4106]",
    "AES_GCM_8": "AES-GCM with 8 octet ICV [RFC4106]",
    "AES_CBC": "AES-CBC [RFC3602]",
    "AES_CTR": "AES-CTR [RFC3686]",
    "3DES_CBC": "TripleDES-CBC [RFC2451]",
    "NULL": "NULL",
}
_SWAN_AUTH = {
    "HMAC_SHA1_96": "HMAC-SHA-1-96 [RFC2404]",
    "HMAC_SHA2_256_128": "HMAC-SHA-256-128 [RFC4868]",
    "HMAC_SHA2_384_192": "HMAC-SHA-384-192 [RFC4868]",
    "HMAC_SHA2_512_256": "HMAC-SHA-512-256 [RFC4868]",
    "HMAC_MD5_96": "HMAC-MD5-96 [RFC2403]",
}
# Without a "using ... for integrity" line: the integrity key length says which HMAC.
_AUTH_BY_KEYLEN = {20: "HMAC-SHA-1-96 [RFC2404]", 32: "HMAC-SHA-256-128 [RFC4868]",
                   48: "HMAC-SHA-384-192 [RFC4868]", 64: "HMAC-SHA-512-256 [RFC4868]"}

_USING = re.compile(r"^(\d+)\[CHD\]\s+using (\S+) for (encryption|integrity)")
_SPI_LINE = re.compile(r"^(\d+)\[CHD\]\s+SPI 0x([0-9a-f]{8}), src (\S+) dst (\S+)")
_INITIATING = re.compile(r"^\d+\[IKE\] (?:<[^>]*> )?establishing CHILD_SA (\S+)\{(\d+)\}")


@dataclass
class _LogFacts:
    """What a keys.log says beyond the keys: who initiated which CHILD_SA, algorithms, outer addresses."""

    initiated: set[tuple[str, int]] = field(default_factory=set)
    algos: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)
    addrs: dict[int, tuple[str, str]] = field(default_factory=dict)  # SPI → (src, dst)


def _log_facts(text: str) -> _LogFacts:
    facts = _LogFacts()
    using: dict[str, dict[str, str]] = {}  # thread → {"encryption": ..., "integrity": ...}
    for line in text.splitlines():
        if m := _USING.match(line):
            using.setdefault(m.group(1), {})[m.group(3)] = m.group(2)
        elif m := _SPI_LINE.match(line):
            facts.addrs[int(m.group(2), 16)] = (m.group(3), m.group(4))
        elif m := _INITIATING.match(line):
            facts.initiated.add((m.group(1), int(m.group(2))))
        elif m := strongswan.CHILD_ESTABLISHED.match(line):
            facts.algos[(m.group(2), int(m.group(3)))] = using.pop(m.group(1), {})
    return facts


def sas_from_lab(lab: LabFiles) -> list[EspSA]:
    """Both directions of every CHILD_SA the lab's gateways logged, as :class:`EspSA`.

    IKEv2 derives one key per direction (RFC 7296 2.17): the "initiator" key
    protects what the *CHILD_SA initiator* sends, i.e. packets to the
    responder, which carry the responder's inbound SPI. strongSwan logs
    "establishing CHILD_SA name{id}" only on the initiating side, so each
    gateway's outbound SPI gets the initiator key if that gateway initiated
    the CHILD_SA and the responder key otherwise, and its inbound SPI the
    other key. One gateway's log is enough; when both log a CHILD_SA the two
    views are merged by SPI and must agree.
    """
    by_spi: dict[int, EspSA] = {}
    views: dict[str, tuple[list[strongswan.ChildSaKeys], _LogFacts]] = {}
    for gw in layout.GATEWAYS:
        try:
            text = (lab.gateway_dir(gw) / strongswan.KEYS_LOG).read_text(errors="replace")
        except OSError as e:
            raise LabError(f"cannot read the key log of {gw}: {e.strerror or e}") from None
        views[gw] = (strongswan.child_sa_keys(text), _log_facts(text))
    for gw, (keys, facts) in views.items():
        peers = [(g, v) for g, v in views.items() if g != gw]
        for k in keys:
            ident = (k.name, k.unique_id)
            initiator: bool | None = True if ident in facts.initiated else None
            if initiator is None:  # the peer's view of the same CHILD_SA (its SPIs are ours, swapped)
                for _g, (pkeys, pfacts) in peers:
                    twin = next((p for p in pkeys if (p.spi_in, p.spi_out) == (k.spi_out, k.spi_in)), None)
                    if twin is not None and (twin.name, twin.unique_id) in pfacts.initiated:
                        initiator = False
            if initiator is None:
                raise LabError(
                    f"cannot tell which gateway initiated CHILD_SA {k.name}{{{k.unique_id}}} "
                    f"(no 'establishing CHILD_SA' line in the key logs of {lab.name})"
                )
            algos = facts.algos.get(ident, {})
            # Each gateway knows both directions: what it sends (spi_out) and what it receives (spi_in).
            for spi, sends_initiator_key in ((k.spi_out, initiator), (k.spi_in, not initiator)):
                enc_key = k.encr_initiator if sends_initiator_key else k.encr_responder
                integ_key = k.integ_initiator if sends_initiator_key else k.integ_responder
                enc = _SWAN_ENC.get(algos.get("encryption", ""), GCM16 if not integ_key else "AES-CBC [RFC3602]")
                auth = _SWAN_AUTH.get(algos.get("integrity", ""), "NULL")
                if auth == "NULL" and integ_key:
                    auth = _AUTH_BY_KEYLEN.get(len(integ_key), "NULL")
                src, dst = facts.addrs.get(spi, ("*", "*"))
                sa = EspSA(src, dst, spi, enc, enc_key, auth, integ_key)
                old = by_spi.get(spi)
                if old is not None and (old.enc_key, old.auth_key) != (sa.enc_key, sa.auth_key):
                    raise LabError(f"the gateways' key logs disagree on the keys of SPI 0x{spi:08x}")
                if old is None or old.src == "*":
                    by_spi[spi] = sa
    return list(by_spi.values())


def export(lab: LabFiles) -> None:
    """Keep the lab's ``esp_sa`` (mode 0600, named by its topology) in step with the CHILD_SAs charon
    logged, so tracer decrypts the lab's ESP by default. Only tracer's analysis reads it."""
    path = lab.dir / layout.ESP_SA_FILE
    try:
        sas = sas_from_lab(lab)
    except LabError:
        sas = []  # no CHILD_SA yet (e.g. IKE blocked): better no file than a wrong one
    if sas:
        write_esp_sa_file(path, sas)
    else:
        path.unlink(missing_ok=True)
