"""Points onto a store's grid: the real GEDI granule on a synthetic store over its footprints.

Reprojection checked against pyproj, the inverse-variance combination, the time range, and nothing written on
failure.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from pyproj import Transformer

from spectravlm.data.points import PointTable, attach_points, read_gedi_l4a, read_sparse_target
from spectravlm.data.points.attach import combine_pixels
from spectravlm.data.store import CubeStore, StoreTransaction
from spectravlm.errors import IngestError

UTM39N = 32639


def _gedi_store(make_store, tmp_path, dates=("2020-01-20", "2020-03-02"), pixel=20.0):
    """A synthetic store in UTM 39N over the granule's northern footprints (36.06-36.10 N, 51.40-51.49 E)."""
    to_utm = Transformer.from_crs(4326, UTM39N, always_xy=True)
    xs, ys = to_utm.transform([51.40, 51.49, 51.40, 51.49], [36.06, 36.06, 36.10, 36.10])
    bounds = (min(xs), min(ys), max(xs), max(ys))
    path = tmp_path / "over_gedi.zarr"
    grid = make_store(path, bounds, UTM39N, pixel, list(dates))
    return path, grid


def test_gedi_on_a_store_over_its_footprints(gedi_granule, make_store, tmp_path):
    store, grid = _gedi_store(make_store, tmp_path)
    table = read_gedi_l4a(gedi_granule)
    report = attach_points(store, table, name="agbd")
    # independently: pyproj to UTM 39N, then the pixel of each shot by plain arithmetic on the grid origin
    x, y = Transformer.from_crs(4326, UTM39N, always_xy=True).transform(table.x, table.y)
    x0, y0 = grid.transform.c, grid.transform.f
    col = np.floor((np.asarray(x) - x0) / 20.0).astype(int)
    row = np.floor((y0 - np.asarray(y)) / 20.0).astype(int)
    inside = (row >= 0) & (row < grid.height) & (col >= 0) & (col < grid.width)
    assert report.points == 321
    assert report.outside_grid == int((~inside).sum()) == 147  # the 45 + 102 shots near 33.9 N, 54.2 E
    assert report.outside_time == 0 and report.undated == 0
    assert report.attached == int(inside.sum()) == 174
    flat = row[inside] * grid.width + col[inside]
    assert report.pixels == len(np.unique(flat))
    sparse = read_sparse_target(store, "agbd")
    assert len(sparse) == report.pixels and sparse.units == "t/ha"
    # a few shots alone in their pixel: value, standard error, count and date land exactly there
    alone = [i for i in np.flatnonzero(inside) if (flat == row[i] * grid.width + col[i]).sum() == 1][:5]
    assert len(alone) == 5
    targets = CubeStore.open(store).targets
    for i in alone:
        assert targets["agbd"][row[i], col[i]] == np.float32(table.value[i])
        assert targets["agbd_se"][row[i], col[i]] == np.float32(table.se[i])
        assert targets["agbd_count"][row[i], col[i]] == 1
        day = (table.date[i] - np.datetime64("1970-01-01T00:00:00")) / np.timedelta64(1, "D")
        assert 18297 < day < 18298  # 2020-02-05, 16:10 UTC
        assert targets["agbd_date"][row[i], col[i]] == pytest.approx(day, abs=0.003)  # float32: ~3 min
    # pixels with several shots: the inverse-variance mean
    shared = [p for p in np.unique(flat) if (flat == p).sum() > 1]
    assert report.shared_pixels == len(shared)
    for p in shared[:3]:
        members = np.flatnonzero(inside)[flat == p]
        w = 1 / table.se[members] ** 2
        r, c = divmod(int(p), grid.width)
        assert targets["agbd"][r, c] == pytest.approx((w * table.value[members]).sum() / w.sum(), rel=1e-6)
        assert targets["agbd_se"][r, c] == pytest.approx(w.sum() ** -0.5, rel=1e-6)
    # xarray reads the four layers with their coordinates; the date layer decodes to datetime64
    ds = xr.open_zarr(store, group="targets")
    assert {"agbd", "agbd_se", "agbd_count", "agbd_date"} <= set(ds.data_vars)
    assert ds["agbd"].dims == ("y", "x") and ds["agbd"].attrs["units"] == "t/ha"
    dates = ds["agbd_date"].values[np.isfinite(ds["agbd"].values)]
    assert np.issubdtype(dates.dtype, np.datetime64)
    assert set(dates.astype("datetime64[D]").astype(str)) == {"2020-02-05"}
    assert int(np.isfinite(ds["agbd"].values).sum()) == report.pixels
    meta = json.loads(json.dumps(dict(targets["agbd"].attrs)))["spectravlm_points"]
    assert meta["report"]["attached"] == 174 and meta["sources"][0]["kept"] == 321
    # only the chunks that hold points are stored (sparse on disk)
    chunk_files = list((store / "targets" / "agbd").glob("c.*"))
    assert 0 < len(chunk_files) <= -(-grid.height // 256) * -(-grid.width // 256)


def test_time_range_and_margin(gedi_granule, make_store, tmp_path):
    store, _ = _gedi_store(make_store, tmp_path, dates=("2021-06-01", "2021-07-01"))
    table = read_gedi_l4a(gedi_granule)
    with pytest.raises(
        IngestError, match=r"no point inside the store's grid and time range.*174 outside the time"
    ):
        attach_points(store, table)
    assert "agbd" not in CubeStore.open(store).targets
    report = attach_points(store, table, time_margin_days=500)
    assert report.outside_time == 0 and report.attached == 174
    report = attach_points(store, table, time_margin_days=None, overwrite=True)
    assert report.time_range is None and report.attached == 174


def test_combination_rule():
    pixels, value, se, count, days = combine_pixels(
        np.array([7, 7, 3, 3, 3, 9]),
        np.array([100.0, 200.0, 10.0, 20.0, 30.0, 5.0]),
        np.array([10.0, 20.0, 1.0, np.nan, 1.0, np.nan]),
        np.array(
            ["2020-01-01", "2020-01-11", "2020-01-01", "NaT", "2020-01-03", "NaT"], dtype="datetime64[s]"
        ),
    )
    assert pixels.tolist() == [3, 7, 9] and count.tolist() == [3, 2, 1]
    # pixel 7: weights 1/100 and 1/400 -> (100*4 + 200) / 5 = 120, se = (1/100 + 1/400)^-1/2
    assert value[1] == pytest.approx(120.0) and se[1] == pytest.approx((1 / 100 + 1 / 400) ** -0.5)
    assert days[1] == pytest.approx(18262 + 10 * 0.2)  # dates weighted the same way
    # pixel 3: one point without a standard error -> plain mean, unknown se; date of the dated ones
    assert value[0] == pytest.approx(20.0) and np.isnan(se[0]) and days[0] == pytest.approx(18263.0)
    assert value[2] == 5.0 and np.isnan(se[2]) and np.isnan(days[2])


def test_failures_write_nothing(gedi_granule, make_store, tmp_path, monkeypatch):
    store, _ = _gedi_store(make_store, tmp_path)
    table = read_gedi_l4a(gedi_granule)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    calls = []
    original = StoreTransaction.write_target

    def failing(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(StoreTransaction, "write_target", failing)
    with pytest.raises(OSError, match="simulated"):
        attach_points(store, table)
    monkeypatch.undo()
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert not CubeStore.open(store).targets
    attach_points(store, table)
    with pytest.raises(IngestError, match=r"target layer\(s\) agbd, agbd_se, agbd_count, agbd_date exist"):
        attach_points(store, table)
    far = PointTable(
        x=[10.0],
        y=[50.0],
        crs_wkt=table.crs_wkt,
        value=[1.0],
        units="t/ha",
        se=[np.nan],
        date=np.array(["NaT"], dtype="datetime64[s]"),
        name="far",
    )
    with pytest.raises(
        IngestError, match=r"no point inside the store's grid.*1 outside the grid.*the grid covers"
    ):
        attach_points(store, far)
    pixel_points = PointTable(
        x=[1.5],
        y=[1.5],
        crs_wkt=None,
        value=[1.0],
        units="t/ha",
        se=[np.nan],
        date=np.array(["NaT"], dtype="datetime64[s]"),
        name="px",
    )
    with pytest.raises(IngestError, match="the points have no CRS but the store has one"):
        attach_points(store, pixel_points)
