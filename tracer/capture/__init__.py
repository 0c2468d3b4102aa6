"""Capture files: reading pcap/pcapng, writing pcapng, and turning files into observations."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tracer.capture.observe import FileObservations, observe_file, observe_files
from tracer.capture.pcapfile import CaptureIndex, IfaceInfo, read_capture

if TYPE_CHECKING:
    from tracer.capture.pcapng_writer import convert_pcap_to_pcapng, write_pcapng

# The writer loads on first use: a replay reads captures and never writes one.
_LAZY = {"convert_pcap_to_pcapng": "tracer.capture.pcapng_writer", "write_pcapng": "tracer.capture.pcapng_writer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tracer.capture' has no attribute {name!r}")


__all__ = [
    "CaptureIndex",
    "FileObservations",
    "IfaceInfo",
    "convert_pcap_to_pcapng",
    "observe_file",
    "observe_files",
    "read_capture",
    "write_pcapng",
]
