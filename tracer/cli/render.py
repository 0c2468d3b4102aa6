"""Human output: a verdict a person scans in seconds (tcpdump-like columns)."""

from __future__ import annotations

import statistics

from tracer.model.path import ExpectedPath
from tracer.model.verdict import Outcome, ProbeTrace, Sighting, Verdict


def render_text(v: Verdict) -> str:
    req = v.paths["request"]
    lines = [
        f"tracer {v.kind}: {req.hops[0].node if req.hops else '?'} ({req.src}) → "
        f"{req.hops[-1].node if req.hops else '?'} ({req.dst})  run {v.run:#010x}",
        f"{v.status.word:<5} {v.summary}",
    ]
    if v.mtu:
        lines.extend(_render_mtu(v))
    for direction, path in v.paths.items():
        traces = [t for t in v.probes if t.direction == direction]
        lines.append("")
        lines.extend(_render_path(direction, path, traces, v))
    lines.extend(v.explanations())
    return "\n".join(lines)


def _render_path(direction: str, path: ExpectedPath, traces: list[ProbeTrace], v: Verdict) -> list[str]:
    sent = [t for t in traces if t.outcome != Outcome.NOT_SENT]
    head = f"{direction} path ({len(path.hops)} capture points)"
    if not path.delivered:
        head += f"  [topology: {path.end_note}]"
    if not sent:
        return [head, "  not sent: no request arrived"]
    lost_edges = {t.last_seen for t in sent if t.outcome == Outcome.LOST and t.first_missed == (t.last_seen or 0) + 1}
    out = [head, f"  {'capture point':<26}{'seen':>6}  {'gap':>4}  {'+ms':>8}  note"]
    t0 = [t.times_ns[0] for t in sent]
    for h, hop in enumerate(path.hops):
        seen = sum(t.sightings[h] == Sighting.SEEN for t in sent)
        gaps = sum(t.sightings[h] == Sighting.GAP for t in sent)
        delays = [
            (t.times_ns[h] - base) / 1e6
            for t, base in zip(sent, t0, strict=True)
            if t.times_ns[h] is not None and base is not None
        ]
        delay = f"{statistics.median(delays):8.3f}" if delays and h else " " * 8
        notes = []
        states = {t.sightings[h] for t in sent}
        if Sighting.UNOBSERVED in states:
            notes.append("not captured")
        if Sighting.UNRELIABLE in states:
            notes.append(f"sniffer dropped {v.drops.get(hop.point, '?')} packets")
        if Sighting.UNKNOWN in states:
            notes.append("ESP not tied to probe")
        if hop.esp is not None:
            spis = {t.esp[h][0] for t in sent if t.esp[h] is not None}
            spi = ", ".join(f"SPI 0x{s:08x}" for s in sorted(spis)) or (f"SPI 0x{hop.esp.spi:08x}" if hop.esp.spi else "")
            notes.append(f"ESP{'-in-UDP' if hop.esp.udp else ''} {spi}".rstrip())
        cnt = f"{seen}/{len(sent)}" if Sighting.UNOBSERVED not in states else "-"
        out.append(f"  {hop.point:<26}{cnt:>6}  {gaps or '':>4}  {delay}  {'; '.join(notes)}")
        if h < len(path.edges):
            mark = "  ✗ lost here" if h in lost_edges else ""
            out.append(f"  {'  │ ' + path.edges[h].value:<26}{mark}")
    return out


def _render_mtu(v: Verdict) -> list[str]:
    m = v.mtu
    assert m is not None
    out = ["", f"  {'size':>6}  {'delivered':>9}  where the others went"]
    for r in m.sizes:
        fate = "" if r.delivered == r.sent else (f"refused by the sender: {r.error}" if r.error else f"lost {r.where}")
        out.append(f"  {r.size:>6}  {r.delivered:>4}/{r.sent:<4}  {fate}")
    if m.esp_overhead is not None:
        out.append(f"  the tunnel adds {m.esp_overhead} bytes at {m.encap_point} (outer IP + UDP + ESP + IV + padding + ICV)")
    return out
