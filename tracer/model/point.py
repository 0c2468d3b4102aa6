"""Capture points: a (node, interface) pair, written ``node:iface`` everywhere
(file names inside pcapng, graphs, JSON). Node names cannot contain ':', so the
last ':' splits them; interface names can."""

from __future__ import annotations

from typing import NamedTuple


class CapturePoint(NamedTuple):
    node: str
    iface: str

    @classmethod
    def parse(cls, text: str) -> CapturePoint:
        node, _, iface = text.rpartition(":")
        return cls(node, iface)

    def __str__(self) -> str:
        return f"{self.node}:{self.iface}"


def point_name(node: str, iface: str) -> str:
    return str(CapturePoint(node, iface))


def split_point(point: str) -> tuple[str, str]:
    return CapturePoint.parse(point)
