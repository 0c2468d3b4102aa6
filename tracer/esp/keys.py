"""ESP Security Associations with keys, in Wireshark's ``esp_sa`` file format.

Wireshark keeps its ESP SA table (Preferences → Protocols → ESP → "Attempt
to detect/decode encrypted ESP payloads" → Edit) in ``~/.config/wireshark/esp_sa``,
one SA per line, every field a double-quoted string, fields separated by commas
(``epan/dissectors/packet-ipsec.c``, ``esp_uat_flds``)::

    "IPv4","198.18.1.1","198.18.2.1","0xc1a2b3c4","AES-GCM with 16 octet ICV [RFC4106]","0x<20 bytes>","NULL",""

1. Protocol: ``IPv4`` or ``IPv6``
2. Src IP, 3. Dest IP: the *outer* (tunnel) addresses; ``*`` is a wildcard
4. SPI: ``0x`` hex (or decimal)
5. Encryption: one of :data:`ENCRYPTIONS` (Wireshark's exact display names)
6. Encryption Key: ``0x`` + hex; anything else is taken as ASCII text
7. Authentication: one of :data:`AUTHENTICATIONS`
8. Authentication Key: as 6

Newer Wireshark releases append two columns, "SN" (``32-bit``, or ``64-bit``
for Extended Sequence Numbers) and "ESN High Bits"; both variants are read.
Lines starting with ``#`` are comments. Inside a field, ``\\xHH`` escapes a
byte (Wireshark writes ``"`` and ``\\`` that way).

For AES-GCM (RFC 4106) and AES-CTR (RFC 3686) the key field holds the AES
key *followed by* the 4-byte salt/nonce, e.g. 20 bytes for AES-128-GCM —
exactly the KEYMAT IKEv2 derives and strongSwan logs.

Keys are secret: :class:`EspSA` never shows them in ``repr``/``str``, error
messages never quote a key field, and :func:`write_esp_sa_file` writes mode 0600.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from tracer.errors import BadInput
from tracer.textfile import read_text


@dataclass(frozen=True)
class EncAlgo:
    """How to undo one encryption transform. ``kind`` None: named by Wireshark but not decrypted by tracer."""

    name: str
    kind: str | None  # "null", "cbc", "ctr", "gcm"
    icv: int = 0  # AEAD tag length (gcm)
    salt: int = 0  # trailing key bytes that are salt/nonce, not key (gcm, ctr)
    iv: int = 0  # explicit IV bytes after the ESP header
    block: int = 1  # cipher block size; the ciphertext must be a multiple of it


@dataclass(frozen=True)
class AuthAlgo:
    """An integrity transform: ``digest`` is a hashlib name; None with ``icv`` > 0 = strip without checking."""

    name: str
    digest: str | None
    icv: int  # bytes of ICV at the end of the packet


# Wireshark's exact names (esp_encryption_type_vals / esp_authentication_type_vals in
# packet-ipsec.c; checked against the strings of the installed libwireshark 4.0).
ENCRYPTIONS: dict[str, EncAlgo] = {
    a.name: a
    for a in (
        EncAlgo("NULL", "null"),
        EncAlgo("TripleDES-CBC [RFC2451]", None),
        EncAlgo("AES-CBC [RFC3602]", "cbc", iv=16, block=16),
        EncAlgo("AES-CTR [RFC3686]", "ctr", salt=4, iv=8),
        EncAlgo("DES-CBC [RFC2405]", None),
        EncAlgo("CAST5-CBC [RFC2144]", None),
        EncAlgo("BLOWFISH-CBC [RFC2451]", None),
        EncAlgo("TWOFISH-CBC", None),
        EncAlgo("AES-GCM [RFC4106]", None),  # deprecated by Wireshark: no ICV length given
        EncAlgo("AES-GCM with 8 octet ICV [RFC4106]", "gcm", icv=8, salt=4, iv=8),
        EncAlgo("AES-GCM with 12 octet ICV [RFC4106]", "gcm", icv=12, salt=4, iv=8),
        EncAlgo("AES-GCM with 16 octet ICV [RFC4106]", "gcm", icv=16, salt=4, iv=8),
    )
}
AUTHENTICATIONS: dict[str, AuthAlgo] = {
    a.name: a
    for a in (
        AuthAlgo("NULL", None, 0),
        AuthAlgo("HMAC-SHA-1-96 [RFC2404]", "sha1", 12),
        AuthAlgo("HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]", "sha256", 12),
        AuthAlgo("HMAC-SHA-256-128 [RFC4868]", "sha256", 16),
        AuthAlgo("HMAC-SHA-384-192 [RFC4868]", "sha384", 24),
        AuthAlgo("HMAC-SHA-512-256 [RFC4868]", "sha512", 32),
        AuthAlgo("HMAC-MD5-96 [RFC2403]", "md5", 12),
        AuthAlgo("MAC-RIPEMD-160-96 [RFC2857]", "ripemd160", 12),  # sic: Wireshark's spelling
        AuthAlgo("ANY 64 bit authentication [no checking]", None, 8),
        AuthAlgo("ANY 96 bit authentication [no checking]", None, 12),
        AuthAlgo("ANY 128 bit authentication [no checking]", None, 16),
        AuthAlgo("ANY 192 bit authentication [no checking]", None, 24),
        AuthAlgo("ANY 256 bit authentication [no checking]", None, 32),
    )
}
GCM16 = "AES-GCM with 16 octet ICV [RFC4106]"

_ENC_CI = {re.sub(r"\s+", " ", k).lower(): k for k in ENCRYPTIONS}
_AUTH_CI = {re.sub(r"\s+", " ", k).lower(): k for k in AUTHENTICATIONS}


@dataclass(frozen=True)
class EspSA:
    """One direction of an ESP SA: outer addresses, SPI, algorithms and keys (secret).

    ``enc``/``auth`` are Wireshark's algorithm names (keys of :data:`ENCRYPTIONS`
    and :data:`AUTHENTICATIONS`); ``src``/``dst`` are outer addresses as text,
    ``*`` (or a pattern such as ``198.18.*``) matching any. ``esn``: Extended
    Sequence Numbers, whose untransmitted high 32 bits are ``esn_high``.
    """

    src: str
    dst: str
    spi: int
    enc: str
    enc_key: bytes = field(repr=False)
    auth: str = "NULL"
    auth_key: bytes = field(default=b"", repr=False)
    esn: bool = False
    esn_high: int = 0

    def __post_init__(self) -> None:
        if self.enc not in ENCRYPTIONS:
            raise ValueError(f"unknown ESP encryption {self.enc!r}")
        if self.auth not in AUTHENTICATIONS:
            raise ValueError(f"unknown ESP authentication {self.auth!r}")
        if not 0 <= self.spi <= 0xFFFFFFFF:
            raise ValueError(f"SPI {self.spi} out of range")

    @property
    def family(self) -> str:
        """``IPv6`` if either address is IPv6, else ``IPv4`` (Wireshark's protocol column)."""
        return "IPv6" if ":" in self.src or ":" in self.dst else "IPv4"

    def matches(self, src: str, dst: str) -> bool:
        """Whether packets from ``src`` to ``dst`` (outer addresses) may belong to this SA."""
        return _addr_match(self.src, src) and _addr_match(self.dst, dst)

    def __repr__(self) -> str:  # never the keys: reprs end up in logs, tracebacks and reports
        esn = ", ESN" if self.esn else ""
        return f"EspSA(spi=0x{self.spi:08x}, {self.src} → {self.dst}, {self.enc} / {self.auth}{esn})"

    __str__ = __repr__


def _addr_match(pattern: str, addr: str) -> bool:
    if pattern == "*" or pattern == addr:
        return True
    if "*" in pattern:
        return fnmatch.fnmatchcase(addr, pattern)
    try:  # the same address written differently (IPv6 zero compression)
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(addr)
    except ValueError:
        return False


# --- reading ------------------------------------------------------------------------------------


def read_esp_sa_file(path: str | os.PathLike[str]) -> list[EspSA]:
    """Parse a Wireshark ``esp_sa`` file. Raises :class:`BadInput` naming the file and line."""
    name = os.fspath(path)
    try:
        text = read_text(name, "SA file")
    except FileNotFoundError:
        raise BadInput(f"{name}: no such ESP key file") from None
    except UnicodeDecodeError:
        raise BadInput(f"{name}: not a text file (expected Wireshark's esp_sa format)") from None
    except OSError as e:
        raise BadInput(f"{name}: cannot read: {e.strerror or e}") from None
    return parse_esp_sa(text, name)


def parse_esp_sa(text: str, source: str = "esp_sa") -> list[EspSA]:
    """Parse ``esp_sa`` text; ``source`` names it in errors."""
    sas: list[EspSA] = []
    seen: dict[tuple[int, str, str], int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        sa = _parse_record(_split_fields(stripped, where), where)
        key = (sa.spi, sa.src, sa.dst)
        if key in seen:
            raise BadInput(f"{where}: SPI 0x{sa.spi:08x} {sa.src} → {sa.dst} already defined on line {seen[key]}")
        seen[key] = lineno
        sas.append(sa)
    return sas


def _split_fields(line: str, where: str) -> list[str]:
    """The quoted, comma-separated fields of one UAT record, with ``\\xHH`` escapes undone."""
    fields: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n or line[i] != '"':
            raise BadInput(f'{where}: field {len(fields) + 1} is not a double-quoted string (expected "IPv4","src","dst",…)')
        i += 1
        out: list[str] = []
        while True:
            if i >= n:
                raise BadInput(f"{where}: field {len(fields) + 1} has no closing quote")
            c = line[i]
            if c == '"':
                i += 1
                break
            if c == "\\" and i + 1 < n:
                if line[i + 1] in "xX" and re.fullmatch(r"[0-9A-Fa-f]{2}", line[i + 2 : i + 4]):
                    out.append(chr(int(line[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                out.append(line[i + 1])
                i += 2
                continue
            out.append(c)
            i += 1
        fields.append("".join(out))
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return fields
        if line[i] != ",":
            raise BadInput(f"{where}: expected ',' after field {len(fields)}")
        i += 1


_NFIELDS = (8, 9, 10)  # 8: Wireshark up to 4.4; 9-10: newer ones add "SN" and "ESN High Bits"


def _parse_record(f: list[str], where: str) -> EspSA:
    if len(f) not in _NFIELDS:
        raise BadInput(
            f"{where}: {len(f)} fields; an esp_sa line has 8 (protocol, src, dst, SPI, encryption, key, "
            "authentication, key) or 10 (newer Wireshark: plus SN, ESN high bits)"
        )
    proto, src, dst, spi_text, enc_name, enc_key, auth_name, auth_key = f[:8]
    if proto not in ("IPv4", "IPv6"):
        raise BadInput(f"{where}: protocol '{proto}' is not IPv4 or IPv6")
    src, dst = _address(src, proto, "source", where), _address(dst, proto, "destination", where)
    spi = _spi(spi_text, where)
    enc = _ENC_CI.get(re.sub(r"\s+", " ", enc_name.strip()).lower())
    if enc is None:
        raise BadInput(f"{where}: unknown encryption '{enc_name}' (Wireshark names, e.g. '{GCM16}', 'AES-CBC [RFC3602]', 'NULL')")
    auth = _AUTH_CI.get(re.sub(r"\s+", " ", auth_name.strip()).lower())
    if auth is None:
        raise BadInput(
            f"{where}: unknown authentication '{auth_name}' (Wireshark names, e.g. 'HMAC-SHA-256-128 [RFC4868]', 'NULL')"
        )
    ekey = _key(enc_key, "encryption", where)
    akey = _key(auth_key, "authentication", where)
    esn, esn_high = False, 0
    if len(f) >= 9 and f[8].strip():
        sn = f[8].strip().lower()
        if not sn.startswith(("32", "64")):
            raise BadInput(f"{where}: SN '{f[8]}' is neither 32-bit nor 64-bit")
        esn = sn.startswith("64")
    if len(f) >= 10 and f[9].strip():
        try:
            esn_high = int(f[9].strip(), 0)
        except ValueError:
            raise BadInput(f"{where}: ESN high bits '{f[9]}' is not a number") from None
        if not 0 <= esn_high <= 0xFFFFFFFF:
            raise BadInput(f"{where}: ESN high bits {esn_high} do not fit in 32 bits")
    _check_key_length(ENCRYPTIONS[enc], AUTHENTICATIONS[auth], ekey, akey, where)
    return EspSA(src, dst, spi, enc, ekey, auth, akey, esn, esn_high)


def _address(text: str, proto: str, what: str, where: str) -> str:
    text = text.strip()
    if not text or "*" in text:
        return text or "*"
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise BadInput(f"{where}: {what} address '{text}' is not an IP address or '*'") from None
    if (addr.version == 6) != (proto == "IPv6"):
        raise BadInput(f"{where}: {what} address {text} is not {proto}")
    return str(addr)


def _spi(text: str, where: str) -> int:
    text = text.strip()
    if "*" in text:
        raise BadInput(f"{where}: wildcard SPI '{text}': tracer matches packets by SPI, give the exact one")
    try:
        spi = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise BadInput(f"{where}: SPI '{text}' is not a number (write it as 0x1234abcd)") from None
    if not 0 <= spi <= 0xFFFFFFFF:
        raise BadInput(f"{where}: SPI '{text}' does not fit in 32 bits")
    return spi


def _key(text: str, what: str, where: str) -> bytes:
    """Wireshark's rule (compute_ascii_key): ``0x`` + hex digits, else the text itself. Never echo the key."""
    if len(text) >= 2 and text[0] == "0" and text[1] in "xX":
        digits = text[2:]
        if len(digits) % 2:
            digits = "0" + digits  # Wireshark pads an odd count with a leading 0
        try:
            return bytes.fromhex(digits)
        except ValueError:
            raise BadInput(f"{where}: {what} key is not valid hex after 0x") from None
    return text.encode("utf-8")


def _check_key_length(enc: EncAlgo, auth: AuthAlgo, ekey: bytes, akey: bytes, where: str) -> None:
    if enc.kind in ("cbc", "ctr", "gcm"):
        aes = len(ekey) - enc.salt
        if aes not in (16, 24, 32):
            extra = f" + {enc.salt}-byte salt" if enc.salt else ""
            raise BadInput(f"{where}: {enc.name} needs a 16, 24 or 32-byte AES key{extra}; the key has {len(ekey)} bytes")
    if enc.kind == "gcm" and auth.icv:
        raise BadInput(f"{where}: {enc.name} carries its own ICV; authentication must be NULL, not '{auth.name}'")
    if auth.digest and not akey:
        raise BadInput(f"{where}: {auth.name} needs an authentication key")


# --- writing ------------------------------------------------------------------------------------


def format_esp_sa(sas: Iterable[EspSA]) -> str:
    """``esp_sa`` text for ``sas``: 8 columns (what every Wireshark reads), 10 if any SA uses ESN."""
    sas = list(sas)
    wide = any(sa.esn or sa.esn_high for sa in sas)
    lines = ["# Wireshark ESP SA table (esp_sa), written by tracer. Contains secret keys: keep it private."]
    for sa in sas:
        fields = [sa.family, sa.src, sa.dst, f"0x{sa.spi:08x}", sa.enc, _hex(sa.enc_key), sa.auth, _hex(sa.auth_key)]
        if wide:
            fields += ["64-bit" if sa.esn else "32-bit", str(sa.esn_high)]
        lines.append(",".join(f'"{_uat_escape(v)}"' for v in fields))
    return "\n".join(lines) + "\n"


def write_esp_sa_file(path: str | os.PathLike[str], sas: Iterable[EspSA]) -> None:
    """Write ``sas`` as a Wireshark ``esp_sa`` file, mode 0600 (also when it already existed)."""
    text = format_esp_sa(sas)
    name = os.fspath(path)
    try:  # O_NOFOLLOW: secrets are never written through a symlink someone else may have planted
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as e:
        raise BadInput(f"{name}: cannot write ESP key file: {e.strerror or e}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT: narrow it first
        f.write(text)


def _hex(key: bytes) -> str:
    return "0x" + key.hex() if key else ""


def _uat_escape(value: str) -> str:
    # Wireshark's uat_esc: bytes outside printable ASCII, '"' and '\' become \xHH.
    return "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\x{ord(c):02x}" for c in value)
