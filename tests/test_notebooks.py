"""Every notebook in notebooks/ runs top to bottom, and never writes to a store of the user's.

Each notebook has a cell tagged ``parameters`` (``STORE = None``: the notebook then makes the synthetic demo
store in a folder of its own). Run with ``STORE`` set to an existing real store (the BioMassters chip), the
notebook must read it and leave every file of it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
QUICK = {  # settings for the run over the real store
    "03_pretrain.ipynb": "EPOCHS = 1",
    "04_agb.ipynb": "EPOCHS = 2\nPRETRAIN_EPOCHS = 1",
    "05_points.ipynb": "EPOCHS = 3",
}


def _run(path: Path, overrides: str = "") -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    if overrides:
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(overrides))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    return nb


def _snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = _run(path)
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells)
    figures = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert figures, f"{path.name} shows no figure"


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


@pytest.fixture(scope="module")
def real_store(biomassters_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spectravlm.data.ingest import ingest_biomassters

    store = tmp_path_factory.mktemp("real") / "biomassters.zarr"
    ingest_biomassters(biomassters_dir, store)
    return store


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_leaves_a_real_store_unchanged(path, real_store):
    before = _snapshot(real_store)
    _run(path, f'STORE = "{real_store}"\n{QUICK.get(path.name, "")}')
    assert _snapshot(real_store) == before
