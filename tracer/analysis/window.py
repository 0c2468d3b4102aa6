"""One ``tracer watch`` window in a few numbers: how many probes were lost, where, and what
each capture point missed. A watch keeps these (one JSON line per window) long after the
window's captures are deleted, so the loss-over-time graph and the change lines come from
them alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tracer.analysis.hopstats import path_stats
from tracer.model.direction import DIRECTIONS
from tracer.model.verdict import Outcome, Verdict


@dataclass(frozen=True)
class HopLoss:
    direction: str
    point: str
    loss: float | None  # fraction of the probes sent this way that this point did not see; None: unknown


@dataclass(frozen=True)
class WindowSummary:
    window: int  # 0, 1, … in the order the watch ran them
    start: float  # UNIX seconds: the window's sniffers were up (probing began soon after)
    end: float  # UNIX seconds: the window closed (sniffers stopped)
    run: str  # the window's run id, hex like everywhere in the text output
    status: str  # the verdict's status: delivered, loss, inconclusive
    sent: int  # probes sent (requests)
    lost: int  # probes whose request or reply was lost
    located: str | None  # "A → B" (last point seen → first missed) of the main loss, None when none
    direction: str | None  # the located loss's direction
    reason: str | None  # why, when the evidence said
    hops: tuple[HopLoss, ...]
    dir: str | None = None  # the window's run directory name (relative to the watch directory)
    interrupted: bool = False  # cut short by Ctrl-C: the numbers are those of the probes sent

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"loss": round(self.loss, 4)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowSummary:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields["hops"] = tuple(HopLoss(**h) for h in d.get("hops", ()))
        return cls(**fields)


def summarize(verdict: Verdict, window: int, start: float, end: float, dir_name: str | None = None,
              interrupted: bool = False) -> WindowSummary:
    """The window's numbers from its verdict (the same verdict ``tracer replay`` gives of it)."""
    sent_seqs = set(verdict.probes.in_direction(DIRECTIONS[0]).seqs.tolist())
    lost_seqs = set(verdict.probes.seqs[verdict.probes.outcome_is(Outcome.LOST)].tolist())
    hops: list[HopLoss] = []
    for direction in DIRECTIONS:
        stats = path_stats(verdict, direction)
        if stats is None:
            continue
        for p in stats.points:
            f = p.fraction
            hops.append(HopLoss(direction, p.point, None if f is None else round(1.0 - f, 4)))
    lost = [f for f in verdict.findings if f.outcome == Outcome.LOST]
    main = max(lost, key=lambda f: f.count, default=None)
    located = None
    if main is not None:
        located = f"{main.last_seen or 'sender'} → {main.first_missed or '?'}"
    return WindowSummary(
        window, start, end, f"{verdict.run:08x}", verdict.status.value, len(sent_seqs), len(lost_seqs & sent_seqs),
        located, main.direction.value if main else None, main.reason if main else None, tuple(hops), dir_name,
        interrupted,
    )


def changed(prev: WindowSummary | None, cur: WindowSummary, step: float = 0.1) -> bool:
    """Whether ``cur`` is worth a line: the first window, the located hop moved, loss started or
    stopped, or the loss rate moved by ``step`` or more."""
    if prev is None:
        return True
    if prev.located != cur.located or prev.status != cur.status:
        return True
    if (prev.lost == 0) != (cur.lost == 0):
        return True
    return abs(prev.loss - cur.loss) >= step - 1e-9  # 0.6 - 0.5 is 0.0999…


def merge(group: list[WindowSummary]) -> WindowSummary:
    """Consecutive windows as one: probes summed, each point's loss weighted by the probes sent,
    the located hop the one most windows with loss named (a long watch drawn at a readable width)."""
    first, last = group[0], group[-1]
    sent = sum(s.sent for s in group)
    lossy = [s for s in group if s.located]
    main = max(lossy, key=lambda s: (sum(t.located == s.located for t in lossy), s.lost), default=None)
    statuses = {s.status for s in group}
    status = "loss" if "loss" in statuses else "inconclusive" if "inconclusive" in statuses else "delivered"
    totals: dict[tuple[str, str], list[float]] = {}
    for s in group:
        for h in s.hops:
            acc = totals.setdefault((h.direction, h.point), [0.0, 0.0])
            if h.loss is not None:
                acc[0] += h.loss * s.sent
                acc[1] += s.sent
    hops = tuple(HopLoss(d, p, round(lost / n, 4) if n else None) for (d, p), (lost, n) in totals.items())
    return WindowSummary(first.window, first.start, last.end, first.run, status, sent, sum(s.lost for s in group),
                         main.located if main else None, main.direction if main else None,
                         main.reason if main else None, hops)


def downsample(summaries: list[WindowSummary], columns: int) -> list[WindowSummary]:
    """At most ``columns`` summaries: runs of consecutive windows merged (:func:`merge`)."""
    if len(summaries) <= columns:
        return summaries
    per = -(-len(summaries) // columns)  # ceil
    return [merge(summaries[i:i + per]) for i in range(0, len(summaries), per)]
