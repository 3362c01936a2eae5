"""Tiled prediction on REAL data: the BioMassters chip 0060c0a5, mirrored into a scene of two output tiles.

The fast path (``spectravlm predict``'s: :class:`~spectravlm.predict.MapWriter` over batches of the extent
windows, tile by tile, float32 accumulators, a COG) must give the map of the slow path written here without
any of its code: every window run alone through the model's plain ``forward``, blended into one scene-sized
float64 array.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from spectravlm.data.bands import store_bands
from spectravlm.data.dataset import CubeDataset
from spectravlm.data.ingest import ingest_biomassters
from spectravlm.data.store import CubeStore, Grid, SensorCube, StoreTransaction
from spectravlm.data.windows import Window
from spectravlm.predict import MapWriter
from spectravlm.tasks import RegressionTask

GROUPS = ["s2", "s1_asc", "s1_desc"]
WINDOW, OVERLAP = 64, 16


@pytest.fixture(scope="module")
def mirrored_chip(biomassters_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 x 512 px: the real chip beside its mirror image (two 256 px output tiles, a seam at column 256)."""
    root = tmp_path_factory.mktemp("chip")
    ingest_biomassters(biomassters_dir, root / "chip.zarr")
    chip = CubeStore.open(root / "chip.zarr")
    grid = Grid(256, 512)  # a pixel grid without CRS, as the chip's
    path = root / "mirrored.zarr"
    with StoreTransaction(path, mode="create") as tx:
        for name in GROUPS:
            g = chip.groups[name]
            data = np.asarray(g.data[:])
            cloud = None if g.cloud is None else np.asarray(g.cloud[:])
            tx.write_sensor(
                name,
                SensorCube(
                    sensor=g.sensor.name, bands=g.bands, times=g.times, grid=grid, nodata=g.nodata,
                    data=np.concatenate([data, data[..., ::-1]], axis=-1),
                    cloud=None if cloud is None else np.concatenate([cloud, cloud[..., ::-1]], axis=-1),
                    scale_factor=g.scale_factor, add_offset=g.add_offset, units=g.units, orbit=g.orbit,
                ),
            )  # fmt: skip
    return path


def _slow_map(task: RegressionTask, store: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every window alone through ``task.forward``, cosine-blended in one float64 scene (mean, std)."""
    h, w = 256, 512
    stride = WINDOW - OVERLAP

    def starts(n: int) -> list[int]:
        s = list(range(0, n - WINDOW + 1, stride))
        return s if s[-1] + WINDOW == n else [*s, n - WINDOW]

    ramp = np.ones(WINDOW)
    x = (np.arange(OVERLAP) + 0.5) / OVERLAP
    ramp[:OVERLAP] = np.sin(0.5 * np.pi * x) ** 2
    ramp[-OVERLAP:] = ramp[:OVERLAP][::-1]
    weight = np.outer(ramp, ramp)
    windows = [Window(0, r, c, WINDOW) for r in starts(h) for c in starts(w)]
    ds = CubeDataset(
        stores=[str(store)], groups=GROUPS, window_size=WINDOW, windows=windows, missing_dates="skip",
        empty_windows="mask", align_to_chunks=False,
    )  # fmt: skip
    num, den = np.zeros((2, h, w)), np.zeros((h, w))
    with torch.no_grad():
        for i, win in enumerate(windows):
            out = task(ds[i])
            num[0][win.slices()] += weight * out.mean[0].double().numpy()
            num[1][win.slices()] += weight * out.std[0].double().numpy()
            den[win.slices()] += weight
    return num[0] / den, num[1] / den


def test_tiled_prediction_equals_the_slow_path_on_the_real_chip(mirrored_chip, tmp_path, kit):
    torch.manual_seed(0)
    task = RegressionTask(
        bands=store_bands([str(mirrored_chip)], GROUPS), window_size=WINDOW, encoder="test", patch_size=16,
        head_dim=32, head_depth=1, uncertainty="gaussian", transform_mean=80.0, transform_std=60.0,
        train_mean=80.0,
    ).eval()  # fmt: skip
    dm = kit.extent_dm(
        mirrored_chip, window=WINDOW, overlap=OVERLAP, tile=256, groups=GROUPS, batch_size=8,
        missing_dates="skip",
    )  # fmt: skip
    writer = MapWriter(output_dir=str(tmp_path / "maps"))
    kit.predictor(tmp_path, [writer]).predict(task, datamodule=dm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "maps" / "mirrored.tif") as src:
            fast = src.read().astype(np.float64)
            assert src.crs is None and src.transform == CubeStore.open(mirrored_chip).grid.transform
            assert src.descriptions == ("agb", "agb_std") and src.units == ("t/ha", "t/ha")
    mean, std = _slow_map(task, mirrored_chip)
    assert np.isfinite(fast).all() and fast.shape == (2, 256, 512)
    diff = np.abs(fast[0] - mean).max()
    print(
        f"real chip, 256 x 512 px in two tiles: max |tiled - slow| {diff:.2e} t/ha (AGB range "
        f"{mean.min():.1f}..{mean.max():.1f}), std {np.abs(fast[1] - std).max():.2e}"
    )
    np.testing.assert_allclose(fast[0], mean, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fast[1], std, rtol=1e-4, atol=1e-3)
    assert mean.std() > 1.0  # a map with structure, not a constant that any path would reproduce
