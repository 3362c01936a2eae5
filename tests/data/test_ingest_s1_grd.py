"""ingest_s1_grd on the real Sentinel-1A IW GRDH scene (GCP-georeferenced, uint16 DN)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import GCPTransformer
from rasterio.warp import transform as warp_transform

from spectravlm.cli import main
from spectravlm.data.ingest import find_grd_scene, ingest_geotiff, ingest_s1_grd
from spectravlm.data.ingest.s1_grd import orbit_direction
from spectravlm.data.store import CubeStore, Grid
from spectravlm.errors import IngestError, UnknownBandError

PRODUCT = "S1A_IW_GRDH_1SDV_20180716T004042_20180716T004107_022812_02792A_FD5B"


def test_find_scene(s1_grd_dir: Path) -> None:
    scene = find_grd_scene(s1_grd_dir)
    assert scene.product_id == PRODUCT
    assert scene.time == np.datetime64("2018-07-16T00:40:42")
    assert sorted(scene.files) == ["VH", "VV"] and scene.files["VV"].name == "iw-vv.tiff"


def _source_positions(grid: Grid, gcps: list, gcp_crs: CRS, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional source (row, col) of every ``step``-th target pixel centre, by GDAL's GCP transformer."""
    t = grid.transform
    ys, xs = np.mgrid[0 : grid.height : step, 0 : grid.width : step]
    x = t.c + t.a * (xs + 0.5)
    y = t.f + t.e * (ys + 0.5)
    lon, lat = warp_transform(CRS.from_wkt(grid.crs_wkt), gcp_crs, x.ravel(), y.ravel())
    rows, cols = GCPTransformer(gcps).rowcol(lon, lat, op=lambda v: v)
    return np.asarray(rows).reshape(ys.shape), np.asarray(cols).reshape(ys.shape)


def test_nearest_warp_pixel_for_pixel(s1_grd_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "s1.zarr"
    ingest_s1_grd(s1_grd_dir, store, resampling="nearest", progress=False)
    g = CubeStore.open(store)["s1"]
    assert g.bands == ("VV", "VH") and g.data.dtype == np.float32
    assert g.times.tolist() == [np.datetime64("2018-07-16T00:40:42", "s").item()]
    # UTM zone of the footprint centre (~76.9 E, ~10.2 N): 43N; pixel spacing 201 m -> 200 m, snapped.
    assert CRS.from_wkt(g.grid.crs_wkt) == CRS.from_epsg(32643)
    t = g.grid.transform
    assert (t.a, t.e) == (200.0, -200.0) and t.c % 200 == 0 and t.f % 200 == 0
    assert g.orbit == "descending"  # 00:40 UTC over India is the morning (descending) pass
    assert (
        g.units == "DN" and g.attrs["quantity"] == "DN^2 (uncalibrated linear intensity)" and g.nodata == 0.0
    )
    attrs = dict(g.zgroup.attrs)
    assert attrs["calibration"].startswith("none") and attrs["source"] == PRODUCT
    step = 2  # every other row and column: ~380k target pixels, enough and twice as fast
    stored = g.read((0,))[:, ::step, ::step]
    for i, pol in enumerate(("VV", "VH")):
        with rasterio.open(s1_grd_dir / f"iw-{pol.lower()}.tiff") as src:
            dn = src.read(1)
            gcps, gcp_crs = src.gcps
        rows, cols = _source_positions(g.grid, gcps, gcp_crs, step)
        inside = (rows >= 0) & (rows < dn.shape[0]) & (cols >= 0) & (cols < dn.shape[1])
        fr, fc = rows - np.floor(rows), cols - np.floor(cols)
        clear = inside & (np.abs(fr - 0.5) < 0.4) & (np.abs(fc - 0.5) < 0.4)  # not on a source pixel edge
        assert clear.sum() > 500_000 // step**2
        src_px = np.floor(rows[clear]).astype(int), np.floor(cols[clear]).astype(int)
        expected = dn[src_px].astype(np.float32) ** 2
        np.testing.assert_array_equal(stored[i][clear], expected)  # DN^2 of the source pixel, exactly
        assert (stored[i][clear] == 0).sum() == (expected == 0).sum() > 0  # DN 0 stays nodata
        far = (rows < -2) | (rows > dn.shape[0] + 2) | (cols < -2) | (cols > dn.shape[1] + 2)
        assert far.sum() > 100_000 // step**2 and (stored[i][far] == 0).all()  # outside the swath: nodata


def test_bilinear_intensity_and_amplitude(s1_grd_dir: Path, tmp_path: Path) -> None:
    ingest_s1_grd(s1_grd_dir, tmp_path / "bil.zarr", progress=False)  # default: bilinear on intensity
    g = CubeStore.open(tmp_path / "bil.zarr")["s1"]
    assert dict(g.zgroup.attrs)["resampling"] == "bilinear"
    vv = g.read((0, 0))
    with rasterio.open(s1_grd_dir / "iw-vv.tiff") as src:
        dn = src.read(1).astype(np.float64)
    # The swath covers ~250 x 170 km; resampling intensity keeps its mean (the grid is near-equal-area).
    assert abs((vv > 0).sum() * 200.0**2 / ((dn > 0).sum() * 201.3**2) - 1) < 0.03
    assert abs(vv[vv > 0].mean() / (dn[dn > 0] ** 2).mean() - 1) < 0.03
    # amplitude = DN as is: on the same grid with nearest, amplitude^2 equals intensity exactly
    for q in ("intensity", "amplitude"):
        ingest_s1_grd(s1_grd_dir, tmp_path / f"{q}.zarr", resampling="nearest", quantity=q, progress=False)
    inten = CubeStore.open(tmp_path / "intensity.zarr")["s1"]
    amp = CubeStore.open(tmp_path / "amplitude.zarr")["s1"]
    assert amp.units == "DN" and amp.attrs["quantity"] == "DN (uncalibrated amplitude)"
    np.testing.assert_array_equal(amp.read((0,)) ** 2, inten.read((0,)))


def _relabelled_copy(s1_grd_dir: Path, dst: Path, start: str) -> Path:
    """The same real scene under another start time: a stand-in for the next 12-day repeat pass."""
    dst.mkdir()
    for f in ("iw-vv.tiff", "iw-vh.tiff"):
        (dst / f).symlink_to(s1_grd_dir / f)
    info = json.loads((s1_grd_dir / "productInfo.json").read_text())
    info["startTime"] = start
    info["id"] = info["id"].replace("20180716T004042", start.replace("-", "").replace(":", ""))
    (dst / "productInfo.json").write_text(json.dumps(info))
    return dst


def test_append_later_scene(s1_grd_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "s1.zarr"
    ingest_s1_grd(s1_grd_dir, store, resolution=400.0, progress=False)
    first = CubeStore.open(store)["s1"].read((0,))
    later = _relabelled_copy(s1_grd_dir, tmp_path / "next", "2018-07-28T00:40:42")
    ingest_s1_grd(later, store, append=True, progress=False)
    g = CubeStore.open(store)["s1"]
    assert [str(t) for t in g.times] == ["2018-07-16T00:40:42", "2018-07-28T00:40:42"]
    assert g.grid.transform.a == 400.0  # the stored grid is the target of the appended scene
    np.testing.assert_array_equal(g.read((1,)), first)
    np.testing.assert_array_equal(g.read((0,)), first)
    assert "20180728T004042" in dict(g.zgroup.attrs)["source"] and PRODUCT in dict(g.zgroup.attrs)["source"]
    # two scenes in one call are written in time order, whatever order they are given in
    ingest_s1_grd([later, s1_grd_dir], tmp_path / "two.zarr", resolution=400.0, progress=False)
    two = CubeStore.open(tmp_path / "two.zarr")["s1"]
    np.testing.assert_array_equal(two.times, g.times)
    np.testing.assert_array_equal(two.read((slice(None),)), g.read((slice(None),)))


def test_orbit_from_geometry(s1_grd_dir: Path) -> None:
    with rasterio.open(s1_grd_dir / "iw-vv.tiff") as src:
        gcps, _ = src.gcps
    assert orbit_direction(gcps) == "descending"
    flipped = [type(g)(row=src.height - 1 - g.row, col=g.col, x=g.x, y=g.y, z=g.z) for g in gcps]
    assert orbit_direction(flipped) == "ascending"


def test_cli_s1_grd(s1_grd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "cli.zarr"
    args = ["data", "ingest", "s1-grd", str(s1_grd_dir), str(store), "--resolution", "500"]
    args += ["--polarisations", "VH", "--group", "s1_desc"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "s1_desc: sentinel1_grd 1 date (" in out and "1 bands VH" in out and "orbit descending" in out
    g = CubeStore.open(store)["s1_desc"]
    assert g.grid.transform.a == 500.0 and g.stats["VH"]["count"] > 0
    assert g.stats["VH"]["min"] > 0  # nodata (0) is not counted as a value


def test_bad_grd_input(s1_grd_dir: Path, bigearthnet_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "bad.zarr"
    with pytest.raises(IngestError, match="not a directory"):
        ingest_s1_grd(tmp_path / "nowhere", store, progress=False)
    # a scene that lacks a polarisation
    only_vv = tmp_path / "only_vv"
    only_vv.mkdir()
    (only_vv / "iw-vv.tiff").symlink_to(s1_grd_dir / "iw-vv.tiff")
    shutil.copy(s1_grd_dir / "productInfo.json", only_vv)
    with pytest.raises(IngestError, match=r"lacks polarisation.*VH"):
        ingest_s1_grd(only_vv, store, polarisations=["VV", "VH"], progress=False)
    with pytest.raises(UnknownBandError, match="'VX' is not in sentinel1_grd"):
        ingest_s1_grd(s1_grd_dir, store, polarisations=["VV", "VX"], progress=False)
    # no acquisition time anywhere
    no_time = tmp_path / "scene"
    no_time.mkdir()
    (no_time / "iw-vv.tiff").symlink_to(s1_grd_dir / "iw-vv.tiff")
    with pytest.raises(IngestError, match="no acquisition time"):
        ingest_s1_grd(no_time, store, progress=False)
    # wrong dtype (float32), and a raster without GCPs
    with rasterio.open(s1_grd_dir / "iw-vh.tiff") as src:
        dn, profile, gcps = src.read(1), src.profile, src.gcps
    for name, dtype, with_gcps in (("float", "float32", True), ("nogcp", "uint16", False)):
        d = tmp_path / f"S1A_IW_GRDH_1SDV_20180716T004042_20180716T004107_022812_02792A_{name}"
        d.mkdir()
        with rasterio.open(d / "iw-vh.tiff", "w", **{**profile, "dtype": dtype}) as dst:
            dst.write(dn.astype(dtype), 1)
            if with_gcps:
                dst.gcps = gcps
    with pytest.raises(IngestError, match=r"iw-vh\.tiff: dtype float32, expected uint16"):
        ingest_s1_grd(tmp_path / f"{PRODUCT[:-4]}float", store, progress=False)
    with pytest.raises(IngestError, match="no ground control points"):
        ingest_s1_grd(tmp_path / f"{PRODUCT[:-4]}nogcp", store, progress=False)
    # an orbit direction that contradicts the geometry
    with pytest.raises(IngestError, match="orbit='ascending' given, but its geometry is descending"):
        ingest_s1_grd(s1_grd_dir, store, orbit="ascending", progress=False)
    with pytest.raises(IngestError, match="quantity 'sigma0'"):
        ingest_s1_grd(s1_grd_dir, store, quantity="sigma0", progress=False)  # type: ignore[arg-type]
    assert not store.exists()
    # appending amplitude to an intensity group is refused; so is a scene far from the store's grid
    ingest_s1_grd(s1_grd_dir, store, resolution=1000.0, progress=False)
    with pytest.raises(IngestError, match="holds 'DN\\^2"):
        ingest_s1_grd(_relabelled_copy(s1_grd_dir, tmp_path / "n1", "2018-07-28T00:40:42"), store,
                      quantity="amplitude", append=True, progress=False)  # fmt: skip
    ben = tmp_path / "ben.zarr"
    import tarfile

    with tarfile.open(bigearthnet_dir / "BigEarthNet-S1-Example.tar.bz2") as tar:
        tar.extractall(tmp_path / "ben", filter="data")
    patch = next((tmp_path / "ben").glob("*/*33UUP*"))
    ingest_geotiff(patch, ben, "s1_ben", "s1", units="dB", band_pattern=r"_(VV|VH)\.tif$", progress=False)
    with pytest.raises(IngestError, match="does not overlap the target grid"):  # India onto central Europe
        ingest_s1_grd(s1_grd_dir, ben, append=True, progress=False)
    assert math.isclose(CubeStore.open(store)["s1"].grid.transform.a, 1000.0)
    assert list(CubeStore.open(ben).groups) == ["s1_ben"]


FULL = 20  # the sample rasters are the product downsampled 20x (837 x 1280 of ~16.7k x 25.6k)


def _lut(line: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """A made-up sigmaNought table, linear in line and pixel, so bilinear interpolation of it is exact."""
    return 420.0 + 0.004 * pixel[None, :] + 0.002 * line[:, None]


def _calibrated_copy(s1_grd_dir: Path, dst: Path, annotation: bool = True) -> Path:
    """The real scene with calibration (and annotation) XML in the AWS sentinel-s1-l1c layout."""
    from xml.etree import ElementTree as ET

    dst.mkdir()
    for f in ("iw-vv.tiff", "iw-vh.tiff", "productInfo.json"):
        (dst / f).symlink_to(s1_grd_dir / f)
    (dst / "annotation" / "calibration").mkdir(parents=True)
    with rasterio.open(s1_grd_dir / "iw-vv.tiff") as src:
        full_h, full_w = src.height * FULL, src.width * FULL
    lines = np.arange(0, full_h + 1000, 1000)
    pixels = np.arange(0, full_w + 400, 400)
    for pol in ("vv", "vh"):
        root = ET.Element("calibration")
        vl = ET.SubElement(root, "calibrationVectorList", count=str(len(lines)))
        for line in lines:
            v = ET.SubElement(vl, "calibrationVector")
            ET.SubElement(v, "line").text = str(line)
            ET.SubElement(v, "pixel", count=str(len(pixels))).text = " ".join(map(str, pixels))
            a = _lut(np.array([line]), pixels)[0] * (1.0 if pol == "vv" else 1.1)
            ET.SubElement(v, "sigmaNought", count=str(len(pixels))).text = " ".join(f"{x:.6e}" for x in a)
        ET.ElementTree(root).write(dst / "annotation" / "calibration" / f"calibration-iw-{pol}.xml")
        if annotation:
            ann = ET.Element("product")
            info = ET.SubElement(ET.SubElement(ann, "imageAnnotation"), "imageInformation")
            ET.SubElement(info, "numberOfSamples").text = str(full_w)
            ET.SubElement(info, "numberOfLines").text = str(full_h)
            ET.ElementTree(ann).write(dst / "annotation" / f"iw-{pol}.xml")
    return dst


def test_calibrated_linear_and_db_from_the_lut(s1_grd_dir: Path, tmp_path: Path) -> None:
    scene = _calibrated_copy(s1_grd_dir, tmp_path / "scene")
    lin_store, db_store = tmp_path / "lin.zarr", tmp_path / "db.zarr"
    assert ingest_s1_grd(scene, lin_store, resampling="nearest", progress=False) == "linear"  # auto
    ingest_s1_grd(scene, db_store, resampling="nearest", output="db", progress=False)
    lin, db = CubeStore.open(lin_store)["s1"], CubeStore.open(db_store)["s1"]
    assert (lin.units, lin.nodata, db.units, db.nodata) == ("linear", 0.0, "dB", -9999.0)
    assert "calibration-iw-vv.xml" in lin.attrs["calibration"] and lin.attrs["quantity"] == "sigma0"
    step = 3
    stored = lin.read((0,))[:, ::step, ::step]
    for i, pol in enumerate(("VV", "VH")):
        with rasterio.open(s1_grd_dir / f"iw-{pol.lower()}.tiff") as src:
            dn = src.read(1).astype(np.float64)
            gcps, gcp_crs = src.gcps
        rows, cols = _source_positions(lin.grid, gcps, gcp_crs, step)
        inside = (rows >= 0) & (rows < dn.shape[0]) & (cols >= 0) & (cols < dn.shape[1])
        fr, fc = rows - np.floor(rows), cols - np.floor(cols)
        clear = inside & (np.abs(fr - 0.5) < 0.4) & (np.abs(fc - 0.5) < 0.4)
        r, c = np.floor(rows[clear]).astype(int), np.floor(cols[clear]).astype(int)
        # the full-resolution position of a downsampled pixel centre, then the made-up table there
        a = 420.0 + 0.004 * ((c + 0.5) * FULL - 0.5) + 0.002 * ((r + 0.5) * FULL - 0.5)
        a *= 1.0 if pol == "VV" else 1.1
        expected = dn[r, c] ** 2 / a**2
        np.testing.assert_allclose(stored[i][clear], expected, rtol=2e-6)
        assert (stored[i][clear] == 0).sum() == (dn[r, c] == 0).sum() > 0
    # dB is 10 log10 of the linear store, nodata where the power is nodata
    d, v = db.read((0,)), lin.read((0,))
    np.testing.assert_allclose(d[v > 0], 10 * np.log10(v[v > 0]), atol=1e-4)
    assert (d[v == 0] == -9999.0).all()
    assert -30 < db.stats["VV"]["p50"] < 10 and lin.stats_db["VV"]["mean"] == pytest.approx(
        db.stats["VV"]["mean"], abs=1e-3
    )


def test_calibration_constant_and_refusals(s1_grd_dir: Path, tmp_path: Path) -> None:
    ingest_s1_grd(s1_grd_dir, tmp_path / "dn.zarr", resampling="nearest", resolution=400.0, progress=False)
    ingest_s1_grd(s1_grd_dir, tmp_path / "k.zarr", resampling="nearest", resolution=400.0, output="db",
                  calibration_constant=500.0, progress=False)  # fmt: skip
    dn2, k = CubeStore.open(tmp_path / "dn.zarr")["s1"].read((0,)), CubeStore.open(tmp_path / "k.zarr")["s1"]
    assert "DN^2 / 500^2" in k.attrs["calibration"]
    np.testing.assert_allclose(k.read((0,))[dn2 > 0], 10 * np.log10(dn2[dn2 > 0] / 500.0**2), atol=1e-4)
    with pytest.raises(IngestError, match=r"--db needs calibration.*--calibration-constant"):
        ingest_s1_grd(s1_grd_dir, tmp_path / "x.zarr", output="db", progress=False)
    with pytest.raises(IngestError, match="positive"):
        ingest_s1_grd(s1_grd_dir, tmp_path / "x.zarr", calibration_constant=-1.0, progress=False)
    # a LUT of the full-resolution product beside a downsampled raster, with no annotation to scale by
    bare = _calibrated_copy(s1_grd_dir, tmp_path / "bare", annotation=False)
    with pytest.raises(IngestError, match="not at the product's full resolution"):
        ingest_s1_grd(bare, tmp_path / "x.zarr", output="linear", progress=False)
    assert not (tmp_path / "x.zarr").exists()


def test_cli_s1_db(s1_grd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "cli.zarr"
    scene = _calibrated_copy(s1_grd_dir, tmp_path / "scene")
    assert main(["data", "ingest", "s1-grd", str(scene), str(store), "--resolution", "500", "--db"]) == 0
    out = capsys.readouterr().out
    assert "in dB; nodata -9999" in out
    from spectravlm.data.stats import normalisation_stats

    g = CubeStore.open(store)["s1"]
    n, mean, std = normalisation_stats(g)["VV"]
    assert n == g.stats["VV"]["count"] > 0 and -25 < mean < 5 and 0 < std < 15
