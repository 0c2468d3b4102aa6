"""Run directories: one capture file per capture point, ``manifest.json`` and ``probes.json``.

Written by live traces, read by replay. The manifest says what the run was (run id,
probe kind, source, destination, count), which file belongs to which capture point,
and how many packets each sniffer's kernel dropped; the probe report
(:class:`tracer.model.probe.ProbeReport`) says what the prober sent and heard back.
Older manifests carried the report as an untyped ``probe`` block; it is still read.
``netstate`` (optional) names the folder of live network state snapshots, one
``<node>.json`` (:class:`tracer.model.netstate.NodeState`) per node read when the run
started; ``netstate_unread`` says why a node could not be read. Manifests without them
(older runs, capture files) simply have no live state to compare the topology with.
``evidence`` (optional) names the folder of evidence snapshots
(:class:`tracer.model.evidence.Snapshot`, one ``<phase>.<source>.<node>.json`` each, owner-only);
a node a source could not read has a snapshot saying why. Older manifests have none.
Recorded scenarios in ``captures/`` are run directories with an ``expected`` block.

Interrupted runs: ``count`` is the number of probes that really left (seq 1..count; 0..count-1
in runs recorded before probes were numbered like ping's),
``planned`` what the run meant to send and ``interrupted: true`` (both only written then);
``probes.jsonl`` is the prober's journal, a line per probe as it left, which is all a run
killed outright (no manifest) has to say. Every number read back is checked (type, range,
and against the probe report) before anything is sized by it: a bad one is a one-line
BadInput, not an allocation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracer.errors import BadInput
from tracer.model.evidence import Evidence, Snapshot
from tracer.model.probe import ProbeReport
from tracer.probes import probe_type
from tracer.textfile import LIMIT, read_text, write_private

if TYPE_CHECKING:
    from tracer.model.netstate import NodeState

MANIFEST = "manifest.json"
FORMAT = "tracer-run/1"
PROBE_REPORT = "probes.json"
RUN_PCAPNG = "run.pcapng"  # every point merged, time-ordered, commented (tracer.run.merged)
PROBE_JOURNAL = "probes.jsonl"  # a line per probe as it leaves (tracer.send.pacer.journal_to)
MAX_PROBES = 1_000_000  # per run; the live commands send at most 100,000
# probes.json holds one object per probe (~140 bytes indented, several hundred with an IKE answer):
# its bound grows with the probes the manifest counts, so a 100,000-probe run tracer wrote is read
# while a 3-probe run's huge probes.json is still refused before json parses it.
REPORT_BYTES_PER_PROBE = 1024
MAX_RUN = 0xFFFFFFFF  # run ids are 32 bits (the probe tag)
MAX_DROPS = 1 << 62
MAX_SECONDS = 10**7  # a run's length, in seconds, read back (ended_early.by_s)
EVIDENCE = "evidence"  # folder of evidence snapshots, one <phase>.<source>.<node>.json each
NETSTATE = "netstate"  # folder of live network state snapshots, one <node>.json each


@dataclass
class CaptureEntry:
    """One capture file of a run directory's manifest."""

    point: str | None  # None: take the names inside the pcapng
    file: str  # relative to the run directory
    drops: int | None = None  # sniffer kernel drops; None: unknown
    backend: str | None = None  # sniffer that recorded it ("tcpdump", "ssh"); None: not said
    remote: bool = False  # captured on another host: its clock may be offset from ours
    ended_early: EarlyEnd | None = None  # the sniffer ended before tracer stopped it: capture incomplete
    kept_at: str | None = None  # host:path where the capture stayed (extracted there: ``file`` holds its columns)


@dataclass(frozen=True)
class EarlyEnd:
    """A sniffer that ended before tracer asked it to stop (killed from outside, crashed)."""

    how: str  # "killed by signal 15 (SIGTERM)", "exited with status 1"
    by_s: float  # it had ended by this many seconds after the run started (found when stopping)

    def note(self, point: str, backend: str | None) -> str:
        who = {"ssh": "tcpdump over ssh", None: "sniffer"}.get(backend, backend)
        return f"{who} on {point} ended early (by +{self.by_s:g} s): {self.how}; the capture tracer has of it is incomplete"


@dataclass
class Manifest:
    """A run directory's manifest.json: what was sent and which captures hold it."""

    run: int | None = None
    kind: int | None = None  # tag kind code (tracer.probes)
    src: IPv4Address | None = None
    dst: IPv4Address | None = None
    origin: str | None = None
    count: int | None = None  # probes that left (seq 0..count-1); None: unknown
    planned: int | None = None  # what an interrupted run meant to send (written only then)
    interrupted: bool = False  # cut short by Ctrl-C/SIGTERM: count is what left before
    topology: str | None = "topology.toml"
    captures: list[CaptureEntry] = field(default_factory=list)
    report: str | None = None  # the probe report's file (probes.json); None: none, or an old manifest's block
    netstate: str | None = None  # folder of live state snapshots (netstate/); None: not taken
    netstate_unread: dict[str, str] = field(default_factory=dict)  # node -> why its state could not be read
    evidence: str | None = None  # folder of evidence snapshots (evidence/); None: not taken
    extra: dict[str, Any] = field(default_factory=dict)  # anything else: expected verdict, timings

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "run": self.run,
            "kind": probe_type(self.kind).name if self.kind else None,
            "src": str(self.src) if self.src else None,
            "dst": str(self.dst) if self.dst else None,
            "origin": self.origin,
            "count": self.count,
            **({"planned": self.planned} if self.planned is not None else {}),
            **({"interrupted": True} if self.interrupted else {}),
            "topology": self.topology,
            "captures": [_capture_dict(c) for c in self.captures],
            **({"report": self.report} if self.report else {}),
            **({"netstate": self.netstate} if self.netstate else {}),
            **({"netstate_unread": dict(self.netstate_unread)} if self.netstate_unread else {}),
            **({"evidence": self.evidence} if self.evidence else {}),
            **self.extra,
        }


def _capture_dict(c: CaptureEntry) -> dict[str, Any]:
    d: dict[str, Any] = {"point": c.point, "file": c.file, "drops": c.drops}
    if c.backend is not None:
        d["backend"] = c.backend
    if c.remote:  # only when true: manifests of local runs stay as they were
        d["remote"] = True
    if c.ended_early is not None:
        d["ended_early"] = {"how": c.ended_early.how, "by_s": c.ended_early.by_s}
    if c.kept_at is not None:
        d["kept_at"] = c.kept_at
    return d


def write_manifest(run_dir: Path, manifest: Manifest) -> Path:
    return _write_json(run_dir / MANIFEST, manifest.to_dict())


def write_probe_report(run_dir: Path, report: ProbeReport) -> Path:
    return _write_json(run_dir / PROBE_REPORT, report.to_dict())


def _write_json(path: Path, doc: dict[str, Any]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)  # atomic: an interrupted run never leaves half a file
    return path


def read_probe_report(run_dir: Path, m: Manifest) -> ProbeReport | None:
    """What the prober sent: the report file, else an old manifest's ``probe`` block; None if neither."""
    if m.report is not None:
        path = run_dir / m.report
        try:
            limit = LIMIT + REPORT_BYTES_PER_PROBE * max(m.count or 0, m.planned or 0)
            report = ProbeReport.from_dict(json.loads(read_text(path, "probe report", limit)))
        except FileNotFoundError:
            raise BadInput(f"{path}: the manifest names this probe report, but it is missing") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadInput(f"{path}: malformed probe report ({type(e).__name__}: {e})") from None
        return check_report(path, m, report)
    legacy = m.extra.get("probe")
    if isinstance(legacy, dict) and m.kind is not None:
        try:
            report = ProbeReport.from_legacy(probe_type(m.kind).name, m.count, legacy)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadInput(f"{run_dir / MANIFEST}: malformed probe block ({type(e).__name__}: {e})") from None
        return check_report(run_dir / MANIFEST, m, report)
    return None


def read_manifest(run_dir: Path) -> Manifest:
    path = run_dir / MANIFEST
    try:
        data = json.loads(read_text(path, "manifest"))
    except FileNotFoundError:
        raise BadInput(f"{run_dir}: not a run directory (no {MANIFEST}); pass capture files and --topology instead") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"{path}: not a tracer manifest (expected \"format\": \"{FORMAT}\")")
    known = {"format", "run", "kind", "src", "dst", "origin", "count", "planned", "interrupted", "topology", "captures",
             "report", "netstate", "netstate_unread", "evidence"}
    try:
        captures = data.get("captures", [])
        if not isinstance(captures, list) or not all(isinstance(c, dict) for c in captures):
            raise TypeError("captures: expected a list of objects")
        caps = [CaptureEntry(_opt_str(c.get("point"), "point"), _file_name(c["file"]),
                             _number(c.get("drops"), "drops", MAX_DROPS), _opt_str(c.get("backend"), "backend"),
                             c.get("remote") is True, _early_end(c.get("ended_early")),
                             _opt_str(c.get("kept_at"), "kept_at"))
                for c in captures]
        kind = probe_type(str(data["kind"])).code if data.get("kind") else None
        m = Manifest(
            run=_number(data.get("run"), "run", MAX_RUN),
            kind=kind,
            src=IPv4Address(data["src"]) if data.get("src") else None,
            dst=IPv4Address(data["dst"]) if data.get("dst") else None,
            origin=_opt_str(data.get("origin"), "origin"),
            count=_number(data.get("count"), "count", MAX_PROBES),
            planned=_number(data.get("planned"), "planned", MAX_PROBES),
            interrupted=data.get("interrupted") is True,
            topology=_file_name(data["topology"]) if data.get("topology") else None,
            captures=caps,
            report=_file_name(data["report"]) if data.get("report") else None,
            netstate=str(data["netstate"]) if data.get("netstate") else None,
            netstate_unread={str(k): str(v) for k, v in (data.get("netstate_unread") or {}).items()},
            evidence=str(data["evidence"]) if data.get("evidence") else None,
            extra={k: v for k, v in data.items() if k not in known},
        )
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise BadInput(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None
    if m.planned is not None and m.count is not None and m.count > m.planned:
        raise BadInput(f"{path}: malformed manifest (count {m.count} is more than the {m.planned} planned)")
    for c in m.captures:
        if not (run_dir / c.file).is_file():
            raise BadInput(f"{path}: capture file '{c.file}' for {c.point or 'a capture point'} is missing")
    return m


def _number(v: Any, what: str, most: int) -> int | None:
    """A JSON integer in 0..most (None stays None): never a float, a string or a bool."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} {v!r}: expected an integer")
    if not 0 <= v <= most:
        raise ValueError(f"{what} {v}: expected 0 to {most}")
    return v


def _early_end(v: Any) -> EarlyEnd | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise TypeError(f"ended_early {v!r}: expected an object")
    by_s = v.get("by_s")
    if isinstance(by_s, bool) or not isinstance(by_s, int | float) or not 0 <= by_s <= MAX_SECONDS:
        raise ValueError(f"ended_early.by_s {by_s!r}: expected seconds, 0 to {MAX_SECONDS}")
    how = _opt_str(v.get("how"), "ended_early.how")
    return EarlyEnd(how or "ended early", float(by_s))


def _opt_str(v: Any, what: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{what} {v!r}: expected a string")
    return v


def _file_name(v: Any) -> str:
    """A file (capture, topology, probe report) named relative to the run directory, never outside
    it: a manifest must not make replay read elsewhere. (The netstate and evidence folders are
    checked where they are read, costing only their comparison: ``read_netstate``.)"""
    if not isinstance(v, str) or not v:
        raise TypeError(f"file {v!r}: expected a file name")
    parts = Path(v).parts
    if Path(v).is_absolute() or ".." in parts or "\0" in v:
        raise ValueError(f"file {v!r}: must name a file inside the run directory")
    return v


def check_report(path: Path, m: Manifest, report: ProbeReport) -> ProbeReport:
    """The probe report against itself and the manifest: what it says was sent fits what was
    planned, seqs are distinct and in range, sizes are packet sizes. BadInput otherwise."""
    if not 0 <= report.planned <= MAX_PROBES:
        raise BadInput(f"{path}: malformed probe report (planned {report.planned}: expected 0 to {MAX_PROBES})")
    if len(report.sent) > report.planned:
        raise BadInput(f"{path}: malformed probe report ({len(report.sent)} probes sent of {report.planned} planned)")
    seqs = [s.seq for s in report.sent]
    # Live runs number probes 1..planned like ping; runs recorded before that, 0..planned-1.
    if len(set(seqs)) != len(seqs) or any(not 0 <= q <= report.planned for q in seqs):
        raise BadInput(f"{path}: malformed probe report (seqs must be distinct, 0 to {report.planned})")
    if any(s.size is not None and not 0 <= s.size <= 0xFFFF for s in report.sent):
        raise BadInput(f"{path}: malformed probe report (a size outside 0 to 65535)")
    if m.count is not None and m.count not in (len(report.sent), report.planned):
        raise BadInput(f"{path.parent / MANIFEST}: count {m.count} disagrees with {path.name} "
                       f"({len(report.sent)} sent of {report.planned} planned)")
    return report


def write_evidence(run_dir: Path, snaps: Iterable[Snapshot]) -> str:
    """``run_dir/evidence/<phase>.<source>.<node>.json`` per snapshot, owner-only; the folder's name."""
    folder = run_dir / EVIDENCE
    folder.mkdir(mode=0o700, exist_ok=True)
    for snap in snaps:
        name = f"{snap.phase}.{snap.source}.{snap.node}.json".replace("/", "_")
        _write_private(folder / name, snap.to_dict())
    return EVIDENCE


def read_evidence(run_dir: Path, m: Manifest) -> tuple[Evidence, list[str]]:
    """The snapshots of the manifest's evidence folder, and a note for each unreadable file."""
    if m.evidence is None:
        return Evidence(), []
    if Path(m.evidence).name != m.evidence or m.evidence in (".", ".."):
        return Evidence(), [f"{run_dir / MANIFEST}: evidence '{m.evidence}' is not a folder name; evidence not read"]
    folder = run_dir / m.evidence
    snaps: list[Snapshot] = []
    notes: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            snaps.append(Snapshot.from_dict(json.loads(read_text(path, "evidence snapshot"))))
        except (BadInput, ValueError, KeyError, TypeError, AttributeError) as e:
            notes.append(f"{path}: unreadable evidence snapshot ({type(e).__name__}: {e}); left out")
    return Evidence.of(snaps), notes


def _write_private(path: Path, doc: dict[str, Any]) -> None:
    write_private(path, indented(doc))


def indented(doc: dict[str, Any]) -> str:
    """``doc`` as indented JSON text. orjson (20× json's indented encoder: a live trace writes
    ~60 snapshots after its last probe); json for what orjson refuses (an integer past 64 bits)."""
    import orjson  # here: a replay, which only reads, does not pay for its import

    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    except orjson.JSONEncodeError:
        return json.dumps(doc, indent=2) + "\n"


def write_netstate(run_dir: Path, states: dict[str, NodeState]) -> str:
    """``run_dir/netstate/<node>.json`` per state, owner-only like the captures; the folder's name."""
    folder = run_dir / NETSTATE
    folder.mkdir(mode=0o700, exist_ok=True)
    for name, state in states.items():  # node names are safe file names (checked by the topology parser)
        _write_private(folder / f"{name}.json", state.to_dict())
    return NETSTATE


def read_netstate(run_dir: Path, m: Manifest, nodes: Iterable[str]) -> tuple[dict[str, NodeState], list[str]]:
    """The live states the manifest's netstate folder holds for ``nodes`` (the topology's), and a
    note for each one that is unreadable or was never read. Live state is evidence beside the
    captures: a broken snapshot costs its comparison, not the verdict."""
    notes = [f"{node}: live state not read ({why}); not compared with the topology"
             for node, why in m.netstate_unread.items()]
    if m.netstate is None:
        return {}, notes
    if Path(m.netstate).name != m.netstate or m.netstate in (".", ".."):
        return {}, [*notes, f"{run_dir / MANIFEST}: netstate '{m.netstate}' is not a folder name; live state not read"]
    from tracer.model.netstate import NodeState  # only for runs that recorded live state

    states: dict[str, NodeState] = {}
    for node in nodes:
        path = run_dir / m.netstate / f"{node}.json"
        try:
            state = NodeState.from_dict(json.loads(read_text(path, "live network state")))
        except FileNotFoundError:
            continue  # not on the paths, or not read (then netstate_unread says why)
        except (BadInput, ValueError) as e:
            notes.append(f"{path}: {e}; not compared with the topology")
            continue
        if state.node != node:
            notes.append(f"{path}: holds the state of '{state.node}', not '{node}'; not compared with the topology")
            continue
        states[node] = state
    return states, notes
