"""Faults as data (no root needed); tests/lab/test_lab.py injects each into the real lab."""

from __future__ import annotations

import pytest

from tracer.errors import BadInput
from tracer.lab import FAULTS, faults


def test_every_fault_is_described() -> None:
    assert set(FAULTS) == {"esp-blocked", "ike-blocked", "no-return-route", "gw-forward-drop", "decap-drop",
                           "esp-input-drop", "mtu-blackhole", "asymmetric-return", "asymmetric-return-routed",
                           "routing-loop", "rewired-router", "nat-on-path", "wrong-mac", "esp-output-drop",
                           "no-peer-route", "strict-rpfilter", "iface-down", "dead-responder"}
    assert all(desc and "\n" not in desc for desc in FAULTS.values())


def test_unknown_fault_names_the_choices() -> None:
    with pytest.raises(BadInput, match="unknown fault 'nope': choose one of esp-blocked, "):
        faults.get("nope")


def test_no_return_route_restores_the_lab_route() -> None:
    fault = faults.get("no-return-route")
    assert fault.ip_apply == {"east": ["route del default"]}
    assert fault.ip_clear == {"east": ["route replace default via 198.51.100.1 dev eth0"]}
