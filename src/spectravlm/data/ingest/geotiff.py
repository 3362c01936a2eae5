"""Ingest a GeoTIFF/COG time series: one file per date, multi-band or one file per band.

Two layouts are read:

* **multi-band**: one file per date holding every band, e.g. ``scene_2020-01-15.tif``; the band names
  come from ``bands`` (in file order) or, when that is not given, from the files' band descriptions.
* **per-band**: one single-band file per date and band, e.g. ``T33UUP_20200115T101031_B8A.tif``
  (Sentinel-2 SAFE/L2A jp2 converted to COG, BigEarthNet patches); ``band_pattern`` picks the band
  name out of the file name and ``bands`` (optional) selects and orders the bands to store.

The acquisition time of a file comes from its name through ``date_pattern`` (a regular expression;
the named group ``date``, else the first group, else the whole match) parsed with ``date_format``
(``strptime``; when not given ``%Y%m%dT%H%M%S``, ``%Y%m%d``, ``%Y-%m-%dT%H:%M:%S`` and ``%Y-%m-%d``
are tried in turn). Times are taken as UTC. Dates are written in time order, one date at a time, so
memory holds one date of the target grid, not the series.

**Target grid.** Every band of every date is put on one grid:

* ``grid`` when given; when appending to a store that already has groups, the store's grid (every
  group of a store shares one grid);
* otherwise the grid of the finest-resolution file of the earliest date (the 10 m grid for
  Sentinel-2), or, with ``resolution``, that file's bounds at the given pixel size.

A file whose grid equals the target grid is read as is (bit-exact). Any other file is read through a
rasterio :class:`~rasterio.vrt.WarpedVRT` onto the target grid with the ``resampling`` method (GDAL's
kernels; integer outputs are rounded to the nearest integer):

* ``nearest`` (default): no new values are invented; on Sentinel-2's nested grids a 20 m pixel becomes
  exactly 2 x 2 pixels of the 10 m grid and a 60 m pixel 6 x 6, so band statistics stay those of the
  source;
* ``bilinear``, ``cubic``, ``cubic_spline``, ``lanczos``: smooth upsampling (in the interior a
  bilinear 20 -> 10 m upsampling samples the source at ``(i + 0.5) / 2 - 0.5``; GDAL treats the outer
  source pixel ring differently);
* ``average``, ``mode``, ``min``, ``max``, ``med``, ``q1``, ``q3``, ``rms``, ``sum``: for a target
  grid coarser than the file (``average`` of the 2 x 2 10 m pixels for a 20 m grid).

Source nodata (or the ``nodata`` given) is kept out of the kernels and written where no valid source
pixel contributes.

**Alignment.** A file is aligned when it has the target grid's CRS and covers the target grid's
bounds (to a hundredth of a target pixel). With ``allow_reproject=True`` files in another CRS are
warped too (their transformed bounds must still cover the grid). Files without georeference are
accepted only when none has one and all share the grid's shape. Anything else is an
:class:`~spectravlm.errors.IngestError` naming the file and the reference it fails to match; so are
a missing file, a wrong band count or dtype, a date that lacks a band, and an unknown band name.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from tqdm.auto import tqdm

from spectravlm.data.store import Grid, SensorCube, StoreTransaction
from spectravlm.errors import IngestError, UnknownBandError
from spectravlm.sensors import get_sensor

DEFAULT_DATE_PATTERN = r"(?<!\d)(?P<date>\d{8}T\d{6}|\d{8}|\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2})?)(?!\d)"
"""Finds ``20200115T101031``, ``20200115``, ``2020-01-15`` or ``2020-01-15T10:10:31`` in a file name."""

_DATE_FORMATS = ("%Y%m%dT%H%M%S", "%Y%m%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")
_RASTER_SUFFIXES = (".tif", ".tiff")
_COVER_TOL = 0.01  # fraction of a target pixel by which a file may fall short of the grid bounds


def resampling_method(name: str) -> Resampling:
    """Return the rasterio :class:`~rasterio.enums.Resampling` called ``name`` (error listing valid ones)."""
    try:
        return Resampling[name.strip().lower()]
    except KeyError:
        valid = ", ".join(r.name for r in Resampling if r.name != "gauss")
        raise IngestError(
            f"resampling {name!r} is not a rasterio resampling method; expected one of {valid}"
        ) from None


def canonical_crs_wkt(crs: CRS | None) -> str | None:
    """WKT of ``crs``, canonical for EPSG-coded CRSs so that equal CRSs give equal strings."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return CRS.from_epsg(epsg).to_wkt() if epsg is not None else crs.to_wkt()


def parse_date(
    name: str, date_pattern: str = DEFAULT_DATE_PATTERN, date_format: str | None = None
) -> np.datetime64:
    """Return the acquisition time in file name ``name`` (module docstring) as ``datetime64[s]``."""
    match = re.search(date_pattern, name)
    if match is None:
        raise IngestError(f"{name}: no date matching the pattern {date_pattern!r} in the file name")
    if "date" in match.re.groupindex:
        text = match.group("date")
    else:
        text = match.group(1) if match.re.groups else match.group(0)
    for fmt in (date_format,) if date_format else _DATE_FORMATS:
        try:
            return np.datetime64(datetime.strptime(text, fmt), "s")
        except ValueError:
            continue
    expected = date_format or " or ".join(_DATE_FORMATS)
    raise IngestError(f"{name}: date text {text!r} does not parse as {expected}")


@dataclass(frozen=True)
class DateSources:
    """What is read for one date: ``(file, 1-based band indexes)`` pairs, in stored band order."""

    time: np.datetime64
    sources: tuple[tuple[Path, tuple[int, ...]], ...]

    @property
    def files(self) -> tuple[Path, ...]:
        """The files of this date."""
        return tuple(p for p, _ in self.sources)


def list_rasters(files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """List the files named by ``files``: a directory (its ``*.tif``/``*.tiff``), a glob, a file or a list."""
    if isinstance(files, str | os.PathLike):
        text = os.fspath(files)
        path = Path(text)
        if path.is_dir():
            out = sorted(p for p in path.rglob("*") if p.suffix.lower() in _RASTER_SUFFIXES and p.is_file())
            if not out:
                raise IngestError(f"{path}: directory holds no .tif/.tiff files")
            return out
        if any(ch in text for ch in "*?["):
            out = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not out:
                raise IngestError(f"{text}: the pattern matches no files")
            return out
        paths = [path]
    else:
        paths = [Path(p) for p in files]
    if not paths:
        raise IngestError("no input files given")
    for p in paths:
        if not p.is_file():
            raise IngestError(f"{p}: no such file")
    return paths


def scan_geotiffs(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    sensor: str,
    bands: Sequence[str] | None = None,
    band_pattern: str | None = None,
    date_pattern: str = DEFAULT_DATE_PATTERN,
    date_format: str | None = None,
) -> tuple[tuple[str, ...], list[DateSources]]:
    """Group the input files by date (and band) without reading pixels.

    Returns:
        The canonical band names to store, and one :class:`DateSources` per date in time order.

    """
    cat = get_sensor(sensor)
    paths = list_rasters(files)
    by_time: dict[np.datetime64, list[Path]] = {}
    for p in paths:
        by_time.setdefault(parse_date(p.name, date_pattern, date_format), []).append(p)
    times = sorted(by_time)
    if band_pattern is None:
        return _scan_multiband(cat.name, by_time, times, bands)

    found: dict[np.datetime64, dict[str, Path]] = {}
    for t in times:
        per_band: dict[str, Path] = {}
        for p in by_time[t]:
            m = re.search(band_pattern, p.name)
            if m is None:
                raise IngestError(f"{p}: no band name matching the pattern {band_pattern!r} in the file name")
            raw = (
                m.group("band") if "band" in m.re.groupindex else (m.group(1) if m.re.groups else m.group(0))
            )
            try:
                name = cat.canonical_name(raw)
            except UnknownBandError as err:
                raise UnknownBandError(f"{p}: {err}") from None
            if name in per_band:
                raise IngestError(f"{p} and {per_band[name]} both hold band {name} of {t}")
            per_band[name] = p
        found[t] = per_band
    if bands is None:
        present = set().union(*(set(d) for d in found.values()))
        out_bands = tuple(b for b in cat.band_names if b in present)
    else:
        out_bands = cat.canonical_names(bands)
    plans = []
    for t in times:
        missing = [b for b in out_bands if b not in found[t]]
        if missing:
            have = ", ".join(sorted(found[t])) or "none"
            raise IngestError(
                f"date {t} lacks band file(s) for {', '.join(missing)} (found {have} among "
                f"{', '.join(str(p) for p in by_time[t])})"
            )
        plans.append(DateSources(t, tuple((found[t][b], (1,)) for b in out_bands)))
    return out_bands, plans


def _scan_multiband(
    sensor: str,
    by_time: dict[np.datetime64, list[Path]],
    times: list[np.datetime64],
    bands: Sequence[str] | None,
) -> tuple[tuple[str, ...], list[DateSources]]:
    cat = get_sensor(sensor)
    for t in times:
        if len(by_time[t]) > 1:
            raise IngestError(
                f"date {t} has several files ({', '.join(str(p) for p in by_time[t])}); a multi-band layout "
                "needs one file per date (pass band_pattern for one file per band)"
            )
    first = by_time[times[0]][0]
    if bands is None:
        with _open(first) as src:
            names = src.descriptions
        if not names or any(not n for n in names):
            raise IngestError(
                f"{first}: bands carry no descriptions; pass bands= (the band names in file order)"
            )
        try:
            out_bands = cat.canonical_names(names)
        except UnknownBandError as err:
            raise UnknownBandError(f"{first}: band descriptions {names}: {err}") from None
    else:
        out_bands = cat.canonical_names(bands)
    indexes = tuple(range(1, len(out_bands) + 1))
    return out_bands, [DateSources(t, ((by_time[t][0], indexes),)) for t in times]


def _open(path: Path) -> rasterio.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        raise IngestError(f"{path}: cannot be read as a raster: {err}") from err


def file_grid(src: rasterio.DatasetReader) -> Grid:
    """Return the pixel grid of an open raster."""
    return Grid(
        height=src.height, width=src.width, transform=src.transform, crs_wkt=canonical_crs_wkt(src.crs)
    )


def reference_grid(path: Path, resolution: float | None = None) -> Grid:
    """Return the grid of ``path``, or its bounds at pixel size ``resolution`` (in CRS units)."""
    with _open(path) as src:
        grid = file_grid(src)
        if resolution is None:
            return grid
        if src.crs is None:
            raise IngestError(f"{path}: has no CRS, so it cannot be resampled to a {resolution} resolution")
        left, bottom, right, top = src.bounds
    width = round((right - left) / resolution)
    height = round((top - bottom) / resolution)
    if width < 1 or height < 1:
        raise IngestError(f"resolution {resolution} is coarser than the extent of {path}")
    return Grid(height, width, Affine(resolution, 0, left, 0, -resolution, top), grid.crs_wkt)


def finest_file(files: Sequence[Path]) -> Path:
    """Return the file with the smallest pixel (the reference grid of a multi-resolution date)."""

    def pixel_area(p: Path) -> float:
        with _open(p) as src:
            return abs(src.transform.a * src.transform.e - src.transform.b * src.transform.d)

    return min(files, key=pixel_area)


def check_alignment(src: rasterio.DatasetReader, grid: Grid, reference: str, allow_reproject: bool) -> bool:
    """Raise :class:`IngestError` when ``src`` cannot be put on ``grid``; True when it is already on it."""
    path = src.name
    src_grid = file_grid(src)
    if src_grid.same_as(grid):
        return True
    if grid.crs_wkt is None or src.crs is None:
        if grid.crs_wkt is None and src.crs is None:
            raise IngestError(
                f"{path}: {src.height}x{src.width} px without georeference cannot be aligned with "
                f"{reference} ({grid.height}x{grid.width} px): shapes differ, no transform to resample by"
            )
        which = path if src.crs is None else reference
        raise IngestError(f"{path} and {reference}: {which} has no CRS, so the two cannot be aligned")
    if src_grid.crs_wkt != grid.crs_wkt and not allow_reproject:
        raise IngestError(
            f"{path} is in {src.crs} but the target grid ({reference}) is in {CRS.from_wkt(grid.crs_wkt)}; "
            "the rasters cannot be aligned without reprojection (pass allow_reproject=True to warp them)"
        )
    bounds = src.bounds
    if src_grid.crs_wkt != grid.crs_wkt:
        bounds = transform_bounds(src.crs, CRS.from_wkt(grid.crs_wkt), *bounds)
    t = grid.transform
    g_left, g_top = t.c, t.f
    g_right, g_bottom = t.c + t.a * grid.width, t.f + t.e * grid.height
    tol_x, tol_y = _COVER_TOL * abs(t.a), _COVER_TOL * abs(t.e)
    left, bottom, right, top = bounds
    if (
        left > min(g_left, g_right) + tol_x
        or right < max(g_left, g_right) - tol_x
        or bottom > min(g_top, g_bottom) + tol_y
        or top < max(g_top, g_bottom) - tol_y
    ):
        raise IngestError(
            f"{path} covers {tuple(round(v, 3) for v in bounds)} but the target grid ({reference}) spans "
            f"{(g_left, g_bottom, g_right, g_top)}: they do not cover the same area and cannot be aligned"
        )
    return False


def read_on_grid(
    path: Path,
    indexes: tuple[int, ...],
    grid: Grid,
    reference: str,
    resampling: Resampling = Resampling.nearest,
    nodata: float | None = None,
    dtype: str | None = None,
    allow_reproject: bool = False,
) -> np.ndarray:
    """Bands ``indexes`` of ``path`` on ``grid``: ``(len(indexes), H, W)`` (see the module docstring).

    Args:
        path: the raster.
        indexes: 1-based band indexes to read; the file must have exactly this many bands.
        grid: the target grid.
        reference: what the grid came from (named in errors).
        resampling: kernel used when the file is not on the grid.
        nodata: nodata to assume for the file (overrides the file's own).
        dtype: the dtype every file must have (``None``: any).
        allow_reproject: warp files in another CRS.

    """
    with _open(path) as src:
        if src.count != len(indexes):
            raise IngestError(f"{path}: {src.count} bands, expected {len(indexes)}")
        if dtype is not None and src.dtypes[0] != dtype:
            raise IngestError(f"{path}: dtype {src.dtypes[0]}, expected {dtype} (like the other files)")
        if check_alignment(src, grid, reference, allow_reproject):
            return src.read(list(indexes))
        src_nodata = src.nodata if nodata is None else nodata
        with WarpedVRT(
            src,
            crs=CRS.from_wkt(grid.crs_wkt),
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            src_nodata=src_nodata,
            nodata=src_nodata,
        ) as vrt:
            return vrt.read(list(indexes))


def file_nodata(path: Path) -> float | None:
    """Return the nodata value declared by ``path``."""
    with _open(path) as src:
        return src.nodata


def ingest_geotiff(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    group: str,
    sensor: str,
    units: str,
    bands: Sequence[str] | None = None,
    band_pattern: str | None = None,
    date_pattern: str = DEFAULT_DATE_PATTERN,
    date_format: str | None = None,
    grid: Grid | None = None,
    resolution: float | None = None,
    resampling: str = "nearest",
    allow_reproject: bool = False,
    nodata: float | None = None,
    scale_factor: float = 1.0,
    add_offset: float = 0.0,
    orbit: str | None = None,
    append: bool = False,
    overwrite: bool = False,
    title: str = "",
    progress: bool = True,
) -> None:
    r"""Ingest a GeoTIFF/COG time series into sensor group ``group`` of ``store``.

    Args:
        files: a directory (its ``*.tif``/``*.tiff``, recursively), a glob pattern, a file, or a list.
        store: the store path.
        group: the sensor group to write (``s2``, ``s1``, ...).
        sensor: catalogue sensor name (``sentinel2_l2a``, ``s1``, ...).
        units: physical units after scaling (``reflectance``, ``dB``, ``linear power``): a fact about the
            data that is never guessed.
        bands: multi-band layout: the band names in file order (default: the files' band descriptions);
            per-band layout: the bands to store, in this order (default: all found, catalogue order).
        band_pattern: regular expression that finds the band name in a file name; selects the per-band
            layout (e.g. ``r"_(B\d[\dA])\.tif$"``).
        date_pattern: regular expression that finds the date in a file name.
        date_format: ``strptime`` format of the matched date text (default: the common ones).
        grid: the target grid (default: see the module docstring).
        resolution: pixel size of the target grid in CRS units, over the reference file's bounds.
        resampling: rasterio resampling method for files not on the target grid (default ``nearest``).
        allow_reproject: warp files whose CRS differs from the grid's instead of failing.
        nodata: raw nodata value (default: the one the files declare; they must agree).
        scale_factor: physical = raw * scale_factor + add_offset (e.g. 1e-4 for S2 L2A reflectance).
        add_offset: see ``scale_factor``.
        orbit: SAR orbit direction (``ascending``/``descending``) when known.
        append: add to an existing store (new group, or later dates of an existing group).
        overwrite: replace an existing store (create mode).
        title: store title (create mode).
        progress: show a progress bar.

    Raises:
        IngestError: bad input (see the module docstring); UnknownSensorError / UnknownBandError for
            names the catalogue does not know.

    """
    method = resampling_method(resampling)
    cat = get_sensor(sensor)
    out_bands, plans = scan_geotiffs(files, cat.name, bands, band_pattern, date_pattern, date_format)
    all_files = [p for plan in plans for p in plan.files]
    if nodata is None:
        declared = {file_nodata(p) for p in all_files}
        if len(declared) > 1:
            raise IngestError(
                f"the files declare different nodata values {sorted(declared, key=str)}; pass nodata="
            )
        nodata = declared.pop()
    with _open(all_files[0]) as src:
        dtype = src.dtypes[0]
    source = f"GeoTIFF ingest of {len(all_files)} files ({len(plans)} dates) from {all_files[0].parent}"
    mode = "append" if append else "create"
    with StoreTransaction(store, mode=mode, overwrite=overwrite, title=title) as tx:
        target = grid or tx.grid()
        if target is not None:
            reference = "the given grid" if grid is not None else f"the grid of {store}"
        else:
            ref_file = finest_file(plans[0].files)
            target = reference_grid(ref_file, resolution)
            reference = str(ref_file)
        stored = tx.group_attrs(group)
        if stored is not None and stored.get("nodata") != nodata:
            raise IngestError(f"{store}/{group} has nodata {stored.get('nodata')}, the new files {nodata}")
        for plan in plans:  # header checks first: fail before any pixel is decoded
            for path, idx in plan.sources:
                with _open(path) as src:
                    if src.count != len(idx):
                        raise IngestError(
                            f"{path}: {src.count} bands, expected {len(idx)} ({', '.join(out_bands)})"
                        )
                    if src.dtypes[0] != dtype:
                        raise IngestError(
                            f"{path}: dtype {src.dtypes[0]}, expected {dtype} like {all_files[0]}"
                        )
                    check_alignment(src, target, reference, allow_reproject)
        for plan in tqdm(plans, desc=f"ingest {group}", disable=not progress):
            data = np.concatenate(
                [
                    read_on_grid(path, idx, target, reference, method, nodata, dtype, allow_reproject)
                    for path, idx in plan.sources
                ]
            )
            tx.write_sensor(
                group,
                SensorCube(
                    sensor=cat.name,
                    bands=out_bands,
                    data=data[None],
                    times=np.array([plan.time], dtype="datetime64[s]"),
                    grid=target,
                    nodata=nodata,
                    scale_factor=scale_factor,
                    add_offset=add_offset,
                    units=units,
                    orbit=orbit,
                    source=source,
                    attrs={"resampling": method.name},
                ),
            )
