"""Points from CSV, Parquet, GeoParquet, GeoJSON and GeoPackage; every bad input is one clear error."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point, Polygon

from spectravlm.data.points import PointColumns, canonical_target_units, read_points
from spectravlm.errors import IngestError

COLUMNS = PointColumns(value="agb", units="t/ha", se="agb_se", date="date")


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "plot": ["a", "b", "c", "d"],
            "lon": [24.1, 24.2, 24.3, np.nan],
            "lat": [61.1, 61.2, 61.3, 61.4],
            "agb": [120.0, np.nan, 80.5, 99.0],
            "agb_se": [12.0, 5.0, 0.0, 3.0],
            "date": ["2021-06-13", "2021-07-01", "", "2021-08-30T10:00:00Z"],
        }
    )


def test_csv_with_lon_lat(tmp_path):
    path = tmp_path / "plots.csv"
    _frame().to_csv(path, index=False)
    t = read_points(path, COLUMNS)
    assert len(t) == 2  # b: no value, d: no longitude
    (counts,) = t.report.sources
    assert (counts.rows, counts.kept, counts.dropped) == (4, 2, {"no value": 1, "no coordinates": 1})
    assert t.x.tolist() == [24.1, 24.3] and t.y.tolist() == [61.1, 61.3]
    assert t.value.tolist() == [120.0, 80.5]
    assert t.se[0] == 12.0 and np.isnan(t.se[1])  # a zero standard error is no standard error
    assert str(t.date[0]) == "2021-06-13T00:00:00" and np.isnat(t.date[1])
    assert "EPSG" in t.crs_wkt or "WGS 84" in t.crs_wkt
    assert t.name == "agb" and t.units == "t/ha"


def test_parquet_projected_columns_and_date_format(tmp_path):
    frame = pd.DataFrame(
        {
            "e": [500010.0, 500500.0],
            "n": [6899990.0, 6899000.0],
            "v": [1.5, 2.5],
            "when": ["13/06/2021", "01/07/2021"],
        }
    )
    path = tmp_path / "plots.parquet"
    frame.to_parquet(path)
    t = read_points(
        path,
        PointColumns(
            value="v", units="Mg ha-1", x="e", y="n", crs="EPSG:32635", date="when", date_format="%d/%m/%Y"
        ),
    )
    assert t.units == "t/ha" and t.x.tolist() == [500010.0, 500500.0]
    assert [str(d)[:10] for d in t.date] == ["2021-06-13", "2021-07-01"]
    assert "32635" in t.crs_wkt


def test_vector_files_carry_their_crs(tmp_path):
    gdf = gpd.GeoDataFrame(
        {"agb": [10.0, 20.0], "agb_se": [1.0, 2.0], "date": ["2021-06-01", "2021-06-02"]},
        geometry=[Point(500100, 6899900), Point(500200, 6899800)],
        crs="EPSG:32635",
    )
    for name, kwargs in (("p.gpkg", {"driver": "GPKG"}), ("p.geojson", {"driver": "GeoJSON"})):
        path = tmp_path / name
        data = gdf if name.endswith("gpkg") else gdf.to_crs(4326)
        data.to_file(path, **kwargs)
        t = read_points(path, COLUMNS)
        assert len(t) == 2 and t.se.tolist() == [1.0, 2.0]
        if name.endswith("gpkg"):
            assert t.x.tolist() == [500100.0, 500200.0] and "32635" in t.crs_wkt
        else:
            np.testing.assert_allclose(t.x, data.geometry.x)
    geoparquet = tmp_path / "p.parquet"
    gdf.to_parquet(geoparquet)
    t = read_points(geoparquet, COLUMNS)
    assert t.x.tolist() == [500100.0, 500200.0] and "32635" in t.crs_wkt


def test_several_files_concatenate_with_their_counts(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _frame().to_csv(a, index=False)
    _frame().to_csv(b, index=False)
    t = read_points([a, b], COLUMNS)
    assert len(t) == 4 and len(t.report.sources) == 2 and t.report.rows == 8


def test_units(tmp_path):
    assert canonical_target_units("Mg / ha") == "t/ha" == canonical_target_units("t ha-1")
    assert canonical_target_units("m") == "m"
    path = tmp_path / "plots.csv"
    _frame().to_csv(path, index=False)
    with pytest.raises(
        IngestError, match=r"plots.csv: column 'agb': the unit of the target values is not given"
    ):
        read_points(path, PointColumns(value="agb", units=""))


def test_bad_input_is_one_clear_error(tmp_path):
    path = tmp_path / "plots.csv"
    frame = _frame()
    frame.rename(columns={"lon": "easting", "lat": "northing"}).to_csv(path, index=False)
    with pytest.raises(IngestError, match=r"plots.csv: the table has no CRS and no lat/lon columns"):
        read_points(path, COLUMNS)
    with pytest.raises(IngestError, match=r"plots.csv: columns 'easting'/'northing' need their CRS"):
        read_points(path, PointColumns(value="agb", units="t/ha", x="easting", y="northing"))
    frame.to_csv(path, index=False)
    with pytest.raises(
        IngestError, match=r"plots.csv: no column 'biomass' \(target values\); the file's columns: plot, lon"
    ):
        read_points(path, PointColumns(value="biomass", units="t/ha"))
    with pytest.raises(IngestError, match=r"no column 'sd' \(standard errors\)"):
        read_points(path, PointColumns(value="agb", units="t/ha", se="sd"))
    bad_dates = frame.assign(date=["2021-06-13", "13th of June", "", "2021-13-45"])
    bad_dates.to_csv(path, index=False)
    with pytest.raises(
        IngestError,
        match=r"plots.csv: column 'date' holds 2 date\(s\) that do not parse, e.g. '13th of June'",
    ):
        read_points(path, COLUMNS)
    frame.assign(agb=["120", "n/a!", "3", "4"]).to_csv(path, index=False)
    with pytest.raises(
        IngestError,
        match=r"column 'agb' \(target values\) holds 1 value\(s\) that are not numbers, e.g. 'n/a!'",
    ):
        read_points(path, COLUMNS)
    poly = tmp_path / "plots.gpkg"
    gpd.GeoDataFrame({"agb": [1.0]}, geometry=[Polygon([(0, 0), (1, 0), (1, 1)])], crs="EPSG:4326").to_file(
        poly
    )
    with pytest.raises(
        IngestError, match=r"plots.gpkg: geometries of type Polygon; expected Point geometries"
    ):
        read_points(poly, PointColumns(value="agb", units="t/ha"))
    with pytest.raises(IngestError, match=r"notes.xlsx: unknown points file kind '.xlsx'"):
        read_points(tmp_path / "notes.xlsx", COLUMNS)
    with pytest.raises(IngestError, match=r"missing.csv: no such file"):
        read_points(tmp_path / "missing.csv", COLUMNS)
