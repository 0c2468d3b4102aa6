"""The analysis notebooks run top to bottom from a fresh checkout (cwd = notebooks/), and stay small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.fixture(scope="module")
def kernel() -> str:
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        # Fresh environments (CI containers) may have ipykernel but no registered spec.
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user"], check=True, capture_output=True)
    return "python3"


def test_both_notebooks_exist():
    assert [p.name for p in PATHS] == ["01-read-a-trace.ipynb", "02-healthy-vs-faulty.ipynb"]


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_is_stripped_and_small(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert path.stat().st_size < 20_000
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before saving"


@pytest.mark.parametrize("source", ["recorded", "synthetic"])
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path, source, kernel, monkeypatch):
    # Without captures/ the notebooks build synthetic runs anyway; the env var forces that path
    # (the kernel inherits this process's environment).
    if source == "synthetic":
        monkeypatch.setenv("TRACER_NOTEBOOK_SYNTHETIC", "1")
    else:
        monkeypatch.delenv("TRACER_NOTEBOOK_SYNTHETIC", raising=False)
    nb = nbformat.read(path, as_version=4)
    # A cell error raises CellExecutionError with the cell's traceback.
    NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    recorded = (NOTEBOOKS.parent / "captures" / "gw-forward-drop" / "manifest.json").exists()
    expect = "synthetic" if source == "synthetic" or not recorded else "recorded lab run"
    assert f"gw-forward-drop: {expect}" in printed
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 2, "the plots should render inline"
