"""Untagged flows other than ICMP echo (``tracer replay --flow``): every packet is a probe of
its own, numbered by analysis/identity.py — even sequence numbers for the packets from the end
that sent first, odd ones for the packets back. No packet answers another, so a packet back is
expected only if it was seen somewhere. Never sent live: no subcommand."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracer.model.direction import Direction
from tracer.model.tag import ProbeKind
from tracer.probes import ProbeType, register

if TYPE_CHECKING:
    import numpy as np

    from tracer.model.observations import Observations


class Flow(ProbeType):
    code = ProbeKind.FLOW
    name = "flow"
    nouns = ("packets there", "packets back")
    live = False
    paired = False

    def rows(self, obs: Observations, direction: Direction) -> np.ndarray:
        from tracer.model.observations import PacketClass

        back = (obs["tag_seq"] & 1) == 1
        return (obs["cls"] != PacketClass.ICMP_ERROR) & (back if direction == Direction.REPLY else ~back)

    def carried(self, seqs: np.ndarray, direction: Direction) -> np.ndarray | None:
        return (seqs & 1) == (1 if direction == Direction.REPLY else 0)


FLOW = register(Flow())
