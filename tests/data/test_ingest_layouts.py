"""Archives as they come: SAFE-like JP2 folders, quality layers, extra and static layers, fill, messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_bounds

from spectravlm.cli import main
from spectravlm.data.ingest import LayerSpec, Validity, ingest_geotiff
from spectravlm.data.ingest.static import ingest_static
from spectravlm.data.store import CubeStore
from spectravlm.errors import IngestError

L1C = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
FRAMES = (2, 1, 4, 3, 0)  # REFERENCE_SCENES frame k is timestamp FRAMES[k] (see ../shared/data/SOURCES.md)
EO_BOUNDS = (465181.05, 5079244.89, 466180.53, 5080254.63)


def _eolearn(eolearn_dir: Path) -> tuple[np.ndarray, list[np.datetime64]]:
    """The five real L1C scenes ``(5, 13, 101, 100)`` as digital numbers, and their times."""
    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")
    stamps = json.loads((eolearn_dir / "timestamps.json").read_text())
    dn = np.clip(np.round(np.moveaxis(scenes, -1, 1) * 10000), 1, 65535).astype(np.uint16)
    return dn, [np.datetime64(stamps[i], "s") for i in FRAMES]


def _profile(driver: str, count: int = 1, dtype: str = "uint16") -> dict:
    return {
        "driver": driver, "height": 101, "width": 100, "count": count, "dtype": dtype, "crs": "EPSG:32633",
        "transform": from_bounds(*EO_BOUNDS, 100, 101),
    }  # fmt: skip


def _jp2(path: Path, band: np.ndarray) -> None:
    opts = {"QUALITY": "100", "REVERSIBLE": "YES"}  # lossless, as the digital numbers must survive
    with rasterio.open(path, "w", **_profile("JP2OpenJPEG", band.shape[0], str(band.dtype)), **opts) as dst:
        dst.write(band)


@pytest.fixture(scope="module")
def safe_root(eolearn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five SAFE-like L1C products: dates only in the product folder names, JP2 bands named B01.jp2 ...,
    a 3-band TCI.jp2 that is no band, and a granule folder whose own date is seconds later."""
    root = tmp_path_factory.mktemp("safe")
    dn, times = _eolearn(eolearn_dir)
    for k, t in enumerate(times):
        stamp = str(t).replace("-", "").replace(":", "")
        later = str(t + np.timedelta64(2, "s")).replace("-", "").replace(":", "")
        img = root / f"S2A_MSIL1C_{stamp}_N0204_R122_T33TVM_{later}.SAFE" / "GRANULE"
        img = img / f"L1C_T33TVM_A000{k}_{later}" / "IMG_DATA"
        img.mkdir(parents=True)
        for b, band in enumerate(L1C):
            _jp2(img / f"{band}.jp2", dn[k, b : b + 1])
        _jp2(img / "TCI.jp2", (dn[k, [3, 2, 1]] // 100).astype(np.uint8))
    return root


@pytest.mark.filterwarnings("ignore:skipped .*TCI:UserWarning")
def test_safe_jp2_folders_dates_from_product_names(
    safe_root: Path, eolearn_dir: Path, tmp_path: Path
) -> None:
    dn, times = _eolearn(eolearn_dir)
    store = tmp_path / "safe.zarr"
    with pytest.warns(UserWarning, match=r"skipped 5 files.*TCI\.jp2"):
        scan = ingest_geotiff(safe_root, store, "s2", "sentinel2_l1c", units="reflectance", progress=False)
    assert [p.name for p, _ in scan.skipped] == ["TCI.jp2"] * 5
    g = CubeStore.open(store)["s2"]
    order = np.argsort(np.array(times))
    np.testing.assert_array_equal(
        g.times, np.array(times)[order]
    )  # the product's sensing start, not the granule's
    assert g.bands == L1C
    np.testing.assert_array_equal(g.read((slice(None),)), dn[order])  # lossless JP2: the digital numbers
    # product facts, with where they came from: DN 0 = no data, 1e-4 scale, N0204 < 04.00: no offset
    assert (g.nodata, g.scale_factor, g.add_offset) == (0.0, 1e-4, 0.0)
    assert "N0204" in g.attrs["offset_source"] and "folder S2A_MSIL1C_" in g.attrs["source"]
    with pytest.raises(IngestError, match=r"5 files are not bands.*TCI\.jp2.*--strict"):
        ingest_geotiff(safe_root, tmp_path / "x.zarr", "s2", "sentinel2_l1c", units="reflectance",
                       strict=True, progress=False)  # fmt: skip
    # --sensor s2 (L2A) on L1C products: the message names the sensor to use
    with pytest.raises(IngestError, match="pass --sensor sentinel2_l1c"):
        ingest_geotiff(safe_root, tmp_path / "x.zarr", "s2", "s2", units="reflectance", progress=False)
    # --date for a single scene whose names carry no date
    one = tmp_path / "one"
    shutil.copytree(next(safe_root.glob("*.SAFE")) / "GRANULE", one)
    for f in one.rglob("*.jp2"):
        f.rename(one / f.name)
    with pytest.raises(IngestError, match="pass --date"):
        ingest_geotiff(one, tmp_path / "x.zarr", "s2", "s2_l1c", units="reflectance", add_offset=0.0,
                       date_pattern=r"(\d{8})T", progress=False)  # fmt: skip
    ingest_geotiff(one, tmp_path / "one.zarr", "s2", "s2_l1c", units="reflectance", add_offset=0.0,
                   date="2015-07-11T10:00:08Z", progress=False)  # fmt: skip
    assert str(CubeStore.open(tmp_path / "one.zarr")["s2"].times[0]) == "2015-07-11T10:00:08"
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.filterwarnings("ignore:skipped .*TCI:UserWarning")
def test_offset_must_be_known_for_baseline_4_digital_numbers(safe_root: Path, tmp_path: Path) -> None:
    product = next(safe_root.glob("*.SAFE"))
    renamed = tmp_path / product.name.replace("_N0204_", "_N0400_")
    shutil.copytree(product, renamed)
    ingest_geotiff(renamed, tmp_path / "n4.zarr", "s2", "s2_l1c", units="reflectance", progress=False)
    g = CubeStore.open(tmp_path / "n4.zarr")["s2"]
    assert g.add_offset == -0.1 and "N0400" in g.attrs["offset_source"]
    # product metadata wins over the name: an MTD_MSIL1C.xml listing RADIO_ADD_OFFSET -1000
    mtd = tmp_path / "plain" / "MTD_MSIL1C.xml"
    shutil.copytree(product / "GRANULE", tmp_path / "plain" / "GRANULE")
    mtd.write_text(
        "<n1:Level-1C_User_Product xmlns:n1='https://psd-14.sentinel2.eo.esa.int'><n1:General_Info>"
        "<Product_Image_Characteristics><QUANTIFICATION_VALUE unit='none'>10000</QUANTIFICATION_VALUE>"
        "<Radiometric_Offset_List><RADIO_ADD_OFFSET band_id='0'>-1000</RADIO_ADD_OFFSET>"
        "<RADIO_ADD_OFFSET band_id='1'>-1000</RADIO_ADD_OFFSET></Radiometric_Offset_List>"
        "</Product_Image_Characteristics></n1:General_Info></n1:Level-1C_User_Product>"
    )
    ingest_geotiff(tmp_path / "plain", tmp_path / "m.zarr", "s2", "s2_l1c", units="reflectance",
                   date="2015-07-11", progress=False)  # fmt: skip
    g = CubeStore.open(tmp_path / "m.zarr")["s2"]
    assert (g.scale_factor, g.add_offset) == (1e-4, -0.1) and "MTD_MSIL1C.xml" in g.attrs["offset_source"]
    mtd.unlink()  # nothing says: an error naming the flags, never a guess
    with pytest.raises(IngestError, match=r"--add-offset -0\.1 \(baseline >= 04\.00\) or --add-offset 0"):
        ingest_geotiff(tmp_path / "plain", tmp_path / "x.zarr", "s2", "s2_l1c", units="reflectance",
                       date="2015-07-11", progress=False)  # fmt: skip


def _ben_with(pair: dict, tmp_path: Path, extra: dict[str, np.ndarray]) -> Path:
    """A copy of a BigEarthNet patch with extra 20 m rasters (SCL, MSK_CLDPRB) named like its bands."""
    d = tmp_path / pair["s2"].name
    shutil.copytree(pair["s2"], d)
    b05 = next(d.glob("*_B05.tif"))
    with rasterio.open(b05) as src:
        profile = src.profile | {"dtype": "uint8", "nodata": None}
    for name, values in extra.items():
        with rasterio.open(d / b05.name.replace("B05", name), "w", **profile) as dst:
            dst.write(values, 1)
    return d


def test_scl_validity_on_a_synthetic_scl_layer(ben: list[dict], tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    scl = rng.integers(0, 12, (60, 60), dtype=np.uint8)
    prob = rng.integers(0, 101, (60, 60), dtype=np.uint8)
    d = _ben_with(ben[0], tmp_path, {"SCL": scl, "MSK_CLDPRB": prob})
    store = tmp_path / "scl.zarr"
    ingest_geotiff(d, store, "s2", "sentinel2_l2a", units="reflectance", add_offset=0.0,
                   date_pattern=r"_(\d{8})T", progress=False)  # fmt: skip
    g = CubeStore.open(store)["s2"]
    up = np.repeat(np.repeat(scl, 2, 0), 2, 1)
    invalid = np.isin(up, (0, 1, 3, 8, 9, 10))
    np.testing.assert_array_equal(g.read_mask((0,)), invalid.astype(np.uint8))
    np.testing.assert_array_equal(g.read_layer("scl", (0,)), up)
    np.testing.assert_array_equal(g.read_cloud((0,)), np.repeat(np.repeat(prob, 2, 0), 2, 1))
    assert "8 cloud_medium_probability" in g.mask.attrs["rule"]
    # statistics count only pixels valid by SCL and by cloud probability (< 50)
    cloudy = np.repeat(np.repeat(prob, 2, 0), 2, 1) >= 50
    assert g.stats["B02"]["count"] == int((~invalid & ~cloudy).sum())
    # xarray reads the layers with their dims and units
    ds = xr.open_zarr(store, group="s2")
    assert ds["scl"].dims == ("time", "y", "x") and ds["scl"].attrs["units"] == "class"
    assert ds["mask"].dims == ("time", "y", "x") and ds["cloud"].attrs["units"] == "percent"
    assert "snow_or_ice" in ds["scl"].attrs["flag_meanings"]
    # configurable classes: snow too
    ingest_geotiff(d, tmp_path / "snow.zarr", "s2", "sentinel2_l2a", units="reflectance", add_offset=0.0,
                   date_pattern=r"_(\d{8})T", validity=Validity(scl_invalid=(0, 9, 11)),
                   progress=False)  # fmt: skip
    snow = CubeStore.open(tmp_path / "snow.zarr")["s2"]
    np.testing.assert_array_equal(snow.read_mask((0,)), np.isin(up, (0, 9, 11)).astype(np.uint8))
    # the same from the CLI flags
    args = ["data", "ingest", "geotiff", str(d), str(tmp_path / "cli.zarr"), "--group", "s2",
            "--sensor", "s2", "--units", "reflectance", "--add-offset", "0", "--date-pattern", r"_(\d{8})T",
            "--scl-invalid", "0,9", "--mask-snow"]  # fmt: skip
    assert main(args) == 0
    cli = CubeStore.open(tmp_path / "cli.zarr")["s2"]
    np.testing.assert_array_equal(cli.read_mask((0,)), np.isin(up, (0, 9, 11)).astype(np.uint8))


def _float_tifs(eolearn_dir: Path, folder: Path, fill: bool, ndvi: bool = False) -> list[Path]:
    """The eo-learn scenes as float32 TOA reflectance GeoTIFFs; ``fill``: a zero wedge over 37.5% of each."""
    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")
    stamps = json.loads((eolearn_dir / "timestamps.json").read_text())
    folder.mkdir()
    rows, cols = np.mgrid[0:101, 0:100]
    wedge = cols + rows * 100 / 101 < np.sqrt(0.375 * 2 * 101 * 100)  # a corner triangle: 37.5% of the scene
    out = []
    for k, i in enumerate(FRAMES):
        data = np.moveaxis(scenes[k], -1, 0).copy()
        if fill:
            data[:, wedge] = 0.0
        name = f"lj_{stamps[i][:10]}"
        with rasterio.open(folder / f"{name}.tif", "w", **_profile("GTiff", 13, "float32")) as dst:
            dst.write(data)
            dst.descriptions = L1C
        out.append(folder / f"{name}.tif")
        if ndvi:
            nir, red = data[7], data[3]
            with rasterio.open(folder / f"{name}_NDVI.tif", "w", **_profile("GTiff", 1, "float32")) as dst:
                dst.write(((nir - red) / (nir + red))[None])
    return out


def test_border_fill_warning_names_the_flag(eolearn_dir: Path, tmp_path: Path, capsys) -> None:
    files = _float_tifs(eolearn_dir, tmp_path / "fill", fill=True)
    rows, cols = np.mgrid[0:101, 0:100]
    share = (cols + rows * 100 / 101 < np.sqrt(0.375 * 2 * 101 * 100)).mean()
    assert abs(share - 0.375) < 0.02
    with pytest.warns(UserWarning, match=rf"value 0 fills {share:.1%} of the scene .* --nodata 0"):
        ingest_geotiff(files, tmp_path / "a.zarr", "s2", "s2_l1c", units="reflectance", progress=False)

    def args(store: str) -> list[str]:
        return ["data", "ingest", "geotiff", *map(str, files), str(tmp_path / store), "--group", "s2",
                "--sensor", "sentinel2_l1c", "--units", "reflectance"]  # fmt: skip

    assert main(args("b.zarr")) == 0
    assert "spectravlm: warning: " in capsys.readouterr().err
    assert main([*args("c.zarr"), "--nodata", "0"]) == 0
    assert "fills" not in capsys.readouterr().err  # declared: no warning, and the fill is not data
    c = CubeStore.open(tmp_path / "c.zarr")["s2"]
    data = c.read((slice(None),)).astype(np.float64)
    assert c.stats["B02"]["mean"] == pytest.approx(data[:, 1][(data != 0).all(1)].mean())


def test_s2_digital_numbers_fill_is_nodata_by_default(
    safe_root: Path, eolearn_dir: Path, tmp_path: Path
) -> None:
    """The issue's case: an L1C tile with zero fill and no declared nodata, as uint16 digital numbers."""
    dn, _ = _eolearn(eolearn_dir)
    d = tmp_path / "filled"
    shutil.copytree(next(safe_root.glob("*.SAFE")), d / next(safe_root.glob("*.SAFE")).name)
    for f in d.rglob("*.jp2"):
        if f.name != "TCI.jp2":
            with rasterio.open(f) as src:
                band = src.read()
            band[:, :, :38] = 0  # 38% of the columns
            _jp2(f, band)
    with pytest.warns(UserWarning, match="TCI"):
        ingest_geotiff(d, tmp_path / "s.zarr", "s2", "sentinel2_l1c", units="reflectance", progress=False)
    g = CubeStore.open(tmp_path / "s.zarr")["s2"]
    first = np.argmin(_eolearn(eolearn_dir)[1])
    assert g.nodata == 0 and g.stats["B02"]["count"] == 101 * 62
    assert g.stats["B02"]["mean"] == pytest.approx(dn[first, 1, :, 38:].mean())


def test_extra_and_static_layers(eolearn_dir: Path, tmp_path: Path) -> None:
    files = _float_tifs(eolearn_dir, tmp_path / "nd", fill=False, ndvi=True)
    store = tmp_path / "lj.zarr"
    layers = {"ndvi": (r"_NDVI\.tif$", LayerSpec(units="1", long_name="NDVI"))}
    ingest_geotiff(tmp_path / "nd", store, "s2", "s2_l1c", units="reflectance", layers=layers, progress=False)
    g = CubeStore.open(store)["s2"]
    assert g.data.shape == (5, 13, 101, 100)
    with rasterio.open(sorted(files)[0]) as src:  # the earliest date
        ref = src.read()
    np.testing.assert_array_equal(g.read_layer("ndvi", (0,)), ((ref[7] - ref[3]) / (ref[7] + ref[3])))
    # static layers from the real eo-learn DEM and land cover (.npy on the store's grid) and the CLI
    ingest_static(eolearn_dir / "DEM.npy", store, "dem", "m", long_name="elevation")
    assert main(["data", "ingest", "static", str(eolearn_dir / "LULC.npy"), str(store), "--name", "lulc",
                 "--units", "class"]) == 0  # fmt: skip
    ds = xr.open_zarr(store, group="static")
    assert ds["dem"].dims == ("y", "x") and ds["dem"].attrs["units"] == "m"
    np.testing.assert_array_equal(ds["dem"].values, np.load(eolearn_dir / "DEM.npy")[..., 0])
    np.testing.assert_array_equal(ds["lulc"].values, np.load(eolearn_dir / "LULC.npy")[..., 0])
    s2 = xr.open_zarr(store, group="s2")
    assert s2["ndvi"].dims == ("time", "y", "x") and s2["ndvi"].attrs["units"] == "1"
    info = CubeStore.open(store).summary()
    assert "ndvi [1]" in info and "static dem: 101x100 float32 m" in info
    np.save(tmp_path / "bad.npy", np.zeros((50, 100), np.float32))
    with pytest.raises(IngestError, match=r"array \(50, 100\), the store's grid is 101x100"):
        ingest_static(tmp_path / "bad.npy", store, "dem2", "m")


def test_cli_messages_name_flags_and_iso_dates(ben: list[dict], tmp_path: Path, capsys) -> None:
    pair = ben[0]
    d = tmp_path / "crs"
    shutil.copytree(pair["s2"], d)
    other = next(
        p
        for p in ben
        if "33UUP" not in p["s2"].name and p["s2_meta"]["projection"] != pair["s2_meta"]["projection"]
    )
    shutil.copy(next(other["s2"].glob("*_B05.tif")), next(d.glob("*_B05.tif")))
    args = ["data", "ingest", "geotiff", str(d), str(tmp_path / "x.zarr"), "--group", "s2", "--sensor", "s2",
            "--units", "reflectance", "--add-offset", "0", "--date-pattern", r"_(\d{8})T"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--allow-reproject" in err and "allow_reproject=True" not in err and err.count("\n") == 1
    d2 = tmp_path / "miss"
    shutil.copytree(pair["s2"], d2)
    next(d2.glob("*_B8A.tif")).unlink()
    assert main([*args[:3], str(d2), *args[4:], "--bands", "B02,B8A"]) == 1
    err = capsys.readouterr().err
    assert "date 2017-06-13T00:00:00 lacks band file(s) for B8A" in err and "datetime.datetime" not in err
    assert main(["data", "ingest", "biomassters", str(tmp_path), str(tmp_path / "b.zarr")]) == 1
    assert "holds 0 chips" in capsys.readouterr().err


def test_cog_folder_with_a_stac_item_beside_it(ben: list[dict], tmp_path: Path) -> None:
    """The public-bucket layout: one folder per scene, B02.tif ... SCL.tif (no dates in the names) and the
    scene's STAC item JSON beside them: date, offset and nodata come from the item."""
    from datetime import UTC, datetime

    import pystac

    pair = ben[0]
    scene = tmp_path / "S2A_33UUP_0_L2A"  # no date anywhere in the path
    scene.mkdir()
    item = pystac.Item(
        "S2A_33UUP_20220613_0_L2A", None, None, datetime(2022, 6, 13, 10, 10, 31, tzinfo=UTC), {}
    )
    for f in pair["s2"].glob("*_B*.tif"):
        band = f.name.rsplit("_", 1)[1][:-4]
        shutil.copy(f, scene / f"{band}.tif")
        raster = [{"nodata": 0, "scale": 0.0001, "offset": -0.1, "data_type": "uint16"}]
        item.add_asset(band, pystac.Asset(href=f"./{band}.tif", roles=["data"],
                                          extra_fields={"raster:bands": raster}))  # fmt: skip
    for name in ("AOT", "WVP"):  # not bands: skipped and listed
        shutil.copy(next(pair["s2"].glob("*_B05.tif")), scene / f"{name}.tif")
        item.add_asset(name, pystac.Asset(href=f"./{name}.tif", roles=["data"]))
    item.set_self_href(str(scene / f"{item.id}.json"))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False)
    with pytest.warns(UserWarning, match=r"skipped 2 files.*AOT\.tif"):
        scan = ingest_geotiff(scene, tmp_path / "s.zarr", "s2", "sentinel2_l2a", units="reflectance",
                              progress=False)  # fmt: skip
    g = CubeStore.open(tmp_path / "s.zarr")["s2"]
    assert [str(t) for t in g.times] == ["2022-06-13T10:10:31"] and "STAC item S2A_33UUP" in g.attrs["source"]
    assert (g.scale_factor, g.add_offset, g.nodata) == (1e-4, -0.1, 0.0)
    assert "STAC item beside the files" in g.attrs["offset_source"] and len(scan.bands) == 12


def test_date_from_an_acquisition_tag(eolearn_dir: Path, tmp_path: Path) -> None:
    files = _float_tifs(eolearn_dir, tmp_path / "tags", fill=False)
    undated = tmp_path / "undated"
    undated.mkdir()
    for k, f in enumerate(sorted(files)):
        target = undated / f"scene{k}.tif"
        shutil.copy(f, target)
        with rasterio.open(target, "r+") as dst:
            dst.update_tags(
                ACQUISITION_DATE=f"{f.stem[3:]}T10:00:08Z", TIFFTAG_DATETIME="2024:01:01 00:00:00"
            )
    ingest_geotiff(undated, tmp_path / "t.zarr", "s2", "s2_l1c", units="reflectance", progress=False)
    g = CubeStore.open(tmp_path / "t.zarr")["s2"]
    assert [str(t)[:10] for t in g.times] == sorted(f.stem[3:] for f in files)
    assert str(g.times[0])[11:] == "10:00:08" and "metadata item ACQUISITION_DATE" in g.attrs["source"]
