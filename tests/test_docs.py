"""Docs are tested: every code block in README.md and docs/*.md, and every command quoted inline, is checked.

Fenced blocks, by kind (``classify``):

* **transcript** — ``$ command`` lines, each followed by the output the docs show. The command runs
  (offline only) and what it prints must match the shown lines exactly, trailing spaces aside; a
  line that is only ``…`` or ``...`` stands for any number of lines the docs leave out.
* **shell** (``sh``) — commands, one per line (``\\`` continues a line, ``&&`` chains). Each is run
  offline, run in the lab test, or only checked for what it names (``command_kind``); a command no
  rule knows fails, so new docs cannot slip through untested.
* **python** — run in a subprocess from the repository root; the blocks in ``LAB_PYTHON`` run in
  the lab test instead.
* **toml** — complete topologies (those with ``links`` or ``tunnels``) load with
  ``Topology.from_dict``; fragments are merged into the complete example of docs/topology.md and
  must load too.  **json** — parsed.
* ``FORMATS`` — other file formats, read by their reader (the esp_sa example).
* ``ILLUSTRATIONS`` — diagrams, sample messages, placeholder scripts: listed with why they do not run.

Anything else fails with its file and line.

Inline commands (`` `tracer …` ``, `` `python3 …` ``, `` `./…` ``): complete ``tracer`` commands (the
real argument parser accepts them) run like shell lines; synopses and fragments (placeholders, or
what the parser refuses) must name an existing subcommand and only options it has.

The lab test brings up its own lab, ``LAB`` (every lab name in the docs is mapped to it, and
``tracer ping``/``ike``/``mtu`` get its topology), runs the docs' lab commands in document order
from a temporary directory (run directories and exported keys land there), and removes the lab in
``finally``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LAB = "dt"  # namespaces trc-dt-*, distinct from the other test modules' labs and a user's default lab
LAB_TOPOLOGY = f"/run/tracer/lab-{LAB}/topology.toml"
ELISION = ("…", "...")

# Blocks that are not runnable, by (file, first line): why.
ILLUSTRATIONS: dict[tuple[str, str], str] = {
    ("README.md", "topology ──► expected paths + flow graph (networkx) ──────────────┐"): "architecture diagram",
    ("README.md", "west 192.0.2.10 ── lan0 west-gw wan0 ── eth0 router eth1 ── wan0 east-gw lan0 ── east 198.51.100.10"):
        "lab diagram",
    ("README.md", "TRACER ping west (192.0.2.10) → east (198.51.100.10), 56 bytes of data, 5 probes, run 0x05d96967"):
        "live output of a lab run with a fault (tests/live/test_live_output_lab.py checks these lines)",
    ("docs/remote-capture.md",
     "tcpdump -i IFACE -w - -U --immediate-mode -n --time-stamp-precision=nano -s 262144 -B 16384 -Z root \\"):
        "the script tracer runs on the remote host, with placeholders (tests/sniff runs the real one over SSH)",
    ("docs/remote-capture.md", "tracer: sniffer on east-gw:wan0 did not start: root@203.0.113.2: Permission denied (publickey). "
                               "(ssh root@203.0.113.2 from netns trc-sh-mgmt)"):
        "sample error lines of broken remote hosts (tests/sniff provokes them)",
    ("docs/remote-capture.md", "warning: clock of east-gw estimated at +0.012 ms from 12 packets crossing east-gw:wan0 ↔ "
                               "router:eth1, east-gw:lan0 ↔ east:eth0 both ways; its timestamps are corrected by it"):
        "sample warning of a run with a remote capture point (tests/analysis/test_clock checks the wording)",
    ("docs/wireshark.md", "west:eth0\ttracer ping run 0xe2d9f17f seq 0 request: lost inside router between eth0 and eth1 "
                          "(forward)"):
        "tshark's output for the block above (tests/run/test_merged.py checks these comments)",
    ("README.md", "watching ping west → east: 60 probes per 60 s window; directory /tmp/pghour/out/watch  (Ctrl-C to stop)"):
        "sample output of an hour-long watch (bench/watch_hour.sh); tests/live/test_watch_lab.py checks the lines",
}

# File-format examples that are neither TOML nor JSON, by (file, first line): the format.
FORMATS: dict[tuple[str, str], str] = {
    ("docs/esp-keys.md", "# Wireshark ESP SA table (esp_sa). Contains secret keys: keep it private."): "esp_sa",
}

# Python blocks that need the running lab (its keys, a run it recorded), by (file, first line).
LAB_PYTHON: set[tuple[str, str]] = {
    ("docs/esp-keys.md", "from pathlib import Path"),  # reads the lab run and keys of the blocks before it
}

# Commands that install things, take minutes or are the test suite itself: checked, never run.
NOT_RUN: dict[str, str] = {
    "./bootstrap": "installs Debian and Python packages (CI runs it before the tests)",
    "python3 -m pytest": "the test suite itself (CI runs it)",
    "python3 -m ruff": "the linter (CI runs it)",
    "python3 bench/": "benchmarks take minutes (bench_live needs the lab): --help must list every option the docs use",
    "python3 scripts/record_scenarios.py": "re-records every scenario on the lab (minutes); it takes no options",
    "python3 scripts/record_plain_captures.py": "re-records the hand-taken captures of captures/plain on the lab (a minute)",
}

# Lab commands and blocks run from a temporary directory; these paths of the docs move into it.
LAB_PATHS = {"/tmp/ws": "ws"}
# Files the docs' commands name as the reader's own: in the lab test, the lab's.
READER_FILES = {"my-net.toml": LAB_TOPOLOGY}

# Extra facts a lab command's output must show, by command prefix.
LAB_EXPECT = {
    "tracer watch": "2 windows over",  # it ran to its end and summed up
    "WIRESHARK_CONFIG_DIR=": "Echo (ping) request",  # the private config decrypts the ESP: the inner ICMP is dissected
}


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository root
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def key(self) -> tuple[str, str]:
        first = next((ln for ln in self.text.splitlines() if ln.strip()), "")
        return (self.file, first)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Span:
    """An inline code span that quotes a command."""

    file: str
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def parse_docs() -> tuple[list[Block], list[Span]]:
    blocks: list[Block] = []
    spans: list[Span] = []
    for path in DOC_FILES:
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
            if m:
                fence, start = m.group(2), i
                i += 1
                body: list[str] = []
                while i < len(lines) and not lines[i].strip().startswith(fence):
                    body.append(lines[i])
                    i += 1
                assert i < len(lines), f"{rel}:{start + 1}: code block never closed"
                blocks.append(Block(rel, start + 1, m.group(3).lower(), "\n".join(body) + "\n"))
            else:
                for s in re.findall(r"`([^`]+)`", lines[i]):
                    s = s.replace("\\|", "|")  # a | escaped inside a table cell
                    if re.match(r"(tracer \S|python3? \S|\./\w)", s):  # not the bare name "tracer" of prose
                        spans.append(Span(rel, i + 1, s))
            i += 1
    return blocks, spans


BLOCKS, SPANS = parse_docs()

Kind = Literal["transcript", "shell", "python", "toml", "json", "format", "illustration", "unknown"]


def classify(b: Block) -> Kind:
    if b.key in ILLUSTRATIONS:
        return "illustration"
    if b.key in FORMATS:
        return "format"
    if b.lang in ("", "sh", "console", "shell", "bash") and any(ln.startswith("$ ") for ln in b.text.splitlines()):
        return "transcript"
    if b.lang in ("sh", "shell", "bash"):
        return "shell"
    if b.lang in ("python", "toml", "json"):
        return b.lang  # type: ignore[return-value]
    return "unknown"  # test_every_block_is_classified fails on it


# --- shell commands ----------------------------------------------------------------------------------------------

CmdKind = Literal["offline", "lab", "not-run", "plumbing"]


def split_commands(text: str) -> list[list[str]]:
    """Shell text → commands as argv (comments dropped, ``\\`` and open quotes continue, ``&&`` splits).
    Redirections stay tokens of their command."""
    commands: list[list[str]] = []
    pending = ""
    for line in text.splitlines():
        pending += line + "\n"
        if pending.rstrip("\n").endswith("\\"):
            pending = pending.rstrip("\n")[:-1] + " "
            continue
        lexer = shlex.shlex(pending, posix=True, punctuation_chars="&|<>;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:  # an open quote: the command goes on
            continue
        pending = ""
        cmd: list[str] = []
        for t in tokens:
            if t in ("&&", ";"):
                if cmd:
                    commands.append(cmd)
                cmd = []
            else:
                cmd.append(t)
        if cmd:
            commands.append(cmd)
    assert not pending.strip(), f"unfinished shell command: {pending!r}"
    return commands


def program(argv: list[str]) -> list[str]:
    """argv without leading VAR=value assignments."""
    i = 0
    while i < len(argv) and re.match(r"^[A-Za-z_]\w*=", argv[i]):
        i += 1
    return argv[i:]


def command_kind(argv: list[str]) -> CmdKind:
    prog = program(argv)
    line = " ".join(prog)
    if any(line == k or line.startswith(k if k.endswith("/") else k + " ") for k in NOT_RUN):
        return "not-run"
    if prog[0] == "tracer":
        if "--help" in prog or "-h" in prog or prog[1:2] in (["replay"], ["plot"]):
            return "offline"
        if prog[1:2] in (["lab"], ["ping"], ["ike"], ["mtu"], ["watch"]) or prog[1:3] == ["topology", "discover"]:
            return "lab"
        if prog[1:3] in (["topology", "check"], ["topology", "path"]):
            return "offline"  # files shipped in the repository
        if prog[1:2] == ["extract"]:
            return "offline"  # what a trace runs on SSH hosts; --check reads nothing
    if prog[:2] == ["python3", "-c"]:
        return "lab" if "tracer.lab" in prog[2] else "offline"
    if prog[0] == "tshark" and _reads_offline_file(prog):
        return "offline"  # a recorded capture of the repository, or what an offline command of the block wrote
    if prog[0] == "tshark":
        return "lab"  # reads a run recorded on the lab, with the lab's keys
    if prog[0] in ("mkdir", "cp", "echo"):
        return "plumbing"  # runs where the rest of its block runs
    raise AssertionError(f"no rule for the command {shlex.join(argv)!r}: add one to command_kind in tests/test_docs.py")


def _reads_offline_file(prog: list[str]) -> bool:
    """tshark -r captures/… (the repository's recordings) or -r /tmp/… (written by an offline
    ``tracer replay --write-pcapng`` earlier in the same block)."""
    read = prog[prog.index("-r") + 1] if "-r" in prog[:-1] else ""
    return read.startswith(("captures/", "/tmp/")) and not read.startswith("/tmp/ws")


def shell_text(argv: list[str]) -> str:
    return " ".join(t if t in (">", ">>", "<", "|") else shlex.quote(t) for t in argv)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", **extra}


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ``tracer`` (this tree, as ``python -m tracer``) and ``python3`` (this interpreter) for PATH."""
    d = tmp_path_factory.mktemp("bin")
    (d / "tracer").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tracer "$@"\n')
    (d / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for f in d.iterdir():
        f.chmod(0o755)
    return d


def run_shell(argv: list[str], shim: Path, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # Run directories a trace writes by default (the user's data directory) land in cwd too.
    return subprocess.run(["bash", "-c", shell_text(argv)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env(PATH=f"{shim}:{os.environ.get('PATH', '')}", XDG_DATA_HOME=str(cwd / "data")))


def check_not_run(argv: list[str], where: str) -> None:
    prog = program(argv)
    if prog[0].startswith("./"):
        script = ROOT / prog[0]
        assert script.is_file() and os.access(script, os.X_OK), f"{where}: {prog[0]} is not an executable file"
    elif prog[1] == "-m":
        assert importlib.util.find_spec(prog[2]), f"{where}: python module {prog[2]} is not installed"
    else:
        script = ROOT / prog[1]
        assert script.is_file(), f"{where}: {prog[1]} does not exist"
        if prog[1].startswith("bench/"):
            r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=30, env=env())
            assert r.returncode == 0, f"{where}: {prog[1]} --help failed: {r.stderr}"
            for opt in (t.split("=")[0] for t in prog[2:] if t.startswith("--")):
                assert re.search(rf"{re.escape(opt)}\b", r.stdout), f"{where}: {prog[1]} has no option {opt}"


# --- transcripts --------------------------------------------------------------------------------------------------


def transcript_steps(b: Block) -> list[tuple[int, str, list[str]]]:
    """(line, command, shown output lines) for each ``$ `` line of a transcript block."""
    steps: list[tuple[int, str, list[str]]] = []
    for n, line in enumerate(b.text.splitlines(), start=b.line + 1):
        if line.startswith("$ "):
            steps.append((n, line[2:], []))
        else:
            assert steps, f"{b.file}:{n}: output before the first '$ ' command"
            steps[-1][2].append(line)
    return steps


def matches(shown: list[str], actual: list[str]) -> bool:
    """Line-for-line equality, an elision line matching any run of lines (none included)."""
    if not shown:
        return not actual
    if shown[0].strip() in ELISION:
        return any(matches(shown[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and shown[0] == actual[0] and matches(shown[1:], actual[1:])


def strip_lines(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


# --- the offline checks -------------------------------------------------------------------------------------------


def test_every_block_is_classified() -> None:
    assert BLOCKS, "no code blocks found"
    for b in BLOCKS:
        kind = classify(b)
        assert kind != "unknown", (
            f"{b.where}: unclassified code block ({b.lang or 'no language'}, starts {b.key[1]!r}): give it a language "
            "tests/test_docs.py runs, or list it in ILLUSTRATIONS / FORMATS with the reason")
        if kind == "shell":
            for argv in split_commands(b.text):
                command_kind(argv)  # raises for a command no rule knows


def test_listed_blocks_exist() -> None:
    """A stale entry in a list would quietly stop testing nothing; each must name a block of the docs."""
    keys = {b.key for b in BLOCKS}
    for key in [*ILLUSTRATIONS, *FORMATS, *LAB_PYTHON]:
        assert key in keys, f"listed in tests/test_docs.py but no such block in the docs: {key}"


def blocks_of(kind: Kind) -> list[Block]:
    return [b for b in BLOCKS if classify(b) == kind]


@pytest.mark.parametrize("block", blocks_of("transcript"), ids=lambda b: b.where)
def test_transcript_output_is_what_tracer_prints(block: Block) -> None:
    for line, command, shown in transcript_steps(block):
        argv = shlex.split(command, comments=True)
        assert command_kind(argv) == "offline" and argv[0] == "tracer", (
            f"{block.file}:{line}: transcripts must be offline tracer commands (the output of a live one varies)")
        r = subprocess.run([sys.executable, "-m", "tracer", *argv[1:]], cwd=ROOT, env=env(), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode in (0, 1, 3) and r.stderr == "", f"{block.file}:{line}: {command}: exit {r.returncode}, {r.stderr}"
        actual = strip_lines(r.stdout)
        want = strip_lines("\n".join(shown))
        if not matches(want, actual):
            diff = "\n".join(difflib.unified_diff(want, actual, "docs", "tracer prints", lineterm=""))
            pytest.fail(f"{block.file}:{line}: the output shown for '{command}' drifted "
                        f"(a line '…' may stand for lines left out):\n{diff}")


@pytest.mark.parametrize("block", blocks_of("shell"), ids=lambda b: b.where)
def test_shell_block(block: Block, shim: Path, tmp_path: Path) -> None:
    """Offline commands run; commands that are never run are checked; lab ones run in test_lab_commands."""
    for argv in split_commands(block.text):
        kind = command_kind(argv)
        if kind == "not-run":
            check_not_run(argv, block.where)
        elif kind in ("offline", "plumbing") and not block_needs_lab(block):
            run_offline(argv, block.where, shim, tmp_path)


def block_needs_lab(b: Block) -> bool:
    return any(command_kind(argv) == "lab" for argv in split_commands(b.text))


def run_offline(argv: list[str], where: str, shim: Path, tmp_path: Path) -> None:
    """Run an offline command from the repository root; an output file (``-o FILE``) goes to tmp_path."""
    argv = list(argv)
    outputs: list[Path] = []
    for i, t in enumerate(argv[:-1]):
        if t in ("-o", "--out"):
            argv[i + 1] = str(tmp_path / Path(argv[i + 1]).name)
            outputs.append(Path(argv[i + 1]))
    r = run_shell(argv, shim, ROOT)
    assert r.returncode in (0, 1), f"{where}: {shlex.join(argv)}: exit {r.returncode}: {r.stderr}"
    assert "Traceback" not in r.stderr, f"{where}: {shlex.join(argv)}: {r.stderr}"
    for out in outputs:
        assert out.is_file() and out.stat().st_size > 0, f"{where}: {shlex.join(argv)} wrote no {out.name}"


def test_python_blocks_run() -> None:
    # A loop, not a parametrization: the docs' only Python block needs the lab today, and an empty
    # parameter set would be a skip (a failure under TRACER_STRICT_SKIPS).
    for block in [b for b in blocks_of("python") if b.key not in LAB_PYTHON]:
        r = subprocess.run([sys.executable, "-"], input=block.text, cwd=ROOT, env=env(), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, f"{block.where}: the Python example fails:\n{r.stderr}"


def example_topology() -> dict[str, Any]:
    complete = [b for b in blocks_of("toml") if b.file == "docs/topology.md" and is_complete(tomllib.loads(b.text))]
    assert complete, "docs/topology.md has no complete example topology"
    return tomllib.loads(complete[0].text)


def is_complete(data: dict[str, Any]) -> bool:
    return "links" in data or "tunnels" in data


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("block", blocks_of("toml"), ids=lambda b: b.where)
def test_toml_example_loads(block: Block) -> None:
    from tracer.model.topology import Topology

    data = tomllib.loads(block.text)
    if not is_complete(data):
        data = merged(example_topology(), data)  # a fragment: it must fit into a whole topology
    Topology.from_dict(data, source=block.where)


def test_json_examples_parse() -> None:
    for block in blocks_of("json"):  # none today: a loop, not a parametrization that would skip when empty
        try:
            json.loads(block.text)
        except json.JSONDecodeError as e:
            pytest.fail(f"{block.where}: not valid JSON: {e}")


@pytest.mark.parametrize("block", blocks_of("format"), ids=lambda b: b.where)
def test_format_example_reads(block: Block) -> None:
    assert FORMATS[block.key] == "esp_sa"
    from tracer.esp import parse_esp_sa

    sas = parse_esp_sa(block.text, source=block.where)
    rows = [ln for ln in block.text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(sas) == len(rows)


def test_help_claims() -> None:
    """README: "Every command has `--help` with examples; every command that prints a verdict has `--json`"."""
    import argparse

    from tracer.cli import build_parser

    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in subs.choices.items():
        text = parser.format_help()
        assert "examples:" in text, f"tracer {name} --help has no examples"
        if name in ("replay", "ping", "ike", "mtu"):
            assert "--json" in text, f"tracer {name} prints a verdict but has no --json"


# --- inline commands ----------------------------------------------------------------------------------------------


PLACEHOLDER = re.compile(r"…|\.\.\.|\[|\||<|\b[A-Z][A-Z0-9_]{1,}\b")


def tracer_parses(argv: list[str]) -> bool:
    from tracer.cli import build_parser
    from tracer.errors import BadInput

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except (SystemExit, BadInput):  # --help exits; a usage error is BadInput (one line, exit 2)
        return False
    return True


def subparser_options(words: list[str]) -> tuple[list[str], set[str]]:
    """The subcommand path (``lab up``) a synopsis names, and that subcommand's option strings."""
    import argparse

    from tracer.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    path: list[str] = []
    for w in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or w not in subs[0].choices:
            break
        parser = subs[0].choices[w]
        path.append(w)
    return path, set(parser._option_string_actions)


def names_only(words: list[str]) -> bool:
    """``tracer replay`` in prose names the command: a subcommand that takes inputs, given none."""
    import argparse

    from tracer.cli import build_parser

    path, _ = subparser_options(words)
    if len(path) != len(words):
        return False
    parser: argparse.ArgumentParser = build_parser()
    for w in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[w]
    return any(not a.option_strings and not isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def inline_complete(s: Span) -> bool:
    argv = shlex.split(s.text)
    return (argv[0] == "tracer" and not PLACEHOLDER.search(s.text) and not names_only(argv[1:])
            and tracer_parses(argv[1:]))


@pytest.mark.parametrize("span", SPANS, ids=lambda s: f"{s.where} {s.text}")
def test_inline_command(span: Span, shim: Path, tmp_path: Path) -> None:
    if not span.text.startswith("tracer"):
        argv = shlex.split(span.text)
        assert command_kind(argv) == "not-run", f"{span.where}: no rule for {span.text!r}"
        check_not_run(argv, span.where)
        return
    words = span.text.split()[1:]
    path, options = subparser_options(words)
    if not path:  # only tracer's own options (``tracer --version``): each must be one, and it runs
        from tracer.cli import build_parser

        top = {o for a in build_parser()._actions for o in a.option_strings}
        assert words and set(words) <= top, f"{span.where}: {span.text!r} names no tracer subcommand"
        run_offline(shlex.split(span.text), span.where, shim, tmp_path)
        return
    used = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", span.text))
    assert used <= options, f"{span.where}: {span.text!r}: tracer {' '.join(path)} has no option {sorted(used - options)}"
    if inline_complete(span) and command_kind(shlex.split(span.text)) == "offline":
        run_offline(shlex.split(span.text), span.where, shim, tmp_path)


# --- the lab ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabStep:
    where: str
    argv: list[str] | None = None  # a command
    python: str | None = None  # or a Python block


def lab_steps() -> list[LabStep]:
    """The docs' lab commands and blocks, in document order (file by file, then by line)."""
    steps: list[tuple[int, int, LabStep]] = []
    order = {str(p.relative_to(ROOT)): i for i, p in enumerate(DOC_FILES)}
    for b in BLOCKS:
        kind = classify(b)
        if kind == "shell" and block_needs_lab(b):
            for argv in split_commands(b.text):
                if command_kind(argv) in ("lab", "plumbing"):
                    steps.append((order[b.file], b.line, LabStep(b.where, argv=argv)))
        elif kind == "python" and b.key in LAB_PYTHON:
            steps.append((order[b.file], b.line, LabStep(b.where, python=b.text)))
    for s in SPANS:
        if inline_complete(s) and command_kind(shlex.split(s.text)) == "lab":
            steps.append((order[s.file], s.line, LabStep(s.where, argv=shlex.split(s.text))))
    return [st for _, _, st in sorted(steps, key=lambda t: (t[0], t[1]))]


def for_lab(text: str, cwd: Path) -> str:
    """Any lab the docs name is this test's lab; the docs' fixed scratch paths move into cwd."""
    text = re.sub(r"/run/tracer/lab-[a-z0-9]+/", f"/run/tracer/lab-{LAB}/", text)
    text = re.sub(r"""Lab\((["'])[a-z0-9]+\1\)""", f'Lab("{LAB}")', text)
    text = re.sub(r"\btrc-[a-z0-9]+-\*", f"trc-{LAB}-*", text)  # a namespace pattern of the docs' lab
    for old, new in LAB_PATHS.items():
        text = text.replace(old, str(cwd / new))
    for old, new in READER_FILES.items():
        text = text.replace(old, new)
    return text


def lab_argv(argv: list[str], cwd: Path) -> list[str]:
    argv = [for_lab(t, cwd) for t in argv]
    prog = program(argv)
    env_part = argv[: len(argv) - len(prog)]
    if prog[0] == "tracer" and prog[1] == "lab":
        if "--name" in prog:
            prog[prog.index("--name") + 1] = LAB
        else:
            prog[3:3] = ["--name", LAB]
    elif prog[0] == "tracer" and prog[1] != "topology" and not {"--topology", "-t"} & set(prog):
        prog[2:2] = ["--topology", LAB_TOPOLOGY]
    return env_part + prog


def lab_cmd(argv: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "tracer", "lab", argv[0], "--name", LAB], env=env(), capture_output=True,
                   timeout=60, check=argv[0] != "down")


@pytest.mark.lab
def test_lab_commands(shim: Path, tmp_path: Path) -> None:
    """Every lab command and block of the docs, on a lab of this test's own, from a scratch directory."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (CI runs as root)")
    steps = lab_steps()
    assert steps, "the docs have no lab commands"
    lab_cmd(["down"])  # leftovers of a run killed half-way
    up = False
    try:
        for step in steps:
            if step.python is not None:
                code = for_lab(step.python, tmp_path)
                r = subprocess.run([sys.executable, "-"], input=code, cwd=tmp_path, env=env(), capture_output=True,
                                   text=True, timeout=60)
                assert r.returncode == 0, f"{step.where}: the Python example fails in the lab:\n{r.stderr}"
                continue
            assert step.argv is not None
            argv = lab_argv(step.argv, tmp_path)
            prog = program(argv)
            action = prog[2] if prog[:2] == ["tracer", "lab"] else None
            if action not in ("up", "down") and not up:
                lab_cmd(["up"])  # the docs' command assumes the lab is up (an earlier line took it down)
                up = True
            r = run_shell(argv, shim, tmp_path)
            text = shell_text(argv)
            assert r.returncode in (0, 1), f"{step.where}: {text}: exit {r.returncode}: {r.stderr}"
            assert "Traceback" not in r.stderr and "internal error" not in r.stderr, f"{step.where}: {text}: {r.stderr}"
            for prefix, fact in LAB_EXPECT.items():
                if text.startswith(prefix):
                    assert fact in r.stdout, f"{step.where}: {text}: no {fact!r} in its output:\n{r.stdout[:2000]}"
            if action == "up":
                up = True
            elif action == "down":
                up = False
    finally:
        lab_cmd(["down"])

