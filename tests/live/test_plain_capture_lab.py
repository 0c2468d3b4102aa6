"""Live, on the real lab: captures taken the way a person takes them — plain tcpdump on every
interface of every node (lo too), files named ``node_iface.pcap``, and plain iputils ``ping -c 3``
in west: no tracer sniffer, no tag, no manifest, no renaming (scripts/record_plain_captures.py) —
replay to the hop each fault is at."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tracer.run.replay import load_run, replay_run

pytestmark = pytest.mark.lab

LAB = "pd"  # namespaces trc-pd-*
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "record_plain_captures.py"


def recorder():
    spec = importlib.util.spec_from_file_location("record_plain_captures", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "flow", "loss"), [
    ("gw-forward-drop", None, ("request", "inside west-gw between lan0 and ipsec0 (forward)")),
    ("no-return-route", None, ("reply", "at east, before leaving east:eth0")),
    ("snat-east-gw", None, None),
    ("udp-gw-forward-drop", "udp and host west and host east", ("request", "inside west-gw between lan0 and ipsec0 "
                                                                "(forward)")),
])
def test_hand_captures_replay_to_the_faults_hop(lab, tmp_path, name, flow, loss):
    recorder().record(lab, name, tmp_path / name)
    files = sorted((tmp_path / name).glob("*.pcap"))
    assert {"west_eth0.pcap", "west_lo.pcap", "east-gw_ipsec0.pcap"} <= {f.name for f in files}
    (v,) = replay_run(load_run(files, lab.topology_path), flow=flow)
    assert v.flow is not None and "192.0.2.10" in v.flow
    lost = [(f.direction, f.where) for f in v.findings if f.outcome.value == "lost"]
    assert lost == ([] if loss is None else [loss]), v.summary
    assert v.status.value == ("delivered" if loss is None else "loss")
