"""``--help`` of the real command line: every subcommand answers with exit 0, its usage and
examples that start with the command itself; the top level lists the commands and exit codes."""

from __future__ import annotations

import pytest

from tests.cli.tracer_cmd import tracer

# Subcommand → one example line its --help must show, copied from the help texts.
EXAMPLES = {
    "replay": "  tracer replay captures/gw-forward-drop",
    "check": "  tracer check                       # every node of the built-in lab",
    "ping": "  tracer lab up && tracer ping west east",
    "ike": "  tracer lab up && tracer ike west-gw east-gw",
    "mtu": "  tracer mtu west east",
    "lab": "  tracer lab up                      # build it (about 0.1 s), print the topology file",
    "plot": "  tracer plot captures/gw-forward-drop -o drop.png",
    "report": "  tracer report captures/esp-blocked -o esp-blocked.tar.gz",
    "topology": "  tracer topology check captures/all-delivered/topology.toml",
}


@pytest.mark.parametrize("command", list(EXAMPLES))
def test_subcommand_help_shows_examples(command: str) -> None:
    r = tracer(command, "--help")
    assert (r.code, r.err) == (0, "")
    assert r.out.startswith(f"usage: tracer {command} ")
    lines = r.out.splitlines()
    examples = lines[lines.index("examples:") + 1:]
    assert EXAMPLES[command] in examples
    assert examples[0].startswith("  tracer "), examples[0]


def test_top_level_help_lists_commands_and_exit_codes() -> None:
    r = tracer("--help")
    assert (r.code, r.err) == (0, "")
    assert r.out.startswith("usage: tracer [-h] [--version] COMMAND ...\n")
    commands = [line.split()[0] for line in r.out.splitlines() if line.startswith("    ") and not line.startswith("     ")]
    assert commands == ["replay", "check", "topology", "ping", "ike", "mtu", "watch", "lab", "plot", "report"]
    for line in ("  0  all probes delivered (or the command succeeded)",
                 "  1  loss located: the verdict names the hop",
                 "  2  bad input: unreadable capture, bad topology or arguments",
                 "  3  inconclusive: a capture point is missing or a sniffer dropped packets",
                 "  5  nothing to trace: no traffic of interest in the captures (no tracer",
                 "  130 interrupted (Ctrl-C or SIGTERM): the verdict covers the probes sent"):
        assert line in r.out.splitlines()


def test_no_command_prints_help_and_exits_2() -> None:
    r = tracer()
    assert (r.code, r.err) == (2, "")
    assert r.out.startswith("usage: tracer [-h] [--version] COMMAND ...\n")


@pytest.mark.parametrize("action", ["up", "down", "status", "fault"])
def test_lab_action_help(action: str) -> None:
    r = tracer("lab", action, "--help")
    assert (r.code, r.err) == (0, "")
    assert r.out.startswith(f"usage: tracer lab {action} [-h] [--name NAME]")


def test_version_says_which_extraction_reads_captures(tmp_path) -> None:
    """The installed build: compiled where it loads (CI builds it), else which part is missing;
    a build without the current functions (an older .so) is named out of date, not "compiled"."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from tracer import __version__
    from tracer.analysis.extract import COMPILED

    r = tracer("--version")
    assert (r.code, r.err) == (0, "")
    want = "compiled extraction" if COMPILED else "numpy extraction"
    assert r.out.startswith(f"tracer {__version__} ({want}"), r.out
    # A copy of the package whose _walk build lacks pcap(): stale, said so.
    pkg = Path(__file__).resolve().parents[2] / "tracer"
    copy = tmp_path / "tracer"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (copy / "capture" / "_walk.c").write_text((pkg / "capture" / "_walk.c").read_text().replace(
        '{"pcap", pcap, METH_VARARGS', '{"pcap_gone", pcap, METH_VARARGS'))
    built = subprocess.run([sys.executable, "-c", "from setuptools import Extension, setup; setup(ext_modules=["
                            "Extension('tracer.analysis._extract', ['tracer/analysis/_extract.c']),"
                            "Extension('tracer.capture._walk', ['tracer/capture/_walk.c'])])",
                            "-q", "build_ext", "--inplace"], cwd=tmp_path, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    out = subprocess.run([sys.executable, "-m", "tracer", "--version"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0 and "out of date" in out.stdout and "lacks pcap" in out.stdout, out
