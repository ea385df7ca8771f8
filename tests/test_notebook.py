"""notebooks/quickstart.ipynb: stored without outputs, and runs top to bottom on synthetic data (nbclient)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat + nbclient (the dev extra)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient + ipykernel (the dev extra)")

pytestmark = pytest.mark.slow  # trains or benchmarks: tens of seconds

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_the_quickstart_runs_on_synthetic_data(tmp_path, monkeypatch):
    pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (the dev extra)")
    out = tmp_path / "run"
    monkeypatch.setenv("QUICKSTART_FAST", "1")
    monkeypatch.setenv("QUICKSTART_OUT", str(out))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("FER2013_DIR", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    for name in ("confusion_matrix.png", "augmented_samples.png", "checkpoints/last.ckpt"):
        assert (out / name).is_file(), name
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 4  # confusion matrix, augmented samples, the photo, the heat maps
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "data: synthetic" in printed and "'test/acc'" in printed
