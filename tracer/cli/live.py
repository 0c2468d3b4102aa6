"""Live trace output, like ping: a line per probe as its answer (or its timeout) comes in,
then, after the verdict, where the unanswered ones got to and the round-trip statistics."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from tracer.cli.progress import Progress
from tracer.cli.style import Style
from tracer.model.direction import Direction
from tracer.model.probe import Endpoints, SentProbe
from tracer.model.rtt import rtt_stats
from tracer.model.tag import ECHO_OVERHEAD

if TYPE_CHECKING:
    from tracer.model.verdict import Verdict

ICMP_HEADER = 8


class ProbeLines:
    """Prints each probe's fate as the prober learns it (``on_probe`` of a probe kind's send)."""

    def __init__(self, kind: str, ends: Endpoints, style: Style, progress: Progress,
                 out: TextIO | None = None) -> None:
        self.kind, self.ends, self.style, self.progress = kind, ends, style, progress
        self.out = out or sys.stdout
        self._last_answer: str | None = None

    def header(self, planned: int | None, size: int | None, run: int) -> None:
        """``planned`` None: the kind decides as it goes (the MTU search)."""
        what = f", {size} bytes of data" if size is not None else ""
        count = f"{planned} probes" if planned is not None else "probes as the search needs them"
        self._print(f"TRACER {self.kind} {self.ends.src_node.name} ({self.ends.src}) → {self.ends.dst_node.name} "
                    f"({self.ends.dst}){what}, {count}, run {run:#010x}")

    def __call__(self, p: SentProbe) -> None:
        s = self.style
        seq = f"seq={p.seq}"
        if p.error:
            self._print(f"{s.symbol(None)}{self._what(p, 'not sent')}: {seq} {s.paint(p.error, 'yellow')}")
        elif p.rtt_ms is None:
            # No echo reply; an ICMP error about the probe (MTU search: fragmentation needed) says why.
            why = p.answer or "timeout"
            self._print(f"{s.symbol(False)}{self._what(p, 'no answer')}: {seq} {s.paint(why, 'red')}")
        else:
            line = f"{s.symbol(True)}{self._what(p, 'answer')}: {seq} time={p.rtt_ms:.3f} ms"
            if p.answer:
                line += "  " + ("(same answer)" if p.answer == self._last_answer else p.answer)
                self._last_answer = p.answer
            self._print(line)

    def _what(self, p: SentProbe, word: str) -> str:
        """ping's "64 bytes from ADDR" for echoes; MTU probes by their IP packet size."""
        dst = self.ends.dst
        if self.kind == "mtu" and p.size is not None:
            return f"{p.size + ECHO_OVERHEAD} bytes (DF) {'to' if word != 'answer' else 'from'} {dst}"
        if p.size is not None and word == "answer":
            return f"{p.size + ICMP_HEADER} bytes from {dst}"
        return f"{word} from {dst}" if word == "answer" else f"{word} ({dst})"

    def _print(self, line: str) -> None:
        self.progress.clear()
        print(line, file=self.out, flush=True)


def where_lost(v: Verdict) -> list[str]:
    """Where each probe that did not come back got to: consecutive seqs with one fate in one line."""
    from tracer.model.verdict import Outcome  # here: the verdict model imports numpy, the live lines need none

    where = {(f.direction, q): f.where for f in v.findings if f.outcome != Outcome.DELIVERED for q in f.seqs}
    fates: list[tuple[int, str]] = []
    for t in sorted(v.probes, key=lambda t: (t.seq, t.direction != Direction.REQUEST)):
        if t.outcome in (Outcome.DELIVERED, Outcome.NOT_SENT):
            continue
        path = v.paths[t.direction]
        seen = path.hops[t.last_seen].point if t.last_seen is not None else None
        noun = "request" if t.direction == Direction.REQUEST else "reply"
        if seen is None:
            fate = f"{noun} seen nowhere on its path"
        elif t.outcome == Outcome.INCONCLUSIVE:
            fate = f"{noun} last seen at {seen} (then not provable: capture gap or sniffer drops)"
        else:
            fate = f"{noun} last seen at {seen}"
        if (t.direction, t.seq) in where:
            fate += f", lost {where[t.direction, t.seq]}"
        fates.append((t.seq, fate))
    out: list[str] = []
    i = 0
    while i < len(fates):
        j = i
        while j + 1 < len(fates) and fates[j + 1][1] == fates[i][1] and fates[j + 1][0] == fates[j][0] + 1:
            j += 1
        seqs = f"seq={fates[i][0]}" if i == j else f"seq={fates[i][0]}-{fates[j][0]}"
        out.append(f"  {seqs}: {fates[i][1]}")
        i = j + 1
    return (["where the unanswered probes got to:", *out]) if out else []


def statistics(v: Verdict, sent: tuple[SentProbe, ...], dst: str, elapsed_s: float) -> list[str]:
    """ping's closing lines: probes sent and answered, loss, rtt min/avg/max/mdev."""
    n = sum(1 for p in sent if not p.error)
    answered = sum(1 for p in sent if p.rtt_ms is not None)
    loss = 100.0 * (len(sent) - answered) / len(sent) if sent else 0.0
    refused = len(sent) - n
    extra = f", {refused} refused by the sender" if refused else ""
    lines = [f"--- {dst} tracer {v.kind} statistics ---",
             f"{len(sent)} probes, {n} transmitted, {answered} answered{extra}, {loss:.0f}% loss, "
             f"time {elapsed_s * 1000:.0f} ms"]
    stats = rtt_stats(p.rtt_ms for p in sent)
    if stats is not None:
        lines.append(stats.text())
    return lines
