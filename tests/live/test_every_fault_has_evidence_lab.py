"""Issue 10's bar, on the real lab: for every lab fault, each loss the verdict locates either
cites evidence that proves its cause (a kernel drop reason, a rule counter, link state, the IKE
daemon's word) or says plainly that its cause is only inferred ("likely: ...")."""

from __future__ import annotations

import time

import pytest

from tests.json_contract import one_run
from tests.lab_faults import fault
from tracer.cli import main
from tracer.lab import FAULTS

pytestmark = pytest.mark.lab

LAB = "af"  # namespaces trc-af-*

# Faults whose probes are delivered (a warning or a note, no loss to explain).
DELIVERED = {"asymmetric-return-routed", "nat-on-path"}
# What the mtu fault needs to lose probes at all.
EXTRA = {"mtu-blackhole": ["--size", "1300", "--df", "--snaplen", "128"], "routing-loop": ["--count", "1"]}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_located_loss_cites_evidence(lab, tmp_path, capsys, name):
    out = tmp_path / f"run{time.monotonic_ns()}"
    with fault(lab, name):
        code = main(["ping", "--topology", str(lab.topology_path), "west", "east", "--out", str(out), "--json",
                     *EXTRA.get(name, [])])
    doc = one_run(capsys.readouterr().out)
    if name in DELIVERED:
        assert code == 0, doc["summary"]
        return
    assert code == 1, doc["summary"]
    losses = [f for f in doc["findings"] if f["outcome"] == "lost"]
    assert losses
    for f in losses:
        assert f["evidence"], f"{name}: no evidence for: {f['where']} — {f['reason']}"
        assert not (f["reason"] or "").startswith("likely:"), f"{name}: cause only inferred: {f['reason']}"
