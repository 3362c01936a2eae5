"""ingest_geotiff on real data: BigEarthNet S1/S2 patches (10/20/60 m bands) and eo-learn L1C scenes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rasterio.warp import calculate_default_transform, reproject

from spectravlm.cli import main
from spectravlm.data.ingest import ingest_geotiff, scan_geotiffs
from spectravlm.data.ingest.geotiff import file_grid, parse_date
from spectravlm.data.store import CubeStore
from spectravlm.errors import IngestError, StoreError, UnknownBandError, UnknownSensorError

L2A = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
L1C = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S2_BAND_RE = r"_(B\d[\dA])\.tif$"
S2_DAY_RE = r"_(\d{8})T"  # BigEarthNet S2 names hold malformed times (T93020); the day is exact
S1_TIME_RE = r"_(\d{8}T\d{6})_"
S1_POL_RE = r"_(VV|VH)\.tif$"


def _band_file(d: Path, band: str) -> Path:
    return next(d.glob(f"*_{band}.tif"))


def _ingest_pair(
    pair: dict, store: Path, resampling: str = "nearest", resolution: float | None = None
) -> None:
    ingest_geotiff(
        pair["s2"], store, "s2", "sentinel2_l2a", units="reflectance", scale_factor=1e-4, add_offset=0.0,
        band_pattern=S2_BAND_RE, date_pattern=S2_DAY_RE, resampling=resampling, resolution=resolution,
        progress=False,
    )  # fmt: skip
    ingest_geotiff(
        pair["s1"], store, "s1", "sentinel1_grd", units="dB", band_pattern=S1_POL_RE,
        date_pattern=S1_TIME_RE, append=True, progress=False,
    )  # fmt: skip


def test_bigearthnet_pairs_on_10m_grid(ben: list[dict], tmp_path: Path) -> None:
    for k, pair in enumerate(ben):
        store = tmp_path / f"ben{k}.zarr"
        _ingest_pair(pair, store)
        cube = CubeStore.open(store)
        s2, s1 = cube["s2"], cube["s1"]
        assert s2.bands == L2A and s1.bands == ("VV", "VH")
        assert s2.data.shape == (1, 12, 120, 120) and s2.data.dtype == np.uint16
        assert s1.data.shape == (1, 2, 120, 120) and s1.data.dtype == np.float32
        assert str(s2.times[0])[:10] == pair["s2_meta"]["acquisition_date"][:10]
        assert str(s1.times[0]) == pair["s1_meta"]["acquisition_time"]  # full time from the S1 name
        with rasterio.open(_band_file(pair["s2"], "B02")) as ref:
            assert CRS.from_wkt(s2.grid.crs_wkt) == ref.crs
            assert s2.grid.transform.almost_equals(ref.transform)
            assert ref.crs.to_wkt() == pair["s2_meta"]["projection"] or ref.crs == CRS.from_wkt(
                pair["s2_meta"]["projection"]
            )
        assert s2.grid.transform.c == pair["s2_meta"]["coordinates"]["ulx"]
        assert s2.grid.transform.f == pair["s2_meta"]["coordinates"]["uly"]
        assert s1.grid.same_as(s2.grid)
        data = s2.read((0,))
        for i, band in enumerate(L2A):
            with rasterio.open(_band_file(pair["s2"], band)) as src:
                raw = src.read(1)
                factor = round(src.transform.a / 10)
            assert factor in (1, 2, 6) and raw.shape == (120 // factor,) * 2
            # nearest on the nested S2 grids: each 20 m / 60 m pixel becomes a 2x2 / 6x6 block, exactly
            expected = np.repeat(np.repeat(raw, factor, 0), factor, 1)
            np.testing.assert_array_equal(data[i], expected, err_msg=f"{pair['s2'].name} {band}")
        sar = s1.read((0,))
        for i, pol in enumerate(("VV", "VH")):
            with rasterio.open(_band_file(pair["s1"], pol)) as src:
                np.testing.assert_array_equal(sar[i], src.read(1))
        assert s1.units == "dB" and s2.scale_factor == 1e-4 and s1.nodata is None
        # S2 digital numbers: nodata 0 by the product's rule (the files declare none), recorded as such
        assert s2.nodata == 0 and s2.attrs["nodata_source"].startswith("product default: Sentinel-2")
    ds = xr.open_zarr(tmp_path / "ben0.zarr", group="s2")
    t = CubeStore.open(tmp_path / "ben0.zarr")["s2"].grid.transform
    np.testing.assert_allclose(ds["x"].values, t.c + 5 + 10 * np.arange(120))
    np.testing.assert_allclose(ds["y"].values, t.f - 5 - 10 * np.arange(120))


def _bilinear_up(a: np.ndarray, f: int, n: int) -> np.ndarray:
    """Bilinear upsampling by ``f`` sampling pixel centres at (i + 0.5) / f - 0.5 (interior exact)."""
    c = (np.arange(n) + 0.5) / f - 0.5
    i0 = np.clip(np.floor(c).astype(int), 0, a.shape[0] - 1)
    i1 = np.clip(i0 + 1, 0, a.shape[0] - 1)
    w = c - np.floor(c)
    af = a.astype(np.float64)
    rows = af[i0] * (1 - w)[:, None] + af[i1] * w[:, None]
    return rows[:, i0] * (1 - w)[None, :] + rows[:, i1] * w[None, :]


def test_bigearthnet_bilinear_and_average(ben: list[dict], tmp_path: Path) -> None:
    pair = ben[0]
    _ingest_pair(pair, tmp_path / "bil.zarr", resampling="bilinear")
    g = CubeStore.open(tmp_path / "bil.zarr")["s2"]
    assert dict(g.zgroup.attrs)["resampling"] == "bilinear"
    data = g.read((0,)).astype(np.float64)
    for band, f in (("B05", 2), ("B12", 2), ("B09", 6)):
        with rasterio.open(_band_file(pair["s2"], band)) as src:
            raw = src.read(1)
        inner = slice(f, 120 - f)  # GDAL treats the outer source ring differently
        expected = _bilinear_up(raw, f, 120)[inner, inner]
        got = data[L2A.index(band)][inner, inner]
        assert np.abs(got - expected).max() <= 0.5 + 1e-9, band  # uint16 output is rounded
        assert not np.array_equal(got, np.repeat(np.repeat(raw, f, 0), f, 1)[inner, inner])
    with rasterio.open(_band_file(pair["s2"], "B02")) as src:
        np.testing.assert_array_equal(data[L2A.index("B02")], src.read(1))  # 10 m bands untouched

    # A 20 m grid: 10 m bands averaged over 2x2 blocks (rounded half up), 20 m bands read as they are.
    ingest_geotiff(
        pair["s2"], tmp_path / "avg.zarr", "s2", "s2", units="reflectance", band_pattern=S2_BAND_RE,
        add_offset=0.0, date_pattern=S2_DAY_RE, resolution=20.0, resampling="average", progress=False,
    )  # fmt: skip
    g = CubeStore.open(tmp_path / "avg.zarr")["s2"]
    assert g.data.shape == (1, 12, 60, 60) and g.grid.transform.a == 20.0
    with rasterio.open(_band_file(pair["s2"], "B04")) as src:
        b04 = src.read(1).astype(np.float64)
    block_mean = b04.reshape(60, 2, 60, 2).mean((1, 3))
    np.testing.assert_array_equal(g.read((0, L2A.index("B04"))), np.floor(block_mean + 0.5))
    with rasterio.open(_band_file(pair["s2"], "B8A")) as src:
        np.testing.assert_array_equal(g.read((0, L2A.index("B8A"))), src.read(1))


@pytest.fixture(scope="module")
def eolearn_tifs(eolearn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The real eo-learn L1C scenes written as one 13-band GeoTIFF per date, bands named in the file."""
    out = tmp_path_factory.mktemp("eolearn_tifs")
    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")
    stamps = json.loads((eolearn_dir / "timestamps.json").read_text())
    ring = json.loads((eolearn_dir / "bbox.geojson").read_text())["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    bounds = (min(xs), min(ys), max(xs), max(ys))
    transform = from_bounds(*bounds, 100, 101)
    by_time = {}
    for frame, idx in enumerate((2, 1, 4, 3, 0)):
        t = np.datetime64(stamps[idx], "s")
        name = f"ljubljana_{str(t).replace('-', '').replace(':', '')}.tif"
        profile = {"driver": "GTiff", "height": 101, "width": 100, "count": 13, "dtype": "float32"}
        with rasterio.open(out / name, "w", crs="EPSG:32633", transform=transform, **profile) as dst:
            dst.write(np.moveaxis(scenes[frame], -1, 0))
            dst.descriptions = L1C
        by_time[t] = (out / name, np.moveaxis(scenes[frame], -1, 0))
    return out, {"by_time": by_time, "transform": transform}


def test_eolearn_multiband_geotiffs_append(eolearn_tifs: tuple[Path, dict], tmp_path: Path) -> None:
    folder, info = eolearn_tifs
    times = sorted(info["by_time"])
    files = [info["by_time"][t][0] for t in times]
    store = tmp_path / "lj.zarr"
    ingest_geotiff(files[:3], store, "s2", "sentinel2_l1c", units="reflectance", progress=False)
    assert CubeStore.open(store)["s2"].data.shape == (3, 13, 101, 100)
    ingest_geotiff(files[3:], store, "s2", "sentinel2_l1c", units="reflectance", append=True, progress=False)
    g = CubeStore.open(store)["s2"]
    assert g.bands == L1C  # from the files' band descriptions
    np.testing.assert_array_equal(g.times, np.array(times))
    for i, t in enumerate(times):
        np.testing.assert_array_equal(g.read((i,)), info["by_time"][t][1])
    assert g.grid.transform.almost_equals(info["transform"])
    assert CRS.from_wkt(g.grid.crs_wkt) == CRS.from_epsg(32633)
    assert "2 files" in dict(g.zgroup.attrs)["source"] and "3 files" in dict(g.zgroup.attrs)["source"]
    with pytest.raises(StoreError, match="already in the store"):  # appending a stored date again
        ingest_geotiff(files[4], store, "s2", "s2_l1c", units="reflectance", append=True, progress=False)
    assert CubeStore.open(store)["s2"].data.shape[0] == 5
    # The directory form finds all five, sorted by the date in the names.
    bands, plans = scan_geotiffs(folder, "sentinel2_l1c")
    assert bands == L1C and [p.time for p in plans] == times


def test_cli_geotiff(ben: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pair = ben[1]
    store = tmp_path / "cli.zarr"
    args = ["data", "ingest", "geotiff", str(pair["s2"]), str(store), "--group", "s2", "--sensor", "s2"]
    args += [
        "--units",
        "reflectance",
        "--scale-factor",
        "1e-4",
        "--add-offset",
        "0",
        "--band-pattern",
        S2_BAND_RE,
    ]
    args += ["--date-pattern", S2_DAY_RE, "--bands", "B02,B03,B04,B08,B11"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "5 bands B02,B03,B04,B08,B11" in out and "120x120" in out
    g = CubeStore.open(store)["s2"]
    with rasterio.open(_band_file(pair["s2"], "B11")) as src:
        np.testing.assert_array_equal(g.read((0, 4)), np.repeat(np.repeat(src.read(1), 2, 0), 2, 1))
    assert g.stats["B11"]["count"] == 120 * 120
    s1 = [str(p) for p in sorted(pair["s1"].glob("*.tif"))]
    args = ["data", "ingest", "geotiff", *s1, str(store), "--group", "s1", "--sensor", "s1", "--units", "dB"]
    args += ["--band-pattern", S1_POL_RE, "--append"]
    assert main(args) == 0
    assert "s1: sentinel1_grd 1 date (" in capsys.readouterr().out
    assert main([*args, "--group", "s2"]) == 1  # s2 group exists: bands differ
    assert "cannot append bands" in capsys.readouterr().err


def _copy_raster(src_path: Path, dst_path: Path, dtype: str | None = None, crs: str | None = None) -> Path:
    with rasterio.open(src_path) as src:
        profile = src.profile
        data = src.read()
    if dtype is not None:
        profile["dtype"] = dtype
        data = data.astype(dtype)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
    return dst_path


def _patch_copy(pair: dict, tmp_path: Path) -> Path:
    d = tmp_path / pair["s2"].name
    shutil.copytree(pair["s2"], d)
    return d


def _ingest_s2(files: Path | list[Path], store: Path, **kw: object) -> None:
    ingest_geotiff(
        files, store, "s2", kw.pop("sensor", "sentinel2_l2a"), units="reflectance",  # type: ignore[arg-type]
        add_offset=0.0, band_pattern=S2_BAND_RE, date_pattern=S2_DAY_RE, progress=False, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_bad_input_files(ben: list[dict], eolearn_tifs: tuple[Path, dict], tmp_path: Path) -> None:
    pair = ben[0]
    store = tmp_path / "bad.zarr"
    # wrong band count: a 13-band file declared with 12 band names
    one = next(iter(eolearn_tifs[1]["by_time"].values()))[0]
    with pytest.raises(IngestError, match="13 bands, expected 12"):
        ingest_geotiff(one, store, "s2", "s2_l1c", units="reflectance", bands=L1C[:12], progress=False)
    # wrong dtype: one band of the patch stored as float32
    d = _patch_copy(pair, tmp_path / "dtype")
    _copy_raster(_band_file(pair["s2"], "B05"), _band_file(d, "B05"), dtype="float32")
    with pytest.raises(IngestError, match=r"B05\.tif: dtype float32, expected uint16"):
        _ingest_s2(d, store)
    # a missing file, and a date that lacks a band
    with pytest.raises(IngestError, match="no such file"):
        _ingest_s2([_band_file(pair["s2"], "B02"), tmp_path / "absent_20170613T000000_B03.tif"], store)
    d = _patch_copy(pair, tmp_path / "missing")
    _band_file(d, "B8A").unlink()
    with pytest.raises(IngestError, match=r"date 2017-06-13T00:00:00 lacks band file.*B8A"):
        _ingest_s2(d, store, bands=L2A)
    for f in pair["s2"].glob("*.tif"):  # a second date with every band: now the first one lacks B8A
        shutil.copy(f, d / f.name.replace("20170613", "20170614"))
    with pytest.raises(IngestError, match=r"date 2017-06-13T00:00:00 lacks band file.*B8A"):
        _ingest_s2(d, store)
    # unknown band and unknown sensor
    d = _patch_copy(pair, tmp_path / "unknown")
    _band_file(d, "B09").rename(d / _band_file(d, "B09").name.replace("B09", "B13"))
    with pytest.raises(UnknownBandError, match=r"B13\.tif.*'B13' is not in sentinel2_l2a"):
        _ingest_s2(d, store)
    with pytest.raises(UnknownSensorError, match="sentinel3"):
        _ingest_s2(pair["s2"], store, sensor="sentinel3")
    with pytest.raises(IngestError, match=r"no acquisition date.*pass --date"):
        ingest_geotiff(pair["s2"], store, "s2", "s2", units="reflectance", band_pattern=S2_BAND_RE,
                       date_pattern=r"_(\d{4}-\d{2}-\d{2})_", add_offset=0.0, progress=False)  # fmt: skip
    with pytest.raises(IngestError, match="resampling 'bicubic'"):
        _ingest_s2(pair["s2"], store, resampling="bicubic")
    assert not store.exists() and not list(tmp_path.glob(".bad.zarr.tmp-*"))


def test_bad_input_alignment(ben: list[dict], tmp_path: Path) -> None:
    store = tmp_path / "bad.zarr"
    by_tile = {p["s2"].name.split("_")[-2] + "_" + p["s2"].name.split("_")[-1]: p for p in ben}
    a, b = by_tile["87_48"], by_tile["57_38"]  # UTM 33N (central Europe) and 35N (Finland)
    # A band of another patch in another UTM zone, renamed into this patch: CRS differs -> error naming both.
    d = _patch_copy(a, tmp_path / "crs")
    shutil.copy(_band_file(b["s2"], "B05"), _band_file(d, "B05"))
    with pytest.raises(IngestError, match=r"B05\.tif is in EPSG:32635 but the target grid .*B0[2348]\.tif"):
        _ingest_s2(d, store)
    with pytest.raises(IngestError, match="do not cover the same area"):  # reprojected, it lies elsewhere
        _ingest_s2(d, store, allow_reproject=True)
    # Same zone (29N), same date, another place: patches 36_85 and 4_55 of 2017-06-17.
    c, e = by_tile["36_85"], by_tile["4_55"]
    d = _patch_copy(c, tmp_path / "area")
    shutil.copy(_band_file(e["s2"], "B11"), _band_file(d, "B11"))
    with pytest.raises(IngestError, match=r"B11\.tif covers .* do not cover the same area"):
        _ingest_s2(d, store)
    # Rasters without georeference and of different shapes cannot be aligned.
    d = tmp_path / "nogeo"
    d.mkdir()
    for band in ("B02", "B05"):
        with rasterio.open(_band_file(a["s2"], band)) as src:
            arr = src.read()
        name = f"x_20170613T000000_{band}.tif"
        with rasterio.open(d / name, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=1,
                           dtype="uint16") as dst:  # fmt: skip
            dst.write(arr)
    with pytest.raises(IngestError, match="without georeference cannot be aligned"):
        _ingest_s2(d, store, bands=["B02", "B05"])
    # Appending a patch from elsewhere to a store: the store's grid is the target and it is not covered.
    _ingest_s2(a["s2"], store)
    with pytest.raises(IngestError, match=r"do not cover the same area|is in EPSG"):
        ingest_geotiff(b["s2"], store, "s2", "s2", units="reflectance", band_pattern=S2_BAND_RE,
                       date_pattern=S2_DAY_RE, add_offset=0.0, append=True, progress=False)  # fmt: skip
    assert CubeStore.open(store)["s2"].data.shape[0] == 1


def test_reproject_when_allowed(ben: list[dict], tmp_path: Path) -> None:
    """A 20 m band delivered in another CRS (ETRS89-LAEA, 5 m) is warped back onto the UTM 10 m grid."""
    pair = ben[0]
    d = _patch_copy(pair, tmp_path / "laea")
    with rasterio.open(_band_file(pair["s2"], "B05")) as src:
        raw = src.read(1)
        laea = CRS.from_epsg(3035)
        shape = (src.width, src.height)
        t, w, h = calculate_default_transform(src.crs, laea, *shape, *src.bounds, resolution=5.0)
        out = np.zeros((h, w), dtype=np.uint16)
        reproject(raw, out, src_transform=src.transform, src_crs=src.crs, dst_transform=t, dst_crs=laea,
                  resampling=Resampling.nearest)  # fmt: skip
    # pad: the LAEA raster must cover the UTM grid; write it on a slightly larger canvas
    pad = 20
    big = np.zeros((h + 2 * pad, w + 2 * pad), dtype=np.uint16)
    big[pad:-pad, pad:-pad] = out
    t_big = t * t.translation(-pad, -pad)
    with rasterio.open(_band_file(d, "B05"), "w", driver="GTiff", height=big.shape[0], width=big.shape[1],
                       count=1, dtype="uint16", crs=laea, transform=t_big, nodata=0) as dst:  # fmt: skip
        dst.write(big, 1)
    with rasterio.open(_band_file(pair["s2"], "B02")) as ref:
        utm10 = file_grid(ref)  # the finest file is now the 5 m one: name the 10 m UTM grid explicitly
    with pytest.raises(IngestError, match="allow_reproject"):
        _ingest_s2(d, tmp_path / "no.zarr", nodata=0, grid=utm10)
    _ingest_s2(d, tmp_path / "re.zarr", allow_reproject=True, nodata=0, grid=utm10)
    assert CubeStore.open(tmp_path / "re.zarr")["s2"].grid.same_as(utm10)
    got = CubeStore.open(tmp_path / "re.zarr")["s2"].read((0, L2A.index("B05")))
    expected = np.repeat(np.repeat(raw, 2, 0), 2, 1)
    # two nearest warps move block edges by up to a pixel; the bulk of the pixels is the source value
    assert (got == expected).mean() > 0.85
    assert np.abs(got.astype(float).mean() - expected.mean()) < 0.02 * expected.mean()


def test_parse_date_forms() -> None:
    assert parse_date("S2A_MSIL2A_20170613T101031_87_48_B05.tif") == np.datetime64("2017-06-13T10:10:31")
    assert parse_date("scene_2020-01-15.tif") == np.datetime64("2020-01-15")
    assert parse_date("x_2020-01-15T08:09:10.tif") == np.datetime64("2020-01-15T08:09:10")
    assert parse_date("S2B_MSIL2A_20170924T93020_69_24_B01.tif") == np.datetime64("2017-09-24")
    assert parse_date("m07_y2019.tif", r"m(?P<date>\d{2}_y\d{4})", "%m_y%Y") == np.datetime64("2019-07-01")
    with pytest.raises(IngestError, match="does not parse"):
        parse_date("x_20201345.tif")


def test_nested_grid_fast_path_equals_gdal_warp(ben: list[dict], tmp_path: Path) -> None:
    """The direct read of S2's 20/60 m bands onto the 10 m grid equals GDAL's nearest warp, bit for bit,
    on every real patch and on a grid whose origin is not a multiple of the coarse pixel."""
    from affine import Affine

    from spectravlm.data.store import Grid

    for k, pair in enumerate(ben):
        out = {}
        for nested in (True, False):
            store = tmp_path / f"{k}_{nested}.zarr"
            _ingest_s2(pair["s2"], store, nested_reads=nested)
            out[nested] = CubeStore.open(store)["s2"].read((0,))
        np.testing.assert_array_equal(out[True], out[False], err_msg=pair["s2"].name)
    with rasterio.open(_band_file(ben[0]["s2"], "B02")) as src:
        t = src.transform
        inner = Grid(100, 90, Affine(10, 0, t.c + 70, 0, -10, t.f - 130), file_grid(src).crs_wkt)
    got = {}
    for nested in (True, False):
        _ingest_s2(ben[0]["s2"], tmp_path / f"inner_{nested}.zarr", grid=inner, nested_reads=nested)
        got[nested] = CubeStore.open(tmp_path / f"inner_{nested}.zarr")["s2"].read((0,))
    np.testing.assert_array_equal(got[True], got[False])
    with rasterio.open(_band_file(ben[0]["s2"], "B09")) as src:  # 60 m: offsets 13 and 7 px, factor 6
        raw = src.read(1)
    np.testing.assert_array_equal(
        got[True][L2A.index("B09")], np.repeat(np.repeat(raw, 6, 0), 6, 1)[13:113, 7:97]
    )
