"""Human output: a verdict a person scans in seconds (tcpdump-like columns)."""

from __future__ import annotations

from collections.abc import Iterable

from tracer.analysis.hopstats import PathStats, all_path_stats
from tracer.model.direction import Direction
from tracer.model.path import ExpectedPath, Hop
from tracer.model.verdict import Outcome, Verdict
from tracer.probes import probe_type


def render_text(v: Verdict) -> str:
    req, rep = v.paths[Direction.REQUEST], v.paths.get(Direction.REPLY)
    src = req.hops[0].node if req.hops else rep.dst_node if rep and rep.dst_node else "?"  # (no request path)
    lines = [
        f"tracer {v.kind}: {src} ({req.src}) → "
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
    head = path_head(stats.direction, path)
    if not path.hops:
        return [head, nowhere(path)]
    if not stats.sent:
        return [head, "  not sent: no request arrived" if paired else "  none seen in any capture"]
    out = [head, f"  {'capture point':<26}{'seen':>6}  {'gap':>4}  {'+ms':>8}  note"]
    for h, (hop, s, med) in enumerate(zip(path.hops, stats.points, stats.elapsed_medians_ms(), strict=True)):
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
            notes.append(esp_note(hop, s.spis))
        cnt = f"{s.seen}/{s.sent}" if not s.unobserved else "-"
        out.append(f"  {hop.point:<26}{cnt:>6}  {s.gap or '':>4}  {delay}  {'; '.join(notes)}")
        if h < len(path.edges):
            out.append(edge_line(path, h, "  ✗ lost here" if stats.lost[h] else ""))
    return out


def render_expected(direction: Direction, path: ExpectedPath) -> list[str]:
    """An expected path alone (``tracer topology path``): the verdict's path table without what was seen."""
    head = path_head(direction, path)
    if not path.hops:
        return [head, nowhere(path)]
    out = [head, f"  {'capture point':<26}note"]
    for h, hop in enumerate(path.hops):
        spis = () if hop.esp is None or hop.esp.spi is None else (hop.esp.spi,)
        note = "" if hop.esp is None else f"{esp_note(hop, spis)}, tunnel {hop.esp.tunnel}"
        out.append(f"  {hop.point:<26}{note}".rstrip())
        if h < len(path.edges):
            out.append(edge_line(path, h))
    return [*out, f"  {path.end_note}"]


def path_head(direction: Direction | str, path: ExpectedPath) -> str:
    head = f"{direction} path ({len(path.hops)} capture points)"
    return head if path.delivered else head + f"  [topology: {path.end_note}]"


def nowhere(path: ExpectedPath) -> str:
    # The topology's word, not the packets': where they were really seen is told below the paths.
    return f"  no capture point: the topology gives the packet nowhere to go ({path.end_note})"


def edge_line(path: ExpectedPath, h: int, mark: str = "") -> str:
    """The line between hops h and h+1: its edge kind, and a mark where probes were lost."""
    return f"  {'  │ ' + path.edges[h].value:<26}{mark}"


def esp_note(hop: Hop, spis: Iterable[int]) -> str:
    assert hop.esp is not None
    spi = ", ".join(f"SPI 0x{x:08x}" for x in spis)
    return f"ESP{'-in-UDP' if hop.esp.udp else ''} {spi}".rstrip()


def _render_mtu(v: Verdict) -> list[str]:
    m = v.mtu
    assert m is not None
    out = ["", f"  {'size':>6}  {'delivered':>9}  where the others went"]
    for r in m.sizes:
        fate = "" if r.delivered == r.sent else (f"refused by the sender: {r.error}" if r.error else
                                                 f"refused: {r.icmp}" if r.icmp else f"lost {r.where}")
        out.append(f"  {r.size:>6}  {r.delivered:>4}/{r.sent:<4}  {fate}")
    return out
