"""Which way a probe travels: the request out, the reply back."""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    REQUEST = "request"
    REPLY = "reply"

    @property
    def plural(self) -> str:
        return {Direction.REQUEST: "requests", Direction.REPLY: "replies"}[self]


DIRECTIONS = (Direction.REQUEST, Direction.REPLY)
