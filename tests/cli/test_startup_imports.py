"""`tracer replay` loads only what a replay uses: the command line registers just the
subcommand asked for, and graph, plotting, lab, check and capture-writing code stay unloaded.
A structural check of the import graph (in a fresh interpreter), never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Modules a replay must not load (each costs startup time and none is used by it).
NOT_FOR_REPLAY = (
    "networkx", "matplotlib", "pandas", "scipy",
    "tracer.lab", "tracer.analysis.checks", "tracer.evidence", "tracer.run.report", "tracer.run.record",
    "tracer.send", "tracer.sniff", "tracer.plot", "tracer.capture.pcapng_writer",
    "tracer.cli.check", "tracer.cli.lab", "tracer.cli.plot", "tracer.cli.report", "tracer.cli.trace",
    # numpy >= 2.3 loads numpy.ma on a plain np.unique or a float np.median (model/distinct.py,
    # analysis/hopstats.median); a complete run directory needs no child process (tracer.subprocs).
    "numpy.ma", "tracer.subprocs", "subprocess",
    # Untagged captures and --flow only (replay_run's _untagged).
    "tracer.analysis.identity", "tracer.model.flowfilter",
    "difflib",  # did-you-mean hints for a bad topology file
    "tracer.model.mtu", "tracer.analysis.mtu",  # MTU runs only (a probe run with sizes)
    "secrets",  # hmac and hashlib behind it; temporary names come from os.urandom (tracer.textfile)
    "tracer.capture.forkmap",  # workers for large runs only (tracer.capture.observe.PARALLEL_FROM)
    "numpy.typing", "tomli_w",  # annotations only; writing topology files
    "tracer.analysis.clock",  # runs with remote (SSH) capture points only
    "tracer.analysis.unrouted",  # topologies that leave a probe no route, or end its path undelivered
)
# Only a --json replay writes the JSON document (uuid, the schema's importlib.resources).
JSON_ONLY = ("tracer.jsondoc", "uuid", "tracer.model.rtt")
# Needed only for a run that recorded the nodes' live state (neither of the runs below did).
LIVE_STATE = ("tracer.model.netstate", "tracer.analysis.topocheck")

PROBE = """
import contextlib, io, json, sys
from tracer.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _loaded_after(*argv: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_replay_loads_only_what_it_uses() -> None:
    r = _loaded_after("replay", "captures/all-delivered")
    assert r["code"] == 0 and "3/3" in r["out"]  # it did replay the run
    assert "tracer.analysis.analyze" in r["modules"]
    assert [m for m in NOT_FOR_REPLAY + LIVE_STATE + JSON_ONLY if _loaded(r["modules"], m)] == []


def test_replay_json_loads_only_what_it_uses() -> None:
    r = _loaded_after("replay", "captures/gw-forward-drop", "--json")
    assert r["code"] == 1 and json.loads(r["out"])
    assert [m for m in NOT_FOR_REPLAY + LIVE_STATE if _loaded(r["modules"], m)] == []


def test_replay_with_live_state_compares_it() -> None:
    r = _loaded_after("replay", "captures/no-peer-route")  # its run recorded the nodes' live state
    assert r["code"] == 1
    assert all(_loaded(r["modules"], m) for m in LIVE_STATE)
    assert [m for m in NOT_FOR_REPLAY if _loaded(r["modules"], m)] == []



# Modules a live trace must not load before its first probe: the analysis and the renderer are
# imported while the sniffers stop (tracer.cli.trace), not on the way to the first probe.
NOT_BEFORE_PROBING = ("numpy", "networkx", "tracer.run.replay", "tracer.analysis.analyze", "tracer.cli.render",
                      "tracer.capture", "tracer.cli.replay", "tracer.cli.check", "tracer.cli.lab", "tracer.cli.report")


def test_live_trace_records_without_the_analysis() -> None:
    # A topology that does not exist fails after every import the recording needs.
    r = _loaded_after("ping", "-t", "/nonexistent/topology.toml", "west", "east")
    assert r["code"] == 2
    assert "tracer.run.record" in r["modules"] and "tracer.send.echo" in r["modules"]
    assert [m for m in NOT_BEFORE_PROBING if _loaded(r["modules"], m)] == []
