import warnings

import numpy as np
import pytest
import rasterio
import xarray as xr

from spectravlm.data.ingest import ingest_biomassters
from spectravlm.data.store import CubeStore
from spectravlm.errors import IngestError


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src:
            return src.read()


@pytest.fixture(scope="module")
def bm_store(biomassters_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("bm") / "bm.zarr"
    ingest_biomassters(biomassters_dir, path, progress=False)
    return path


def test_values_pixel_for_pixel(bm_store, biomassters_dir):
    store = CubeStore.open(bm_store)
    assert set(store.groups) == {"s2", "s1_asc", "s1_desc"}
    s2, asc, desc = store["s2"], store["s1_asc"], store["s1_desc"]
    assert s2.bands == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert asc.bands == desc.bands == ("VV", "VH")
    assert asc.orbit == "ascending" and desc.orbit == "descending"
    for m in range(12):
        src2 = _read(biomassters_dir / f"0060c0a5_S2_{m:02d}.tif")
        np.testing.assert_array_equal(s2.data[m], src2[:10])
        np.testing.assert_array_equal(s2.cloud[m], np.minimum(src2[10], 100))
        src1 = _read(biomassters_dir / f"0060c0a5_S1_{m:02d}.tif")
        np.testing.assert_array_equal(asc.data[m], src1[:2])
        np.testing.assert_array_equal(desc.data[m], src1[2:])
    np.testing.assert_array_equal(store.targets["agb"][:], _read(biomassters_dir / "0060c0a5_agbm.tif")[0])


def test_dates_months_sep_to_aug(bm_store):
    times = CubeStore.open(bm_store)["s2"].times
    assert str(times[0])[:10] == "2020-09-15" and str(times[-1])[:10] == "2021-08-15"
    months = [int(str(t)[5:7]) for t in times]
    assert months == [9, 10, 11, 12, 1, 2, 3, 4, 5, 6, 7, 8]


def test_s1_nodata_masked_by_xarray(bm_store):
    ds = xr.open_zarr(bm_store, group="s1_asc")
    assert ds["data"].attrs.get("units") == "dB" or ds["data"].encoding.get("_FillValue") == -9999.0
    raw = CubeStore.open(bm_store)["s1_asc"]
    assert raw.nodata == -9999.0
    assert ds.sizes == {"time": 12, "band": 2, "y": 256, "x": 256}
    assert CubeStore.open(bm_store).grid.crs_wkt is None  # the challenge removed georeference


def test_missing_month(biomassters_dir, tmp_path):
    chip = tmp_path / "chip"
    chip.mkdir()
    for f in biomassters_dir.iterdir():
        if "_S2_05" not in f.name:
            (chip / f.name).symlink_to(f)
    with pytest.raises(IngestError, match=r"0060c0a5_S2_05.tif is missing"):
        ingest_biomassters(chip, tmp_path / "x.zarr", progress=False)
    assert not (tmp_path / "x.zarr").exists()
    ingest_biomassters(chip, tmp_path / "x.zarr", allow_missing=True, progress=False)
    store = CubeStore.open(tmp_path / "x.zarr")
    assert store["s2"].data.shape[0] == 11 and store["s1_asc"].data.shape[0] == 12


def test_wrong_band_count(biomassters_dir, tmp_path):
    chip = tmp_path / "chip"
    chip.mkdir()
    for f in biomassters_dir.iterdir():
        (chip / f.name).symlink_to(f)
    (chip / "0060c0a5_S1_03.tif").unlink()
    (chip / "0060c0a5_S1_03.tif").symlink_to(biomassters_dir / "0060c0a5_S2_03.tif")
    with pytest.raises(IngestError, match=r"0060c0a5_S1_03.tif: 11 bands, expected 4"):
        ingest_biomassters(chip, tmp_path / "x.zarr", progress=False)


def _chip_folder(biomassters_dir, root, n_good=4, bad=True):
    """A challenge-like layout: features/ with every chip's monthly files, agbm/ with the targets. The real
    chip is linked under ``n_good`` ids; with ``bad``, one more chip has an S1 file in place of an S2 one."""
    features, agbm = root / "features", root / "agbm"
    features.mkdir()
    agbm.mkdir()
    ids = [f"c{k:07d}" for k in range(n_good)] + (["bad00000"] if bad else [])
    for chip in ids:
        for f in biomassters_dir.iterdir():
            name = f.name.replace("0060c0a5", chip)
            target = agbm if "agbm" in name else features
            src = f
            if chip == "bad00000" and name.endswith("_S2_03.tif"):
                src = biomassters_dir / "0060c0a5_S1_03.tif"
            (target / name).symlink_to(src)
    return features, agbm, ids


def test_folder_of_chips_one_store_each_with_failure_summary(biomassters_dir, bm_store, tmp_path):
    from spectravlm.data.ingest.biomassters import FAILURES_FILE, ingest_biomassters_folder

    features, agbm, ids = _chip_folder(biomassters_dir, tmp_path)
    out = tmp_path / "stores"
    report = ingest_biomassters_folder(features, out, agbm_dir=agbm, workers=2, progress=False)
    assert report.written == ids[:4] and report.skipped == []
    assert list(report.failed) == ["bad00000"] and "4 bands, expected 11" in report.failed["bad00000"]
    assert "bad00000" in (out / FAILURES_FILE).read_text()
    ref = CubeStore.open(bm_store)
    for chip in ids[:4]:  # each store is what the single-chip ingest writes
        got = CubeStore.open(out / f"{chip}.zarr")
        np.testing.assert_array_equal(got["s2"].data[:], ref["s2"].data[:])
        np.testing.assert_array_equal(got.targets["agb"][:], ref.targets["agb"][:])
        assert got["s2"].stats["B02"] == ref["s2"].stats["B02"]
    assert not (out / "bad00000.zarr").exists()
    again = ingest_biomassters_folder(features, out, agbm_dir=agbm, workers=1, progress=False)
    assert again.skipped == ids[:4] and again.written == [] and list(again.failed) == ["bad00000"]
    assert "4 chips ingested, 0 already there, 1 failed" in report.summary()


def test_cli_folder_of_chips(biomassters_dir, tmp_path, capsys):
    from spectravlm.cli import main

    features, agbm, ids = _chip_folder(biomassters_dir, tmp_path, n_good=2, bad=False)
    args = ["data", "ingest", "biomassters", str(features), str(tmp_path / "out"), "--agbm-dir", str(agbm)]
    assert main([*args, "--workers", "1"]) == 0
    assert "2 chips ingested, 0 already there, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{c}.zarr" for c in ids]
    one = tmp_path / "one.zarr"  # --chip-id: one chip of the folder into one store
    assert main(["data", "ingest", "biomassters", str(features), str(one), "--agbm-dir", str(agbm),
                 "--chip-id", ids[1]]) == 0  # fmt: skip
    assert f"BioMassters chip {ids[1]}" in capsys.readouterr().out
