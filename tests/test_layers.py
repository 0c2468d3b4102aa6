"""Layers: no module imports from a module that imports it, and imports point downward.

Every module under tracer/ is parsed with ``ast``; every ``import`` and ``from … import``
counts, at module level, under ``if TYPE_CHECKING:`` and inside functions alike (a lazy
import is still a dependency). ``from tracer.x import y`` is an edge to ``tracer.x.y`` when
that is a module, else to ``tracer.x``. Importing ``tracer.x.y`` is not counted as importing
the packages ``tracer`` and ``tracer.x`` too (Python runs their ``__init__`` first, but that is
how packages work, not a dependency the code chose). Imports by string
(``importlib.import_module``) are not seen.

The rule (docs: /work/shared/ARCHITECTURE.md, "Layers"):

* tracer/model/ imports only tracer.model and tracer.errors, plus the standard library,
  numpy and networkx;
* tracer/analysis/ imports only tracer.model, tracer.analysis, tracer.errors and the probe-kind
  registry tracer.probes, with the same outside libraries (it is pure as well).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tracer"
PURE_LIBRARIES = frozenset(sys.stdlib_module_names) | {"numpy", "networkx"}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a tracer module, or the top-level name of an outside package
    line: int

    def __str__(self) -> str:
        path = PACKAGE.parent / (self.importer.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / self.importer.replace(".", "/") / "__init__.py"
        return f"{path.relative_to(PACKAGE.parent)}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module: the Python ones, and the compiled ones (``*.c``, built by setup.py; they
    import nothing from tracer)."""
    return {module_name(p): p for p in sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.c")])}


def _resolve(name: str) -> str:
    """The tracer module that ``import name`` loads (the longest existing prefix)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules():
        parts.pop()
    return ".".join(parts) if parts else name


def _imports_of(name: str, path: Path) -> list[Import]:
    is_package = path.name == "__init__.py"
    out: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the importer's package, up level - 1
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "__future__":
                continue
            if module.split(".")[0] != "tracer":
                targets = [module]
            else:
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules() else module for a in node.names]
        else:
            continue
        for target in targets:
            internal = target.split(".")[0] == "tracer"
            out.append(Import(name, _resolve(target) if internal else target.split(".")[0], node.lineno))
    return out


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(i for name, path in modules().items() if path.suffix == ".py" for i in _imports_of(name, path))


def graph() -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(modules())
    for i in all_imports():
        if i.target in modules():
            g.add_edge(i.importer, i.target, line=i.line)
    return g


def test_the_scanner_sees_module_level_lazy_and_type_checking_imports():
    edges = set(graph().edges)
    assert ("tracer.analysis.locate", "tracer.analysis.correlate") in edges  # module level
    assert ("tracer.probes.ping", "tracer.send.echo") in edges  # inside a function
    assert ("tracer.probes", "tracer.model.observations") in edges  # under TYPE_CHECKING and in a method
    assert ("tracer.capture", "tracer.capture.pcapng_writer") in edges  # a package's re-export
    assert ("tracer.model.path", "tracer.errors") in edges
    assert "tracer.model.verdict" in modules() and "tracer.probes" in modules()


# Cycles in today's tree, for the lead to break; any other cycle fails the test.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none today; keep it that way


def cycle_text(cycle: list[str]) -> str:
    """"a imports b (line 3), b imports a (line 7)": each step with the importing line."""
    g = graph()
    hops = [*cycle, cycle[0]]
    return ", ".join(f"{a} imports {b} (line {g.edges[a, b]['line']})" for a, b in pairwise(hops))


def test_no_import_cycles():
    # Each cycle starting at its smallest module name: the same text on every run.
    cycles = sorted(c[c.index(min(c)):] + c[: c.index(min(c))] for c in nx.simple_cycles(graph()))
    new = [c for c in cycles if frozenset(c) not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(cycle_text(c) for c in new)
    if cycles:
        pytest.xfail("known import cycles, to be broken: " + "; ".join(cycle_text(c) for c in cycles))


def violations(layer: str, allowed_internal: tuple[str, ...]) -> list[str]:
    out = []
    for i in all_imports():
        if not (i.importer == layer or i.importer.startswith(layer + ".")):
            continue
        internal = i.target.split(".")[0] == "tracer"
        ok = (any(i.target == a or i.target.startswith(a + ".") for a in allowed_internal) if internal
              else i.target in PURE_LIBRARIES)
        if not ok:
            out.append(str(i))
    return out


def test_model_imports_only_model_and_errors():
    bad = violations("tracer.model", ("tracer.model", "tracer.errors"))
    assert not bad, "tracer/model/ must import only tracer.model, tracer.errors, stdlib, numpy, networkx:\n" + "\n".join(bad)


def test_analysis_imports_only_model_analysis_errors_and_the_probe_registry():
    # tracer.probes itself (the registry), not the kind modules under it, which reach the senders.
    allowed = ("tracer.model", "tracer.analysis", "tracer.errors")
    bad = [v for v in violations("tracer.analysis", allowed) if not v.endswith(" imports tracer.probes")]
    assert not bad, ("tracer/analysis/ must import only tracer.model, tracer.analysis, tracer.errors, tracer.probes, "
                     "stdlib, numpy, networkx:\n" + "\n".join(bad))
