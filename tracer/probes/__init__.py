"""Probe kinds: one module each (ping, ike, mtu), one registry.

A kind declares everything the rest of tracer asks of it: its tag kind (the byte in the
probe tag), its name and nouns in verdicts, which captured rows are its requests and its
replies, its command-line options, how it is sent (``send``: the only I/O, imported lazily
from :mod:`tracer.send`) and what its report carries for the analysis. The analysis and the
command line look kinds up here; adding a kind is one module plus one :func:`register` call.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from tracer.errors import BadInput
from tracer.model.direction import Direction

if TYPE_CHECKING:  # numpy and the model load only when a kind is used, not for `tracer --help`
    import numpy as np

    from tracer.model.observations import Observations
    from tracer.model.probe import Endpoints, ProbeReport, ProbeSpec, SentProbe
    from tracer.model.topology import Topology

# The built-in kinds, imported on first lookup (they register themselves).
BUILTIN = ("tracer.probes.ping", "tracer.probes.ike", "tracer.probes.mtu", "tracer.probes.flow")


class ProbeType:
    """Base for a probe kind. Subclasses set the class attributes and override what differs."""

    code: ClassVar[int]  # tag kind byte (tracer.model.tag); 1-255
    name: ClassVar[str]  # subcommand and JSON name
    nouns: ClassVar[tuple[str, str]]  # request and reply nouns: ("echo requests", "echo replies")
    help: ClassVar[str] = ""  # one line for `tracer --help`
    description: ClassVar[str] = ""
    epilog: ClassVar[str] = ""
    default_count: ClassVar[int] = 3
    # Not shorter: without ESP keys, a probe's ESP carrier is told from the next probe's by
    # time (tracer.analysis.correlate.ENCAP_WINDOW_NS, 0.2 s); closer probes make a loss at
    # the encrypting gateway inconclusive.
    default_interval: ClassVar[float] = 0.2
    # The spacing used instead when no carrier needs telling apart by time (see
    # tracer.cli.trace.spacing); None: always default_interval.
    fast_interval: ClassVar[float | None] = None
    # (dest, metavar, help) overriding the common options' words (SRC/DST/--source)
    labels: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    live: ClassVar[bool] = True  # sent by a subcommand of its own (False: only found in captures)
    paired: ClassVar[bool] = True  # a reply answers each request that arrived

    def noun(self, direction: Direction) -> str:
        return self.nouns[0 if direction == Direction.REQUEST else 1]

    # -- analysis (pure) -------------------------------------------------------------------
    def rows(self, obs: Observations, direction: Direction) -> np.ndarray:
        """Rows that are a request (or a reply) of this kind's carrier; the tag picks the run.
        Default: ICMP echo."""
        from tracer.model.observations import PacketClass

        cls = PacketClass.ECHO_REQUEST if direction == Direction.REQUEST else PacketClass.ECHO_REPLY
        return obs["cls"] == cls

    def carried(self, seqs: np.ndarray, direction: Direction) -> np.ndarray | None:
        """For kinds that are not ``paired``: which of the probes ``seqs`` travel in ``direction``.
        None: a reply is expected for each request that arrived."""
        return None

    def spec_fields(self, report: ProbeReport) -> dict[str, object]:
        """What this kind's report adds to the analysis' ProbeSpec (beyond count and send errors)."""
        return {}

    # -- command line and sending (edges) ----------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Options of this kind beyond the common ones (tracer.cli.trace)."""

    def check(self, args: argparse.Namespace) -> None:
        """Refuse bad option values before anything is captured (raise BadInput)."""

    def prepare(self, topo: Topology, args: argparse.Namespace) -> None:
        """Adjust SRC/DST/--source from the topology before endpoints are resolved."""

    def planned(self, args: argparse.Namespace) -> int:
        """How many probes the run will send."""
        return int(args.count)

    def send(self, ends: Endpoints, run: int, args: argparse.Namespace,
             on_probe: Callable[[SentProbe], None] | None = None) -> ProbeReport:
        """Send the run's probes (seq from 1); ``on_probe``: each one's record as soon as its
        answer (or its timeout) is in, for live output."""
        raise NotImplementedError


_REGISTRY: dict[int, ProbeType] = {}
_loaded = False


# Other subcommands: a probe kind's name becomes a subcommand and must not shadow one.
RESERVED_NAMES = ("replay", "check", "topology", "watch", "lab", "plot", "report")


def register(ptype: ProbeType) -> ProbeType:
    """Make a kind known to the analysis and the command line (by tag code and by name)."""
    _load()  # the built-in kinds first, so a clash with them is refused here, not at some later lookup
    if not 1 <= ptype.code <= 255:
        raise ValueError(f"probe tag kind {ptype.code}: must fit the tag's kind byte (1-255)")
    other = _REGISTRY.get(ptype.code)
    if other is not None and other.name != ptype.name:
        raise ValueError(f"probe tag kind {ptype.code} is taken by '{other.name}'")
    twin = next((t for t in _REGISTRY.values() if t.name == ptype.name and t.code != ptype.code), None)
    if twin is not None or ptype.name in RESERVED_NAMES:
        taken = f"by probe kind {twin.code}" if twin is not None else "by a subcommand"
        raise ValueError(f"probe kind name '{ptype.name}' is taken {taken}")
    _REGISTRY[ptype.code] = ptype
    return ptype


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in BUILTIN:
            importlib.import_module(mod)


def all_types() -> list[ProbeType]:
    _load()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def probe_type(kind: int | str) -> ProbeType:
    """A kind by tag code or by name; BadInput if nothing registered it."""
    _load()
    if isinstance(kind, str):
        found = next((t for t in _REGISTRY.values() if t.name == kind.lower()), None)
    else:
        found = _REGISTRY.get(int(kind))
    if found is None:
        raise BadInput(f"unknown probe kind {kind!r} (known: {', '.join(t.name for t in all_types())})")
    return found


def is_known(code: int) -> bool:
    _load()
    return code in _REGISTRY


def spec_from_report(report: ProbeReport, base: ProbeSpec) -> ProbeSpec:
    """The analysis' view of a run: the manifest's facts plus the kind's report fields."""
    from dataclasses import replace

    fields = {"send_errors": report.send_errors(), "sent": report.sent, **probe_type(report.kind).spec_fields(report)}
    return replace(base, **fields)


