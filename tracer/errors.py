"""One error family; every user-facing failure is a TracerError with an exit code.

The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``.
"""

from __future__ import annotations

# Documented exit codes (README "Exit codes").
EXIT_DELIVERED = 0
EXIT_LOSS = 1
EXIT_BAD_INPUT = 2
EXIT_INCONCLUSIVE = 3
EXIT_ENVIRONMENT = 4
EXIT_NO_TRAFFIC = 5  # readable captures, but nothing in them to trace
EXIT_INTERNAL = 70  # a bug in tracer (sysexits' EX_SOFTWARE): never mistaken for "loss located"
EXIT_INTERRUPTED = 130


# Control characters (and Unicode line breaks) a hostile name or path can carry into a message.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


class TracerError(Exception):
    """Base class: a one-line message that says what was wrong and what to do."""

    exit_code = EXIT_BAD_INPUT

    def __str__(self) -> str:
        # One line whatever a file name, point or argument quoted in it holds: escaped like repr().
        return super().__str__().translate(_ESCAPES)


class BadInput(TracerError):
    """A file, argument or topology the user gave cannot be used."""

    exit_code = EXIT_BAD_INPUT


class CaptureError(BadInput):
    """A capture file is unreadable (wrong magic, truncated header, unknown link type)."""


class TopologyError(BadInput):
    """A topology file or object is inconsistent."""


class NoTraffic(TracerError):
    """The captures are readable, but hold no traffic of interest (not bad input: a verdict needs packets)."""

    exit_code = EXIT_NO_TRAFFIC


class EnvironmentProblem(TracerError):
    """Missing privilege, tool or memory (not root, no tcpdump, no charon, a worker OOM-killed, ...)."""

    exit_code = EXIT_ENVIRONMENT


class Interrupted(TracerError):
    """Ctrl-C or SIGTERM cut a command short (what it recorded so far is kept)."""

    exit_code = EXIT_INTERRUPTED


class LabError(EnvironmentProblem):
    """The namespace lab could not be built, driven or torn down."""
