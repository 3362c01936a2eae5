"""CubeDataset and the window reader: demo store, a small store with holes, the real BioMassters chip."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import zarr
from affine import Affine
from rasterio.crs import CRS

from spectravlm.data.dataset import CubeDataset
from spectravlm.data.demo import write_demo_store
from spectravlm.data.reader import ChunkSource, WindowReader
from spectravlm.data.stats import compute_stats, valid_pixels
from spectravlm.data.store import Grid, SensorCube, StoreTransaction
from spectravlm.data.windows import PAD_INDEX, Window
from spectravlm.errors import DataConfigError, StoreCorruptError
from spectravlm.stack import collate_stacks

H, W = 300, 520  # two chunk tiles across, a partial tile at the bottom and right
DAYS = np.array(["2021-05-01", "2021-05-11", "2021-05-21", "2021-06-01"], dtype="datetime64[s]")


def _holes_cubes(seed: int = 0, grid: Grid | None = None) -> tuple[SensorCube, SensorCube, np.ndarray, Grid]:
    """Random S2/S1 cubes with known holes: all-nodata window at rows/cols 0:64, cloudy date 1."""
    rng = np.random.default_rng(seed)
    grid = grid or Grid(H, W, Affine(10.0, 0, 400000.0, 0, -10.0, 5000000.0), CRS.from_epsg(32633).to_wkt())
    s2 = rng.integers(1, 5000, (4, 3, H, W), dtype=np.uint16)
    s2[:, :, :64, :64] = 0  # nodata
    cloud = np.zeros((4, H, W), np.uint8)
    cloud[1] = 100  # date 1 is entirely cloudy
    cloud[2, :, 256:] = 90  # date 2 cloudy on the right half
    s1 = rng.normal(-12, 3, (5, 2, H, W)).astype(np.float32)
    s1[:, :, :64, :64] = -9999.0
    s1[3, :, :, :128] = -9999.0  # date 3 missing on the left
    agb = rng.uniform(0, 300, (H, W)).astype(np.float32)
    agb[:64, :64] = np.nan
    s1_days = np.array(
        ["2021-05-02", "2021-05-08", "2021-05-14", "2021-05-20", "2021-05-26"], dtype="datetime64[s]"
    )
    return (
        SensorCube(
            "sentinel2_l2a", ("B04", "B08", "B11"), s2, DAYS, grid, nodata=0, cloud=cloud, units="reflectance"
        ),
        SensorCube(
            "sentinel1_grd", ("VV", "VH"), s1, s1_days, grid, nodata=-9999.0, units="dB", orbit="ascending"
        ),
        agb,
        grid,
    )


@pytest.fixture(scope="session")
def holes_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("holes") / "holes.zarr"
    s2, s1, agb, grid = _holes_cubes()
    with StoreTransaction(path, title="test store with holes") as tx:
        tx.write_sensor("s2", s2)
        tx.write_sensor("s1", s1)
        tx.write_target("agb", agb, grid, units="t/ha")
    compute_stats(path)
    return path


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.zarr"
    write_demo_store(path, size=256, seed=0)
    return path


@pytest.fixture(scope="session")
def biomassters_store(tmp_path_factory: pytest.TempPathFactory, biomassters_dir: Path) -> Path:
    from spectravlm.data.ingest.biomassters import ingest_biomassters

    path = tmp_path_factory.mktemp("bm") / "bm.zarr"
    ingest_biomassters(biomassters_dir, path, progress=False)
    compute_stats(path)
    return path


# -- the reader ------------------------------------------------------------------------------------


def test_reader_matches_zarr_across_chunk_edges(holes_store):
    root = zarr.open_group(holes_store, mode="r")
    src = ChunkSource(str(holes_store))
    rng = np.random.default_rng(0)
    for name in ("s2/data", "s2/cloud", "s1/data", "targets/agb"):
        arr = root[name]
        direct, plain = WindowReader(arr, src), WindowReader(arr, src, direct=False)
        assert direct.direct and not plain.direct
        for _ in range(8):
            r0, c0 = int(rng.integers(0, H - 1)), int(rng.integers(0, W - 1))
            r1, c1 = int(rng.integers(r0 + 1, H + 1)), int(rng.integers(c0 + 1, W + 1))
            rows, cols = slice(r0, r1), slice(c0, c1)
            if arr.ndim == 4:
                t, b = [3, 0], [2, 0] if name.startswith("s2") else [1]
                ref = arr.oindex[t, b, rows, cols]
                assert np.array_equal(direct.read(rows, cols, t, b), ref)
                assert np.array_equal(plain.read(rows, cols, t, b), ref)
                assert np.array_equal(direct.read(rows, cols), arr[:, :, rows, cols])
            elif arr.ndim == 3:
                assert np.array_equal(direct.read(rows, cols, [2, 1]), arr.oindex[[2, 1], rows, cols])
            else:
                assert np.array_equal(direct.read(rows, cols), arr[rows, cols], equal_nan=True)


def test_reader_reports_corrupt_chunk(tmp_path):
    s2, _, _, _ = _holes_cubes()
    path = tmp_path / "bad.zarr"
    with StoreTransaction(path) as tx:
        tx.write_sensor("s2", s2)
    chunk = path / "s2" / "data" / "c.2.0.0.1"
    chunk.write_bytes(b"not a blosc frame" * 10)
    ds = CubeDataset([path], groups=["s2"], window_size=64, empty_windows="mask")
    w = next(i for i, w in enumerate(ds.windows) if w.row == 0 and w.col == 256)
    with pytest.raises(StoreCorruptError, match=r"s2/data/c\.2\.0\.0\.1"):
        ds[w]
    assert ds[0]["s2"].values.shape == (1, 4, 3, 64, 64)  # other chunks still read


# -- the dataset -----------------------------------------------------------------------------------


def test_demo_windows_equal_store_values_masks_and_targets(demo_store):
    ds = CubeDataset([demo_store], groups={"s2": ["b8", "B04"], "s1": None}, targets=["agb"], window_size=128)
    assert len(ds) == 4 and ds.n_empty == 0
    root = zarr.open_group(demo_store, mode="r")
    days = root["s2/time"][:].astype("datetime64[s]").astype("datetime64[D]").astype(np.int64)
    for i in range(len(ds)):
        s = ds[i]
        w = ds.windows[i]
        rows, cols = w.slices()
        s2 = s["s2"]
        assert s2.bands == ("B08", "B04") and s2.units == "reflectance" and s2.values.dtype == torch.uint16
        raw = root["s2/data"].oindex[:, [6, 2], rows, cols]
        assert np.array_equal(s2.values[0].numpy(), raw)
        cloud = root["s2/cloud"][:, rows, cols]
        full = root["s2/data"][:, :, rows, cols]
        expect = np.stack([valid_pixels(full[t][[6, 2]], 0, cloud[t], 50.0) for t in range(len(full))])
        assert np.array_equal(s2.valid[0].numpy(), expect)
        assert 0 < expect.mean() < 1  # clouds are masked, clear pixels kept
        assert s2.times[0].tolist() == days.tolist()
        assert s["s1"].values.shape == (1, 12, 2, 128, 128) and s["s1"].orbit == "ascending"
        assert np.array_equal(s.targets["agb"][0].numpy(), root["targets/agb"][rows, cols])
        assert s.origin.tolist() == [[w.row, w.col]] and s.index.tolist() == [i]
    batch = collate_stacks([ds[0], ds[3]])
    assert batch["s2"].values.shape == (2, 10, 2, 128, 128) and batch.index.tolist() == [0, 3]


def test_missing_date_policies(holes_store):
    win = Window(0, 64, 256, 64)  # right half: date 1 cloudy everywhere, date 2 cloudy here
    common = dict(groups=["s2", "s1"], window_size=64, windows=[win], empty_windows="mask")
    mask = CubeDataset([holes_store], missing_dates="mask", **common)[0]
    assert mask["s2"].values.shape[1] == 4
    assert mask["s2"].date_valid[0].tolist() == [True, False, False, True]
    skip = CubeDataset([holes_store], missing_dates="skip", n_times=3, **common)[0]
    assert skip["s2"].date_valid[0].tolist() == [True, True, False]  # two clear dates, padded to 3
    assert skip["s2"].times[0].tolist()[:2] == mask["s2"].times[0, [0, 3]].tolist()
    assert skip["s2"].times[0, 2] == 0
    left = CubeDataset([holes_store], missing_dates="skip", **{**common, "windows": [Window(0, 64, 64, 64)]})[
        0
    ]
    # S1 date 3 (all -9999 here) dropped; the series keeps the group's length, padded with a masked step
    assert left["s1"].date_valid[0].tolist() == [True] * 4 + [False]
    assert left["s1"].times[0].tolist()[:4] == mask["s1"].times[0, [0, 1, 2, 4]].tolist()
    assert not (left["s1"].values == -9999).any()
    sample = CubeDataset(
        [holes_store], missing_dates="sample", n_times=3, **{**common, "windows": [Window(0, 64, 64, 64)]}
    )
    torch.manual_seed(0)
    a = sample[0]["s1"].times[0].tolist()
    torch.manual_seed(0)
    assert sample[0]["s1"].times[0].tolist() == a  # seeded
    draws = set()
    for _ in range(20):
        t = sample[0]["s1"].times[0].tolist()
        assert t == sorted(t) and len(set(t)) == 3
        draws.add(tuple(t))
    assert len(draws) > 1
    padded = CubeDataset([holes_store], n_times=6, **common)[0]["s2"]
    assert padded.values.shape[1] == 6 and not padded.date_valid[0, 4:].any()


def test_empty_windows_skipped_or_masked(holes_store):
    skip = CubeDataset([holes_store], groups=["s2", "s1"], targets=["agb"], window_size=64)
    assert skip.n_empty == 1 and Window(0, 0, 0, 64) not in skip.windows
    mask = CubeDataset(
        [holes_store], groups=["s2", "s1"], targets=["agb"], window_size=64, empty_windows="mask"
    )
    assert mask.n_empty == 0 and mask.windows[0] == Window(0, 0, 0, 64)
    s = mask[0]
    assert not s["s2"].valid.any() and not s["s1"].valid.any() and s.targets["agb"].isnan().all()
    pad = mask[PAD_INDEX]
    assert (
        pad.index.tolist() == [-1]
        and not pad["s2"].valid.any()
        and pad["s2"].values.shape == (1, 4, 3, 64, 64)
    )


def test_region_of_several_stores_and_several_regions(tmp_path, demo_store):
    s2, s1, agb, grid = _holes_cubes()
    with StoreTransaction(tmp_path / "a.zarr") as tx:
        tx.write_sensor("s2", s2)
    with StoreTransaction(tmp_path / "b.zarr") as tx:
        tx.write_sensor("s1", s1)
        tx.write_target("agb", agb, grid, units="t/ha")
    ds = CubeDataset(
        [[tmp_path / "a.zarr", tmp_path / "b.zarr"], [tmp_path / "b.zarr", tmp_path / "a.zarr"]],
        groups=["s2", "s1"],
        targets=["agb"],
        window_size=128,
    )
    assert {w.region for w in ds.windows} == {0, 1}
    s = ds[0]
    assert np.array_equal(s["s1"].values[0].numpy(), s1.data[:, :, :128, :128])
    assert np.array_equal(s["s2"].values[0].numpy(), s2.data[:, :, :128, :128])
    # the demo store has another CRS and size but the same 10 m pixels: allowed across regions
    both = CubeDataset([tmp_path / "a.zarr", demo_store], groups=["s2"], window_size=128)
    assert {w.region for w in both.windows} == {0, 1}
    # a.zarr stores S2 with scale 1, the demo store with scale 1e-4: batches carry float32 physical values
    assert both.groups["s2"].scale is None
    r0 = next(i for i, w in enumerate(both.windows) if w.region == 0)
    r1 = next(i for i, w in enumerate(both.windows) if w.region == 1)
    batch = both.read_batch([r0, r1])["s2"]
    assert batch.values.dtype == torch.float32 and (batch.scale, batch.offset) == (1.0, 0.0)
    demo_raw = zarr.open_group(demo_store, mode="r")["s2/data"]
    w = both.windows[r1]
    bands = [
        list(zarr.open_group(demo_store, mode="r")["s2/band"][:]).index(b) for b in both.groups["s2"].bands
    ]
    expect = demo_raw.oindex[:, bands, w.slices()[0], w.slices()[1]].astype(np.float32) * np.float32(1e-4)
    np.testing.assert_allclose(batch.values[1, : expect.shape[0]].numpy(), expect, rtol=1e-6)
    np.testing.assert_array_equal(batch.values[0, : s2.data.shape[0]].numpy(), s2.data[:, :, :128, :128])
    assert [p for p, _ in both.sensor_statistics()["sentinel2_l2a"]] == [str(demo_store)]
    assert both.groups_without_statistics() == [f"{tmp_path / 'a.zarr'}/s2"]


def test_bad_requests_give_clear_errors(tmp_path, holes_store, demo_store):
    with pytest.raises(DataConfigError, match=r"larger than the store grid of 300x520"):
        CubeDataset([holes_store], groups=["s2"], window_size=512)
    with pytest.raises(DataConfigError, match=r"band 'B02' is not in the store; stored bands: B04, B08, B11"):
        CubeDataset([holes_store], groups={"s2": ["B02"]}, window_size=64)
    with pytest.raises(DataConfigError, match=r"no sensor group 's1_desc'; groups: s1, s2"):
        CubeDataset([holes_store], groups=["s1_desc"], window_size=64)
    with pytest.raises(DataConfigError, match=r"no target 'canopy_height'; targets: agb"):
        CubeDataset([holes_store], groups=["s2"], targets=["canopy_height"], window_size=64)
    with pytest.raises(DataConfigError, match=r"inconsistent grids in region 0"):
        CubeDataset([[holes_store, demo_store]], groups=["s2"], window_size=64)
    s2, *_ = _holes_cubes(grid=Grid(H, W, Affine(20.0, 0, 0, 0, -20.0, 0), CRS.from_epsg(32633).to_wkt()))
    with StoreTransaction(tmp_path / "coarse.zarr") as tx:
        tx.write_sensor("s2", s2)
    with pytest.raises(DataConfigError, match=r"inconsistent grids across stores: pixel sizes"):
        CubeDataset([holes_store, tmp_path / "coarse.zarr"], groups=["s2"], window_size=64)
    with pytest.raises(DataConfigError, match="missing_dates"):
        CubeDataset([holes_store], missing_dates="drop")  # type: ignore[arg-type]


# -- real data -------------------------------------------------------------------------------------


def _tif(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src:
            return src.read()


def test_biomassters_windows_equal_source_rasters(biomassters_store, biomassters_dir):
    ds = CubeDataset(
        [biomassters_store],
        groups={"s2": ["B04", "B08"], "s1_asc": None, "s1_desc": ["VH"]},
        targets=["agb"],
        window_size=128,
    )
    assert len(ds) == 4
    i = next(k for k, w in enumerate(ds.windows) if (w.row, w.col) == (128, 0))
    s = ds[i]
    rows, cols = slice(128, 256), slice(0, 128)
    for month in (0, 6, 11):
        s2 = _tif(biomassters_dir / f"0060c0a5_S2_{month:02d}.tif")
        s1 = _tif(biomassters_dir / f"0060c0a5_S1_{month:02d}.tif")
        assert np.array_equal(s["s2"].values[0, month].numpy(), s2[[2, 6], rows, cols])
        assert np.array_equal(s["s1_asc"].values[0, month].numpy(), s1[0:2, rows, cols])
        assert np.array_equal(s["s1_desc"].values[0, month, 0].numpy(), s1[3, rows, cols])
        cloud = np.where(s2[10] > 100, 100, s2[10])[rows, cols]
        assert np.array_equal(s["s2"].valid[0, month].numpy(), cloud < 50)
        assert np.array_equal(s["s1_asc"].valid[0, month].numpy(), (s1[0:2, rows, cols] != -9999).all(0))
    agb = _tif(biomassters_dir / "0060c0a5_agbm.tif")[0]
    assert np.array_equal(s.targets["agb"][0].numpy(), agb[rows, cols])
    assert s["s2"].times[0, 0].item() == np.datetime64("2020-09-15").astype(np.int64)


def test_batched_fetch_equals_single_reads(holes_store):
    ds = CubeDataset(
        [holes_store], groups=["s2", "s1"], targets=["agb"], window_size=64, empty_windows="mask"
    )
    [batch] = ds.__getitems__([3, PAD_INDEX, 0, 7])
    singles = collate_stacks([ds[3], ds.padding_sample(), ds[0], ds[7]])  # concatenated per-sample reads
    assert batch.index.tolist() == [3, -1, 0, 7] and batch.origin[1].tolist() == [-1, -1]
    for g in ("s2", "s1"):
        assert torch.equal(batch[g].values, singles[g].values)
        assert torch.equal(batch[g].valid, singles[g].valid) and torch.equal(batch[g].times, singles[g].times)
    assert torch.equal(batch.targets["agb"].isnan(), singles.targets["agb"].isnan())
    assert batch.targets["agb"][1].isnan().all() and not batch["s2"].valid[1].any()


@pytest.mark.parametrize("policy", ["mask", "skip"])
def test_the_quality_mask_drives_validity_in_the_loader(tmp_path, policy):
    """A group's ``mask`` layer (from SCL classes) marks pixels invalid in batches, as in the statistics."""
    from spectravlm.data.store import Grid, SensorCube, StoreTransaction

    rng = np.random.default_rng(0)
    data = rng.integers(1, 4000, (3, 2, 64, 64), dtype=np.uint16)
    mask = np.zeros((3, 64, 64), dtype=np.uint8)
    mask[0, :10, :20] = 1  # date 0: a cloud shadow corner
    mask[1] = 1  # date 1: fully masked (e.g. SCL says cloud everywhere)
    times = np.array(["2020-06-01", "2020-06-11", "2020-06-21"], dtype="datetime64[s]")
    cube = SensorCube("sentinel2_l2a", ("B04", "B08"), data, times, Grid(64, 64), units="reflectance",
                      scale_factor=1e-4, mask=mask, mask_rule="SCL classes 3, 8, 9")  # fmt: skip
    store = tmp_path / "m.zarr"
    with StoreTransaction(store) as tx:
        tx.write_sensor("s2", cube)
    ds = CubeDataset([str(store)], groups=["s2"], window_size=64, missing_dates=policy, n_times=3)
    s2 = ds[0]["s2"]
    if policy == "mask":
        np.testing.assert_array_equal(s2.valid[0].numpy(), mask == 0)
        assert s2.all_valid is False
    else:  # the fully masked date is dropped, from the quality layer alone
        assert s2.times[0, :2].tolist() == (times[[0, 2]].astype("datetime64[D]").astype(np.int64)).tolist()
        np.testing.assert_array_equal(s2.valid[0, :2].numpy(), mask[[0, 2]] == 0)
        assert not s2.valid[0, 2].any()  # padding
