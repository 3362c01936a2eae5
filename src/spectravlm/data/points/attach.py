"""Attach point targets to a cube store as a sparse target layer: reproject, snap, combine, write atomically.

:func:`attach_points` takes a :class:`~spectravlm.data.points.table.PointTable` (GEDI shots, field plots) and
writes four 2-D layers into the store's ``targets`` group, on the store's grid (``docs/points.md``):

==================  =========  ==================================================================
layer               dtype      meaning (NaN where the pixel holds no point)
==================  =========  ==================================================================
``<name>``          float32    the value (e.g. t/ha): the inverse-variance mean of the pixel's points
``<name>_se``       float32    its standard error (same units)
``<name>_count``    float32    how many points were combined in the pixel
``<name>_date``     float32    their (weighted) mean date, days since 1970-01-01 (CF units: xarray
                               decodes it to ``datetime64``)
==================  =========  ==================================================================

Steps, each counted in the :class:`AttachReport`:

1. **Reproject** the points from their CRS to the store's with pyproj (``always_xy``: longitude, latitude).
   Points given without a CRS are in the store's own pixel coordinates (only for a store without a CRS).
2. **Snap** each point to the pixel that contains it (the inverse of the grid's affine transform, floored).
   Points outside the grid are dropped and counted.
3. **Time range**: dated points outside the store's dates (the first to the last date of any sensor group,
   widened by ``time_margin_days``) are dropped and counted; undated points are kept (and counted).
4. **Combine** the points of one pixel: where every one of them has a standard error, their
   inverse-variance weighted mean ``sum(v_i / se_i^2) / sum(1 / se_i^2)`` with standard error
   ``(sum(1 / se_i^2))^-1/2`` (the minimum-variance unbiased combination of independent estimates); where
   some lack one, the plain mean with an unknown (NaN) standard error. The date is the mean date of the
   dated points, with the same weights.
5. **Write** through a :class:`~spectravlm.data.store.StoreTransaction` (append mode: the store is copied by
   hard links, the layers written, and the new store swapped in with one rename), so a failed attach leaves
   the store as it was. All-NaN chunks are not written: the layers take space only where points are.

The value layer's ``spectravlm_points`` attribute names its three siblings and records the sources, the
combination rule and the counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from spectravlm.data.points.table import PointTable
from spectravlm.data.store import CubeStore, Grid, StoreTransaction
from spectravlm.errors import IngestError

SIBLINGS = ("se", "count", "date")
"""Suffixes of the layers written beside the value layer (``<name>_se``, ...)."""

DAYS_UNITS = "days since 1970-01-01"
COMBINE_RULE = (
    "inverse-variance weighted mean of the points in a pixel when every one has a standard error "
    "(se = (sum 1/se_i^2)^-1/2), else their plain mean with se NaN; date: mean date with the same weights"
)


@dataclass
class AttachReport:
    """What :func:`attach_points` did: every point is counted once, in the first step that drops it.

    Attributes:
        store: the store written.
        name: the value layer.
        points: points given.
        outside_grid: points outside the store's grid.
        outside_time: dated points outside the store's time range (with the margin).
        undated: points without a date (kept).
        attached: points written (combined into ``pixels``).
        pixels: pixels that hold a value.
        shared_pixels: pixels that combine two or more points.
        max_per_pixel: the most points combined in one pixel.
        time_range: ``(first, last)`` date accepted (ISO), or ``None`` when not checked.
        crs: ``"<points CRS> -> <store CRS>"``.
        sources: the readers' per-file counts (lines).

    """

    store: str
    name: str
    points: int
    outside_grid: int
    outside_time: int
    undated: int
    attached: int
    pixels: int
    shared_pixels: int
    max_per_pixel: int
    time_range: tuple[str, str] | None
    crs: str
    sources: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable lines (what ``spectravlm data points attach`` prints)."""
        window = "not checked" if self.time_range is None else f"{self.time_range[0]} .. {self.time_range[1]}"
        return [
            *self.sources,
            f"{self.store}: target {self.name!r} ({self.crs})",
            f"  {self.points} points: {self.outside_grid} outside the grid, {self.outside_time} outside the "
            f"store's time range ({window}), {self.undated} undated (kept)",
            f"  {self.attached} attached in {self.pixels} pixels ({self.shared_pixels} pixels combine "
            "several "
            f"points, at most {self.max_per_pixel}); layers {self.name}, "
            + ", ".join(f"{self.name}_{s}" for s in SIBLINGS),
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the value layer's attributes)."""
        return {
            "points": self.points,
            "outside_grid": self.outside_grid,
            "outside_time": self.outside_time,
            "undated": self.undated,
            "attached": self.attached,
            "pixels": self.pixels,
            "shared_pixels": self.shared_pixels,
            "max_per_pixel": self.max_per_pixel,
            "time_range": None if self.time_range is None else list(self.time_range),
            "crs": self.crs,
        }


@dataclass
class SparseTarget:
    """The pixels of a sparse target layer that hold a value (:func:`read_sparse_target`).

    Attributes:
        rows: ``[P]`` pixel rows.
        cols: ``[P]`` pixel columns.
        value: ``[P]`` values.
        se: ``[P]`` standard errors (NaN: unknown).
        count: ``[P]`` points combined per pixel.
        date: ``[P]`` ``datetime64[D]`` mean dates (NaT: undated).
        units: the values' units.

    """

    rows: np.ndarray
    cols: np.ndarray
    value: np.ndarray
    se: np.ndarray
    count: np.ndarray
    date: np.ndarray
    units: str

    def __len__(self) -> int:
        return len(self.value)


def project_points(table: PointTable, grid: Grid, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The points' ``(x, y)`` in the grid's CRS (pyproj, ``always_xy``).

    Raises:
        IngestError: a store without a CRS for georeferenced points, or pixel-coordinate points for a store
            with a CRS.

    """
    if grid.crs_wkt is None:
        if table.crs_wkt is not None:
            raise IngestError(
                f"{where}: the store has no CRS (e.g. BioMassters chips), so points in a CRS cannot be "
                "placed "
                "on it; give them in the store's pixel coordinates (x = column + 0.5, y = row + 0.5, no crs)"
            )
        return table.x, table.y
    if table.crs_wkt is None:
        raise IngestError(
            f"{where}: the points have no CRS but the store has one; read them with their CRS (crs=..., "
            "--crs)"
        )
    from pyproj import CRS, Transformer

    src, dst = CRS.from_user_input(table.crs_wkt), CRS.from_user_input(grid.crs_wkt)
    if src == dst:
        return table.x, table.y
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    x, y = transformer.transform(table.x, table.y)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def snap_to_grid(x: np.ndarray, y: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel ``(rows, cols)`` containing ``(x, y)`` (grid CRS) and whether each lies inside the grid."""
    inverse = ~grid.transform
    col_f, row_f = inverse @ (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    col_f, row_f = np.asarray(col_f), np.asarray(row_f)
    finite = np.isfinite(col_f) & np.isfinite(row_f)
    rows = np.floor(np.where(finite, row_f, -1)).astype(np.int64)
    cols = np.floor(np.where(finite, col_f, -1)).astype(np.int64)
    inside = finite & (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    return rows, cols, inside


def store_time_range(store: CubeStore) -> tuple[np.datetime64, np.datetime64] | None:
    """The first and the last date of any sensor group of ``store`` (``None`` without dates)."""
    times = [g.times for g in store.groups.values() if len(g.times)]
    if not times:
        return None
    every = np.concatenate(times)
    return every.min(), every.max()


def combine_pixels(
    index: np.ndarray, value: np.ndarray, se: np.ndarray, date: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Combine the points that share a pixel (see the module docstring, step 4).

    Args:
        index: ``[N]`` flat pixel index of each point.
        value: ``[N]`` values.
        se: ``[N]`` standard errors (NaN: unknown).
        date: ``[N]`` ``datetime64`` (NaT: unknown).

    Returns:
        ``(pixels, value, se, count, days)`` per distinct pixel, ``days`` as float days since 1970-01-01
        (NaN: undated).

    """
    pixels, inverse, count = np.unique(index, return_inverse=True, return_counts=True)
    p = len(pixels)
    has_se = np.isfinite(se) & (se > 0)
    all_se = np.bincount(inverse, weights=has_se.astype(np.float64), minlength=p) == count
    weight = np.where(all_se[inverse], 1.0 / np.where(has_se, se, 1.0) ** 2, 1.0)
    w_sum = np.bincount(inverse, weights=weight, minlength=p)
    mean = np.bincount(inverse, weights=weight * value, minlength=p) / w_sum
    out_se = np.where(all_se, 1.0 / np.sqrt(w_sum), np.nan)
    days = date.astype("datetime64[s]").astype(np.float64) / 86400.0
    dated = ~np.isnat(date)
    dw = np.where(dated, weight, 0.0)
    dw_sum = np.bincount(inverse, weights=dw, minlength=p)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_day = np.bincount(inverse, weights=dw * np.where(dated, days, 0.0), minlength=p) / dw_sum
    mean_day = np.where(dw_sum > 0, mean_day, np.nan)
    return pixels, mean, out_se, count.astype(np.float64), mean_day


def attach_points(
    store: str | os.PathLike[str],
    table: PointTable,
    name: str | None = None,
    time_margin_days: float | None = 0.0,
    overwrite: bool = False,
    long_name: str = "",
) -> AttachReport:
    """Attach ``table`` to ``store`` as the sparse target layer ``name`` (see the module docstring).

    Args:
        store: an existing cube store (local path).
        table: the points.
        name: the value layer (default: ``table.name``); the siblings are ``<name>_se``, ``_count``,
            ``_date``.
        time_margin_days: widen the store's time range by this many days on each side; ``None``: keep dated
            points whatever their date.
        overwrite: replace existing layers of these names.
        long_name: a description of the layer (default: from the table).

    Returns:
        The counts of each step.

    Raises:
        IngestError: no point inside the store's grid (and time range), a CRS mismatch, layers that exist
            (without ``overwrite``) or whose units differ; nothing is written.

    """
    path = Path(store)
    cube = CubeStore.open(path)
    if not cube.groups:
        raise IngestError(f"{path}: the store has no sensor group, hence no grid to attach points to")
    grid = cube.grid
    name = name or table.name
    if not name.isidentifier():
        raise IngestError(f"{path}: layer name {name!r} is not an identifier (letters, digits, _)")
    layers = [name, *(f"{name}_{s}" for s in SIBLINGS)]
    existing = [n for n in layers if n in cube.targets]
    if existing and not overwrite:
        raise IngestError(
            f"{path}: target layer(s) {', '.join(existing)} exist; pass overwrite=True (--overwrite) to "
            "replace them, or choose another name (--name)"
        )
    where = f"{path} <- {table.report.sources[0].source if table.report.sources else table.name}"
    x, y = project_points(table, grid, where)
    rows, cols, inside = snap_to_grid(x, y, grid)
    span = store_time_range(cube)
    dated = ~np.isnat(table.date)
    in_time = np.ones(len(table), dtype=bool)
    time_range: tuple[str, str] | None = None
    if time_margin_days is not None and span is not None:
        margin = np.timedelta64(round(time_margin_days * 86400), "s")
        first, last = span[0] - margin, span[1] + margin
        in_time = ~dated | ((table.date >= first) & (table.date <= last))
        time_range = (str(first.astype("datetime64[D]")), str(last.astype("datetime64[D]")))
    keep = inside & in_time
    crs = f"{_crs_name(table.crs_wkt)} -> {_crs_name(grid.crs_wkt)}"
    if not keep.any():
        bounds = _bounds(grid)
        seen = (
            f"x {np.nanmin(x):.6g}..{np.nanmax(x):.6g}, y {np.nanmin(y):.6g}..{np.nanmax(y):.6g}"
            if len(x) and np.isfinite(x).any()
            else "no finite coordinates"
        )
        raise IngestError(
            f"{where}: no point inside the store's grid and time range: {len(table)} points, "
            f"{int((~inside).sum())} outside the grid, {int((inside & ~in_time).sum())} outside the time "
            "range "
            f"{time_range}; the grid covers {bounds} in the store's CRS, the points {seen} ({crs})"
        )
    flat = rows[keep] * grid.width + cols[keep]
    pixels, value, se, count, days = combine_pixels(flat, table.value[keep], table.se[keep], table.date[keep])
    report = AttachReport(
        store=str(path),
        name=name,
        points=len(table),
        outside_grid=int((~inside).sum()),
        outside_time=int((inside & ~in_time).sum()),
        undated=int((~dated).sum()),
        attached=int(keep.sum()),
        pixels=len(pixels),
        shared_pixels=int((count > 1).sum()),
        max_per_pixel=int(count.max()),
        time_range=time_range,
        crs=crs,
        sources=table.report.lines(),
    )
    meta = {
        "layers": {s: f"{name}_{s}" for s in SIBLINGS},
        "combine": COMBINE_RULE,
        "sources": [s.to_dict() for s in table.report.sources],
        "report": report.to_dict(),
    }
    planes = {
        name: (value, table.units, long_name or f"{table.name} at points (sparse)"),
        f"{name}_se": (se, table.units, f"standard error of {name}"),
        f"{name}_count": (count, "1", f"points combined in each pixel of {name}"),
        f"{name}_date": (days, DAYS_UNITS, f"mean date of the points of {name}"),
    }
    with StoreTransaction(path, mode="append") as tx:
        for layer, (values, units, description) in planes.items():
            full = np.full(grid.height * grid.width, np.nan, dtype=np.float32)
            full[pixels] = values
            tx.write_target(layer, full.reshape(grid.height, grid.width), grid, units, description)
            extra: dict[str, Any] = {"sparse": True}
            if layer == name:
                extra["spectravlm_points"] = meta
            if units == DAYS_UNITS:
                extra["calendar"] = "proleptic_gregorian"
            assert tx.root is not None
            written = tx.root["targets"]
            assert isinstance(written, zarr.Group)
            written[layer].attrs.update(extra)
    return report


def read_sparse_target(store: str | os.PathLike[str] | CubeStore, name: str) -> SparseTarget:
    """The pixels that hold a value of the sparse target layer ``name`` (written by :func:`attach_points`).

    Raises:
        IngestError: no such layer, or a layer without its siblings.

    """
    cube = store if isinstance(store, CubeStore) else CubeStore.open(store)
    missing = [n for n in [name, *(f"{name}_{s}" for s in SIBLINGS)] if n not in cube.targets]
    if missing:
        raise IngestError(
            f"{cube.path}: no sparse target layer {', '.join(missing)}; targets: "
            f"{', '.join(cube.targets) or '(none)'} (attach points with spectravlm data points attach)"
        )
    value = np.asarray(cube.targets[name][:])
    rows, cols = np.nonzero(np.isfinite(value))
    pick = (rows, cols)
    days = np.asarray(cube.targets[f"{name}_date"][:])[pick]
    date = np.full(len(rows), "NaT", dtype="datetime64[D]")
    ok = np.isfinite(days)
    date[ok] = np.round(days[ok]).astype("int64").astype("datetime64[D]")
    return SparseTarget(
        rows=rows,
        cols=cols,
        value=value[pick].astype(np.float64),
        se=np.asarray(cube.targets[f"{name}_se"][:])[pick].astype(np.float64),
        count=np.asarray(cube.targets[f"{name}_count"][:])[pick].astype(np.int64),
        date=date,
        units=str(cube.targets[name].attrs.get("units", "")),
    )


def _bounds(grid: Grid) -> str:
    t = grid.transform
    xs = sorted([t.c, t.c + t.a * grid.width])
    ys = sorted([t.f, t.f + t.e * grid.height])
    return f"x {xs[0]:.6g}..{xs[1]:.6g}, y {ys[0]:.6g}..{ys[1]:.6g}"


def _crs_name(crs_wkt: str | None) -> str:
    if crs_wkt is None:
        return "pixel coordinates"
    from pyproj import CRS

    crs = CRS.from_user_input(crs_wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.name


__all__ = [
    "COMBINE_RULE",
    "DAYS_UNITS",
    "SIBLINGS",
    "AttachReport",
    "SparseTarget",
    "attach_points",
    "combine_pixels",
    "project_points",
    "read_sparse_target",
    "snap_to_grid",
    "store_time_range",
]
