"""Reading topology files (TOML) into the Topology model."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tracer.errors import TopologyError
from tracer.model.topology import Topology


def load_topology(path: str | Path) -> Topology:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(f"{p}: topology file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TopologyError(f"{p}: cannot read topology file ({e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib puts "(at line N, column M)" in the message: keep it, it is the useful part.
        raise TopologyError(f"{p}: not valid TOML: {e}") from None
    return Topology.from_dict(data, source=str(p))
