"""Fixtures of the prediction tests: demo stores larger than a tile, a model that outputs a known field."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from helpers import demo_bands, demo_batch, demo_store, one_thread  # noqa: F401
from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import write_demo_store


def field(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A smooth field over store pixels (values 50..150)."""
    return 100 + 30 * np.sin(rows / 40.0) + 20 * np.cos(cols / 55.0)


class FieldModule(L.LightningModule):
    """Predicts ``field`` at each window's pixels plus a per-window offset (a stand-in for per-window error).

    Counts the windows it is run on (empty windows must not reach it).
    """

    def __init__(self, offset: float = 5.0) -> None:
        super().__init__()
        self.offset = offset
        self.windows_run = 0
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # Lightning wants a parameter for DDP

    def predict_step(self, batch, batch_idx):
        from spectravlm.tasks.regression import observed_pixels

        observed = observed_pixels(batch)
        b, h, w = observed.shape
        out = torch.empty(b, h, w)
        for i, (r, c) in enumerate(batch.origin.tolist()):
            rows, cols = np.meshgrid(np.arange(r, r + h), np.arange(c, c + w), indexing="ij")
            jitter = self.offset * np.sin(1.7 * r + 0.3 * c)  # a different constant per window
            out[i] = torch.from_numpy(field(rows, cols) + jitter).float()
        keep = observed.flatten(1).any(1)
        self.windows_run += int(keep.sum())
        out = torch.where(observed, out, torch.tensor(float("nan")))
        return {"value": out + 0 * self.anchor, "index": batch.index, "origin": batch.origin}

    def prediction_layers(self):
        return [("value", "t/ha", "a smooth test field")]


def extent_dm(store: Path, window: int = 32, overlap: int = 8, tile: int = 256, **kw) -> CubeDataModule:
    args = dict(
        stores=[str(store)], groups=["s2", "s1"], window_size=window, block_size=window * 2, batch_size=4,
        num_workers=0, seed=0, predict_windows="extent", predict_overlap=overlap, predict_tile_size=tile,
    )  # fmt: skip
    return CubeDataModule(**(args | kw))


def predictor(root: Path, callbacks) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=list(callbacks),
    )  # fmt: skip


class Kit:
    """What the prediction tests share, via the ``kit`` fixture (test files cannot import each other)."""

    field = staticmethod(field)
    FieldModule = FieldModule
    extent_dm = staticmethod(extent_dm)
    predictor = staticmethod(predictor)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="session")
def scene_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300 x 300 px demo store with CRS (four 256 px tiles, the edge ones partial)."""
    path = tmp_path_factory.mktemp("scene") / "scene.zarr"
    write_demo_store(path, size=300, seed=1)
    return path
