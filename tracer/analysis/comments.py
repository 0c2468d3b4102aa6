"""Per-packet comments: what a verdict says about each captured packet, for Wireshark.

Every packet that belongs to a probe of a verdict — the tagged probe in the clear, its ESP
carrier (by the (SPI, ESP seq) the analysis associated), an ICMP error quoting it — gets
one line: kind, run, seq, direction, and that probe's fate, told from this capture point
("last seen here: lost inside router between eth0 and eth1 (forward)"). The merged
``run.pcapng`` carries them as EPB comments (``frame.comment`` in tshark).
"""

from __future__ import annotations

import numpy as np

from tracer.analysis.correlate import probe_rows
from tracer.model.direction import DIRECTIONS, Direction
from tracer.model.observations import Observations, PacketClass
from tracer.model.verdict import Finding, Outcome, ProbeTrace, Verdict
from tracer.probes import probe_type


def packet_comments(obs: Observations, verdicts: list[Verdict]) -> dict[int, str]:
    """Row of ``obs`` → its comment, for the rows that belong to a probe of ``verdicts``."""
    out: dict[int, list[str]] = {}
    esp = np.flatnonzero(obs["cls"] == PacketClass.ESP)  # every verdict's carriers are among these rows
    esp_keys = list(zip(esp.tolist(), zip(obs["spi"][esp].tolist(), obs["esp_seq"][esp].tolist(), strict=True),
                        strict=True))
    for v in verdicts:
        code = probe_type(v.kind).code
        fates = {(f.direction, q): f for f in v.findings for q in f.seqs}
        traces = {(t.direction, t.seq): t for t in v.probes}
        carriers: dict[tuple[int, int], ProbeTrace] = {}
        for t in v.probes:
            carriers.update({e: t for e in t.esp if e is not None})
        for d in DIRECTIONS:
            rows = np.flatnonzero(probe_rows(obs, v.run, code, d))
            for i, q in zip(rows.tolist(), obs["tag_seq"][rows].tolist(), strict=True):
                t = traces.get((d, q))
                if t is not None:
                    out.setdefault(i, []).append(_line(obs, i, v, t, fates.get((d, q)), ""))
        if carriers:
            for i, key in esp_keys:
                t = carriers.get(key)
                if t is not None:
                    out.setdefault(i, []).append(
                        _line(obs, i, v, t, fates.get((t.direction, t.seq)), f" (ESP SPI 0x{key[0]:08x} seq {key[1]})"))
        quoting = (obs["cls"] == PacketClass.ICMP_ERROR) & (obs["tag_run"] == v.run) & (obs["tag_kind"] == code)
        for i in np.flatnonzero(quoting).tolist():
            t = traces.get((Direction.REQUEST, int(obs["tag_seq"][i])))
            if t is not None:
                out.setdefault(i, []).append(f"ICMP error quoting {_name(v, t)}")
    return {i: "; ".join(lines) for i, lines in out.items()}


def _name(v: Verdict, t: ProbeTrace) -> str:
    return f"tracer {v.kind} run 0x{v.run:08x} seq {t.seq} {t.direction}"


def _line(obs: Observations, row: int, v: Verdict, t: ProbeTrace, f: Finding | None, carrier: str) -> str:
    return f"{_name(v, t)}{carrier}: {_fate(obs.points[int(obs['point'][row])], v, t, f)}"


def _fate(point: str, v: Verdict, t: ProbeTrace, f: Finding | None) -> str:
    if t.outcome == Outcome.DELIVERED:
        return "delivered"
    where = f.where if f is not None else "on its path"
    hops = v.paths[t.direction].hops
    last = hops[t.last_seen].point if t.last_seen is not None else None
    what = "lost" if t.outcome == Outcome.LOST else str(t.outcome)
    if point == last:
        return f"last seen here: {what} {where}"
    return f"{what} {where}"
