"""Where a probe vanished, in Wireshark's words: the packet of each lost (or undecided)
group of probes at the last capture point that saw it, found in its capture file, for
:func:`tracer.wireshark.dissect` to show field by field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracer.analysis.correlate import probe_rows
from tracer.columns import is_columns, kept_note
from tracer.model.direction import Direction
from tracer.model.observations import Observations, PacketClass
from tracer.model.verdict import Outcome, Verdict
from tracer.probes import probe_type


@dataclass(frozen=True)
class LastPacket:
    """A probe's packet at the last point that saw it: which file, which frame (1-based)."""

    point: str
    direction: Direction
    seq: int
    file: str
    frame: int
    what: str  # "the probe" or "its ESP carrier (SPI 0x…, seq N)"


def last_packets(obs: Observations, v: Verdict) -> list[LastPacket]:
    """One packet per finding that did not deliver: its first probe at the finding's last_seen point."""
    out = []
    kind = probe_type(v.kind).code
    for f in v.findings:
        if f.outcome == Outcome.DELIVERED or f.last_seen is None or not f.seqs:
            continue
        seq = f.seqs[0]
        trace = v.probes.trace(f.direction, seq)
        assert trace is not None  # (a finding's probes are traced)
        hop = v.paths[f.direction].index(f.last_seen)
        pidx = obs.point_index(f.last_seen)
        at = obs["point"] == pidx
        if trace.esp[hop] is not None:
            spi, esp_seq = trace.esp[hop]
            rows = at & (obs["cls"] == PacketClass.ESP) & (obs["spi"] == spi) & (obs["esp_seq"] == esp_seq)
            what = f"its ESP carrier (SPI 0x{spi:08x}, seq {esp_seq})"
        else:
            rows = at & probe_rows(obs, v.run, kind, Direction(f.direction)) & (obs["tag_seq"] == seq)
            what = "the probe"
        hits = np.flatnonzero(rows)
        if not len(hits):
            continue
        i = int(hits[np.argmin(obs["ts_ns"][hits])])
        fidx = int(obs["file"][i])
        out.append(LastPacket(f.last_seen, Direction(f.direction), seq, obs.sources[fidx], int(obs["rec"][i]) + 1, what))
    return out


def dissect_lost(obs: Observations, v: Verdict, esp_keys: Path | None = None,
                 kept_at: dict[str, str] | None = None) -> list[str]:
    """Text blocks: a heading per lost group, then Wireshark's dissection of its last packet.
    ``kept_at``: columns file → host:path of its capture (extracted on its host: no packet
    bytes here, so a line saying where to fetch it instead)."""
    from tracer.wireshark import dissect

    sas = []
    if esp_keys is not None:
        from tracer.esp import read_esp_sa_file

        sas = read_esp_sa_file(esp_keys)
    blocks = []
    for p in last_packets(obs, v):
        if is_columns(p.file):
            blocks.append(f"{p.direction} seq {p.seq}: {p.what} at {p.point}, the last point that saw it: "
                          f"{kept_note((kept_at or {}).get(p.file))}; fetch it to dissect")
            continue
        text = dissect(p.file, [p.frame], sas).get(p.frame, "(tshark did not return this frame)")
        blocks.append(f"{p.direction} seq {p.seq}: {p.what} at {p.point}, the last point that saw it "
                      f"(frame {p.frame} of {Path(p.file).name}), as Wireshark dissects it:\n{text}")
    return blocks
