"""The send/receive rhythm every probe kind shares, with no socket: seq numbers start at 1 like
ping's; each probe's fate is told once, in seq order, as soon as it is known — answered, refused
by the sender, or not answered within the timeout of its own departure; and on Ctrl-C exactly
the probes that left are reported, and journalled as they leave."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from tracer.send.pacer import Interrupted, exchange, journal_to


@dataclass
class Rec:
    seq: int
    left: float = 0.0
    answered: bool = False
    error: str | None = None


def test_seqs_from_one_and_fates_in_order_as_they_come() -> None:
    told: list[tuple[int, bool, float]] = []
    t0 = time.monotonic()

    def send_one(seq: int) -> Rec:
        return Rec(seq, time.monotonic(), error="Message too long" if seq == 4 else None)

    def receive(sent: dict[int, Rec], wait: float) -> None:
        time.sleep(wait)
        for r in sent.values():  # every odd probe is answered 20 ms after it left
            if r.seq % 2 and time.monotonic() - r.left >= 0.02:
                r.answered = True

    out = exchange(5, 0.05, 0.3, send_one, receive, lambda r: r.answered,
                   lambda r: told.append((r.seq, r.answered, time.monotonic() - t0)))
    assert [r.seq for r in out] == [1, 2, 3, 4, 5]
    assert [(s, a) for s, a, _ in told] == [(1, True), (2, False), (3, True), (4, False), (5, True)]
    when = {s: t for s, _, t in told}
    assert when[1] < 0.15  # answered: told within its answer's time, not at the end
    assert 0.3 <= when[2] < 0.5  # unanswered: told when its own timeout ran out
    assert out[3].error == "Message too long"


def test_a_run_ends_once_every_fate_is_known() -> None:
    told: list[int] = []

    def receive(sent: dict[int, Rec], wait: float) -> None:
        time.sleep(wait)
        for r in sent.values():
            r.answered = True

    start = time.monotonic()
    exchange(3, 0.01, 5.0, lambda s: Rec(s, time.monotonic()), receive, lambda r: r.answered, lambda r: told.append(r.seq))
    assert told == [1, 2, 3] and time.monotonic() - start < 1.0  # all answered: no waiting out the 5 s timeout


def test_an_interrupt_reports_only_the_probes_sent_and_journals_them(tmp_path):
    sent: list[int] = []

    def send_one(seq: int) -> Rec:
        sent.append(seq)
        return Rec(seq)

    def receive(records: dict[int, Rec], wait: float) -> None:
        for r in records.values():
            r.answered = r.seq % 2 == 0  # even probes answered
        if len(records) == 3:
            raise KeyboardInterrupt  # Ctrl-C while waiting between probes

    journal = tmp_path / "probes.jsonl"
    with journal_to(journal), pytest.raises(Interrupted) as stop:
        exchange(20, 0.001, 1.0, send_one, receive, lambda r: r.answered)
    assert [r.seq for r in stop.value.records] == sent == [1, 2, 3]
    assert isinstance(stop.value, KeyboardInterrupt)  # whoever does not know the detail still stops
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert [(x["event"], x["seq"]) for x in lines if x["event"] == "sent"] == [("sent", 1), ("sent", 2), ("sent", 3)]
    assert sorted(x["seq"] for x in lines if x["event"] == "answered") == [2]


def test_without_a_journal_nothing_is_written(tmp_path):
    out = exchange(2, 0.001, 0.05, lambda s: Rec(s), lambda recs, wait: None, lambda r: False)
    assert [r.seq for r in out] == [1, 2] and not list(tmp_path.iterdir())
