"""Pixel time series sampled from cube stores at points, and points drawn from a store's target layer.

* :func:`sample_cubes`: for every point inside a store's grid, the ``k x k`` neighbourhood of every date of
  every sensor group (stored values, validity by the store's rules: nodata, non-finite values, cloud
  probability at or above the threshold, quality mask), the store's static layers at the point's pixel, and
  the point's value as the target: a :class:`~spectravlm.data.points.series.PixelSeries` for the points store
  (``spectravlm data sample STORE POINTS OUT``). Chunks are read tile by tile: each 256 px tile that holds
  points is decoded once per date, whatever the number of points in it.
* :func:`draw_points`: random pixels of a store's target layer as a point table (field plots with a known
  error): the value plus Gaussian noise of standard deviation ``noise_abs + noise_rel * value`` (clipped at
  0),
  that standard deviation as the standard error, and a random date in the store's time range. The demo
  configurations and the tests draw their sparse points this way.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spectravlm.data.points.attach import project_points, snap_to_grid, store_time_range
from spectravlm.data.points.series import Covariate, PixelSeries, SeriesGroup
from spectravlm.data.points.table import PointTable, ReadReport, SourceCounts
from spectravlm.data.stats import valid_pixels
from spectravlm.data.store import CHUNK_XY, CubeStore, SensorGroup
from spectravlm.errors import IngestError
from spectravlm.io import atomic_write_bytes

DEFAULT_CLOUD_THRESHOLD = 50.0


@dataclass
class SampleReport:
    """What :func:`sample_cubes` did.

    Attributes:
        store: the store sampled.
        points: points given.
        outside_grid: points outside the store's grid (dropped).
        sampled: samples written.
        valid_share: per group, the share of valid pixels over samples, dates and the neighbourhood.

    """

    store: str
    points: int
    outside_grid: int
    sampled: int
    valid_share: dict[str, float]

    def lines(self) -> list[str]:
        """Human-readable lines."""
        shares = ", ".join(f"{g} {v:.0%} valid" for g, v in self.valid_share.items())
        return [
            f"{self.store}: {self.points} points, {self.outside_grid} outside the grid, {self.sampled} "
            "sampled "
            f"({shares})"
        ]


def _neighbourhoods(
    group: SensorGroup, rows: np.ndarray, cols: np.ndarray, k: int, cloud_threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """``values [N,T,C,k,k]`` and ``valid [N,T,k,k]`` of one group around each ``(row, col)``."""
    t, c, h, w = group.data.shape
    n, r = len(rows), k // 2
    fill = group.nodata if group.nodata is not None else 0
    values = np.full((n, t, c, k, k), fill, dtype=group.data.dtype)
    valid = np.zeros((n, t, k, k), dtype=bool)
    threshold = cloud_threshold
    if threshold is None:
        threshold = float(group.attrs.get("cloud_threshold", DEFAULT_CLOUD_THRESHOLD))
    tiles = (rows // CHUNK_XY) * ((w + CHUNK_XY - 1) // CHUNK_XY) + cols // CHUNK_XY
    for tile in np.unique(tiles):
        idx = np.flatnonzero(tiles == tile)
        r0 = max(0, int(rows[idx].min()) - r)
        r1 = min(h, int(rows[idx].max()) + r + 1)
        c0 = max(0, int(cols[idx].min()) - r)
        c1 = min(w, int(cols[idx].max()) + r + 1)
        sel = (slice(None), slice(r0, r1), slice(c0, c1))
        data = group.read((slice(None), slice(None), slice(r0, r1), slice(c0, c1)))  # (T, C, h', w')
        cloud = group.read_cloud(sel)
        mask = group.read_mask(sel)
        ok = np.stack(
            [
                valid_pixels(
                    data[d],
                    group.nodata,
                    None if cloud is None else cloud[d],
                    threshold,
                    None if mask is None else mask[d],
                )
                for d in range(t)
            ]
        )  # (T, h', w')
        for i in idx:
            # the neighbourhood in grid pixels, clipped to the grid; the rest stays fill and invalid
            gr0, gr1 = rows[i] - r, rows[i] + r + 1
            gc0, gc1 = cols[i] - r, cols[i] + r + 1
            cr0, cr1, cc0, cc1 = max(gr0, 0), min(gr1, h), max(gc0, 0), min(gc1, w)
            dst = (slice(cr0 - gr0, cr1 - gr0), slice(cc0 - gc0, cc1 - gc0))
            src = (slice(cr0 - r0, cr1 - r0), slice(cc0 - c0, cc1 - c0))
            values[i, :, :, dst[0], dst[1]] = data[:, :, src[0], src[1]]
            valid[i, :, dst[0], dst[1]] = ok[:, src[0], src[1]]
    return values, valid


def sample_cubes(
    store: str | os.PathLike[str],
    points: PointTable,
    neighbourhood: int = 1,
    groups: Sequence[str] | None = None,
    static: Sequence[str] | None = None,
    cloud_threshold: float | None = None,
) -> tuple[PixelSeries, SampleReport]:
    """The pixel time series of ``store`` at ``points`` (see the module docstring).

    Args:
        store: a cube store.
        points: the points (their values become the target).
        neighbourhood: ``k``, odd: the ``k x k`` pixels centred on each point's pixel.
        groups: sensor groups to sample (default: all).
        static: static layers to take as covariates (default: all the store has).
        cloud_threshold: cloud probability at or above which a pixel is invalid (default: the group's
            stored threshold, else 50).

    Raises:
        IngestError: an even neighbourhood, unknown groups or layers, or no point inside the grid.

    """
    if neighbourhood < 1 or neighbourhood % 2 == 0:
        raise IngestError(
            f"neighbourhood must be an odd number of pixels (1, 3, 5, ...), got {neighbourhood}"
        )
    cube = CubeStore.open(store)
    grid = cube.grid
    names = list(cube.groups) if groups is None else list(groups)
    unknown = [g for g in names if g not in cube.groups]
    if unknown:
        raise IngestError(f"{store}: no sensor group {', '.join(unknown)}; groups: {', '.join(cube.groups)}")
    layers = list(cube.static) if static is None else list(static)
    missing = [s for s in layers if s not in cube.static]
    if missing:
        raise IngestError(
            f"{store}: no static layer {', '.join(missing)}; static layers: "
            f"{', '.join(cube.static) or '(none)'}"
        )
    x, y = project_points(points, grid, f"{store} <- {points.name}")
    rows, cols, inside = snap_to_grid(x, y, grid)
    if not inside.any():
        raise IngestError(f"{store}: no point inside the store's grid ({len(points)} points)")
    rows, cols = rows[inside], cols[inside]
    series: dict[str, SeriesGroup] = {}
    shares = {}
    for g in names:
        group = cube[g]
        values, valid = _neighbourhoods(group, rows, cols, neighbourhood, cloud_threshold)
        times = np.broadcast_to(group.times.astype("datetime64[s]"), (len(rows), len(group.times))).copy()
        series[g] = SeriesGroup(
            sensor=group.sensor.name,
            bands=group.bands,
            values=values,
            times=times,
            valid=valid,
            units=group.units,
            scale=group.scale_factor,
            offset=group.add_offset,
            orbit=group.orbit,
            nodata=group.nodata,
        )
        shares[g] = float(valid.mean()) if valid.size else 0.0
    covariates = {}
    for name in layers:
        arr = cube.static[name]
        v = np.asarray(arr.vindex[rows, cols], dtype=np.float32)
        if "_FillValue" in arr.attrs and arr.fill_value is not None:
            v = np.where(np.asarray(arr.vindex[rows, cols]) == arr.fill_value, np.float32(np.nan), v)
        covariates[name] = Covariate(
            v, str(arr.attrs.get("units", "")), str(arr.attrs.get("long_name", name))
        )
    out = PixelSeries(
        groups=series,
        x=np.asarray(x)[inside],
        y=np.asarray(y)[inside],
        crs_wkt=grid.crs_wkt,
        ids=np.flatnonzero(inside).astype(str),
        target=points.value[inside],
        target_name=points.name,
        target_units=points.units,
        target_se=points.se[inside],
        static=covariates,
        source=f"sampled from {store} at {len(rows)} points of {points.name}",
    )
    report = SampleReport(str(store), len(points), int((~inside).sum()), len(rows), shares)
    return out, report


def draw_points(
    store: str | os.PathLike[str],
    target: str = "agb",
    n: int = 1000,
    noise_abs: float = 0.0,
    noise_rel: float = 0.0,
    seed: int = 0,
    dated: bool = True,
) -> PointTable:
    """Random pixels of a store's target layer as points (see the module docstring).

    Args:
        store: a cube store with the target layer.
        target: the target layer.
        n: points to draw (distinct pixels with a finite value; fewer when the layer has fewer).
        noise_abs: standard deviation of the added noise, in the target's units.
        noise_rel: plus this share of the value.
        seed: random seed.
        dated: give each point a random date in the store's time range.

    Returns:
        Points at pixel centres in the store's CRS (pixel coordinates for a store without one), named
        ``target``, in the layer's units.

    """
    cube = CubeStore.open(store)
    if target not in cube.targets:
        raise IngestError(
            f"{store}: no target layer {target!r}; targets: {', '.join(cube.targets) or '(none)'}"
        )
    arr = cube.targets[target]
    units = str(arr.attrs.get("units", ""))
    values = np.asarray(arr[:], dtype=np.float64)
    rows, cols = np.nonzero(np.isfinite(values))
    if not len(rows):
        raise IngestError(f"{store}: target layer {target!r} holds no finite value")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    rows, cols = rows[pick], cols[pick]
    true = values[rows, cols]
    sd = noise_abs + noise_rel * np.abs(true)
    value = np.clip(true + rng.standard_normal(len(true)) * sd, 0.0, None)
    grid = cube.grid
    x, y = grid.transform @ (cols + 0.5, rows + 0.5)  # type: ignore[operator]
    date = np.full(len(rows), "NaT", dtype="datetime64[s]")
    span = store_time_range(cube)
    if dated and span is not None:
        lo, hi = span[0].astype("int64"), span[1].astype("int64")
        date = rng.integers(lo, hi + 1, size=len(rows)).astype("datetime64[s]")
    return PointTable(
        x=np.asarray(x),
        y=np.asarray(y),
        crs_wkt=grid.crs_wkt,
        value=value,
        units=units,
        se=np.where(sd > 0, sd, np.nan),
        date=date,
        name=target,
        report=ReadReport(
            [SourceCounts(f"{store}/targets/{target} (drawn, seed {seed})", len(rows), len(rows))]
        ),
    )


def write_points_file(table: PointTable, path: str | os.PathLike[str]) -> Path:
    """Write a point table as CSV or Parquet (``x``/``y``, ``lon``/``lat``), GeoJSON or GeoPackage (atomic).

    Columns: ``<name>`` (the values), ``<name>_se``, ``date``. CSV and plain Parquet carry no CRS: points in
    a geographic CRS are written as ``lon``/``lat`` columns
    (read back without further options), points in a projected CRS are converted to longitude/latitude, and
    points in pixel coordinates as ``x``/``y`` (read back with ``crs="pixel"``). Vector files keep the CRS.
    """
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    columns = {table.name: table.value, f"{table.name}_se": table.se, "date": pd.to_datetime(table.date)}
    if suffix in (".geojson", ".gpkg"):
        import geopandas as gpd

        frame = gpd.GeoDataFrame(columns, geometry=gpd.points_from_xy(table.x, table.y), crs=table.crs_wkt)
        frame = frame.assign(date=frame["date"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
        with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
            out = Path(tmp) / path.name
            frame.to_file(out, driver="GPKG" if suffix == ".gpkg" else "GeoJSON")
            return atomic_write_bytes(out.read_bytes(), path)
    if table.crs_wkt is None:
        coords = {"x": table.x, "y": table.y}
    else:
        from pyproj import CRS, Transformer

        crs = CRS.from_user_input(table.crs_wkt)
        lon, lat = table.x, table.y
        if not crs.is_geographic or crs.to_epsg() != 4326:
            lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(table.x, table.y)
        coords = {"lon": np.asarray(lon), "lat": np.asarray(lat)}
    frame = pd.DataFrame(coords | columns)
    buffer = io.BytesIO()
    if suffix == ".csv":
        frame.to_csv(buffer, index=False, float_format="%.10g", date_format="%Y-%m-%dT%H:%M:%S")
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(buffer, index=False)
    else:
        raise IngestError(f"{path}: write points as .csv, .parquet, .geojson or .gpkg")
    return atomic_write_bytes(buffer.getvalue(), path)


__all__ = ["SampleReport", "draw_points", "sample_cubes", "write_points_file"]
