"""Ctrl-C while probing: exactly the probes that left are reported, and journalled as they leave."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from tracer.send.pacer import Interrupted, exchange, journal_to


@dataclass
class Rec:
    seq: int
    error: str | None = None
    answered: bool = False


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
    assert [r.seq for r in stop.value.records] == sent == [0, 1, 2]
    assert isinstance(stop.value, KeyboardInterrupt)  # whoever does not know the detail still stops
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert [(x["event"], x["seq"]) for x in lines if x["event"] == "sent"] == [("sent", 0), ("sent", 1), ("sent", 2)]
    assert sorted(x["seq"] for x in lines if x["event"] == "answered") == [0, 2]


def test_without_a_journal_nothing_is_written(tmp_path):
    out = exchange(2, 0.001, 0.05, lambda s: Rec(s), lambda recs, wait: None, lambda r: False)
    assert [r.seq for r in out] == [0, 1] and not list(tmp_path.iterdir())
