"""Wireshark, through pyshark: its dissection where a person wants to read every field.

* :func:`dissect`: the full dissection of chosen frames — ``tracer replay --dissect``
  shows the lost probes' packets at the last capture point that saw them.
* :func:`wireshark_decode`: Wireshark's own ESP decryption, to cross-check tracer's.

Nothing here logs, and nothing returned contains key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer.errors import BadInput, EnvironmentProblem
from tracer.esp.keys import EspSA, write_esp_sa_file
from tracer.model.tag import ProbeTag, decode


@dataclass(frozen=True)
class WiresharkEsp:
    """One ESP packet as tshark dissected it with the keys."""

    frame: int
    spi: int
    seq: int
    icmp_type: int | None  # None: tshark found no inner ICMP (not decrypted, or not ICMP)
    icmp_seq: int | None
    tag: ProbeTag | None


_ENV_LOCK = threading.Lock()


def wireshark_decode(pcap_path: str | os.PathLike[str], sas: Iterable[EspSA]) -> list[WiresharkEsp]:
    """Let tshark (via pyshark) decrypt the ESP packets of ``pcap_path`` with ``sas``: the
    cross-check of tracer's own decryption. Needs tshark; raises :class:`EnvironmentProblem`
    without it."""
    with _tshark(pcap_path, sas, "esp") as packets:
        return [_ws_record(p) for p in packets]


def dissect(pcap_path: str | os.PathLike[str], frames: Iterable[int], sas: Iterable[EspSA] = ()) -> dict[int, str]:
    """Wireshark's full dissection (every layer, every field, as ``tshark -V`` shows it) of the
    given frame numbers (1-based, as Wireshark counts) of ``pcap_path``; ESP decrypted with ``sas``."""
    wanted = sorted(set(frames))
    if not wanted:
        return {}
    with _tshark(pcap_path, sas, f"frame.number in {{{' '.join(map(str, wanted))}}}") as packets:
        return {int(p.number): str(p).rstrip() for p in packets}


@contextlib.contextmanager
def _tshark(pcap_path: str | os.PathLike[str], sas: Iterable[EspSA], display_filter: str) -> Iterator[Iterator[Any]]:
    """Packets of ``pcap_path`` matching ``display_filter``, dissected by tshark through pyshark.

    The SAs go into a private, temporary Wireshark configuration directory (``esp_sa`` mode
    0600, directory 0700, removed afterwards) selected with ``WIRESHARK_CONFIG_DIR``, not into
    ``-o uat:esp_sa:…`` options: command lines are visible to every local user and pyshark
    repeats them in debug logs and crash messages.
    """
    try:
        import pyshark
    except ImportError:
        raise EnvironmentProblem("pyshark is not installed: pip install pyshark") from None
    path = Path(pcap_path)
    if not path.is_file():
        raise BadInput(f"{path}: no such capture file")
    with tempfile.TemporaryDirectory(prefix="tracer-wireshark-") as conf:
        write_esp_sa_file(Path(conf) / "esp_sa", sas)
        (Path(conf) / "preferences").write_text("esp.enable_encryption_decode: TRUE\nesp.enable_authentication_check: TRUE\n")
        # pyshark starts tshark with this process's environment; the lock keeps concurrent callers apart.
        with _ENV_LOCK:
            saved = os.environ.get("WIRESHARK_CONFIG_DIR")
            os.environ["WIRESHARK_CONFIG_DIR"] = conf
            cap = pyshark.FileCapture(str(path), display_filter=display_filter, keep_packets=False)
            try:
                yield iter(cap)
            except pyshark.tshark.tshark.TSharkNotFoundException:
                raise EnvironmentProblem("tshark not found: apt-get install tshark") from None
            finally:
                cap.close()
                _undo_child_watcher()
                if saved is None:
                    os.environ.pop("WIRESHARK_CONFIG_DIR", None)
                else:
                    os.environ["WIRESHARK_CONFIG_DIR"] = saved


def _undo_child_watcher() -> None:
    """pyshark installs a SafeChildWatcher on SIGCHLD for the whole process; left in place it
    reaps other code's children and keeps a signal wakeup fd that later fills up. Undo it
    (pyshark installs a fresh one on its next capture)."""
    if threading.current_thread() is threading.main_thread():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # child watchers are deprecated in 3.12
            asyncio.get_child_watcher().close()
            asyncio.set_child_watcher(None)


def _ws_record(packet: object) -> WiresharkEsp:
    esp = packet.esp  # type: ignore[attr-defined]
    icmp = next((layer for layer in packet.layers if layer.layer_name in ("icmp", "icmpv6")), None)  # type: ignore[attr-defined]
    icmp_type = icmp_seq = None
    tag = None
    if icmp is not None:
        icmp_type = int(icmp.type)
        seq_field = icmp.get_field_value("seq")
        icmp_seq = int(seq_field) if seq_field is not None else None
        # pyshark nests the echo payload in the ICMP layer: "data_data" is data.data, hex with colons.
        raw = icmp.get_field_value("data_data") or icmp.get_field_value("data")
        if raw:
            tag = decode(bytes.fromhex(str(raw).replace(":", "")))
    return WiresharkEsp(int(packet.number), int(esp.spi, 16), int(esp.sequence), icmp_type, icmp_seq, tag)  # type: ignore[attr-defined]
