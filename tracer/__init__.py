"""tracer: find the hop where packets disappear.

Public Python API (what the notebooks use)::

    import tracer
    run = tracer.load("captures/gw-forward-drop")     # run dir, or files + topology=
    v = run.verdicts[0]                                # tracer.Verdict
    v.status, v.summary, v.findings
    run.table()                                        # per-probe, per-hop sightings (pandas DataFrame)

Plots: ``tracer.plot`` (path diagram, loss timeline, per-hop latency) draw
onto matplotlib axes you pass in.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracer.errors import TracerError
from tracer.version import __version__ as __version__  # (re-exported: tracer.__version__)

if TYPE_CHECKING:
    from tracer.model.observations import Observations
    from tracer.model.topology import Topology
    from tracer.model.verdict import Verdict


# Re-exported lazily: `tracer --help` or `tracer lab down` need not pay for numpy and networkx.
_LAZY = {
    "Observations": "tracer.model.observations",
    "Topology": "tracer.model.topology",
    **{name: "tracer.model.verdict" for name in ("Finding", "Outcome", "ProbeTrace", "ProbeTraces", "Sighting", "Status",
                                                   "Verdict")},
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tracer' has no attribute {name!r}")


@dataclass
class Run:
    """A loaded run: topology, observations and one verdict per probe run."""

    topology: Topology
    observations: Observations
    verdicts: list[Verdict]
    drops: dict[str, int]
    warnings: list[str]

    @property
    def verdict(self) -> Verdict:
        return self.verdicts[0]

    def table(self, verdict: Verdict | None = None) -> Any:
        """One row per (probe, direction, hop): the sighting, time and ESP identity."""
        import pandas as pd

        v = verdict or self.verdict
        rows = []
        for t in v.probes:
            path = v.paths[t.direction]
            for h, hop in enumerate(path.hops):
                esp = t.esp[h]
                rows.append({
                    "direction": t.direction, "seq": t.seq, "hop": h, "point": hop.point,
                    "sighting": t.sightings[h].value, "time_ns": t.times_ns[h],
                    "esp_spi": esp[0] if esp else None, "esp_seq": esp[1] if esp else None,
                    "outcome": t.outcome.value,
                })
        return pd.DataFrame(rows)


def load(*inputs: str | Path, topology: str | Path | None = None, points: dict[str, str | Path] | None = None) -> Run:
    """Load a run directory / recorded scenario (or capture files plus ``topology``) and analyse it;
    ``points``: ``{"node:iface": file}`` for files whose names do not say (like ``--point``)."""
    from tracer.run.replay import load_run, replay_run

    explicit = [(p, Path(f)) for p, f in (points or {}).items()]
    loaded = load_run([Path(p) for p in inputs], Path(topology) if topology else None, explicit)
    return Run(loaded.topology, loaded.observations, replay_run(loaded), loaded.drops, loaded.warnings)


__all__ = [
    "Finding", "Observations", "Outcome", "ProbeTrace", "ProbeTraces", "Run", "Sighting", "Status", "Topology",
    "TracerError", "Verdict", "load",
]
