"""Pixel time-series tables: numpy and long Parquet in, the points store (xarray-readable) out and back,
sampling cube stores at points, the data module's batches and its spatial split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from spectravlm.data.points import PointColumns, read_points
from spectravlm.data.points.pixels import PixelSeriesDataModule, spatial_split
from spectravlm.data.points.pointstore import read_points_store, write_points_store
from spectravlm.data.points.sample import draw_points, sample_cubes, write_points_file
from spectravlm.data.points.series import (
    Covariate,
    PixelSeries,
    SeriesColumns,
    SeriesGroup,
    read_series_parquet,
)
from spectravlm.data.store import CubeStore
from spectravlm.errors import IngestError, StoreError
from spectravlm.io import OutputExistsError

S2 = ("B02", "B03", "B04", "B08")


def _long_table(n_samples: int = 12, seed: int = 0) -> pd.DataFrame:
    """Irregular series: every sample has its own S2 and S1 dates, some values missing."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_samples):
        elev = float(rng.uniform(0, 500))
        for d in sorted(rng.choice(120, size=int(rng.integers(2, 6)), replace=False)):
            date = np.datetime64("2021-04-01") + np.timedelta64(int(d), "D")
            row = {
                "sample": f"p{i}",
                "date": str(date),
                "lon": 24.0 + i * 0.01,
                "lat": 61.0,
                "agb": 10.0 * i,
                "elevation": elev,
                "temperature": float(rng.normal(10, 3)),
            }
            if d % 2:
                row |= {f"s2_{b}": float(rng.uniform(0.01, 0.4)) for b in S2}
            else:
                row |= {"s1_VV": float(rng.normal(-12, 2)), "s1_VH": float(rng.normal(-19, 2))}
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.loc[3, "s2_B02"] = np.nan if "s2_B02" in frame else 0  # a missing band value -> that date invalid
    return frame


COLUMNS = SeriesColumns(
    sensors={"s2": "sentinel2_l2a", "s1": "sentinel1_grd"},
    units={"s2": "reflectance", "s1": "dB"},
    target="agb",
    target_units="Mg/ha",
    static={"elevation": "m"},
    dynamic={"temperature": "degC"},
)


def test_long_parquet_round_trip_through_the_points_store(tmp_path):
    frame = _long_table()
    path = tmp_path / "table.parquet"
    frame.to_parquet(path)
    series = read_series_parquet(path, COLUMNS)
    assert series.n_samples == 12 and series.neighbourhood == 1 and series.target_units == "t/ha"
    # sample p4's S2 dates are exactly its rows with S2 values, in date order, then padding
    rows = frame[(frame["sample"] == "p4") & frame["s2_B03"].notna()].sort_values("date")
    i = list(series.ids).index("p4")
    got = series.groups["s2"].times[i]
    assert [str(t)[:10] for t in got[~np.isnat(got)]] == rows["date"].str[:10].tolist()
    np.testing.assert_allclose(series.groups["s2"].values[i, : len(rows), 1, 0, 0], rows["s2_B03"], rtol=1e-6)
    assert not series.groups["s2"].valid[i, len(rows) :].any()  # padding is invalid
    assert series.static["elevation"].units == "m" and series.dynamic["temperature"].values.shape[0] == 12
    out = write_points_store(tmp_path / "pts.zarr", series)
    back = read_points_store(out)
    for g in ("s2", "s1"):
        a, b = series.groups[g], back.groups[g]
        np.testing.assert_array_equal(a.valid, b.valid)
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(
            np.where(a.valid[:, :, None], a.values, 0), np.where(b.valid[:, :, None], b.values, 0)
        )
    np.testing.assert_array_equal(back.target, series.target)
    assert list(back.ids) == list(series.ids) and back.target_units == "t/ha"
    np.testing.assert_array_equal(back.dynamic_times, series.dynamic_times)
    # xarray reads it with real dims; padded times decode to NaT
    root = xr.open_zarr(out)
    assert root["agb"].dims == ("sample",) and root["agb"].attrs["units"] == "t/ha"
    s2 = xr.open_zarr(out, group="s2")
    assert s2["data"].dims == ("sample", "step", "band", "row", "col")
    assert list(s2["band"].values) == list(S2) and np.isnat(s2["time"].values).any()
    assert xr.open_zarr(out, group="static")["elevation"].attrs["units"] == "m"
    with pytest.raises(OutputExistsError):
        write_points_store(out, series)


def test_numpy_arrays_in(tmp_path):
    n, t = 5, 3
    times = np.array([["2021-05-01", "2021-06-01", "NaT"]] * n, dtype="datetime64[s]")
    values = np.random.default_rng(0).uniform(0, 0.3, size=(n, t, 4)).astype(np.float32)
    series = PixelSeries(
        groups={"s2": SeriesGroup("s2", ["b2", "b3", "b4", "b8"], values, times, units="reflectance")},
        x=np.arange(n) + 0.5,
        y=np.zeros(n) + 0.5,
        target=np.arange(n, dtype=np.float32),
        target_name="agb",
        target_units="t/ha",
        static={"slope": Covariate(np.ones(n), "degree")},
    )
    assert series.groups["s2"].bands == S2 and series.groups["s2"].sensor == "sentinel2_l2a"
    assert series.groups["s2"].valid[:, 2].sum() == 0  # NaT dates are invalid
    back = read_points_store(write_points_store(tmp_path / "np.zarr", series))
    assert back.crs_wkt is None and back.static["slope"].units == "degree"


def test_bad_tables_are_clear_errors(tmp_path):
    frame = _long_table()
    path = tmp_path / "t.parquet"
    frame.rename(columns={"s2_B03": "s2_B99"}).to_parquet(path)
    with pytest.raises(IngestError, match=r"t.parquet: column 's2_B99': band 'B99' is not in sentinel2_l2a"):
        read_series_parquet(path, COLUMNS)
    frame.assign(date=["2021-04-01"] * (len(frame) - 1) + ["yesterday"]).to_parquet(path)
    with pytest.raises(
        IngestError, match=r"column 'date' holds 1 date\(s\) that do not parse, e.g. 'yesterday'"
    ):
        read_series_parquet(path, COLUMNS)
    frame.assign(elevation=np.arange(len(frame), dtype=float)).to_parquet(path)
    with pytest.raises(IngestError, match=r"column 'elevation' .* changes within sample 'p0'"):
        read_series_parquet(path, COLUMNS)
    frame.drop(columns=["lon", "lat"]).to_parquet(path)
    with pytest.raises(IngestError, match="the table has no CRS and no lat/lon columns"):
        read_series_parquet(path, COLUMNS)
    frame.to_parquet(path)
    bad = SeriesColumns(sensors={"s2": "sentinel2_l2a"}, units={"s2": "percent"})
    with pytest.raises(IngestError, match=r"sentinel2_l2a: unit 'percent' is not known"):
        read_series_parquet(path, bad)
    with pytest.raises(IngestError, match=r"no column 'plot'"):
        read_series_parquet(
            path, SeriesColumns(sensors={"s2": "s2"}, units={"s2": "reflectance"}, sample="plot")
        )
    with pytest.raises(IngestError, match=r"covariate .*: its unit is not given"):
        Covariate(np.zeros(3), "", "elevation")
    with pytest.raises(StoreError, match=r"t\.parquet is not a points store"):
        read_points_store(tmp_path / "t.parquet")


def test_sample_demo_store_neighbourhoods(demo_store, tmp_path):
    points = draw_points(demo_store, "agb", n=60, noise_rel=0.1, seed=1)
    assert len(points) == 60 and points.units == "t/ha"
    series, report = sample_cubes(demo_store, points, neighbourhood=3)
    assert report.sampled == 60 and report.outside_grid == 0
    cube = CubeStore.open(demo_store)
    s2 = cube["s2"]
    inv = ~cube.grid.transform
    col, row = (int(v) for v in np.floor(inv @ (points.x[0], points.y[0])))
    # the centre pixel of sample 0 is the store's pixel at the point, every date, every band
    np.testing.assert_array_equal(series.groups["s2"].values[0, :, :, 1, 1], s2.data[:, :, row, col])
    cloud = s2.cloud[:, row, col]
    np.testing.assert_array_equal(
        series.groups["s2"].valid[0, :, 1, 1], (cloud < 50) & (s2.data[:, :, row, col] != 0).all(1)
    )
    np.testing.assert_array_equal(
        series.groups["s1"].values[0, :, :, 0, 2], cube["s1"].data[:, :, row - 1, col + 1]
    )
    assert series.groups["s2"].scale == 1e-4 and series.groups["s2"].values.dtype == np.uint16
    np.testing.assert_array_equal(series.target, points.value.astype(np.float32))
    # a point on the grid's edge: the neighbourhood's outside pixels are invalid
    edge = points.select(np.arange(1))
    edge.x[:] = cube.grid.transform.c + 5.0
    series_edge, _ = sample_cubes(demo_store, edge, neighbourhood=3)
    assert (
        not series_edge.groups["s1"].valid[0, :, :, 0].any()
        and series_edge.groups["s1"].valid[0, :, :, 1].all()
    )
    with pytest.raises(IngestError, match="neighbourhood must be an odd number"):
        sample_cubes(demo_store, points, neighbourhood=2)
    # draw -> file -> read -> sample: the CSV carries lon/lat, back on the same pixels
    csv = write_points_file(points, tmp_path / "plots.csv")
    again = read_points(csv, PointColumns(value="agb", units="t/ha", se="agb_se", date="date"))
    series2, _ = sample_cubes(demo_store, again, neighbourhood=3)
    np.testing.assert_array_equal(series2.groups["s2"].values, series.groups["s2"].values)


def test_spatial_split_keeps_blocks_together():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1000, 3000), rng.uniform(0, 1000, 3000)
    x[:10], y[:10] = 55.0, 55.0  # ten samples on one pixel
    parts = spatial_split(x, y, 100.0, (0.7, 0.15, 0.15), seed=3)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(3000))
    block = lambda i: (int(x[i] // 100), int(y[i] // 100))  # noqa: E731
    owner = {}
    for name, idx in parts.items():
        for i in idx:
            assert owner.setdefault(block(i), name) == name  # a block lives in one split
    assert len({owner[block(i)] for i in range(10)}) == 1
    shares = [len(parts[s]) / 3000 for s in ("train", "val", "test")]
    assert shares[0] == pytest.approx(0.7, abs=0.05) and min(shares[1:]) > 0.08
    again = spatial_split(x, y, 100.0, (0.7, 0.15, 0.15), seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_datamodule_batches(tmp_path):
    path = tmp_path / "table.parquet"
    _long_table(40).to_parquet(path)
    store = write_points_store(tmp_path / "pts.zarr", read_series_parquet(path, COLUMNS))
    dm = PixelSeriesDataModule(str(store), batch_size=8, block_size=0.05, split_fractions=(0.5, 0.25, 0.25))
    dm.setup("fit")
    assert sum(len(dm.splits[s]) for s in ("train", "val", "test")) == 40
    batch = next(iter(dm.train_dataloader()))
    assert batch.batch_size == 8 and batch.static.shape == (8, 1) and batch.dynamic.shape[::2] == (8, 1)
    s2 = batch.stack["s2"]
    assert s2.values.shape[2:] == (4, 1, 1) and s2.values.dtype == torch.float32 and s2.units == "reflectance"
    assert torch.isfinite(s2.values).all()  # missing values are zero where invalid
    assert (s2.times[~s2.valid[..., 0, 0]] >= 0).all() and (s2.times[s2.valid[..., 0, 0]] > 18000).all()
    i = int(batch.index[0])
    assert float(batch.target[0]) == pytest.approx(float(dm.series.target[i]))
    stats = dm.covariate_statistics()
    train = dm.series.static["elevation"].values[dm.splits["train"]]
    assert stats["static"]["elevation"] == pytest.approx((float(train.mean()), float(train.std())), rel=1e-5)
    sensors = dm.sensor_statistics()
    assert set(sensors) == {"sentinel2_l2a", "sentinel1_grd"} and sensors["sentinel1_grd"][0][1]["VV"][1] < 0
    # two ranks share the training samples without repeats, padding the shorter with empty samples
    seen = []
    for rank in (0, 1):
        dm2 = PixelSeriesDataModule(
            str(store),
            batch_size=8,
            block_size=0.05,
            split_fractions=(0.5, 0.25, 0.25),
            rank=rank,
            world_size=2,
        )
        for b in dm2.train_dataloader():
            seen += b.index[b.index >= 0].tolist()
            assert torch.isnan(b.target[b.index < 0]).all()
    assert sorted(seen) == sorted(dm.splits["train"].tolist())
