"""MTU probes: per size, delivered or where lost; the path MTU (to the byte when the sizes
allow), the hop that limits it and how — an ICMP 'fragmentation needed' quoting the probe
that reached the source, or silence (a PMTUD blackhole) — and what the tunnel adds.

Only ICMP errors that quote a probe of this run are used: by its tag when the quote holds it,
else by echo id, seq and destination, or by the (SPI, ESP seq) of the ESP packet that carried
it. An error about another size, another run or other traffic says nothing about these probes.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

import numpy as np

from tracer.model.mtu import FragNeeded, MtuReport, SizeResult, TunnelOverhead
from tracer.model.observations import Observations, PacketClass
from tracer.model.path import ExpectedPath
from tracer.model.point import CapturePoint
from tracer.model.probe import ProbeSpec
from tracer.model.tag import icmp_id_for
from tracer.model.topology import Topology
from tracer.model.verdict import Finding, Outcome, ProbeTraces, Status

if TYPE_CHECKING:
    from tracer.model.netstate import NodeState

ESP_TRAILER = 2  # pad length + next header
ESP_BLOCKS = (4, 8, 16)  # RFC 4303: the payload ends on a 4-byte boundary at least
OUTER_IPV4 = 20
UDP_HEADER = 8
ESP_HEADER = 8  # SPI + sequence


def mtu_report(obs: Observations, spec: ProbeSpec, path: ExpectedPath, traces: ProbeTraces,
               found: list[Finding], topo: Topology, netstate: dict[str, NodeState] | None = None) -> MtuReport:
    sizes = spec.sizes or {}
    errors = spec.send_errors or {}
    fate: dict[int, list[bool]] = {}
    for t in traces:
        if t.direction == "request":
            fate.setdefault(t.seq, []).append(t.outcome == Outcome.DELIVERED)
        elif t.outcome not in (Outcome.DELIVERED, Outcome.NOT_SENT):
            fate.setdefault(t.seq, []).append(False)
    traced = {str(t.direction) for t in traces}
    for f in found:  # a direction with no expected path has no traces: its findings say each probe's fate
        if str(f.direction) not in traced and (f.direction == "request" or f.outcome != Outcome.DELIVERED):
            for q in f.seqs:
                fate.setdefault(q, []).append(f.outcome == Outcome.DELIVERED)
    lost_in = {q: f for f in found if f.outcome != Outcome.DELIVERED and f.direction == "request" for q in f.seqs}
    where_of = {q: f.where for f in found if f.outcome != Outcome.DELIVERED for q in f.seqs}
    frags = frag_needed(obs, spec, path, traces, topo)
    told = {f.seq: f for f in frags if f.about == "probe" and f.reached_source}
    results = []
    for size in sorted(set(sizes.values())):
        seqs = [q for q, sz in sizes.items() if sz == size]
        lost = [q for q in seqs if not all(fate.get(q, [False]))]
        icmp = next((_words(told[q]) for q in lost if q in told), None)
        results.append(SizeResult(size, len(seqs), len(seqs) - len(lost), where_of.get(lost[0]) if lost else None,
                                  next((errors[q] for q in lost if q in errors), None), icmp,
                                  tuple(sorted(seqs))))
    delivered = [r.size for r in results if r.delivered == r.sent]
    largest = max(delivered, default=None)
    above = [r for r in results if r.delivered < r.sent and r.size > (largest or 0)]
    smallest = min((r.size for r in above), default=None)
    first = next((r for r in above if r.size == smallest), None)
    # A larger probe that neither the sender refused nor an ICMP error explained to the source vanished.
    silent = [r for r in above if r.error is None and r.icmp is None]
    at_iface = largest is not None and largest == spec.interface_mtu
    exact = largest is not None and (smallest == largest + 1 or (smallest is None and at_iface))
    tunnel, by_size = tunnel_overhead(obs, spec, path, traces)
    stop = next((lost_in[q].first_missed for q, sz in sorted(sizes.items()) if sz == smallest and q in lost_in), None)
    return MtuReport(
        tuple(results), largest, smallest,
        esp_overhead=by_size.get(largest) if largest in by_size else (tunnel.least if tunnel else None),
        encap_point=tunnel.point if tunnel else None,
        path_mtu=largest, exact=exact,
        limit=(f"refused by the sender ({first.error})" if first.error else first.where) if first else None,
        # Silence is a blackhole unless an error from the same limit (lost at the same place, a
        # next-hop MTU the silent size exceeds) reached the source: then it may be rate limiting.
        blackhole=largest is not None and any(not _covered(r, results, frags) for r in silent),
        frag_needed=tuple(frags), tunnel=tunnel, bottleneck=stop, bottleneck_mtu=_live_mtu(stop, netstate or {}))


def _live_mtu(point: str | None, netstate: dict[str, NodeState]) -> int | None:
    if point is None:
        return None
    node, _, iface = point.partition(":")
    state = netstate.get(node)
    live = state.interface(iface) if state is not None else None
    return live.mtu if live is not None else None


def frag_needed(obs: Observations, spec: ProbeSpec, path: ExpectedPath, traces: ProbeTraces,
                topo: Topology) -> list[FragNeeded]:
    """Every 'fragmentation needed' quoting a request of this run, by sender and probe."""
    sizes = spec.sizes or {}
    fn = (obs["cls"] == PacketClass.ICMP_ERROR) & (obs["icmp_type"] == 3) & (obs["icmp_code"] == 4)
    if not fn.any():
        return []
    carriers = {e: t.seq for t in traces if t.direction == "request" for e in t.esp if e is not None}
    by_tag = (obs["tag_run"] == spec.run) & (obs["tag_kind"] == int(spec.kind))
    # A quote too short for the tag: the echo header (id and seq) and the destination decide.
    by_header = (obs["tag_kind"] == 0) & (obs["inner_proto"] == 1) & (obs["inner_id"] == icmp_id_for(spec.run))
    if spec.dst is not None:
        by_header &= obs["inner_dst"] == int(spec.dst)
    # The source's node, whatever the path: a route the topology lacks must not hide that the ICMP arrived.
    origin = topo.owner(spec.src) if spec.src is not None else None
    source = path.hops[0].node if path.hops else spec.origin or (origin.name if origin else None)
    found: dict[tuple[str, int, int, str], list[str]] = {}
    for i in np.flatnonzero(fn).tolist():
        if by_tag[i]:
            seq, about = int(obs["tag_seq"][i]), "probe"
        elif by_header[i]:
            seq, about = _seq16(int(obs["inner_seq"][i]), sizes), "probe"
        elif (int(obs["spi"][i]), int(obs["esp_seq"][i])) in carriers:
            seq, about = carriers[(int(obs["spi"][i]), int(obs["esp_seq"][i]))], "esp"
        else:
            continue
        if seq not in sizes:
            continue
        key = (str(IPv4Address(int(obs["src"][i]))), int(obs["mtu"][i]), seq, about)
        found.setdefault(key, []).append(obs.points[int(obs["point"][i])])
    out = []
    for (sender, mtu, seq, about), points in found.items():
        owner = topo.owner(IPv4Address(sender))
        seen = tuple(dict.fromkeys(points))
        out.append(FragNeeded(sender, owner.name if owner else None, mtu, sizes[seq], seq, about, seen,
                              any(CapturePoint.parse(p).node == source for p in seen)))
    return sorted(out, key=lambda f: (f.size, f.seq, f.about))


def _seq16(seq16: int, sizes: dict[int, int]) -> int:
    """The probe whose 16-bit echo seq this is (a run of MTU probes stays far below 65536)."""
    return next((q for q in sizes if q & 0xFFFF == seq16), -1)


def tunnel_overhead(obs: Observations, spec: ProbeSpec, path: ExpectedPath,
                    traces: ProbeTraces) -> tuple[TunnelOverhead | None, dict[int, int]]:
    """Outer ESP packet length minus the cleartext packet it carries, at the encap point, for
    every probe both were seen for; the fixed part and the padding block fitted to them."""
    first = next((i for i, h in enumerate(path.hops) if h.esp is not None), None)
    if not first:
        return None, {}
    enc = path.hops[first - 1].point
    esp_at = obs["point"] == obs.point_index(path.hops[first].point)
    enc_at = (obs["point"] == obs.point_index(enc)) & (obs["tag_run"] == spec.run) & (obs["cls"] == PacketClass.ECHO_REQUEST)
    pairs: list[tuple[int, int, bool]] = []
    for t in traces:
        if t.direction != "request" or t.esp[first] is None:
            continue
        spi, seq = t.esp[first]
        outer = np.flatnonzero(esp_at & (obs["spi"] == spi) & (obs["esp_seq"] == seq))
        inner = np.flatnonzero(enc_at & (obs["tag_seq"] == t.seq))
        if len(outer) and len(inner):
            pairs.append((int(obs["ip_len"][inner[0]]), int(obs["ip_len"][outer[0]]), bool(obs["udp_encap"][outer[0]])))
    if not pairs:
        return None, {}
    added = [o - i for i, o, _u in pairs]
    block, fixed = _fit(pairs)
    return (TunnelOverhead(enc, pairs[0][2], fixed, block, min(added), max(added), len(pairs)),
            {i: o - i for i, o, _u in pairs})


def _fit(pairs: list[tuple[int, int, bool]]) -> tuple[int | None, int | None]:
    """The smallest ESP padding block under which every probe's outer size is one constant plus
    its padded payload; None when the sizes measured cannot tell the blocks apart."""
    fits = []
    for b in ESP_BLOCKS:
        consts = {o - _padded(i, b) for i, o, _u in pairs}
        if len(consts) == 1:
            fits.append((b, consts.pop()))
    # Sizes too alike (all the same modulo 8, say) fit several blocks: then neither is known.
    return fits[0] if len(fits) == 1 else (None, None)


def _padded(inner: int, block: int) -> int:
    return -(-(inner + ESP_TRAILER) // block) * block


def _words(f: FragNeeded) -> str:
    return f"ICMP fragmentation needed from {_who(f)}, next-hop MTU {f.next_hop_mtu}"


def mtu_status(m: MtuReport, status: Status) -> Status:
    """Probes larger than the path MTU are expected to fail: refused with 'fragmentation needed'
    is the path working as it should (delivered); vanishing silently is a loss (blackhole), unless
    the same limit's error about another probe reached the source (inconclusive: see ``_covering``)."""
    if status != Status.LOSS or m.path_mtu is None or m.blackhole:
        return status
    if any(r.delivered < r.sent for r in m.sizes if r.size <= m.path_mtu):
        return status  # probes that fit were lost too: that is loss, whatever the size
    return Status.INCONCLUSIVE if _mixed(m) else Status.DELIVERED


def _silent(m: MtuReport) -> list[SizeResult]:
    """Sizes above the path MTU lost with neither a sender error nor an ICMP error that reached the source."""
    return [r for r in m.sizes if m.path_mtu is not None and r.size > m.path_mtu and r.delivered < r.sent
            and r.error is None and r.icmp is None]


def _covering(r: SizeResult, results: Iterable[SizeResult], frags: Iterable[FragNeeded]) -> FragNeeded | None:
    """A 'fragmentation needed' that reached the source about another probe of this run lost
    where ``r``'s were, from a limit ``r`` exceeds too: the same limit, its error for ``r``
    perhaps rate-limited. An error from another hop, or a limit ``r`` fits, says nothing of ``r``."""
    where = {x.size: x.where for x in results}
    return next((f for f in frags if f.about == "probe" and f.reached_source and where.get(f.size) == r.where
                 and (f.next_hop_mtu == 0 or r.size > f.next_hop_mtu)), None)


def _covered(r: SizeResult, results: Iterable[SizeResult], frags: Iterable[FragNeeded]) -> bool:
    return _covering(r, results, frags) is not None


def _mixed(m: MtuReport) -> bool:
    """Larger sizes vanished silently where the same limit's 'fragmentation needed' about another
    probe did reach the source: neither a blackhole nor PMTUD seen working for every size."""
    return not m.blackhole and bool(_silent(m))


def mtu_diagnosis(m: MtuReport) -> list[str]:
    """What the larger probes met, in PMTUD terms, and what the frag-needed messages said."""
    notes = []
    first = next((r for r in m.sizes if r.size == m.smallest_lost), None)
    # A hop that did say 'fragmentation needed' about a lost probe, but not to the source.
    astray = [f for f in m.frag_needed if m.smallest_lost and f.size >= m.smallest_lost
              and (f.about == "esp" or not f.reached_source)]
    if m.blackhole and first is not None and first.where is not None:
        if astray:
            f = astray[0]
            about = "the ESP packet carrying it, to the tunnel gateway" if f.about == "esp" else "it"
            cause = (f"{_who(f)} did send one (next-hop MTU {f.next_hop_mtu}) about {about}, seen at "
                     f"{', '.join(f.seen_at)}, and it went no further")
        elif m.bottleneck and m.bottleneck_mtu:
            t = m.tunnel
            carried = t.fixed + _padded(m.smallest_lost, t.block) if t is not None and t.fixed and t.block else None
            what = f"the {carried}-byte ESP packet carrying it" if carried else "it"
            cause = f"{m.bottleneck} has MTU {m.bottleneck_mtu}, and {what} does not fit; its ICMP errors filtered or never sent"
        else:
            cause = "a link MTU below the packet size there, its ICMP errors filtered or never sent"
        notes.append(f"{m.smallest_lost}-byte probes vanish {first.where} while {m.path_mtu}-byte ones pass, and no "
                     f"ICMP 'fragmentation needed' reaches the source: a PMTUD blackhole ({cause})")
        astray = astray[1:]
    for f in astray:
        about = f"the ESP packet carrying the {f.size}-byte probe" if f.about == "esp" else f"the {f.size}-byte probe"
        notes.append(f"{_who(f)} sent ICMP fragmentation needed (next-hop MTU {f.next_hop_mtu}) about {about}, seen at "
                     f"{', '.join(f.seen_at)}; it never reached the source")
    if _mixed(m):
        silent = _silent(m)
        told = next(f for r in silent if (f := _covering(r, m.sizes, m.frag_needed)) is not None)
        sizes = "/".join(str(r.size) for r in silent)
        where = next((r.where for r in silent if r.where), None)
        notes.append(f"{sizes}-byte probes vanished{' ' + where if where else ''} with no ICMP 'fragmentation needed' "
                     f"reaching the source, yet one about the {told.size}-byte probe did ({_words(told)}): ICMP errors "
                     "rate-limited or lost, or a second limit — not called a PMTUD blackhole; inconclusive")
    if m.tunnel is not None:
        notes.append(f"the tunnel adds {overhead_words(m.tunnel)}")
    return notes


def _who(f: FragNeeded) -> str:
    return f"{f.node} ({f.sender})" if f.node else f.sender


def overhead_words(t: TunnelOverhead) -> str:
    """'60 bytes + 2–5 of ESP trailer and padding to 4-byte blocks at west-gw:ipsec0 (ESP-in-UDP: …)'."""
    carrier = "ESP-in-UDP: outer IPv4 20 + UDP 8" if t.udp else "raw ESP, IP protocol 50: outer IPv4 20"
    measured = f"{t.least}–{t.most} bytes" if t.least != t.most else f"{t.least} bytes"
    if t.block is None or t.fixed is None:
        return (f"{measured} at {t.point} ({carrier} + ESP header 8 + IV, ICV, trailer and padding; "
                f"the {t.samples} probe sizes measured are too alike to tell the padding block)")
    rest = t.fixed - OUTER_IPV4 - (UDP_HEADER if t.udp else 0) - ESP_HEADER
    return (f"{t.fixed} bytes + {ESP_TRAILER}–{ESP_TRAILER + t.block - 1} of ESP trailer and padding to "
            f"{t.block}-byte blocks at {t.point} ({carrier} + ESP header 8 + IV and ICV {rest}); "
            f"{measured} on the {t.samples} probes measured")


def mtu_summary(m: MtuReport) -> str:
    if m.path_mtu is None:
        return "no size delivered: " + (f"the smallest probes were lost {m.limit}" if m.limit else "no probe came back")
    if m.smallest_lost is None:
        if m.exact:
            return f"path MTU {m.path_mtu} bytes (the source interface's MTU): every size up to it delivered"
        return f"path MTU at least {m.path_mtu} bytes: every size sent was delivered"
    first = next(r for r in m.sizes if r.size == m.smallest_lost)
    how = (first.icmp and f"refused with {first.icmp}") or f"lost {m.limit}"
    if first.error:
        how = f"refused by the sender ({first.error})"
    head = f"path MTU {m.path_mtu} bytes" if m.exact else f"path MTU {m.path_mtu}–{m.smallest_lost - 1} bytes"
    tail = ": a PMTUD blackhole" if m.blackhole else "; larger probes vanished without ICMP: inconclusive" if _mixed(m) else ""
    return f"{head}: {m.path_mtu}-byte probes delivered, {m.smallest_lost}-byte probes {how}{tail}"
