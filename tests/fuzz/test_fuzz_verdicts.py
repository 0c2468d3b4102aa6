"""Damage outside the packet data never changes a verdict silently (issue 13, deliver 2).

Each case takes a recorded scenario (``captures/*``), damages one of its capture files where a
disk, a copy or a tool damages files — cut down to its header, cut at a block boundary, its
link type changed to another one tracer reads, its timestamp resolution changed, its interface
block dropped — and replays the run directory (in-process, ``tracer.cli.main``). The replay must
refuse the file (exit 2), or give the scenario's own verdict, or say so: a warning or a damaged
point the undamaged run does not have. A changed verdict with nothing said is a failure.

``TRACER_FUZZ_VERDICT_CASES`` (default 60; every scenario, file and damage is about 1,100 cases),
``TRACER_FUZZ_START``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import struct
from pathlib import Path

import pytest

from tests.fuzz.bounds import time_limit
from tests.fuzz.mutate import EPB, IDB, SHB, parse_pcapng, serialise_pcapng, set_fixed, with_options
from tracer.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (ROOT / "captures").iterdir() if (p / "manifest.json").exists())
CASES = int(os.environ.get("TRACER_FUZZ_VERDICT_CASES", "60"))
START = int(os.environ.get("TRACER_FUZZ_START", "0"))
DAMAGES = ("cut to header", "cut at a block", "link type", "tsresol", "no interface block")


def replay(run: Path) -> tuple[int, dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), time_limit(30):
        rc = main(["replay", str(run), "--json"])
    doc = json.loads(out.getvalue()) if rc in (0, 1, 3) else None
    if isinstance(doc, dict) and "runs" in doc:  # the JSON contract: one verdict per run
        doc = doc["runs"]
    return rc, (doc[0] if isinstance(doc, list) else doc), err.getvalue()


def damage(data: bytes, what: str, rng: random.Random) -> bytes | None:
    blocks = parse_pcapng(data)
    first_epb = next((i for i, b in enumerate(blocks) if b.type == EPB), None)
    if first_epb is None:
        return None  # nothing to lose: an empty capture stays empty
    if what == "cut to header":
        return serialise_pcapng(blocks[:first_epb])
    if what == "cut at a block":
        return serialise_pcapng(blocks[: rng.randrange(first_epb, len(blocks))])
    idb = next(i for i, b in enumerate(blocks) if b.type == IDB)
    if what == "link type":
        now = struct.unpack_from(blocks[idb].bo + "H", blocks[idb].body)[0]
        blocks[idb] = set_fixed(blocks[idb], 0, rng.choice([t for t in (1, 101, 113, 276, 0, 108) if t != now]))
    elif what == "tsresol":
        blocks[idb] = with_options(blocks[idb], [(2, b"x"), (9, bytes([rng.choice((0, 3, 6, 12, 0x80 | 20, 0x80 | 40))]))])
    else:
        del blocks[idb]
    assert blocks[0].type == SHB
    return serialise_pcapng(blocks)


@pytest.fixture(scope="module")
def baselines() -> dict[str, tuple[int, dict | None]]:
    return {s.name: replay(s)[:2] for s in SCENARIOS}


def test_damage_outside_packet_data_is_refused_or_said(baselines, tmp_path: Path) -> None:
    failures = []
    tried = 0
    for case in range(START, START + CASES):
        rng = random.Random(case)
        scen = SCENARIOS[case % len(SCENARIOS)]
        target = rng.choice(sorted(scen.glob("*.pcapng")))
        what = rng.choice(DAMAGES)
        data = damage(target.read_bytes(), what, rng)
        if data is None:
            continue
        run = tmp_path / f"case{case}"
        shutil.copytree(scen, run)
        (run / target.name).write_bytes(data)
        rc, doc, err = replay(run)
        tried += 1
        base_rc, base = baselines[scen.name]
        said = doc is not None and base is not None and (
            len(doc["warnings"]) > len(base["warnings"]) or len(doc["damaged"]) > len(base["damaged"]))
        if rc not in (0, 1, 2, 3):
            failures.append(f"case {case} {scen.name}/{target.name} {what}: exit {rc} {err[-300:]}")
        elif rc != 2 and not said and (rc != base_rc or doc["summary"] != base["summary"]):
            failures.append(f"case {case} {scen.name}/{target.name} {what}: silent change "
                            f"'{base['summary']}' → '{doc['summary']}'")
        else:
            shutil.rmtree(run)
    assert not failures, f"{len(failures)} of {tried} damaged runs:\n" + "\n".join(failures[:40])
    assert tried > CASES // 3
