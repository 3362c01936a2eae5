"""Point targets from tables and vector files: CSV, Parquet (plain or GeoParquet), GeoJSON, GeoPackage.

:func:`read_points` picks the reader by the file's suffix (GEDI granules go to
:func:`~spectravlm.data.points.gedi.read_gedi_l4a`). What the columns mean is given once, in
:class:`PointColumns`: the value column and its **units** (required: a unit is never guessed), optionally a
standard-error column, a date column (and its ``strptime`` format), an id column.

Where the coordinates come from:

* vector files (GeoJSON, GeoPackage, GeoParquet): the point geometries, in the file's CRS (GeoJSON is
  EPSG:4326 by RFC 7946); other geometry types are refused (give plot centroids as points);
* tables (CSV, plain Parquet): the ``x``/``y`` columns named in :class:`PointColumns` with ``crs`` (e.g.
  ``EPSG:32633``), or else longitude/latitude columns found by name (``lon``/``lat``, ``longitude``/
  ``latitude``, ``lng``) in EPSG:4326. A table with neither is refused.

Rows without a finite value or coordinates are dropped and counted in the report; a date that does not parse
is an error naming the file, the column and the value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spectravlm.data.points.gedi import GediFilter, read_gedi_l4a
from spectravlm.data.points.table import PointTable, ReadReport, SourceCounts, canonical_target_units
from spectravlm.errors import IngestError

LON_NAMES = ("lon", "longitude", "lng", "long")
LAT_NAMES = ("lat", "latitude")
TABLE_SUFFIXES = (".csv", ".txt", ".tsv", ".parquet", ".pq")
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb")
GEDI_SUFFIXES = (".h5", ".hdf5", ".he5", ".zip")


@dataclass(frozen=True)
class PointColumns:
    """What the columns of a points table or vector file mean.

    Attributes:
        value: the column of target values.
        units: the values' unit (``t/ha``); required.
        se: the column of standard errors (same units), or ``None``.
        date: the column of dates (ISO 8601, or ``date_format``), or ``None``.
        date_format: ``strptime`` format of ``date`` (``None``: ISO 8601 / pandas' inference).
        x: column of the first coordinate (tables; with ``crs``); ``None``: a longitude column by name.
        y: column of the second coordinate.
        crs: CRS of ``x``/``y`` (``EPSG:32633``, WKT; ``"pixel"``: the pixel coordinates of a store without a
            CRS, column + 0.5 and row + 0.5); tables only (vector files carry theirs).
        name: name of the values (the default layer name; default: ``value``).

    """

    value: str
    units: str
    se: str | None = None
    date: str | None = None
    date_format: str | None = None
    x: str | None = None
    y: str | None = None
    crs: str | None = None
    name: str | None = None


def read_points(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    columns: PointColumns | None = None,
    gedi: GediFilter | None = None,
) -> PointTable:
    """Read point targets from one or several files of one kind (see the module docstring).

    Args:
        paths: CSV/Parquet/GeoJSON/GeoPackage files, or GEDI L4A granules (``.h5``, ``.zip``).
        columns: what the columns mean (tables and vector files; not used for GEDI granules).
        gedi: the shot filter for GEDI granules (default: quality flag 1, not degraded).

    Raises:
        IngestError: an unknown file kind, a missing column, no CRS, dates that do not parse (naming the
            file, the column and what was expected).

    """
    files = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    if not files:
        raise IngestError("no points file given")
    kinds = {_kind(p) for p in files}
    if len(kinds) > 1:
        raise IngestError(f"read GEDI granules and tables separately: {', '.join(map(str, files))}")
    if kinds == {"gedi"}:
        return read_gedi_l4a(files, gedi)
    if columns is None:
        raise IngestError(
            f"{files[0]}: name the value column and its units (PointColumns(value=..., units=...); "
            "--value, --units)"
        )
    return PointTable.concat([read_point_file(p, columns) for p in files])


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in GEDI_SUFFIXES:
        return "gedi"
    if suffix in TABLE_SUFFIXES or suffix in VECTOR_SUFFIXES:
        return "table"
    raise IngestError(
        f"{path}: unknown points file kind {suffix!r}; expected CSV/Parquet ({', '.join(TABLE_SUFFIXES)}), "
        f"vector files ({', '.join(VECTOR_SUFFIXES)}) or GEDI L4A granules ({', '.join(GEDI_SUFFIXES)})"
    )


def read_point_file(path: str | os.PathLike[str], columns: PointColumns) -> PointTable:
    """Read one CSV, Parquet, GeoJSON or GeoPackage file (see :func:`read_points`)."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    units = canonical_target_units(columns.units, f"{path}: column {columns.value!r}")
    frame, crs_wkt = _load(path, columns)
    n = len(frame)
    if isinstance(crs_wkt, str):  # a vector file: coordinates from the point geometries
        x, y = _geometry_xy(frame, path)
    else:
        x, y, crs_wkt = _table_xy(frame, path, columns)
    value = _numbers(frame, columns.value, path, "target values")
    se = _numbers(frame, columns.se, path, "standard errors") if columns.se else np.full(n, np.nan)
    se = np.where(se > 0, se, np.nan)
    date = (
        _dates(frame, columns.date, columns.date_format, path)
        if columns.date
        else np.full(n, "NaT", "datetime64[s]")
    )
    no_value = ~np.isfinite(value)
    no_xy = ~(np.isfinite(x) & np.isfinite(y))
    keep = ~no_value & ~no_xy
    counts = SourceCounts(
        source=str(path),
        rows=n,
        kept=int(keep.sum()),
        dropped={"no value": int(no_value.sum()), "no coordinates": int(no_xy.sum())},
    )
    return PointTable(
        x=x[keep],
        y=y[keep],
        crs_wkt=crs_wkt,
        value=value[keep],
        units=units,
        se=se[keep],
        date=date[keep],
        name=columns.name or columns.value,
        report=ReadReport([counts]),
    )


def _load(path: Path, columns: PointColumns) -> tuple[Any, str | None]:
    """The rows of ``path`` (a DataFrame or GeoDataFrame) and, for vector data, its CRS as WKT."""
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ","), None
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            if b"geo" in (pq.read_schema(path).metadata or {}):
                import geopandas as gpd

                frame = gpd.read_parquet(path)
                return frame, _vector_crs(frame, path, columns)
            return pd.read_parquet(path), None
        import geopandas as gpd

        frame = gpd.read_file(path)
        return frame, _vector_crs(frame, path, columns)
    except IngestError:
        raise
    except Exception as err:  # pandas, pyarrow and GDAL raise their own types on unreadable files
        raise IngestError(f"{path}: cannot read it as a {suffix} points file: {err}") from err


def _vector_crs(frame: Any, path: Path, columns: PointColumns) -> str:
    if frame.crs is None:
        if columns.crs is None:
            raise IngestError(f"{path}: the file has no CRS; give it (crs='EPSG:4326', --crs)")
        from pyproj import CRS

        return str(CRS.from_user_input(columns.crs).to_wkt())
    if columns.crs is not None:
        from pyproj import CRS

        if CRS.from_user_input(columns.crs) != frame.crs:
            raise IngestError(
                f"{path}: the file's CRS is {frame.crs.to_string()}, but crs={columns.crs!r} was given; "
                "drop --crs for vector files"
            )
    return str(frame.crs.to_wkt())


def _geometry_xy(frame: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    geoms = frame.geometry
    kinds = set(geoms.geom_type.dropna().unique())
    if kinds - {"Point"}:
        raise IngestError(
            f"{path}: geometries of type {', '.join(sorted(kinds - {'Point'}))}; expected Point geometries "
            "(give plots as their centre points)"
        )
    empty = geoms.isna() | geoms.is_empty
    x = np.where(empty, np.nan, geoms.x.where(~empty)).astype(np.float64)
    y = np.where(empty, np.nan, geoms.y.where(~empty)).astype(np.float64)
    return x, y


def _column(frame: Any, name: str, path: Path, what: str) -> Any:
    if name not in frame.columns:
        have = ", ".join(str(c) for c in frame.columns if c != "geometry")
        raise IngestError(f"{path}: no column {name!r} ({what}); the file's columns: {have}")
    return frame[name]


def _numbers(frame: Any, name: str | None, path: Path, what: str) -> np.ndarray:
    import pandas as pd

    assert name is not None
    col = _column(frame, name, path, what)
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna() & col.notna()
    if bad.any():
        first = col[bad].iloc[0]
        raise IngestError(
            f"{path}: column {name!r} ({what}) holds {int(bad.sum())} value(s) that are not numbers, "
            f"e.g. {first!r}"
        )
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _table_xy(frame: Any, path: Path, columns: PointColumns) -> tuple[np.ndarray, np.ndarray, str | None]:
    from pyproj import CRS

    if columns.x is not None or columns.y is not None:
        if columns.x is None or columns.y is None:
            raise IngestError(f"{path}: give both coordinate columns (x=..., y=...; --x, --y)")
        if columns.crs is None:
            raise IngestError(
                f"{path}: columns {columns.x!r}/{columns.y!r} need their CRS (crs='EPSG:32633', --crs)"
            )
        x = _numbers(frame, columns.x, path, "x coordinates")
        y = _numbers(frame, columns.y, path, "y coordinates")
        if columns.crs == "pixel":
            return x, y, None
        return x, y, str(CRS.from_user_input(columns.crs).to_wkt())
    lower = {str(c).lower(): c for c in frame.columns}
    lon = next((lower[n] for n in LON_NAMES if n in lower), None)
    lat = next((lower[n] for n in LAT_NAMES if n in lower), None)
    if lon is None or lat is None:
        raise IngestError(
            f"{path}: the table has no CRS and no lat/lon columns (looked for {'/'.join(LON_NAMES)} and "
            f"{'/'.join(LAT_NAMES)}); name the coordinate columns and their CRS (x=..., y=..., crs=...; "
            "--x, --y, --crs)"
        )
    crs = CRS.from_user_input(columns.crs) if columns.crs is not None else CRS.from_epsg(4326)
    if not crs.is_geographic:
        raise IngestError(
            f"{path}: columns {lon!r}/{lat!r} are longitude/latitude, but crs={columns.crs!r} is projected; "
            "name projected coordinates with x=..., y=... (--x, --y)"
        )
    x = _numbers(frame, lon, path, "longitudes")
    y = _numbers(frame, lat, path, "latitudes")
    if np.any(np.abs(y[np.isfinite(y)]) > 90) or np.any(np.abs(x[np.isfinite(x)]) > 360):
        raise IngestError(
            f"{path}: columns {lon!r}/{lat!r} hold values outside longitude/latitude ranges; for projected "
            "coordinates give x=..., y=... and crs=..."
        )
    return x, y, str(crs.to_wkt())


def _dates(frame: Any, name: str | None, fmt: str | None, path: Path) -> np.ndarray:
    """``datetime64[s]`` (UTC, naive) of a date column; NaT where empty."""
    import pandas as pd

    assert name is not None
    col = _column(frame, name, path, "dates")
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = pd.to_datetime(col, utc=True)
    else:
        text = col.astype("string")
        try:
            parsed = pd.to_datetime(text, format=fmt or "ISO8601", utc=True, errors="coerce")
        except (ValueError, TypeError) as err:
            raise IngestError(f"{path}: column {name!r}: dates that do not parse ({err})") from None
        bad = parsed.isna() & text.notna() & (text.str.strip() != "")
        if bad.any():
            example = text[bad].iloc[0]
            expected = f"format {fmt!r}" if fmt else "ISO 8601 dates such as 2020-06-13 (or date_format=...)"
            raise IngestError(
                f"{path}: column {name!r} holds {int(bad.sum())} date(s) that do not parse, e.g. "
                f"{example!r}; "
                f"expected {expected}"
            )
    return parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype("datetime64[s]")


__all__ = ["PointColumns", "read_point_file", "read_points"]
