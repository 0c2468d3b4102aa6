"""Human output: a verdict a person scans in seconds (tcpdump-like columns)."""

from __future__ import annotations

from tracer.analysis.hopstats import PathStats, all_path_stats, median
from tracer.model.direction import Direction
from tracer.model.verdict import Outcome, Verdict
from tracer.probes import probe_type


def render_text(v: Verdict) -> str:
    req = v.paths[Direction.REQUEST]
    lines = [
        f"tracer {v.kind}: {req.hops[0].node if req.hops else '?'} ({req.src}) → "
        f"{req.dst_node or '?'} ({req.dst})  " + (f"flow: {v.flow}" if v.flow else f"run {v.run:#010x}"),
        f"{v.status.word:<5} {v.summary}",
    ]
    if v.mtu:
        lines.extend(_render_mtu(v))
    paired = probe_type(v.kind).paired
    for stats in all_path_stats(v).values():
        lines.append("")
        lines.extend(_render_path(stats, v.drops, paired))
    lines.extend(_render_observed(v))
    lines.extend(v.explanations())
    return "\n".join(lines)


def _render_observed(v: Verdict) -> list[str]:
    """Where the probes that left the expected path really went: one line per finding (its first probe)."""
    out = []
    for f in v.findings:
        if not f.divergence or not f.seqs:
            continue
        op = next((o for o in v.observed if o.direction == f.direction and o.seq == f.seqs[0]), None)
        if op is None:
            continue
        end = {Outcome.LOST: "  ✗", Outcome.INCONCLUSIVE: "  ?"}.get(f.outcome, "")
        loop = f" (×{op.loop.count} at {op.loop.point})" if op.loop else ""
        out.append(f"observed path ({f.direction} seq {op.seq}, {f.count} alike): {op.path_text()}{loop}{end}")
    return ([""] if out else []) + out


def _render_path(stats: PathStats, drops: dict[str, int], paired: bool = True) -> list[str]:
    path = stats.path
    head = f"{stats.direction} path ({len(path.hops)} capture points)"
    if not path.delivered:
        head += f"  [topology: {path.end_note}]"
    if not path.hops:
        return [head, f"  no capture point: the packet has nowhere to go ({path.end_note})"]
    if not stats.sent:
        return [head, "  not sent: no request arrived" if paired else "  none seen in any capture"]
    out = [head, f"  {'capture point':<26}{'seen':>6}  {'gap':>4}  {'+ms':>8}  note"]
    elapsed = stats.elapsed_ms()
    for h, (hop, s) in enumerate(zip(path.hops, stats.points, strict=True)):
        med = median(elapsed[h])
        delay = f"{med:8.3f}" if med is not None and h else " " * 8
        notes = []
        if s.unobserved:
            notes.append("not captured")
        if s.unreliable:
            notes.append(f"sniffer dropped {drops[hop.point]} packets" if hop.point in drops else "capture file damaged")
        if s.unknown:
            notes.append("ESP not tied to probe")
        if s.leaked:
            notes.append(f"{s.leaked} seen in the clear (a leak)")
        if s.elsewhere:
            notes.append(f"{s.elsewhere} went elsewhere")
        if hop.esp is not None:
            spi = ", ".join(f"SPI 0x{x:08x}" for x in s.spis)
            notes.append(f"ESP{'-in-UDP' if hop.esp.udp else ''} {spi}".rstrip())
        cnt = f"{s.seen}/{s.sent}" if not s.unobserved else "-"
        out.append(f"  {hop.point:<26}{cnt:>6}  {s.gap or '':>4}  {delay}  {'; '.join(notes)}")
        if h < len(path.edges):
            mark = "  ✗ lost here" if stats.lost[h] else ""
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
