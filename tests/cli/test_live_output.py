"""Live output pieces without a lab: ping's rtt statistics, the per-probe lines (plain when not a
terminal, colour and symbols when it is), where the unanswered probes got to, and the progress
line (a terminal only, a stage only once it has lasted a second)."""

from __future__ import annotations

import io
import math
import time
from ipaddress import IPv4Address
from pathlib import Path

from tracer import load
from tracer.cli.live import ProbeLines, statistics, where_lost
from tracer.cli.progress import Progress
from tracer.cli.style import Style, wants_colour
from tracer.model.probe import Endpoints, SentProbe
from tracer.model.rtt import rtt_stats
from tracer.model.topology import Node

ROOT = Path(__file__).resolve().parents[2]


def test_rtt_stats_are_pings() -> None:
    s = rtt_stats([1.0, None, 2.0, 3.0])
    assert s is not None and (s.count, s.min_ms, s.avg_ms, s.max_ms) == (3, 1.0, 2.0, 3.0)
    assert math.isclose(s.mdev_ms, math.sqrt(2 / 3))  # sqrt(mean(x²) − mean(x)²), as iputils computes it
    assert s.text() == "rtt min/avg/max/mdev = 1.000/2.000/3.000/0.816 ms"
    assert rtt_stats([None, None]) is None


def _ends() -> Endpoints:
    return Endpoints(Node("west", "host", {}), IPv4Address("192.0.2.10"), Node("east", "host", {}), IPv4Address("198.51.100.10"))


def test_probe_lines_plain_and_in_colour() -> None:
    out = io.StringIO()
    lines = ProbeLines("ping", _ends(), Style(False), Progress(enabled=False), out)
    lines(SentProbe(1, size=56, rtt_ms=0.5321))
    lines(SentProbe(2, size=56))
    lines(SentProbe(3, size=56, error="Network is unreachable"))
    assert out.getvalue().splitlines() == [
        "64 bytes from 198.51.100.10: seq=1 time=0.532 ms",
        "no answer (198.51.100.10): seq=2 timeout",
        "not sent (198.51.100.10): seq=3 Network is unreachable",
    ]
    out = io.StringIO()
    ProbeLines("ping", _ends(), Style(True), Progress(enabled=False), out)(SentProbe(1, size=56, rtt_ms=0.5))
    assert out.getvalue() == "\x1b[32m✓ \x1b[0m64 bytes from 198.51.100.10: seq=1 time=0.500 ms\n"


def test_no_color_and_pipes_mean_plain(monkeypatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert wants_colour(Tty()) and not wants_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_colour(Tty())


def test_where_the_unanswered_got_to_and_statistics_of_a_recorded_run() -> None:
    v = load(ROOT / "captures" / "gw-forward-drop").verdict
    assert where_lost(v) == ["where the unanswered probes got to:",
                             "  seq=0-2: request last seen at west-gw:lan0, "
                             "lost inside west-gw between lan0 and ipsec0 (forward)"]
    sent = (SentProbe(1, rtt_ms=1.0), SentProbe(2), SentProbe(3, rtt_ms=3.0), SentProbe(4, error="x"))
    assert statistics(v, sent, "198.51.100.10", 1.234) == [
        "--- 198.51.100.10 tracer ping statistics ---",
        "4 probes, 3 transmitted, 2 answered, 1 refused by the sender, 50% loss, time 1234 ms",
        "rtt min/avg/max/mdev = 1.000/2.000/3.000/1.000 ms",
    ]


def test_progress_shows_a_slow_stage_and_erases_it() -> None:
    quiet = Progress(stream=io.StringIO())  # not a terminal: never draws
    assert not quiet.enabled
    out = io.StringIO()
    p = Progress(stream=out, enabled=True)
    p.stage("fast")
    p.stage("starting sniffers on 10 capture points")
    time.sleep(1.4)
    p.close()
    text = out.getvalue()
    assert "fast" not in text  # under a second: never shown
    assert "\r\x1b[Kstarting sniffers on 10 capture points … 1 s" in text and text.endswith("\r\x1b[K")
