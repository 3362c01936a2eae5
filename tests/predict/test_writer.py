"""MapWriter: georeferenced COGs, the store's predictions group, empty windows, errors before any write."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from spectravlm.data.bands import store_bands
from spectravlm.data.demo import make_demo_cubes
from spectravlm.data.store import CubeStore, Grid, StoreTransaction
from spectravlm.errors import DataConfigError
from spectravlm.io import OutputExistsError
from spectravlm.predict import MapWriter
from spectravlm.predict.loader import extent_dataset
from spectravlm.tasks import RegressionTask


def _task(store: Path, window: int = 32, **kw) -> RegressionTask:
    bands = store_bands([str(store)], ["s2", "s1"])
    args = dict(encoder="test", patch_size=8, head_dim=32, head_depth=1, transform_mean=100.0,
                transform_std=50.0,
                train_mean=100.0, uncertainty="gaussian")  # fmt: skip
    return RegressionTask(bands=bands, window_size=window, **(args | kw))


def test_geotiff_and_store_group_carry_the_stores_georeference(scene_store, tmp_path, kit):
    # the model is a stand-in (a known field); RegressionTask's layers are checked on the real chip
    writer = MapWriter(output_dir=str(tmp_path / "maps"), store_group=True)
    model = kit.FieldModule()
    assert (
        kit.predictor(tmp_path, [writer]).predict(
            model, datamodule=kit.extent_dm(scene_store, window=64, overlap=16)
        )
        is None
    )
    grid = CubeStore.open(scene_store).grid
    with rasterio.open(tmp_path / "maps" / "scene.tif") as src:
        assert src.crs == CRS.from_wkt(grid.crs_wkt) and src.transform == grid.transform
        assert (src.count, src.dtypes, src.descriptions, src.units) == (
            1,
            ("float32",),
            ("value",),
            ("t/ha",),
        )
        assert src.profile["tiled"] and src.profile["blockxsize"] == 256 and np.isnan(src.nodata)
        tif = src.read()
    assert np.isfinite(tif).all()  # every pixel of the demo store is observed
    with rasterio.open(tmp_path / "maps" / "scene.tif") as src:  # a COG: the layout GDAL's validator wants
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    ds = xr.open_zarr(scene_store, group="predictions")
    assert ds["value"].dims == ("y", "x") and ds["value"].attrs["units"] == "t/ha"
    np.testing.assert_array_equal(ds["value"].values, tif[0])
    y, x = grid.coords()
    np.testing.assert_allclose(ds["x"].values, x) and np.testing.assert_allclose(ds["y"].values, y)
    assert set(CubeStore.open(scene_store).groups) == {"s2", "s1"}  # the store itself is unchanged
    # a second run: refused before any window is predicted, then replaced with overwrite
    field = kit.FieldModule()  # counts the windows it runs
    again = MapWriter(output_dir=str(tmp_path / "maps"))
    with pytest.raises(OutputExistsError, match=r"maps already exists; pass overwrite=True \(--overwrite\)"):
        kit.predictor(tmp_path, [again]).predict(
            field, datamodule=kit.extent_dm(scene_store, window=64, overlap=16)
        )
    with pytest.raises(OutputExistsError, match=r"scene\.zarr/predictions already exists"):
        kit.predictor(tmp_path, [MapWriter(None, store_group=True)]).predict(
            field, datamodule=kit.extent_dm(scene_store, window=64, overlap=16)
        )
    assert field.windows_run == 0
    with rasterio.open(tmp_path / "maps" / "scene.tif") as src:
        np.testing.assert_array_equal(src.read(), tif)  # untouched by the refused runs
    MapWriter.__init__(again, output_dir=str(tmp_path / "maps"), overwrite=True)
    kit.predictor(tmp_path, [again]).predict(
        field, datamodule=kit.extent_dm(scene_store, window=64, overlap=16)
    )
    with rasterio.open(tmp_path / "maps" / "scene.tif") as src:
        assert src.descriptions == ("value",) and field.windows_run > 0  # replaced
    assert not list(tmp_path.glob(".maps*"))  # no build folder left behind


@pytest.fixture(scope="module")
def holey_store(tmp_path_factory) -> Path:
    """A 300 px demo store without any observation in its left 96 columns, nor in rows 0-63."""
    s2, s1, agb, grid = make_demo_cubes(size=300, seed=2)
    s2.data[..., :96] = 0  # the S2 nodata value
    s2.data[..., :64, :] = 0
    s1.data[..., :96] = -9999.0
    s1.data[..., :64, :] = -9999.0
    path = tmp_path_factory.mktemp("holey") / "holey.zarr"
    with StoreTransaction(path, mode="create", synthetic=True) as tx:
        tx.write_sensor("s2", s2)
        tx.write_sensor("s1", s1)
        tx.write_target("agb", agb, grid, units="t/ha")
    return path


def test_empty_windows_are_nodata_and_never_reach_the_model(holey_store, tmp_path, kit):
    module = kit.FieldModule()
    writer = MapWriter(output_dir=str(tmp_path / "maps"))
    dm = kit.extent_dm(holey_store, window=64, overlap=16)
    kit.predictor(tmp_path, [writer]).predict(module, datamodule=dm)
    with rasterio.open(tmp_path / "maps" / "holey.tif") as src:
        m = src.read(1)
    assert np.isnan(m[:, :96]).all() and np.isnan(m[:64]).all() and np.isfinite(m[64:, 96:]).all()
    _, plan = extent_dataset(dm, dm.stores, 16, 256)
    empty = [w for w in plan.windows if w.row + 64 <= 64 or w.col + 64 <= 96]  # no observation at all
    print(
        f"{len(plan.windows)} windows (tiles included), {len(empty)} empty; the model ran on "
        f"{module.windows_run}"
    )
    assert empty and module.windows_run == len(plan.windows) - len(empty)
    task = _task(holey_store, window=64)
    calls = []
    raw = task.raw
    task.raw = lambda batch: (calls.append(batch.batch_size), raw(batch))[1]  # type: ignore[method-assign]
    kit.predictor(tmp_path, [MapWriter(str(tmp_path / "maps2"))]).predict(
        task, datamodule=kit.extent_dm(holey_store, window=64, overlap=16)
    )
    with rasterio.open(tmp_path / "maps2" / "holey.tif") as src:
        assert np.isnan(src.read(1)[:, :96]).all()
    assert sum(calls) == module.windows_run  # the same windows, and only they, went through the model


@pytest.fixture(scope="module")
def pixel_grid_store(tmp_path_factory) -> Path:
    """A demo store on a pixel grid without CRS (as BioMassters chips)."""
    s2, s1, agb, _ = make_demo_cubes(size=64, seed=3)
    grid = Grid(64, 64)
    s2.grid = s1.grid = grid
    path = tmp_path_factory.mktemp("pixels") / "chip.zarr"
    with StoreTransaction(path, mode="create", synthetic=True) as tx:
        tx.write_sensor("s2", s2)
        tx.write_sensor("s1", s1)
        tx.write_target("agb", agb, grid, units="t/ha")
    return path


def test_a_store_without_crs_gives_a_pixel_grid_and_refuses_map_coordinates(pixel_grid_store, tmp_path, kit):
    task = _task(pixel_grid_store)
    module = kit.FieldModule()
    with pytest.raises(
        DataConfigError, match=r"chip\.zarr has no CRS .*cannot write its GeoTIFF in map coordinates"
    ):
        kit.predictor(tmp_path, [MapWriter(str(tmp_path / "maps"), coordinates="map")]).predict(
            module, datamodule=kit.extent_dm(pixel_grid_store)
        )
    assert module.windows_run == 0 and not (tmp_path / "maps").exists() and not list(tmp_path.glob(".maps*"))
    kit.predictor(tmp_path, [MapWriter(str(tmp_path / "maps"))]).predict(
        task, datamodule=kit.extent_dm(pixel_grid_store)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "maps" / "chip.tif") as src:
            assert src.crs is None and src.transform == CubeStore.open(pixel_grid_store).grid.transform
            assert src.shape == (64, 64) and np.isfinite(src.read(1)).all()


def test_writer_needs_extent_windows(scene_store, tmp_path, kit):
    dm = kit.extent_dm(scene_store, predict_windows="test", targets=["agb"])
    with pytest.raises(DataConfigError, match=r"set data\.predict_windows: extent"):
        kit.predictor(tmp_path, [MapWriter(str(tmp_path / "maps"))]).predict(kit.FieldModule(), datamodule=dm)
    with pytest.raises(DataConfigError, match="nothing to write"):
        kit.predictor(tmp_path, [MapWriter(None)]).predict(
            kit.FieldModule(), datamodule=kit.extent_dm(scene_store, window=64, overlap=16)
        )
