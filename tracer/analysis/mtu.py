"""MTU probes: per size, delivered or where lost; the path MTU bracket, the tunnel's ESP
overhead, and what large probes vanishing where small ones pass means (PMTUD blackhole)."""

from __future__ import annotations

from tracer.model.observations import Observations, PacketClass
from tracer.model.path import ExpectedPath
from tracer.model.probe import ProbeSpec
from tracer.model.verdict import Finding, MtuReport, Outcome, ProbeTrace, SizeResult


def mtu_report(
    obs: Observations, spec: ProbeSpec, path: ExpectedPath, traces: list[ProbeTrace], found: list[Finding]
) -> MtuReport:
    """Per size: delivered or where lost; the largest that passed, the smallest that did not."""
    sizes = spec.sizes or {}
    errors = spec.send_errors or {}
    fate: dict[int, list[bool]] = {}
    for t in traces:
        if t.direction == "request":
            fate.setdefault(t.seq, []).append(t.outcome == Outcome.DELIVERED)
        elif t.outcome not in (Outcome.DELIVERED, Outcome.NOT_SENT):
            fate.setdefault(t.seq, []).append(False)
    where_of = {q: f.where for f in found if f.outcome != Outcome.DELIVERED for q in f.seqs}
    results = []
    for size in sorted(set(sizes.values())):
        seqs = [q for q, sz in sizes.items() if sz == size]
        ok = sum(all(fate.get(q, [False])) for q in seqs)
        lost = [q for q in seqs if not all(fate.get(q, [False]))]
        results.append(SizeResult(size, len(seqs), ok, where_of.get(lost[0]) if lost else None,
                                  next((errors[q] for q in lost if q in errors), None)))
    delivered = [r.size for r in results if r.delivered == r.sent]
    lost_sizes = [r.size for r in results if r.delivered < r.sent and r.size > max(delivered, default=0)]
    overhead, point = _esp_overhead(obs, spec, path, traces)
    return MtuReport(tuple(results), max(delivered, default=None), min(lost_sizes, default=None), overhead, point)


def _esp_overhead(
    obs: Observations, spec: ProbeSpec, path: ExpectedPath, traces: list[ProbeTrace]
) -> tuple[int | None, str | None]:
    """Outer ESP packet length minus the cleartext packet it carries, at the encap point."""
    first = next((i for i, h in enumerate(path.hops) if h.esp is not None), None)
    if not first:
        return None, None
    enc = path.hops[first - 1].point
    for t in traces:
        if t.direction != "request" or t.esp[first] is None:
            continue
        spi, seq = t.esp[first]
        at_esp = (obs["point"] == obs.point_index(path.hops[first].point)) & (obs["spi"] == spi) & (obs["esp_seq"] == seq)
        at_enc = (obs["point"] == obs.point_index(enc)) & (obs["tag_run"] == spec.run) & (obs["tag_seq"] == t.seq)
        at_enc &= obs["cls"] == PacketClass.ECHO_REQUEST
        if at_esp.any() and at_enc.any():
            return int(obs["ip_len"][at_esp][0]) - int(obs["ip_len"][at_enc][0]), enc
    return None, None


def mtu_diagnosis(m: MtuReport, notes: list[str]) -> list[str]:
    """Large probes vanish where small ones pass: say what that means in PMTUD terms."""
    lost = next((r for r in m.sizes if r.size == m.smallest_lost), None)
    if lost is None or lost.where is None or not m.largest_delivered:
        return []
    if any("fragmentation needed" in n for n in notes):
        return [f"{m.smallest_lost}-byte probes vanish {lost.where} while {m.largest_delivered}-byte ones pass; "
                "an ICMP 'fragmentation needed' was sent (see above): path MTU discovery is working"]
    return [f"{m.smallest_lost}-byte probes vanish {lost.where} while {m.largest_delivered}-byte ones pass, and no "
            "ICMP 'fragmentation needed' came back: a PMTUD blackhole (a link MTU below the packet size, with its "
            "ICMP errors filtered or never sent)"]


def mtu_summary(m: MtuReport) -> str:
    if m.smallest_lost is None:
        top = f"all sizes up to {m.largest_delivered} bytes delivered" if m.largest_delivered else "no size delivered"
        return top
    lost = next(r for r in m.sizes if r.size == m.smallest_lost)
    how = f"refused by the sender ({lost.error})" if lost.error else f"lost {lost.where}"
    below = f"{m.largest_delivered}-byte probes delivered, " if m.largest_delivered else "no size delivered; "
    return f"path MTU below {m.smallest_lost} bytes: {below}{m.smallest_lost}-byte probes {how}"
