"""Which observation rows the analysis of a tagged run can use, so a replay can leave the rest
out while reading (issue 14: memory bounded by the rows kept, not by the captures).

The analysis of a tracer run (a run directory's manifest names the run and its probe kind)
reads these rows and no others:

* tagged packets (``tag_kind > 0``), of any run: the probes themselves, and ICMP errors and
  IKE packets carrying a tag (``analyze``, ``correlate``, ``observed``, ``mtu``, ``clock``);
* every ESP packet: carriers are tied to probes by (SPI, seq) among all of a point's ESP
  (``correlate._follow_esp``, ``comments``, ``observed.rewrites``, ``esp.confirm``);
* every ICMP error (``icmp``, ``mtu``, ``observed``), and IKE (the IKE probe kind);
* cleartext IPv4 between the two sides of a tunnel of the topology: each consumes an ESP
  sequence number, so the keyless association counts them (``correlate._sa_clear_ts``).

Untagged traffic is read by the untagged analysis (``identity``: hand captures, ``--flow``)
and the content rule of capture mapping; neither runs on a tagged run's filtered rows (the
caller decides). What the left-out rows are still needed for — how many packets a point
captured, how many were IP, when (``plausible``) — is counted before they are left out
(:class:`tracer.model.observations.PointCounts`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tracer.analysis.correlate import in_any
from tracer.model.observations import PacketClass
from tracer.model.topology import Topology

_ALWAYS = np.zeros(256, bool)  # packet classes kept whatever they carry
_ALWAYS[[PacketClass.ESP, PacketClass.ICMP_ERROR, PacketClass.IKE]] = True


def relevant_rows(topo: Topology) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The rule for ``topo``: observation columns → mask of the rows a tagged run's analysis reads."""
    sides = [(t.left.subnets, t.right.subnets) for t in topo.tunnels]

    def keep(cols: dict[str, np.ndarray]) -> np.ndarray:
        m = (cols["tag_kind"] > 0) | _ALWAYS[cols["cls"]]
        if sides:
            clear = np.flatnonzero(~m & (cols["ipver"] == 4))  # never ESP: ESP is kept above
            src, dst = cols["src"][clear], cols["dst"][clear]
            hit = np.zeros(len(clear), bool)
            for a, b in sides:
                hit |= (in_any(src, a) & in_any(dst, b)) | (in_any(src, b) & in_any(dst, a))
            m[clear[hit]] = True
        return m

    return keep
