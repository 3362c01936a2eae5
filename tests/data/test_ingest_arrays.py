"""ingest_arrays and `spectravlm data ingest npy` on the real eo-learn Sentinel-2 L1C scenes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from einops import rearrange
from rasterio.crs import CRS
from rasterio.transform import from_bounds

from spectravlm.cli import main
from spectravlm.data.ingest import ingest_arrays
from spectravlm.data.store import CubeStore, Grid, SensorCube
from spectravlm.errors import IngestError, StoreError, UnknownBandError, UnknownSensorError

EOLEARN_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
FRAME_INDEX = (2, 1, 4, 3, 0)  # REFERENCE_SCENES frames are these TestEOPatch time indices (SOURCES.md)


@pytest.fixture(scope="module")
def eolearn(eolearn_dir: Path) -> dict:
    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")
    stamps = json.loads((eolearn_dir / "timestamps.json").read_text())
    times = np.array([np.datetime64(stamps[i], "s") for i in FRAME_INDEX])
    ring = json.loads((eolearn_dir / "bbox.geojson").read_text())["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    bounds = (min(xs), min(ys), max(xs), max(ys))
    return {"scenes": scenes, "times": times, "bounds": bounds}


def _cube(eo: dict, frames: list[int] | None = None) -> SensorCube:
    frames = list(range(5)) if frames is None else frames
    scenes = eo["scenes"][frames]
    _, h, w, _ = scenes.shape
    return SensorCube(
        sensor="sentinel2_l1c",
        bands=EOLEARN_BANDS,
        data=np.ascontiguousarray(rearrange(scenes, "t y x c -> t c y x")),
        times=eo["times"][frames],
        grid=Grid(h, w, from_bounds(*eo["bounds"], w, h), CRS.from_epsg(32633).to_wkt()),
        units="reflectance",
        source="eo-learn TestEOPatch REFERENCE_SCENES",
    )


def test_eolearn_arrays_roundtrip(eolearn: dict, tmp_path: Path) -> None:
    src = eolearn["scenes"]
    assert src.shape == (5, 101, 100, 13)
    path = tmp_path / "lj.zarr"
    ingest_arrays(path, "s2", _cube(eolearn), title="Ljubljana L1C")
    g = CubeStore.open(path)["s2"]
    # The frames arrive unsorted (08-20, 07-31, 09-09, 08-30, 07-11); the store holds them in time order.
    expected_days = ["2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09"]
    assert [str(t)[:10] for t in g.times] == expected_days
    order = np.argsort(eolearn["times"])
    assert list(order) == [4, 1, 0, 3, 2]
    data = g.read((slice(None),))
    assert data.dtype == np.float32 and data.shape == (5, 13, 101, 100)
    for i, frame in enumerate(order):  # pixel for pixel, band for band
        np.testing.assert_array_equal(data[i], rearrange(src[frame], "y x c -> c y x"))
    assert g.bands == EOLEARN_BANDS and "B10" in g.bands and "B8A" in g.bands
    assert CRS.from_wkt(g.grid.crs_wkt) == CRS.from_epsg(32633)
    assert g.grid.transform.almost_equals(from_bounds(*eolearn["bounds"], 100, 101))
    assert abs(g.grid.transform.a - 10.0) < 0.01 and abs(g.grid.transform.e + 10.0) < 0.01  # ~10 m pixels
    assert g.nodata is None and g.units == "reflectance"
    ds = xr.open_zarr(path, group="s2")
    assert ds["data"].dims == ("time", "band", "y", "x")
    assert list(ds["band"].values) == list(EOLEARN_BANDS)
    assert str(ds["time"].values[0])[:19] == str(eolearn["times"][4])
    np.testing.assert_allclose(ds["x"].values[0], eolearn["bounds"][0] + g.grid.transform.a / 2)
    np.testing.assert_allclose(ds["y"].values[0], eolearn["bounds"][3] + g.grid.transform.e / 2)


def test_eolearn_append_later_dates(eolearn: dict, tmp_path: Path) -> None:
    path = tmp_path / "lj.zarr"
    order = list(np.argsort(eolearn["times"]))
    ingest_arrays(path, "s2", _cube(eolearn, order[:3]))
    ingest_arrays(path, "s2", _cube(eolearn, order[3:]), append=True)
    g = CubeStore.open(path)["s2"]
    np.testing.assert_array_equal(g.times, np.sort(eolearn["times"]))
    full = rearrange(eolearn["scenes"][order], "t y x c -> t c y x")
    np.testing.assert_array_equal(g.read((slice(None),)), full)
    # Dates must follow the stored ones; a repeated date is refused and the store is left as it was.
    with pytest.raises(StoreError, match="already in the store"):
        ingest_arrays(path, "s2", _cube(eolearn, order[4:]), append=True)
    early = _cube(eolearn, order[:1])
    early.times = np.array([np.datetime64("2015-07-01T10:00:00")])
    with pytest.raises(StoreError, match="must follow"):
        ingest_arrays(path, "s2", early, append=True)
    assert CubeStore.open(path)["s2"].data.shape[0] == 5


def test_nodata_nan_kept(eolearn: dict, tmp_path: Path) -> None:
    cube = _cube(eolearn, [0])
    cube.data[0, :, 10:20, 30:40] = np.nan  # e.g. outside a scene's footprint
    ingest_arrays(tmp_path / "n.zarr", "s2", cube)
    out = CubeStore.open(tmp_path / "n.zarr")["s2"].read((0,))
    assert np.isnan(out[:, 10:20, 30:40]).all()
    assert np.isfinite(out[:, :10]).all()


def test_bad_arrays(eolearn: dict, tmp_path: Path) -> None:
    cube = _cube(eolearn, [0])
    with pytest.raises(IngestError, match="13 bands, expected 12"):
        ingest_arrays(tmp_path / "a.zarr", "s2", replace(cube, bands=EOLEARN_BANDS[:12]))
    with pytest.raises(IngestError, match="dtype float16"):
        ingest_arrays(tmp_path / "a.zarr", "s2", replace(cube, data=cube.data.astype("float16")))
    with pytest.raises(UnknownBandError, match="B13"):
        ingest_arrays(tmp_path / "a.zarr", "s2", replace(cube, bands=(*EOLEARN_BANDS[:12], "B13")))
    with pytest.raises(UnknownBandError, match="B10"):  # L2A has no B10
        ingest_arrays(tmp_path / "a.zarr", "s2", replace(cube, sensor="sentinel2_l2a"))
    with pytest.raises(UnknownSensorError, match="landsat8"):
        ingest_arrays(tmp_path / "a.zarr", "s2", replace(cube, sensor="landsat8"))
    inf = cube.data.copy()
    inf[0, 0, 0, 0] = np.inf
    with pytest.raises(IngestError, match="inf"):
        ingest_arrays(tmp_path / "a.zarr", "s2", replace(cube, data=inf))
    off = Grid(101, 100, Affine(10, 0, 0, 0, -10, 0), cube.grid.crs_wkt)
    ingest_arrays(tmp_path / "a.zarr", "s2", cube)
    with pytest.raises(StoreError, match="grid"):  # another group on another grid cannot share the store
        ingest_arrays(tmp_path / "a.zarr", "s2b", replace(cube, grid=off), append=True)
    assert not any(p.name.startswith(".a.zarr.tmp") for p in tmp_path.iterdir())  # failures leave nothing


def test_cli_npy(eolearn: dict, eolearn_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "cli.zarr"
    dates = ",".join(str(t) for t in eolearn["times"])
    w, s, e, n = eolearn["bounds"]
    args = ["data", "ingest", "npy", str(eolearn_dir / "REFERENCE_SCENES.npy"), str(store), "--group", "s2"]
    args += ["--sensor", "s2_l1c", "--bands", ",".join(EOLEARN_BANDS), "--dates", dates, "--axes", "t y x c"]
    args += ["--crs", "EPSG:32633", "--bounds", str(w), str(s), str(e), str(n), "--units", "reflectance"]
    assert main(args) == 0
    assert "13 bands" in capsys.readouterr().out
    g = CubeStore.open(store)["s2"]
    order = np.argsort(eolearn["times"])
    np.testing.assert_array_equal(g.read((0,)), rearrange(eolearn["scenes"][order[0]], "y x c -> c y x"))
    assert g.stats["B04"]["count"] == 5 * 101 * 100  # the stats pass ran over every (valid) pixel
    assert main(args) == 1  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    bad = [a if a != "t y x c" else "t c y x" for a in args] + ["--overwrite"]
    assert main(bad) == 1
    assert "fits --axes 't y x c'" in capsys.readouterr().err  # wrong --axes: the message names the right one
