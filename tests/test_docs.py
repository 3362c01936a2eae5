"""Code examples in the docs run as written (on a demo store in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from spectravlm.data.demo import write_demo_store

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


def test_loading_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_demo_store(tmp_path / "data" / "demo.zarr", size=256)
    torch.set_num_threads(1)
    (block,) = _python_blocks("loading.md")[:1]
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/loading.md", "exec"), namespace)
    model = namespace["model"]
    assert model.trainer.global_step == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("page", ["units.md", "encoders.md"])
def test_docs_name_no_removed_api(page):
    text = (DOCS / page).read_text()
    for gone in ("forward_dates", "normalize=", "sar_units", "SpectralTemporalEncoder", 'units="raw"'):
        assert gone not in text, (page, gone)
