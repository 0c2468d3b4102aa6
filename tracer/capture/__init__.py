"""Capture files: reading pcap/pcapng, writing pcapng, and turning files into observations."""

from tracer.capture.observe import FileObservations, observe_file, observe_files
from tracer.capture.pcapfile import CaptureIndex, IfaceInfo, read_capture
from tracer.capture.pcapng_writer import convert_pcap_to_pcapng, write_pcapng

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
