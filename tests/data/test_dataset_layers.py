"""The loader delivers extra per-date and static layers beside the bands (LayerReader, LayeredDataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from spectravlm.data.augment import SpatialAugment
from spectravlm.data.dataset import CubeDataset, LayeredDataset, LayerReader, layer_steps
from spectravlm.data.ingest import ingest_arrays
from spectravlm.data.store import Grid, Layer, SensorCube, StoreTransaction
from spectravlm.errors import DataConfigError

GRID = Grid(96, 80, Affine(10, 0, 500000, 0, -10, 4000000))


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    t = 4
    data = rng.integers(1, 10000, (t, 2, 96, 80), dtype=np.uint16)
    mask = (rng.random((t, 96, 80)) < 0.2).astype(np.uint8)
    copy = data[:, 0].astype(np.float32)  # a layer equal to band B04: alignment is checkable exactly
    copy[:, :5, :5] = -1.0  # its declared fill value
    dem = rng.normal(300, 50, (96, 80)).astype(np.float32)
    times = np.datetime64("2021-05-01", "s") + np.arange(t) * np.timedelta64(5 * 86400, "s")
    cube = SensorCube("s2", ("B04", "B08"), data, times, GRID, nodata=0, scale_factor=1e-4, add_offset=0.0,
                      units="reflectance", mask=mask, mask_rule="test: random 20%",
                      layers={"b04copy": Layer(copy, "1", "copy of B04", nodata=-1.0)})  # fmt: skip
    path = tmp_path / "s.zarr"
    ingest_arrays(path, "s2", cube)
    with StoreTransaction(path, mode="append") as tx:
        tx.write_static("dem", Layer(dem, "m", "elevation"), GRID)
    return path, {"data": data, "mask": mask, "copy": copy, "dem": dem}


def test_layers_beside_the_bands(store: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, ref = store
    ds = CubeDataset([path], groups=["s2"], window_size=32, n_times=None, empty_windows="mask")
    layered = LayeredDataset(ds, ["s2/b04copy", "s2/mask", "static/dem"])
    assert len(layered) == len(ds)
    (batch,) = layered.__getitems__([0, 3, -1])
    for k, i in enumerate((0, 3)):
        rows, cols = ds.windows[i].slices()
        expect = np.where(ref["copy"][:, rows, cols] == -1.0, np.nan, ref["copy"][:, rows, cols])
        np.testing.assert_array_equal(layer_steps(batch, "s2/b04copy")[k].numpy(), expect)
        np.testing.assert_array_equal(layer_steps(batch, "s2/mask")[k].numpy(), ref["mask"][:, rows, cols])
        np.testing.assert_array_equal(batch.targets["static/dem"][k].numpy(), ref["dem"][rows, cols])
        np.testing.assert_array_equal(
            batch.series["s2"].values[k, :, 0].numpy(), ref["data"][:, 0, rows, cols]
        )
    steps = layer_steps(batch, "s2/b04copy")
    assert torch.isnan(steps[2]).all() and torch.isnan(batch.targets["static/dem"][2]).all()
    assert steps.shape == (3, 4, 32, 32) and batch.targets["static/dem"].shape == (3, 32, 32)
    assert LayerReader(ds, ["s2/b04copy"]).read(batch)["s2/b04copy"].shape == (3, 4, 32, 32)


def test_layers_follow_the_chosen_dates_and_the_augmentation(
    store: tuple[Path, dict[str, np.ndarray]],
) -> None:
    path, _ = store
    torch.manual_seed(0)
    ds = CubeDataset([path], groups=["s2"], window_size=32, n_times=2, missing_dates="sample")
    reader = LayerReader(ds, ["s2/b04copy"])
    batch = reader.attach(ds.read_batch(list(range(len(ds)))))
    values = batch.series["s2"].values[:, :, 0].float()
    layer = layer_steps(batch, "s2/b04copy")
    known = ~torch.isnan(layer)
    assert known.float().mean() > 0.9 and torch.equal(layer[known], values[known])  # the sampled dates
    aug = SpatialAugment(crop_size=24)(batch)
    values, layer = aug.series["s2"].values[:, :, 0].float(), layer_steps(aug, "s2/b04copy")
    known = ~torch.isnan(layer)
    assert layer.shape == (len(ds), 2, 24, 24) and torch.equal(layer[known], values[known])


def test_unknown_layers_are_named(store: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = store
    ds = CubeDataset([path], groups=["s2"], window_size=32)
    with pytest.raises(DataConfigError, match="has no layer 's2/scl'; it has b04copy, mask"):
        LayerReader(ds, ["s2/scl"])
    with pytest.raises(DataConfigError, match="has no layer 'static/lulc'; it has dem"):
        LayerReader(ds, ["static/lulc"])
    with pytest.raises(DataConfigError, match="group 's1' is not loaded"):
        LayerReader(ds, ["s1/x"])
