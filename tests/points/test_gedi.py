"""The real GEDI L4A granule: shots, filter counts and fill values checked against h5py read directly."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from spectravlm.data.points import GediFilter, read_gedi_l4a, read_points
from spectravlm.data.points.gedi import gedi_time
from spectravlm.errors import IngestError

BEAMS = ("BEAM0000", "BEAM0001", "BEAM0010", "BEAM0011", "BEAM0101", "BEAM0110", "BEAM1000", "BEAM1011")


def _direct(h5: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(h5, "r") as f:
        return {
            b: {
                k: f[b][k][()]
                for k in (
                    "agbd",
                    "agbd_se",
                    "l4_quality_flag",
                    "degrade_flag",
                    "sensitivity",
                    "lat_lowestmode",
                    "lon_lowestmode",
                    "delta_time",
                )
            }
            for b in BEAMS
        }


def test_counts_per_beam_match_h5py(gedi_granule, gedi_h5):
    direct = _direct(gedi_h5)
    table = read_gedi_l4a(gedi_granule)
    (source,) = table.report.sources
    assert source.rows == sum(len(d["agbd"]) for d in direct.values()) == 461  # SOURCES.md: 461 shots
    assert set(source.details) == set(BEAMS)
    kept_total = 0
    for beam, d in direct.items():
        counts = source.details[beam]
        assert counts["shots"] == len(d["agbd"])
        assert counts["agbd fill"] == int((d["agbd"] == -9999).sum())
        assert counts["l4_quality_flag != 1"] == int((d["l4_quality_flag"] != 1).sum())
        assert counts["degrade_flag != 0"] == int((d["degrade_flag"] != 0).sum())
        keep = (d["agbd"] != -9999) & (d["l4_quality_flag"] == 1) & (d["degrade_flag"] == 0)
        assert counts["kept"] == int(keep.sum())
        kept_total += int(keep.sum())
    # the granule's two fill-only beams (SOURCES.md): all 21 shots fill, quality flag 0, none kept
    for beam in ("BEAM0010", "BEAM0011"):
        assert source.details[beam]["agbd fill"] == source.details[beam]["shots"]
        assert source.details[beam]["kept"] == 0
    assert len(table) == source.kept == kept_total == 321
    assert source.dropped["agbd fill"] == 23


def test_values_coordinates_dates_and_units(gedi_granule, gedi_h5):
    direct = _direct(gedi_h5)
    table = read_gedi_l4a(gedi_granule)
    keep = {
        b: (d["agbd"] != -9999) & (d["l4_quality_flag"] == 1) & (d["degrade_flag"] == 0)
        for b, d in direct.items()
    }
    agbd = np.concatenate([direct[b]["agbd"][keep[b]] for b in BEAMS])
    se = np.concatenate([direct[b]["agbd_se"][keep[b]] for b in BEAMS])
    lon = np.concatenate([direct[b]["lon_lowestmode"][keep[b]] for b in BEAMS])
    lat = np.concatenate([direct[b]["lat_lowestmode"][keep[b]] for b in BEAMS])
    np.testing.assert_array_equal(table.value, agbd.astype(np.float64))
    np.testing.assert_array_equal(table.se, se.astype(np.float64))
    np.testing.assert_array_equal(table.x, lon)
    np.testing.assert_array_equal(table.y, lat)
    assert table.units == "t/ha"  # the file says "Mg / ha": 1 Mg = 1 t
    with h5py.File(gedi_h5, "r") as f:
        assert f["BEAM0000/agbd"].attrs["units"] == "Mg / ha"
    assert not np.any(table.value == -9999) and np.isfinite(table.value).all()
    # delta_time counts seconds since 2018-01-01T00:00:00Z; the granule was acquired on 2020-02-05 (its name)
    assert str(table.date.min().astype("datetime64[D]")) == "2020-02-05"
    assert table.date.max() - table.date.min() < np.timedelta64(5, "m")
    assert gedi_time(np.array([86400.5]))[0] == np.datetime64("2018-01-02T00:00:00.500")


def test_filter_is_configurable_and_counted(gedi_granule, gedi_h5):
    direct = _direct(gedi_h5)
    everything = read_gedi_l4a(gedi_granule, GediFilter(quality=False, not_degraded=False))
    n_fill = sum(int((d["agbd"] == -9999).sum()) for d in direct.values())
    assert len(everything) == 461 - n_fill
    strict = read_gedi_l4a(gedi_granule, GediFilter(min_sensitivity=0.97))
    expected = sum(
        int(
            (
                (d["agbd"] != -9999)
                & (d["l4_quality_flag"] == 1)
                & (d["degrade_flag"] == 0)
                & (d["sensitivity"] >= 0.97)
            ).sum()
        )
        for d in direct.values()
    )
    assert len(strict) == expected < 321
    low = strict.report.sources[0].dropped["sensitivity < 0.97"]
    assert low == sum(int((d["sensitivity"] < 0.97).sum()) for d in direct.values())
    one = read_gedi_l4a(gedi_granule, GediFilter(beams=("BEAM0101",)))
    assert len(one) == 84 and list(one.report.sources[0].details) == ["BEAM0101"]


def test_read_points_dispatches_granules(gedi_granule, gedi_h5):
    assert len(read_points(gedi_granule)) == len(read_points(gedi_h5)) == 321


def test_not_l4a_and_missing_dataset_are_errors(gedi_h5, tmp_path):
    other = tmp_path / "GEDI02_A_fake.h5"
    shutil.copy(gedi_h5, other)
    with h5py.File(other, "r+") as f:
        f["METADATA/DatasetIdentification"].attrs["shortName"] = "GEDI_L2A"
    with pytest.raises(IngestError, match=r"GEDI02_A_fake.h5.*shortName is 'GEDI_L2A', expected 'GEDI_L4A'"):
        read_gedi_l4a(other)
    broken = tmp_path / "broken.h5"
    shutil.copy(gedi_h5, broken)
    with h5py.File(broken, "r+") as f:
        del f["BEAM0101/agbd_se"]
    with pytest.raises(IngestError, match=r"broken.h5: dataset BEAM0101/agbd_se is missing"):
        read_gedi_l4a(broken)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(IngestError, match=r"notes\.h5: not an HDF5 file"):
        read_gedi_l4a(text)
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "nothing")
    with pytest.raises(IngestError, match=r"empty\.zip: a zip without any \.h5 member"):
        read_gedi_l4a(empty_zip)
    with pytest.raises(IngestError, match="no beam group BEAM9999"):
        read_gedi_l4a(gedi_h5, GediFilter(beams=("BEAM9999",)))
