"""Colour and symbols for a terminal; plain text for pipes, files and ``NO_COLOR``
(https://no-color.org: set and not empty). Decided per stream, once."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tracer.model.verdict import Status

_SGR = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2"}
# By Status value (a StrEnum equals its string): the verdict model (numpy) is not imported to
# colour the live lines a trace prints before it has a verdict.
STATUS_COLOUR = {"delivered": "green", "loss": "red", "inconclusive": "yellow"}


def wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Style:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        return cls(wants_colour(stream))

    def paint(self, text: str, *names: str) -> str:
        if not self.colour or not names:
            return text
        return f"\x1b[{';'.join(_SGR[n] for n in names)}m{text}\x1b[0m"

    def symbol(self, good: bool | None) -> str:
        """✓ answered, ✗ not, ! refused by the sender: on a terminal only (plain text stays greppable)."""
        if not self.colour:
            return ""
        return {True: self.paint("✓ ", "green"), False: self.paint("✗ ", "red"), None: self.paint("! ", "yellow")}[good]

    def verdict(self, text: str, status: Status) -> str:
        """A rendered verdict with its status word (the second line's first word) in colour."""
        if not self.colour:
            return text
        lines = text.split("\n")
        if len(lines) > 1 and lines[1].startswith(status.word):
            lines[1] = self.paint(status.word, STATUS_COLOUR[status], "bold") + lines[1][len(status.word):]
        return "\n".join(lines)
