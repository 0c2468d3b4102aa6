"""Structure-aware fuzzing of the capture readers (classic pcap and pcapng).

Every mutant (see :mod:`tests.fuzz.mutate`) of the recorded scenarios' pcapng
files under ``captures/`` (and of a classic pcap written from one of them) must
either be read and observed, or be refused with a one-line
:class:`tracer.errors.CaptureError`; anything else fails with the case number,
the seed file and the mutations. Each case is bounded in time (signal alarm)
and in memory (tracemalloc peak relative to the file size). A smaller set goes
through the real command line (``python -m tracer replay DIR``): the exit code
must be a documented one and stderr must hold no traceback.

The default sizes keep this module under a minute on a 2-core machine. A longer
run on demand::

    TRACER_FUZZ_CASES=100000 python3 -m pytest tests/fuzz -q

``TRACER_FUZZ_CLI_CASES`` sets the number of command-line cases,
``TRACER_FUZZ_START`` the first case number (to explore other seeds). Crashing
inputs found are kept, minimised, in ``tests/fuzz/regressions/`` and replayed by
:func:`test_regressions`.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from tests.fuzz.bounds import cli_problem, time_limit
from tests.fuzz.mutate import EPB, is_pcapng, mutant, mutate, parse_pcapng, pcap_from_pcapng
from tracer.capture.observe import observe_capture
from tracer.capture.pcapfile import read_capture
from tracer.errors import CaptureError

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"
REGRESSIONS = Path(__file__).with_name("regressions")
CASES = int(os.environ.get("TRACER_FUZZ_CASES", "3000"))
CLI_CASES = int(os.environ.get("TRACER_FUZZ_CLI_CASES", "30"))
START = int(os.environ.get("TRACER_FUZZ_START", "0"))
TIME_LIMIT_S = 2.0
MEMORY_LIMIT = 16 << 20  # bytes of Python/numpy allocation per case beyond 64 x the file size


def seeds() -> list[tuple[str, bytes]]:
    files = sorted(CAPTURES.glob("*/*.pcapng"))
    out = [(str(p.relative_to(ROOT)), p.read_bytes()) for p in files]
    src = CAPTURES / "all-delivered" / "router_eth0.pcapng"
    out.append((f"classic pcap of {src.relative_to(ROOT)}", pcap_from_pcapng(src.read_bytes())))
    out.append((f"big-endian nanosecond pcap of {src.relative_to(ROOT)}", pcap_from_pcapng(src.read_bytes(), bo=">", nano=True)))
    return out


SEEDS = seeds()


def check(path: Path, data: bytes, *, memory: bool = True) -> str | None:
    """None if ``data`` is read and observed or refused with a one-line CaptureError; else what went wrong."""
    path.write_bytes(data)
    if memory:
        tracemalloc.start()
    try:
        with time_limit(TIME_LIMIT_S):
            observe_capture(read_capture(path))
    except CaptureError as e:
        msg = str(e)
        if "\n" in msg or not msg.strip():
            return f"CaptureError message is not one line: {msg!r}"
    except Exception as e:  # anything else is a crash (Hang included)
        return f"{type(e).__name__}: {e}"
    finally:
        if memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    if memory and peak > MEMORY_LIMIT + 64 * len(data):
        return f"allocated {peak} bytes at peak for a {len(data)}-byte file"
    return None


def test_seeds_are_read(tmp_path: Path) -> None:
    assert len(SEEDS) > 20
    path = tmp_path / "seed.pcapng"
    packets = 0
    for name, data in SEEDS:
        assert check(path, data) is None, name
        packets += len(read_capture(path))
    assert packets > 100


def test_mutants_are_read_or_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mutant.pcapng"
    failures = []
    for case in range(START, START + CASES):
        name, data, desc = mutant(SEEDS, case)
        problem = check(path, data)
        if problem:
            saved = tmp_path / f"case-{case}.bin"
            saved.write_bytes(data)
            failures.append(f"case {case} (random.Random({case})) from {name}: {'; '.join(desc)} → {problem} [{saved}]")
    assert not failures, f"{len(failures)} of {CASES} mutants failed:\n" + "\n".join(failures[:30])


def regression_files() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.bin"))


@pytest.mark.parametrize("path", regression_files(), ids=lambda p: p.name)
def test_regressions(path: Path, tmp_path: Path) -> None:
    assert path.stat().st_size <= 4096  # regression inputs stay small
    assert check(tmp_path / path.name, path.read_bytes()) is None


def test_command_line_replay_of_mutants(tmp_path: Path) -> None:
    """Mutants replace one capture file of a copied run directory; ``tracer replay`` must exit cleanly."""
    scenarios = sorted(p for p in CAPTURES.iterdir() if (p / "manifest.json").exists())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jobs: list[tuple[int, str, list[str], subprocess.Popen[str]]] = []
    failures = []

    def finish(job: tuple[int, str, list[str], subprocess.Popen[str]]) -> None:
        case, where, desc, proc = job
        problem = cli_problem(proc)
        if problem:
            failures.append(f"case {case} {where} ({'; '.join(desc)}): {problem}")

    for k, case in enumerate(range(START, START + CLI_CASES)):
        scen = scenarios[case % len(scenarios)]
        files = sorted(scen.glob("*.pcapng"))
        target = files[(case // len(scenarios)) % len(files)]
        run = tmp_path / f"run{case}"
        shutil.copytree(scen, run)
        seed = target.read_bytes()
        if case % 3 == 2:  # a classic pcap under the pcapng name (the reader goes by the magic)
            seed = pcap_from_pcapng(seed)
        _, data, desc = mutant([(target.name, seed)], case)
        (run / target.name).write_bytes(data)
        proc = subprocess.Popen([sys.executable, "-m", "tracer", "replay", str(run)], env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        jobs.append((case, f"{scen.name}/{target.name}", desc, proc))
        if k % 2 == 1:  # two at a time
            for job in jobs:
                finish(job)
            jobs = []
    for job in jobs:
        finish(job)
    assert not failures, "\n".join(failures)


def _large(data: bytes, size: int) -> bytes:
    """``data`` grown past ``size`` bytes by repeating its first packet (block or record): the memory-mapped path."""
    if is_pcapng(data):
        blocks = parse_pcapng(data)
        k = next(i for i, b in enumerate(blocks) if b.type == EPB)
        filler = blocks[k].serialise()
        at = sum(len(b.serialise()) for b in blocks[: k + 1])
    else:
        caplen = struct.unpack_from("<I" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">I", data, 32)[0]
        filler, at = data[24 : 24 + 16 + caplen], 24 + 16 + caplen
    return data[:at] + filler * (size // len(filler) + 1) + data[at:]


LARGE_CASES = max(2, CASES // 200)


def test_large_mutants_memory_mapped(tmp_path: Path) -> None:
    """Files past the 1 MiB mmap threshold (not padded in memory), damaged mostly near their end."""
    path = tmp_path / "large.pcapng"
    failures = []
    for case in range(START, START + LARGE_CASES):
        rng = random.Random(case)
        name, data = rng.choice([s for s in SEEDS if "all-delivered/router_eth0" in s[0] or not is_pcapng(s[1])])
        big = _large(data, (1 << 20) + rng.randrange(4096))
        if rng.random() < 0.7:
            big = big[: len(big) - rng.randrange(1, 700)]
            desc = [f"cut to {len(big)} bytes"]
        else:
            big, desc = mutate(big, rng, 1)
        problem = check(path, big, memory=False)
        if problem:
            failures.append(f"large case {case} from {name}: {'; '.join(desc)} → {problem}")
    assert not failures, "\n".join(failures)


def _many_interfaces(n: int) -> bytes:
    """A pcapng file with ``n`` unnamed Ethernet interfaces and one packet on the last (too large for a file)."""
    def block(btype: int, body: bytes) -> bytes:
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    frame = bytes(12) + b"\x08\x00" + bytes(46)
    return (block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + block(1, struct.pack("<HHI", 1, 0, 0)) * n
            + block(6, struct.pack("<IIIII", n - 1, 0, 0, len(frame), len(frame)) + frame))


def test_interface_count_is_bounded(tmp_path: Path) -> None:
    """Found by fuzzing: 32768+ interface blocks overflowed the int16 interface column (OverflowError, or records
    silently on the wrong interface) and naming ~10**4 points was quadratic (tens of seconds)."""
    path = tmp_path / "many.pcapng"
    assert check(path, _many_interfaces(32767), memory=False) is None
    assert len(observe_capture(read_capture(path)).obs.points) == 32767
    path.write_bytes(_many_interfaces(32768))
    with pytest.raises(CaptureError, match="at most 32767"):
        read_capture(path)


COLUMNS_CASES = max(1, CASES // 10)


def test_columns_mutants_are_read_or_refused_in_one_line(tmp_path: Path) -> None:
    # Columns files come back from remote hosts: read like captures, within MAX_RATIO x their size.
    import io

    from tests.fuzz.mutate import mutate_columns
    from tracer.capture.observe import observe_file
    from tracer.columns import MAX_RATIO, read_columns, write_columns

    seeds = []
    for f in ("gw-forward-drop/west_eth0.pcapng", "all-delivered/router_eth0.pcapng"):
        buf = io.BytesIO()
        write_columns(buf, observe_file(CAPTURES / f, "west:eth0").obs.cols, "west:eth0", "h:/x", ["w"], None)
        seeds.append((f, buf.getvalue()))
    path = tmp_path / "mutant.cols"
    failures = []
    for case in range(START, START + COLUMNS_CASES):
        rng = random.Random(case)
        name, seed = rng.choice(seeds)
        data, desc = mutate_columns(seed, rng)
        path.write_bytes(data)
        tracemalloc.start()
        problem = None
        try:
            with time_limit(TIME_LIMIT_S):
                read_columns(path)
        except CaptureError as e:
            if "\n" in str(e):
                problem = f"not one line: {e!s:.200}"
        except Exception as e:  # anything else is a crash
            problem = f"{type(e).__name__}: {e!s:.200}"
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        if problem is None and peak > MEMORY_LIMIT + MAX_RATIO * len(data):
            problem = f"allocated {peak} bytes at peak for a {len(data)}-byte file"
        if problem:
            failures.append(f"case {case} from {name}: {'; '.join(desc)} → {problem}")
    assert not failures, f"{len(failures)} of {COLUMNS_CASES} columns mutants failed:\n" + "\n".join(failures[:30])
