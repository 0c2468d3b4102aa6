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
