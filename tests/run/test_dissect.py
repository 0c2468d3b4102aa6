"""tracer replay --dissect: Wireshark's dissection (real tshark through pyshark) of the lost
probes' packet at the last capture point that saw them, on recorded lab runs."""

from __future__ import annotations

from pathlib import Path

import tracer
from tracer.model.direction import Direction
from tracer.run.dissect import dissect_lost, last_packets

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


def test_cleartext_probe_is_found_where_it_was_last_seen():
    run = tracer.load(CAPTURES / "gw-forward-drop")
    (p,) = last_packets(run.observations, run.verdict)
    assert (p.point, p.direction, p.seq, Path(p.file).name, p.frame, p.what) == (
        "west-gw:lan0", Direction.REQUEST, 0, "west-gw_lan0.pcapng", 1, "the probe")
    (block,) = dissect_lost(run.observations, run.verdict)
    assert block.startswith("request seq 0: the probe at west-gw:lan0, the last point that saw it (frame 1 of "
                            "west-gw_lan0.pcapng), as Wireshark dissects it:")
    assert "Type: 8 (Echo (ping) request)" in block
    assert "Destination Address: 198.51.100.10" in block


def test_esp_carrier_is_dissected_with_its_spi_and_sequence():
    run = tracer.load(CAPTURES / "esp-blocked")
    (p,) = last_packets(run.observations, run.verdict)
    assert p.point == "router:eth0" and p.what.startswith("its ESP carrier (SPI 0xce20a626, seq ")
    esp_seq = int(p.what.rstrip(")").rsplit(" ", 1)[1])
    (block,) = dissect_lost(run.observations, run.verdict)
    assert "ESP SPI: 0xce20a626" in block and f"ESP Sequence: {esp_seq}\n" in block + "\n"
    assert "Destination Port: 4500" in block


def test_delivered_run_has_nothing_to_dissect():
    run = tracer.load(CAPTURES / "all-delivered")
    assert last_packets(run.observations, run.verdict) == []
