"""Problem-report bundles (``tracer report``): a run directory, its verdict and the state of the
network around it, in one ``.tar.gz`` a stranger can diagnose from — like ``ipsec barf``, but
without a secret in it.

Layout of the archive (every member under one folder, ``tracer-report-<run dir>/``)::

    SUMMARY.txt        first: verdict, evidence and check results, lab state, tool versions,
                       what was redacted or left out, an index of the bundle
    verdict.txt        ``tracer replay RUN_DIR`` as it prints it
    verdict.json       ``tracer replay RUN_DIR --json``
    run/…              the run directory itself (topology, manifest, probes, every capture,
                       netstate/<node>.json, evidence/, check.json, …): ``tracer replay`` reads it
    lab/…              for a run on the built-in lab: ``tracer lab status --json`` and each
                       gateway's charon.log, when the lab is there

Secrets are handled in two ways. Files that *are* secrets are never copied: charon's key log,
``esp_sa`` files, SSH identities, the key files a topology names (``esp_keys``, ``ssh_key``),
anything the bundle cannot check (a binary that is not a capture, a symlink). Every text that is
copied goes through :func:`redact_text`, a pure function that replaces PSKs and passwords,
private key blocks, ESP keys in esp_sa lines and hex keys with ``REDACTED`` and counts what it
replaced; pcapng captures lose any Decryption Secrets Block (:func:`strip_pcapng_secrets`).
SUMMARY.txt lists every redaction and every file left out, so the reader knows what is missing.

Assembly is separate from I/O where it matters: the caller (``tracer.cli.report``) replays the
run and collects the lab's state, this module puts everything together and writes the archive
owner-only (0600) and atomically.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import platform
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from tracer.errors import BadInput
from tracer.run.manifest import MANIFEST, read_manifest

REDACTED = "REDACTED"
SUMMARY = "SUMMARY.txt"
FILE_LIMIT = 256 * 1024 * 1024  # any one file of a run directory; larger ones are left out
SHOWN_LINES = 200  # lines of each evidence file or log window shown in SUMMARY.txt
LOG_TAIL = 2 * 1024 * 1024  # bytes of a charon log kept in the bundle (its end)
CAPTURE_SUFFIXES = (".pcapng", ".pcap", ".cap")
SAFE_BINARY_SUFFIXES = (".png",)  # figures: copied as they are

# --- redaction: pure functions over text ---------------------------------------------------------

# What each rule replaces, as SUMMARY.txt names it.
PRIVATE_KEY = "private key block"
PSK = "pre-shared key or password"
ESP_KEY = "ESP key (esp_sa line)"
HEX_KEY = "hex key material"
KEY_DUMP = "key hex dump (strongSwan log)"

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----.*?(?:-----END \1-----|\Z)", re.S)
_SECRET_WORD = r"(?:secret|psk|pre[-_]?shared[-_]?key|password|passwd|passphrase|private[-_]?key)"
# `secret = 0x…` (swanctl.conf, strongswan.conf), `psk: …` (YAML), `"password": "…"` (JSON).
_ASSIGN = re.compile(
    rf"""(?imx)
    ( ["']? \b[\w.-]*{_SECRET_WORD}[\w.-]*\b ["']? [ \t]* [=:] [ \t]* )
    ( "(?:[^"\\\n]|\\.)*" | '[^'\n]*' | [^\s,;{{}}\[\]#]+ )
    """
)
# ipsec.secrets: `198.18.1.1 198.18.2.1 : PSK "…"`, `: RSA key.pem "passphrase"`, `user : EAP "…"`.
_IPSEC_SECRETS = re.compile(r"(?im)^([^\n#]*?:[ \t]*(?:PSK|EAP|XAUTH|NTLM|PIN|P12|RSA|ECDSA|PKCS12)[ \t]+)(\S.*)$")
# Wireshark esp_sa lines: 8-10 quoted fields, the 6th and 8th are keys.
_ESP_SA_LINE = re.compile(r'^\s*"IPv[46]"\s*,')
_ESP_FIELD = re.compile(r'"((?:[^"\\]|\\.)*)"')
# strongSwan's key dumps: `09[CHD]    0: F2 76 D1 67 …  .v.g.` (the ASCII column leaks bytes too).
_SWAN_DUMP = re.compile(r"(?m)^(.*?\[[A-Z]{3}\]\s+\d+: )((?:[0-9A-Fa-f]{2} )+.*)$")
_OFFSET_DUMP = re.compile(r"(?m)^(\s*(?:0x)?[0-9A-Fa-f]+: +)((?:[0-9A-Fa-f]{2} +){7,}[0-9A-Fa-f]{2}\b.*)$")
_HEX_RUN = re.compile(r"\b(?:0x)?[0-9A-Fa-f]{32,}\b")  # 16 bytes or more: AES-128 and up
_HEX_SEP = re.compile(r"\b(?:[0-9A-Fa-f]{2}[: ]){15,}[0-9A-Fa-f]{2}\b")  # aa:bb:… or aa bb … (16+ bytes)


def _quoted(value: str) -> str:
    return f'"{REDACTED}"' if value[:1] == '"' else f"'{REDACTED}'" if value[:1] == "'" else REDACTED


def redact_private_keys(text: str) -> tuple[str, int]:
    """PEM private key blocks (RSA, EC, OpenSSH, PKCS#8, encrypted) → BEGIN/REDACTED/END."""
    count = 0

    def block(m: re.Match[str]) -> str:
        nonlocal count
        done = f"-----BEGIN {m[1]}-----\n{REDACTED}\n-----END {m[1]}-----"
        count += m[0] != done
        return done

    return _PEM.sub(block, text), count


def redact_assignments(text: str) -> tuple[str, int]:
    """``secret = …``, ``psk: …``, ``"password": "…"`` and ipsec.secrets entries → the value REDACTED."""
    count = 0

    def value(m: re.Match[str]) -> str:
        nonlocal count
        if m[2].strip("\"'") == REDACTED:
            return m[0]
        count += 1
        return m[1] + _quoted(m[2])

    text = _ASSIGN.sub(value, text)
    text = _IPSEC_SECRETS.sub(value, text)
    return text, count


def redact_esp_sa_lines(text: str) -> tuple[str, int]:
    """Lines in Wireshark's esp_sa format keep protocol, addresses, SPI and algorithms; the
    encryption and authentication keys (6th and 8th fields) become REDACTED."""
    count = 0
    out = []
    for line in text.splitlines(keepends=True):
        if _ESP_SA_LINE.match(line):
            fields = _ESP_FIELD.findall(line)
            for i in (5, 7):
                if i < len(fields) and fields[i] not in ("", REDACTED):
                    fields[i] = REDACTED
                    count += 1
            line = ",".join(f'"{f}"' for f in fields) + ("\n" if line.endswith("\n") else "")
        out.append(line)
    return "".join(out), count


def redact_key_dumps(text: str) -> tuple[str, int]:
    """Hex dumps of key bytes: strongSwan's ``N: AA BB …`` log lines, and ``offset: aa bb …`` dumps."""
    text, n = _SWAN_DUMP.subn(lambda m: m[1] + REDACTED, text)
    text, k = _OFFSET_DUMP.subn(lambda m: m[1] + REDACTED, text)
    return text, n + k


def redact_hex(text: str) -> tuple[str, int]:
    """Hex strings of 16 bytes or more (``0x…``, bare, or ``aa:bb:…``/``aa bb …``): key-sized."""
    text, n = _HEX_RUN.subn(REDACTED, text)
    text, k = _HEX_SEP.subn(REDACTED, text)
    return text, n + k


RULES: tuple[tuple[str, Callable[[str], tuple[str, int]]], ...] = (
    (PRIVATE_KEY, redact_private_keys),  # first: a PEM body is base64, not to be half-matched below
    (ESP_KEY, redact_esp_sa_lines),
    (PSK, redact_assignments),
    (KEY_DUMP, redact_key_dumps),
    (HEX_KEY, redact_hex),
)


def redact_text(text: str) -> tuple[str, Counter[str]]:
    """``text`` with every secret replaced by REDACTED, and how many of each kind (RULES' names)."""
    counts: Counter[str] = Counter()
    for what, rule in RULES:
        text, n = rule(text)
        if n:
            counts[what] += n
    return text, counts


# --- secrets by name or shape: never copied ---------------------------------------------------------

_SECRET_NAMES = re.compile(
    r"^(?:keys\.log|esp_sa|.*\.esp_sa|ipsec\.secrets|.*\.secrets|id_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?"
    r"|ssh_host_\w+_key|.*\.key|.*\.p12|.*\.pfx|known_hosts)$"
)
_KEYS_LOG_LINE = re.compile(r"\[CHD\] (?:encryption|integrity) (?:initiator|responder) key =>|\[IKE\] Sk_[a-z]+ secret =>")


def secret_file_reason(name: str, text: str | None) -> str | None:
    """Why a file must not be copied at all, from its name and (for text) its contents; None: copy it."""
    if _SECRET_NAMES.match(name):
        return "key or secrets file (by its name)"
    if text is None:
        return None
    if _PEM.match(text.lstrip()):
        return "private key file"
    if _KEYS_LOG_LINE.search(text):
        return "charon key log (IKE and ESP keys)"
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and all(_ESP_SA_LINE.match(ln) for ln in lines):
        return "ESP SA file (esp_sa format, holds keys)"
    return None


# --- pcapng: Decryption Secrets Blocks ----------------------------------------------------------------

_SHB = 0x0A0D0D0A
_DSB = 0x0000000A
_BOM = 0x1A2B3C4D


def strip_pcapng_secrets(data: bytes) -> tuple[bytes, int]:
    """A pcapng file without its Decryption Secrets Blocks (TLS/WireGuard/ESP keys Wireshark can
    embed), and how many were removed. Anything that is not well-formed pcapng comes back unchanged."""
    if len(data) < 12 or struct.unpack_from("<I", data)[0] != _SHB:
        return data, 0
    out = io.BytesIO()
    pos, removed, endian = 0, 0, "<"
    while pos + 12 <= len(data):
        btype = struct.unpack_from("<I", data, pos)[0]
        if btype == _SHB:
            bom = data[pos + 8: pos + 12]
            endian = "<" if bom == struct.pack("<I", _BOM) else ">" if bom == struct.pack(">I", _BOM) else ""
            if not endian:
                return data, 0
        else:
            btype = struct.unpack_from(f"{endian}I", data, pos)[0]
        length = struct.unpack_from(f"{endian}I", data, pos + 4)[0]
        if length < 12 or length % 4 or pos + length > len(data):
            return data, 0
        if btype == _DSB:
            removed += 1
        else:
            out.write(data[pos: pos + length])
        pos += length
    if pos != len(data):
        return data, 0
    return (out.getvalue(), removed) if removed else (data, 0)


# --- what goes into a bundle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Redaction:
    file: str  # member name inside the bundle (without the folder)
    what: str  # one of RULES' names, or "decryption secrets block"
    count: int


@dataclass(frozen=True)
class LeftOut:
    file: str  # as found: relative to the run directory, or the lab file's path
    why: str


@dataclass(frozen=True)
class Member:
    name: str  # inside the bundle, below its folder
    data: bytes
    about: str  # one line for the index


@dataclass
class ReplayResult:
    """What ``tracer replay RUN_DIR`` printed, with and without ``--json``, and its exit code."""

    text: str
    json: str
    exit_code: int
    status: str | None = None  # first verdict's status word ("loss", ...); None when replay failed
    summary: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)  # the verdicts in JSON (docs/json.md)


@dataclass
class LabInfo:
    """The built-in lab the run was made on, as found when the bundle was made."""

    name: str
    up: bool
    status: dict[str, Any] | None  # ``tracer lab status --json``; None when it could not be read
    logs: dict[str, str] = field(default_factory=dict)  # "west-gw/charon.log" → text
    notes: list[str] = field(default_factory=list)  # what could not be collected, and why


@dataclass
class Bundle:
    folder: str
    members: list[Member]
    redactions: list[Redaction]
    left_out: list[LeftOut]
    replay: ReplayResult

    def to_dict(self, path: str) -> dict[str, Any]:
        return {
            "path": path,
            "folder": self.folder,
            "files": [{"name": f"{self.folder}/{m.name}", "size": len(m.data)} for m in self.members],
            "redactions": [{"file": r.file, "what": r.what, "count": r.count} for r in self.redactions],
            "left_out": [{"file": x.file, "why": x.why} for x in self.left_out],
            "verdict": {"status": self.replay.status, "exit_code": self.replay.exit_code,
                        "summary": self.replay.summary},
        }


class _Collector:
    """Members in bundle order, with every text redacted on the way in."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.redactions: list[Redaction] = []
        self.left_out: list[LeftOut] = []

    def text(self, name: str, text: str, about: str) -> str:
        clean = self.redact(name, text)
        self.members.append(Member(name, clean.encode(), about))
        return clean

    def redact(self, name: str, text: str) -> str:
        clean, counts = redact_text(text)
        self.redactions += [Redaction(name, what, n) for what, n in counts.items()]
        return clean

    def binary(self, name: str, data: bytes, about: str) -> None:
        self.members.append(Member(name, data, about))


def run_dir_or_fail(run_dir: Path) -> Path:
    """``run_dir`` if it is a readable run directory (manifest and captures); else BadInput, one line."""
    if not run_dir.exists():
        raise BadInput(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: not a run directory (a run directory holds {MANIFEST} and the captures)")
    if not os.access(run_dir, os.R_OK | os.X_OK):
        raise BadInput(f"{run_dir}: cannot read the run directory (permission denied)")
    read_manifest(run_dir)  # BadInput when missing, unreadable, or a capture it names is missing
    return run_dir


def build_bundle(run_dir: Path, replay: ReplayResult, lab: LabInfo | None = None,
                 versions: list[tuple[str, str]] | None = None, now: datetime | None = None) -> Bundle:
    """Everything the bundle holds, in order, redacted; nothing is written."""
    run_dir_or_fail(run_dir)
    manifest = _read_json(run_dir / MANIFEST)
    folder = "tracer-report-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", run_dir.resolve().name) or "run")
    col = _Collector()
    verdict_text = col.redact("verdict.txt", replay.text)
    verdict_json = col.redact("verdict.json", replay.json)
    run_files = _run_files(run_dir, manifest, col)
    evidence = [(name, text) for name, text in run_files if name.startswith("run/evidence/")
                or name in ("run/check.json", "run/evidence/check.json")]
    if lab is not None:
        _lab_members(lab, col)
    verdicts = [Member("verdict.txt", verdict_text.encode(), "tracer replay RUN_DIR, as it prints it"),
                Member("verdict.json", verdict_json.encode(), "tracer replay RUN_DIR --json")]
    summary = render_summary(
        run_dir=run_dir, manifest=manifest, verdict_text=verdict_text, replay=replay, evidence=evidence,
        lab=lab, lab_window=_lab_window(lab, manifest) if lab else {},
        versions=versions if versions is not None else tool_versions(), redactions=col.redactions,
        left_out=col.left_out, members=[*verdicts, *col.members], folder=folder,
        now=now or datetime.now().astimezone(),
    )
    members = [Member(SUMMARY, summary.encode(), "this file"), *verdicts, *col.members]
    return Bundle(folder, members, col.redactions, col.left_out, replay)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _topology_key_files(run_dir: Path, manifest: dict[str, Any]) -> set[Path]:
    """The key files the run's topology names (esp_keys, each node's ssh_key), resolved."""
    topo = manifest.get("topology") or "topology.toml"
    try:
        doc = tomllib.loads((run_dir / str(topo)).read_text(errors="replace"))
    except (OSError, ValueError):
        return set()
    named = [doc.get("esp_keys")]
    nodes = doc.get("nodes")
    if isinstance(nodes, dict):
        named += [n.get("ssh_key") for n in nodes.values() if isinstance(n, dict)]
    base = (run_dir / str(topo)).parent
    return {(base / Path(p).expanduser()).resolve() for p in named if isinstance(p, str) and p}


def _order(rel: str, captures: list[str]) -> tuple[int, int, str]:
    """topology, manifest, probes, captures (manifest order), netstate, evidence, check, the rest."""
    fixed = {"topology.toml": 0, MANIFEST: 1, "probes.json": 2}
    if rel in fixed:
        return fixed[rel], 0, rel
    if rel in captures:
        return 3, captures.index(rel), rel
    for rank, prefix in ((4, "netstate/"), (5, "evidence/")):
        if rel.startswith(prefix):
            return rank, 0, rel
    return (6 if rel == "check.json" else 7), 0, rel


def _about(rel: str, captures: dict[str, str]) -> str:
    if rel in captures:
        return f"capture of {captures[rel]}"
    if rel.startswith("netstate/"):
        return f"{Path(rel).stem}: addresses, links, routes of every table, policy rules (when the run started)"
    return {"topology.toml": "the topology the run was traced with", MANIFEST: "what the run was, which file is which point",
            "probes.json": "what the prober sent and heard back", "check.json": "tracer check results"}.get(
        rel, "evidence" if rel.startswith("evidence/") else "from the run directory")


def _run_files(run_dir: Path, manifest: dict[str, Any], col: _Collector) -> list[tuple[str, str]]:
    """Every file of the run directory that can be checked for secrets, as run/<relative path>;
    returns the (name, redacted text) of each text file."""
    caps = manifest.get("captures") if isinstance(manifest.get("captures"), list) else []
    capture_points = {str(c.get("file")): str(c.get("point") or "(points named inside the file)")
                      for c in caps if isinstance(c, dict) and c.get("file")}
    key_files = _topology_key_files(run_dir, manifest)
    found: list[str] = []
    for root, dirs, files in os.walk(run_dir, followlinks=False):
        dirs.sort()
        for d in [d for d in dirs if (Path(root) / d).is_symlink()]:
            col.left_out.append(LeftOut(str((Path(root) / d).relative_to(run_dir)) + "/", "a symlink: not followed"))
        found += [str((Path(root) / f).relative_to(run_dir)) for f in files]
    texts: list[tuple[str, str]] = []
    for rel in sorted(found, key=lambda r: _order(r, list(capture_points))):
        path = run_dir / rel
        name = f"run/{rel}"
        if path.resolve() in key_files:
            col.left_out.append(LeftOut(rel, "key file named by the topology"))
            continue
        data, why = _read_regular(path)
        if data is None:
            col.left_out.append(LeftOut(rel, why))
            continue
        is_capture = rel in capture_points or path.suffix in CAPTURE_SUFFIXES
        text = None if is_capture else _as_text(data)
        reason = secret_file_reason(path.name, text)
        if reason:
            col.left_out.append(LeftOut(rel, reason))
        elif is_capture:
            clean, removed = strip_pcapng_secrets(data)
            if removed:
                col.redactions.append(Redaction(name, "pcapng decryption secrets block", removed))
            col.binary(name, clean, _about(rel, capture_points))
        elif text is not None:
            texts.append((name, col.text(name, text, _about(rel, capture_points))))
        elif path.suffix in SAFE_BINARY_SUFFIXES:
            col.binary(name, data, "figure")
        else:
            col.left_out.append(LeftOut(rel, "binary file that is not a capture: cannot be checked for secrets"))
    return texts


def _read_regular(path: Path) -> tuple[bytes | None, str]:
    """A regular file's bytes (no symlink, FIFO or device; bounded), or None and why not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        return None, "a symlink: not followed" if path.is_symlink() else f"unreadable ({e.strerror})"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > FILE_LIMIT:
            return None, f"larger than {FILE_LIMIT // (1024 * 1024)} MiB"
        return f.read(FILE_LIMIT + 1), ""


def _as_text(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _lab_members(lab: LabInfo, col: _Collector) -> None:
    if lab.status is not None:
        from tracer.errors import EXIT_ENVIRONMENT
        from tracer.jsondoc import document, dumps

        doc = document("lab status", exit_code=0 if lab.status.get("up") else EXIT_ENVIRONMENT, lab=lab.status)
        col.text("lab/status.json", dumps(doc) + "\n",
                 f"tracer lab status --json --name {lab.name}: IKE/CHILD SAs (swanctl --list-sas), routes, fault")
    for name, text in lab.logs.items():
        col.text(f"lab/{name}", text, f"{name.split('/')[0]}: charon's log (levels 1-2, not its key log)")


_LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d) ")


def log_window(text: str, start: datetime, seconds: float, margin: float = 5.0) -> list[str]:
    """Lines of a charon log (``HH:MM:SS`` local time, no date) from ``start - margin`` to
    ``start + seconds + margin``; lines without a time belong to the line before."""
    local = start.astimezone()
    lo = local - timedelta(seconds=margin)
    hi = local + timedelta(seconds=seconds + margin)
    day = timedelta(days=1)
    out: list[str] = []
    keep = False
    for line in text.splitlines():
        if m := _LOG_TIME.match(line):
            t = local.replace(hour=int(m[1]), minute=int(m[2]), second=int(m[3]), microsecond=0)
            # The nearest day to the run (a run across midnight).
            t = min((t - day, t, t + day), key=lambda c: abs((c - local).total_seconds()))
            keep = lo.replace(microsecond=0) <= t <= hi
        if keep:
            out.append(line)
    return out


def _lab_window(lab: LabInfo, manifest: dict[str, Any]) -> dict[str, list[str]]:
    try:
        start = datetime.fromisoformat(str(manifest["started"]))
        seconds = float(manifest.get("record_s") or 0.0)
    except (KeyError, ValueError, TypeError):
        return {}
    return {name: redact_text("\n".join(log_window(text, start, seconds)))[0].splitlines()
            for name, text in lab.logs.items() if name.endswith("charon.log")}


# --- SUMMARY.txt ----------------------------------------------------------------------------------------


def tool_versions() -> list[tuple[str, str]]:
    """(tool, version line) of everything a trace depends on; "not installed" when missing."""
    from tracer import __version__

    charon = shutil.which("charon") or ("/usr/lib/ipsec/charon" if os.access("/usr/lib/ipsec/charon", os.X_OK) else None)
    out = [("tracer", __version__), ("python", sys.version.split()[0]), ("kernel", platform.release())]
    out.append(("tcpdump", _version(["tcpdump", "--version"], 2)))
    out.append(("tshark", _version(["tshark", "--version"], 1)))
    swan = _version([charon, "--version"], 1) if charon else "not installed"
    if swan.startswith(("not installed", "unknown")):
        # swanctl --version asks a daemon first and says which strongSwan on a line of its own.
        out.append(("swanctl", _version(["swanctl", "--version"], 1, "strongSwan")))
    else:
        out.append(("charon", swan))
    out.append(("ip", _version(["ip", "-V"], 1)))
    return out


def _version(argv: list[str], lines: int, must: str | None = None) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({type(e).__name__})"
    text = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if must:
        text = [ln for ln in text if must in ln]
    return " / ".join(text[:lines]) or f"unknown (exit {proc.returncode}, no output)"


def _section(title: str) -> list[str]:
    return ["", f"== {title} " + "=" * max(3, 66 - len(title))]


def _shown(text: str) -> list[str]:
    lines = text.rstrip("\n").splitlines()
    more = len(lines) - SHOWN_LINES
    return ["  " + ln for ln in lines[:SHOWN_LINES]] + ([f"  … {more} more lines in the file"] if more > 0 else [])


def render_summary(*, run_dir: Path, manifest: dict[str, Any], verdict_text: str, replay: ReplayResult,
                   evidence: list[tuple[str, str]], lab: LabInfo | None, lab_window: dict[str, list[str]],
                   versions: list[tuple[str, str]], redactions: list[Redaction], left_out: list[LeftOut],
                   members: list[Member], folder: str, now: datetime) -> str:
    run = manifest.get("run")
    what = " ".join(str(x) for x in (
        f"run {run:#010x}" if isinstance(run, int) else None, manifest.get("kind"),
        f"{manifest.get('src')} → {manifest.get('dst')}" if manifest.get("src") else None,
        f"started {manifest['started']}" if manifest.get("started") else None) if x)
    out = [
        "tracer problem report",
        f"run directory: {run_dir.resolve()}" + (f" ({what})" if what else ""),
        f"made {now.isoformat(timespec='seconds')} by tracer {versions[0][1] if versions else '?'}",
        f"to replay it: tar xzf BUNDLE && tracer replay {folder}/run",
    ]
    out += _section(f"verdict (tracer replay RUN_DIR, exit {replay.exit_code})")
    out += verdict_text.rstrip("\n").splitlines()
    out += _section("evidence and check results")
    if evidence:
        for name, text in evidence:
            out += [f"-- {name}", *_shown(text)]
    else:
        out.append("none: the run directory has no evidence/ and no check.json")
    out += _section("IPsec daemons (lab)")
    out += _render_lab(lab, lab_window)
    out += _section("tool versions")
    width = max((len(t) for t, _ in versions), default=0)
    out += [f"{t:<{width}}  {v}" for t, v in versions]
    out += _section("secrets")
    if redactions:
        out.append(f"secrets found in the copied files were replaced by {REDACTED} (pcapng secrets blocks removed):")
        out += [f"redacted: {r.file}: {r.count} × {r.what}" for r in redactions]
    else:
        out.append("redacted: nothing (no pre-shared key, private key, ESP key or hex key found in the copied texts)")
    out += [f"left out: {x.file}: {x.why}" for x in left_out]
    out.append("never copied: charon's key log (keys.log), esp_sa files, the key files the topology names "
               "(esp_keys, ssh_key), SSH identities, private keys")
    out += _section("index")
    out.append(f"{folder}/")
    names = [SUMMARY, *(m.name for m in members)]
    abouts = {SUMMARY: "this file", **{m.name: m.about for m in members}}
    sizes = {m.name: len(m.data) for m in members}
    width = max(len(n) for n in names)
    for n in names:
        size = f"{sizes[n]:>9}" if n in sizes else " " * 9
        out.append(f"  {n:<{width}}  {size}  {abouts[n]}")
    return "\n".join(out) + "\n"


def _render_lab(lab: LabInfo | None, window: dict[str, list[str]]) -> list[str]:
    if lab is None:
        return ["the run's topology is not one of tracer's labs: no daemon status collected "
                "(per-node addresses, routes and rules are in run/netstate/)"]
    out = [f"lab '{lab.name}' is {'up' if lab.up else 'NOT up'}" + (" (status in lab/status.json)" if lab.status else "")]
    out += [f"  {n}" for n in lab.notes]
    st = lab.status or {}
    for gw, g in (st.get("gateways") or {}).items():
        charon = (st.get("charon") or {}).get(gw, {})
        alive = "charon running" if charon.get("alive") else "charon NOT running"
        sas = g.get("ike_sas") or []
        out.append(f"  {gw}: {alive}" + ("; no IKE_SA" if not sas else "") + (f" ({g['error']})" if "error" in g else ""))
        for sa in sas:
            children = ", ".join(f"CHILD_SA {c.get('name')} {c.get('state')} in {c.get('spi_in')} out {c.get('spi_out')} "
                                 f"packets in {c.get('packets_in')} out {c.get('packets_out')}"
                                 for c in sa.get("child_sas", [])) or "no CHILD_SA"
            out.append(f"    IKE_SA {sa.get('state')} {sa.get('local')} <-> {sa.get('remote')}; {children}")
    if st.get("fault"):
        out.append(f"  active fault: {st['fault']}")
    for name, lines in window.items():
        out.append(f"-- lab/{name}: lines during the run (±5 s)")
        out += ["  " + ln for ln in lines[-SHOWN_LINES:]] or ["  (none)"]
    return out


# --- writing ----------------------------------------------------------------------------------------------


def write_archive(bundle: Bundle, fileobj: BinaryIO, mtime: float | None = None) -> None:
    """The bundle as .tar.gz into ``fileobj``: SUMMARY.txt first, members owner-only."""
    when = int(mtime if mtime is not None else time.time())
    with gzip.GzipFile(fileobj=fileobj, mode="wb", mtime=when) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        dirs: set[str] = set()
        for m in bundle.members:
            parts = m.name.split("/")[:-1]
            for i in range(len(parts) + 1):
                d = "/".join([bundle.folder, *parts[:i]])
                if d not in dirs:
                    dirs.add(d)
                    tar.addfile(_info(d, 0, when, tarfile.DIRTYPE, 0o700))
            tar.addfile(_info(f"{bundle.folder}/{m.name}", len(m.data), when, tarfile.REGTYPE, 0o600), io.BytesIO(m.data))


def _info(name: str, size: int, mtime: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type, info.mode = size, mtime, kind, mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def check_output(path: Path, force: bool) -> None:
    """Refuse an output path before any work: an existing file without ``force``, a directory,
    a folder that does not exist."""
    if path.is_dir():
        raise BadInput(f"{path}: is a directory; give the bundle's file name (e.g. -o bundle.tar.gz)")
    if (path.exists() or path.is_symlink()) and not force:
        raise BadInput(f"{path}: exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise BadInput(f"{path.parent}: no such directory for the bundle")


def save(bundle: Bundle, path: Path, force: bool = False) -> Path:
    """Write the bundle to ``path``, mode 0600, atomically: a temporary file in the same folder,
    then renamed into place (without ``force``, linked, so an existing file is never replaced)."""
    check_output(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            write_archive(bundle, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name exists meanwhile: never overwrites
            except FileExistsError:
                raise BadInput(f"{path}: exists; pass --force to overwrite it") from None
            except OSError:  # a filesystem without hard links: check, then rename
                if path.exists():
                    raise BadInput(f"{path}: exists; pass --force to overwrite it") from None
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path

