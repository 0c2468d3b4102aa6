"""Command line: ``tracer SUBCOMMAND …``. Each subcommand lives in its own module
and registers itself with ``add_parser``; errors become one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from tracer.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, BadInput, TracerError

EPILOG = """\
exit codes:
  0  all probes delivered (or the command succeeded)
  1  loss located: the verdict names the hop
  2  bad input: unreadable capture, bad topology or arguments
  3  inconclusive: a capture point is missing or a sniffer dropped packets
  4  environment: missing privilege or tool (root, tcpdump, charon, ...),
     the lab not up, or a sniffer that could not capture
  5  nothing to trace: no traffic of interest in the captures (no tracer
     probe, no ICMP echo between two nodes, nothing --flow selects)
  70  internal error: a bug in tracer (TRACER_DEBUG=1 shows the traceback)
  130 interrupted (Ctrl-C or SIGTERM): the verdict covers the probes sent
"""

# Subcommand modules, in --help order; each has add_parser(subparsers). Live traces come
# between replay and lab: one subcommand per registered probe kind (tracer/probes/).
BEFORE_TRACES = ("replay", "check", "topology")
AFTER_TRACES = ("watch", "lab", "plot", "report")
HIDDEN = ("extract",)  # parsed only when named, so never listed: run by tracer itself (on SSH hosts)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own usage errors: one line, exit 2, like every bad input (and, with
        # --json, the same error document on stdout).
        raise BadInput(f"{message} (see tracer --help)")


def _extraction() -> str:
    """Which extractor this install reads captures with. Its files are loaded on their own, not
    imported through their packages (tracer.capture would load numpy)."""
    from importlib.machinery import EXTENSION_SUFFIXES
    from importlib.util import module_from_spec, spec_from_file_location
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name, functions in (("analysis._extract", ("frames",)), ("capture._walk", ("walk", "heads", "pcap", "scan", "epbs"))):
        path = next((p for s in EXTENSION_SUFFIXES if (p := root / f"{name.replace('.', '/')}{s}").exists()), None)
        if path is None:
            return "numpy extraction: the compiled extractor was not built"
        try:
            module = module_from_spec(spec_from_file_location(f"tracer.{name}", path))  # type: ignore[arg-type]
        except Exception as e:  # a broken build says so, it does not break --version
            return f"numpy extraction: the compiled extractor does not load: {e}"
        if missing := [f for f in functions if not hasattr(module, f)]:
            return f"numpy extraction: the compiled extractor is out of date ({path.name} lacks {', '.join(missing)})"
    return "compiled extraction"


class _Version(argparse.Action):
    """``--version``: the version and which extraction runs, looked up only when asked."""

    def __init__(self, option_strings: list[str], version: str, dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "show the version and how captures are read, and exit"
                 ) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser._print_message(f"{self.version} ({_extraction()})\n", sys.stdout)
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (``command`` given) only that subcommand's parser: a replay
    need not import the lab, the checks or every probe kind just to parse its arguments."""
    parser = _Parser(
        prog="tracer",
        description="Find the hop where packets disappear: synchronized captures along the "
        "expected path, tagged probes, one verdict.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from tracer import __version__

    parser.add_argument("--version", "-V", action=_Version, version=f"tracer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if command in BEFORE_TRACES + AFTER_TRACES + HIDDEN:
        importlib.import_module(f"tracer.cli.{command}").add_parser(sub)
        return parser
    from tracer.cli import trace
    from tracer.probes import all_types

    live = [ptype for ptype in all_types() if ptype.live]
    if command in [ptype.name for ptype in live]:  # a live trace: only its own parser
        trace.add_parser(sub, next(ptype for ptype in live if ptype.name == command))
        return parser
    for name in BEFORE_TRACES:
        importlib.import_module(f"tracer.cli.{name}").add_parser(sub)
    for ptype in live:
        trace.add_parser(sub, ptype)
    for name in AFTER_TRACES:
        importlib.import_module(f"tracer.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The first word names the subcommand (the top level has no option taking a value).
    parser = build_parser(argv[0] if argv else None)
    try:
        # Inside the try: option converters raise TracerError (one line, exit 2) too.
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_BAD_INPUT
        return int(args.func(args))
    except TracerError as e:
        return _fail(argv, str(e), e.exit_code)
    except KeyboardInterrupt:
        return _fail(argv, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        return 0
    except Exception as e:
        if os.environ.get("TRACER_DEBUG"):
            raise
        what = " ".join(str(e).split())[:200]  # one line, whatever the exception carries
        return _fail(argv, f"internal error ({type(e).__name__}: {what}); this is a bug in tracer — "
                     "run again with TRACER_DEBUG=1 for the traceback and report it", EXIT_INTERNAL)


def _fail(argv: list[str], message: str, code: int) -> int:
    """The one line on stderr; with --json also the error document on stdout (docs/json.md),
    so a script reading stdout always gets one JSON object."""
    print(f"tracer: {message}", file=sys.stderr)
    if "--json" in argv:
        from tracer.jsondoc import dumps, error_document

        words = [a for a in argv if not a.startswith("-")][:2]
        command = " ".join(words if words[:1] == ["lab"] else words[:1]) or None
        try:
            print(dumps(error_document(command, message, code)), flush=True)
        except BrokenPipeError:
            pass
    return code


def run() -> None:
    code = main()
    if sys.argv[1:2] == ["replay"]:
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown. A replay has closed all it wrote and holds no
    child, lock or namespace; freeing its columns, mappings and modules one by one took ~30 ms of
    a 1M-packet replay (measured back to back), where the kernel frees the process at once."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started with that descriptor closed (`>&-`)
                stream.flush()
        except (OSError, ValueError):  # a closed pipe: what could be said was said
            pass
    os._exit(code)
