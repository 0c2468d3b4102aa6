"""SIGTERM is Ctrl-C; a second one during cleanup is held, not raised mid-cleanup."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tracer.interrupts import deferred, sigterm_as_interrupt


def _signal_self(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary


def test_signals_are_held_during_the_block_and_raised_after():
    cleaned = False
    with pytest.raises(KeyboardInterrupt):
        with deferred() as got:
            _signal_self(signal.SIGINT)
            _signal_self(signal.SIGINT)
            cleaned = True  # the block ran to its end despite two Ctrl-C
    assert cleaned and got == [signal.SIGINT, signal.SIGINT]


def test_held_signals_can_be_left_to_the_caller():
    with deferred(raise_after=False) as got:
        _signal_self(signal.SIGINT)
    assert got == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_sigterm_is_ctrl_c_within_the_block():
    old = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        with pytest.raises(KeyboardInterrupt):
            _signal_self(signal.SIGTERM)
        with deferred(raise_after=False) as got:
            _signal_self(signal.SIGTERM)
        assert got == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is old  # the runner's own handler is back


def test_an_exception_in_the_block_is_not_replaced():
    with pytest.raises(ValueError):
        with deferred():
            _signal_self(signal.SIGINT)
            raise ValueError("the real error")


def test_a_ctrl_c_while_a_sniffer_starts_says_what_is_happening(monkeypatch, tmp_path, capsys):
    # Not "stopping the sniffers and writing the run directory": at that moment the sniffer is
    # still being started (and nothing is written yet). The Ctrl-C is raised once it is kept.
    import subprocess

    import tracer.sniff.tcpdump as tcpdump

    def spawn_interrupted(argv, what, **popen):
        _signal_self(signal.SIGINT)  # the Ctrl-C lands between the fork and keeping the process
        return subprocess.Popen(["true"])

    monkeypatch.setattr(tcpdump, "spawn", spawn_interrupted)
    sniffer = tcpdump.TcpdumpSniffer("pm:lo", None, "lo", tmp_path / "lo.pcapng", "")
    with pytest.raises(KeyboardInterrupt):
        sniffer.start()
    assert sniffer.proc is not None  # kept before the interrupt is raised: stop() finds it
    sniffer.proc.wait()
    assert capsys.readouterr().err == ("tracer: SIGINT received: letting tcpdump on pm:lo finish starting; "
                                       "then everything started is stopped\n")
