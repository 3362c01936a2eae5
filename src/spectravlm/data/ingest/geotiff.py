"""Ingest raster time series as they come: GeoTIFF/COG or JPEG 2000 files, one per date or per date and band.

Files: a directory (its ``.tif``, ``.tiff`` and ``.jp2`` files, recursively), a glob, a file or a list.

Two layouts are read:

* **multi-band**: one file per date holding every band, e.g. ``scene_2020-01-15.tif``; the band names
  come from ``bands`` (in file order) or, when that is not given, from the files' band descriptions.
  Chosen when the first file has more than one band.
* **per-band**: one single-band file per date and band, e.g. ``T33UUP_20200115T101031_B8A_20m.jp2``
  (SAFE products), ``B02.tif`` in one folder per scene (COGs on public buckets), BigEarthNet patches.
  The band is found by ``band_pattern`` (a regular expression; the named group ``band``, else the first
  group, else the match) or, by default, by the name's tokens (split at ``_``, ``-`` and ``.``): the one
  token that is a band of the sensor (``B02``, ``B8A``, ``VV``, ``red``). ``bands`` selects and orders
  the bands to store.

Files that are not bands are **skipped and listed** (a warning, and :attr:`ScanResult.skipped`); with
``strict=True`` (``--strict``) they are an error. Some are used rather than skipped: ``SCL`` files (the
Sentinel-2 L2A scene classification) become the validity mask and the ``scl`` layer, cloud-probability
files (``MSK_CLDPRB``, ``CLD``) the ``cloud`` layer (see :mod:`spectravlm.data.ingest.scenes`), and files
matching an extra layer's pattern (``layers``) that layer. When one band is present at several
resolutions in one date (SAFE L2A's ``R10m``/``R20m``/``R60m``), the finest file is read and the others
are listed as skipped.

**Dates** come from ``date`` (one scene), a STAC item beside the files, the files' acquisition tags,
the file names, or the folders above them, in that order (:mod:`spectravlm.data.ingest.dates`).

**Values.** ``units`` is a fact about the data: ``reflectance``, ``dB``, ``linear`` or ``DN``. Scale,
offset and nodata come from what is given, else from a STAC item beside the files, else from the
product (:mod:`spectravlm.data.ingest.product`: Sentinel-2 digital numbers are reflectance x 1e4 with
nodata 0 and, from processing baseline 04.00, an offset of -1000 DN, which must be known). With no
nodata declared or known, a value that fills much of a scene's border is reported with the
``--nodata`` flag to pass.

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
* ``bilinear``, ``cubic``, ``cubic_spline``, ``lanczos``: smooth upsampling;
* ``average``, ``mode``, ``min``, ``max``, ``med``, ``q1``, ``q3``, ``rms``, ``sum``: for a target
  grid coarser than the file.

Source nodata (or the ``nodata`` given) is kept out of the kernels and written where no valid source
pixel contributes.

**Alignment.** A file is aligned when it has the target grid's CRS and covers the target grid's
bounds (to a hundredth of a target pixel). With ``allow_reproject=True`` (``--allow-reproject``) files
in another CRS are warped too (their transformed bounds must still cover the grid). Files without
georeference are accepted only when none has one and all share the grid's shape. Anything else is an
:class:`~spectravlm.errors.IngestError` naming the file and the reference it fails to match; so are a
wrong band count or dtype, a date that lacks a band, and an unknown band name.

Memory: each date is read and written one row of 256 px chunks at a time (``scenes.write_scenes``), and
the statistics are accumulated on the way, so a whole 10980 x 10980 tile ingests in bounded memory.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from spectravlm.data.ingest.dates import DEFAULT_DATE_PATTERN, find_date, folder_date, parse_date, tag_date
from spectravlm.data.ingest.product import (
    Fact,
    default_nodata,
    s2_reflectance_scaling,
)
from spectravlm.data.ingest.scenes import LayerSpec, Scene, Source, Validity, open_raster, write_scenes
from spectravlm.data.store import Grid, StoreTransaction, canonical_units
from spectravlm.errors import IngestError, StoreError, UnknownBandError
from spectravlm.sensors import Sensor, get_sensor

__all__ = [
    "DEFAULT_DATE_PATTERN",
    "ScanResult",
    "canonical_crs_wkt",
    "file_grid",
    "ingest_geotiff",
    "parse_date",
    "scan_geotiffs",
]

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
_COVER_TOL = 0.01  # fraction of a target pixel by which a file may fall short of the grid bounds
_TOKEN_SPLIT = re.compile(r"[_\-.\s]+")
_RESOLUTION_TOKEN = re.compile(r"^\d+m$", re.IGNORECASE)
QUALITY_TOKENS = {"SCL": "scl", "MSK_CLDPRB": "cloud", "CLDPRB": "cloud", "CLD": "cloud"}
"""File-name tokens of quality layers and the role they take."""


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


# --------------------------------------------------------------------------------------------------
# Grids and alignment
# --------------------------------------------------------------------------------------------------


def file_grid(src: rasterio.DatasetReader) -> Grid:
    """Return the pixel grid of an open raster."""
    return Grid(
        height=src.height, width=src.width, transform=src.transform, crs_wkt=canonical_crs_wkt(src.crs)
    )


def reference_grid(path: Path | str, resolution: float | None = None) -> Grid:
    """Return the grid of ``path``, or its bounds at pixel size ``resolution`` (in CRS units)."""
    with open_raster(str(path)) as src:
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


def _pixel_area(path: Path | str) -> float:
    with open_raster(str(path)) as src:
        return abs(src.transform.a * src.transform.e - src.transform.b * src.transform.d)


def finest_file(files: Sequence[Path | str]) -> Path | str:
    """Return the file with the smallest pixel (the reference grid of a multi-resolution date)."""
    return min(files, key=_pixel_area)


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


def alignment_check(reference: str, allow_reproject: bool) -> Callable[[Any, Grid], bool]:
    """``check(src, grid)`` for :func:`~spectravlm.data.ingest.scenes.write_scenes` (check_alignment)."""
    return lambda src, grid: check_alignment(src, grid, reference, allow_reproject)


# --------------------------------------------------------------------------------------------------
# Scanning: which file is which band of which date
# --------------------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    """What :func:`scan_geotiffs` found.

    Attributes:
        bands: the canonical band names to store.
        scenes: one :class:`Scene` per date, in time order.
        skipped: ``(file, reason)`` for every file that is not read.
        date_sources: how the dates were found (``file name``, ``folder S2A_MSIL2A_...``, ...).
        stac: scale, offset and nodata from STAC items beside the files, when any.

    """

    bands: tuple[str, ...]
    scenes: list[Scene]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    date_sources: set[str] = field(default_factory=set)
    stac: dict[str, Fact] = field(default_factory=dict)

    def __iter__(self) -> Any:
        """Unpack as ``bands, scenes``."""
        return iter((self.bands, self.scenes))


def list_rasters(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> tuple[list[Path], Path | None]:
    """The files named by ``files`` (a directory's rasters, a glob, a file or a list), and the directory."""
    if isinstance(files, str | os.PathLike):
        text = os.fspath(files)
        path = Path(text)
        if path.is_dir():
            out = sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
            if not out:
                raise IngestError(f"{path}: directory holds no raster files ({', '.join(RASTER_SUFFIXES)})")
            return out, path
        if any(ch in text for ch in "*?["):
            out = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not out:
                raise IngestError(f"{text}: the pattern matches no files")
            return out, None
        paths = [path]
    else:
        paths = []
        for p in files:
            if Path(p).is_dir():
                paths.extend(list_rasters(p)[0])
            else:
                paths.append(Path(p))
    if not paths:
        raise IngestError("no input files given")
    for p in paths:
        if not p.is_file():
            raise IngestError(f"{p}: no such file")
    return paths, None


def band_from_tokens(name: str, cat: Sensor) -> str | None:
    """The one token of a file name that is a band of ``cat`` (``None`` when none; error when several)."""
    stem = name
    for suffix in RASTER_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    found = set()
    for token in _TOKEN_SPLIT.split(stem):
        if not token or _RESOLUTION_TOKEN.match(token) or token.isdigit():
            continue
        try:
            found.add(cat.canonical_name(token))
        except UnknownBandError:
            continue
    if len(found) > 1:
        raise IngestError(
            f"{name}: several band names in the file name ({', '.join(sorted(found))}); pass --band-pattern"
        )
    return found.pop() if found else None


def quality_role(name: str) -> str | None:
    """``scl`` or ``cloud`` for a Sentinel-2 quality-layer file name, else ``None``."""
    stem = name.rsplit(".", 1)[0].upper()
    for token, role in QUALITY_TOKENS.items():
        if re.search(rf"(?:^|[_\-.]){token}(?:_\d+M)?$", stem):
            return role
    return None


def _match_group(pattern: str, name: str, group: str) -> str | None:
    m = re.search(pattern, name)
    if m is None:
        return None
    if group in m.re.groupindex:
        return m.group(group)
    return m.group(1) if m.re.groups else m.group(0)


class _Dates:
    """Finds each file's acquisition time (see :mod:`spectravlm.data.ingest.dates`)."""

    def __init__(self, date: str | np.datetime64 | None, pattern: str, fmt: str | None, stac: bool) -> None:
        from spectravlm.data.ingest.dates import iso_time

        self.date = None if date is None else iso_time(str(date), "--date")
        self.pattern = pattern
        self.fmt = fmt
        self.stac = stac
        self._sidecars: dict[Path, dict[str, Any]] = {}
        self.sources: set[str] = set()
        self.stac_rasters: list[dict[str, Any]] = []

    def _sidecar(self, path: Path) -> tuple[Any, str] | None:
        if not self.stac:
            return None
        from spectravlm.data.ingest.stac import sidecar_items

        key = str(path.resolve())
        for folder in (path.parent, path.parent.parent):
            if folder not in self._sidecars:
                self._sidecars[folder] = sidecar_items(folder)
            if key in self._sidecars[folder]:
                return self._sidecars[folder][key]
        return None

    def __call__(self, path: Path) -> np.datetime64:
        if self.date is not None:
            self.sources.add("--date")
            return self.date
        side = self._sidecar(path)
        if side is not None:
            from spectravlm.data.ingest.stac import _raster_entries, item_time

            item, key = side
            self.sources.add(f"STAC item {item.id}")
            raster = _raster_entries(item.assets[key], 1)
            self.stac_rasters.append(raster[0] if raster else {})
            return item_time(item)
        with open_raster(str(path)) as src:
            tags = src.tags()
        found = tag_date(tags, str(path))
        if found is not None:
            self.sources.add(f"metadata item {found[1]}")
            return found[0]
        in_name = find_date(path.name, self.pattern, self.fmt)
        if in_name is not None:
            self.sources.add("file names")
            return in_name
        in_folder = folder_date(path, self.pattern, self.fmt)
        if in_folder is not None:
            self.sources.add(f"folder {in_folder[1]}")
            return in_folder[0]
        raise IngestError(
            f"{path}: no acquisition date: none in the file name or the folders above it (pattern "
            f"{self.pattern!r}), no acquisition metadata item, no STAC item beside it; pass --date "
            "YYYY-MM-DD for a single scene, or --date-pattern / --date-format"
        )


def scan_geotiffs(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    sensor: str,
    bands: Sequence[str] | None = None,
    band_pattern: str | None = None,
    date_pattern: str = DEFAULT_DATE_PATTERN,
    date_format: str | None = None,
    date: str | np.datetime64 | None = None,
    layers: Mapping[str, str] | None = None,
    strict: bool = False,
    stac_sidecars: bool = True,
) -> ScanResult:
    """Group the input files by date and band without reading pixels (module docstring).

    Args:
        files: directory, glob, file or list.
        sensor: catalogue sensor name.
        bands: multi-band layout: band names in file order; per-band: the bands to store, in order.
        band_pattern: regular expression finding a file's band (per-band layout); default: name tokens.
        date_pattern: regular expression finding a date in file and folder names.
        date_format: ``strptime`` format of the matched date text.
        date: the acquisition time of every file (a single scene).
        layers: extra per-date layers: ``{name: regular expression matching its files}``.
        strict: files that are no band (or layer) are an error instead of skipped.
        stac_sidecars: take dates (and raster:bands) from STAC items beside the files.

    """
    cat = get_sensor(sensor)
    paths, _root = list_rasters(files)
    check_product_level(cat, paths)
    dates = _Dates(date, date_pattern, date_format, stac_sidecars)
    extras: dict[Path, str] = {}  # quality and extra layers, by role ("scl", "cloud", "layer:<name>")
    for p in paths:
        role = next(
            (f"layer:{n}" for n, pattern in (layers or {}).items() if re.search(pattern, p.name)), None
        )
        role = role or quality_role(p.name)
        if role is not None:
            extras[p] = role
    band_paths = [p for p in paths if p not in extras]
    if not band_paths:
        raise IngestError(f"only quality or layer files among the {len(paths)} files (e.g. {paths[0].name})")
    with open_raster(str(band_paths[0])) as src:
        multiband = src.count > 1 and band_pattern is None
    if multiband or (
        band_pattern is None
        and bands is not None
        and len(bands) == 1
        and not _any_band_token(band_paths, cat)
    ):
        result = _scan_multiband(cat, band_paths, bands, dates)
        _attach_extras(result.scenes, extras, dates)
    else:
        result = _scan_per_band(cat, paths, bands, band_pattern, dates, extras)
    result.date_sources = dates.sources
    result.stac = _stac_facts(dates.stac_rasters)
    if result.skipped:
        listing = "; ".join(f"{p.name} ({why})" for p, why in result.skipped[:20])
        more = f" and {len(result.skipped) - 20} more" if len(result.skipped) > 20 else ""
        if strict:
            raise IngestError(
                f"{len(result.skipped)} files are not bands of {cat.name}: {listing}{more} (--strict)"
            )
        warnings.warn(
            f"skipped {len(result.skipped)} files that are not bands: {listing}{more}", stacklevel=2
        )
    return result


_LEVEL_TOKENS = {"sentinel2_l2a": ("MSIL1C", "L1C"), "sentinel2_l1c": ("MSIL2A", "L2A")}
_OTHER_LEVEL = {"sentinel2_l2a": "sentinel2_l1c", "sentinel2_l1c": "sentinel2_l2a"}


def check_product_level(cat: Sensor, paths: Sequence[Path]) -> None:
    """Refuse Sentinel-2 files whose names say the other processing level than ``--sensor``."""
    if cat.name not in _LEVEL_TOKENS:
        return
    for p in paths:
        tokens = {t.upper() for part in p.parts[-3:] for t in _TOKEN_SPLIT.split(part)}
        level = next((t for t in _LEVEL_TOKENS[cat.name] if t in tokens), None)
        b10 = cat.name == "sentinel2_l2a" and "B10" in tokens
        if level or b10:
            why = (
                f"{level} in {p.name if level in p.name.upper() else p}" if level else f"band B10 ({p.name})"
            )
            raise IngestError(
                f"--sensor {cat.name}, but the files look like the other processing level ({why}); "
                f"pass --sensor {_OTHER_LEVEL[cat.name]}"
            )


def _attach_extras(scenes: list[Scene], extras: dict[Path, str], dates: _Dates) -> None:
    """Give each multi-band scene its quality and layer files (by date)."""
    by_time = {s.time: s for s in scenes}
    for p, role in extras.items():
        t = dates(p)
        if t not in by_time:
            raise IngestError(f"{p}: {role.split(':')[-1]} file of {t}, a date without band files")
        scene = by_time[t]
        if role == "scl":
            scene.scl = Source(str(p))
        elif role == "cloud":
            scene.cloud = Source(str(p))
        else:
            scene.layers[role.split(":", 1)[1]] = Source(str(p))


def _any_band_token(paths: list[Path], cat: Sensor) -> bool:
    return any(band_from_tokens(p.name, cat) is not None for p in paths)


def _stac_facts(rasters: list[dict[str, Any]]) -> dict[str, Fact]:
    out: dict[str, Fact] = {}
    for key in ("scale", "offset", "nodata"):
        values = {float(r[key]) for r in rasters if r.get(key) is not None}
        if len(values) > 1:
            raise IngestError(f"the STAC items beside the files give different {key} values {sorted(values)}")
        if values:
            out[key] = Fact(values.pop(), f"STAC item beside the files (raster:bands {key})")
    return out


def _scan_multiband(cat: Sensor, paths: list[Path], bands: Sequence[str] | None, dates: _Dates) -> ScanResult:
    by_time: dict[np.datetime64, list[Path]] = {}
    for p in paths:
        by_time.setdefault(dates(p), []).append(p)
    times = sorted(by_time)
    for t in times:
        if len(by_time[t]) > 1:
            raise IngestError(
                f"date {t} has several files ({', '.join(str(p) for p in by_time[t])}); a multi-band layout "
                "needs one file per date (pass --band-pattern for one file per band)"
            )
    first = by_time[times[0]][0]
    with open_raster(str(first)) as src:
        names, count = src.descriptions, src.count
    if bands is None:
        if not names or any(not n for n in names):
            raise IngestError(
                f"{first}: bands carry no descriptions; pass --bands (the band names in file order)"
            )
        try:
            out_bands = cat.canonical_names(names)
        except UnknownBandError as err:
            hint = " (B10 is a Sentinel-2 L1C band: pass --sensor sentinel2_l1c)" if "B10" in names else ""
            raise UnknownBandError(f"{first}: band descriptions {names}: {err}{hint}") from None
    else:
        out_bands = cat.canonical_names(bands)
    if count != len(out_bands):
        raise IngestError(
            f"{first}: {count} bands, expected {len(out_bands)} ({', '.join(out_bands)}); --bands names the "
            "file's bands in order"
        )
    scenes = [
        Scene(
            t,
            tuple(Source(str(by_time[t][0]), i + 1) for i in range(len(out_bands))),
            origin=str(by_time[t][0]),
        )
        for t in times
    ]
    return ScanResult(out_bands, scenes)


def _scan_per_band(
    cat: Sensor,
    paths: list[Path],
    bands: Sequence[str] | None,
    band_pattern: str | None,
    dates: _Dates,
    extras: dict[Path, str],
) -> ScanResult:
    skipped: list[tuple[Path, str]] = []
    found: dict[np.datetime64, dict[str, list[Path]]] = {}
    for p in paths:
        role: str | None = extras.get(p)
        if role is None:
            if band_pattern is not None:
                raw = _match_group(band_pattern, p.name, "band")
                if raw is None:
                    skipped.append((p, f"no band matching {band_pattern!r}"))
                    continue
                try:
                    role = cat.canonical_name(raw)
                except UnknownBandError as err:
                    raise UnknownBandError(f"{p}: {err}") from None
            else:
                role = band_from_tokens(p.name, cat)
                if role is None:
                    skipped.append((p, f"no band of {cat.name} in the name"))
                    continue
        found.setdefault(dates(p), {}).setdefault(role, []).append(p)
    if not found:
        raise IngestError(
            f"none of the {len(paths)} files is a band of {cat.name} "
            f"(e.g. {paths[0].name}); pass --band-pattern or --sensor"
        )
    times = sorted(found)
    chosen: dict[np.datetime64, dict[str, Path]] = {}
    for t in times:
        chosen[t] = {}
        for role, files in found[t].items():
            if len(files) == 1:
                chosen[t][role] = files[0]
                continue
            areas = sorted((_pixel_area(f), str(f), f) for f in files)
            if areas[0][0] == areas[1][0]:
                raise IngestError(
                    f"{areas[0][2]} and {areas[1][2]} both hold {role} of {t} at the same resolution"
                )
            chosen[t][role] = areas[0][2]
            skipped.extend(
                (f, f"{role} at a coarser resolution than {areas[0][2].name}") for *_, f in areas[1:]
            )
    band_roles = [r for r in cat.band_names if any(r in chosen[t] for t in times)]
    if bands is None:
        out_bands = tuple(band_roles)
    else:
        out_bands = cat.canonical_names(bands)
        for role in band_roles:
            if role not in out_bands:
                skipped.extend(
                    (chosen[t][role], "band not selected by --bands") for t in times if role in chosen[t]
                )
    if not out_bands:
        raise IngestError(f"no band of {cat.name} among the files")
    scenes = []
    for t in times:
        have = chosen[t]
        missing = [b for b in out_bands if b not in have]
        if missing:
            names = ", ".join(sorted(r for r in have if not r.startswith("layer:"))) or "none"
            listed = ", ".join(str(p) for ps in found[t].values() for p in ps)
            raise IngestError(
                f"date {t} lacks band file(s) for {', '.join(missing)} (found {names} among {listed})"
            )
        scenes.append(
            Scene(
                time=t,
                bands=tuple(Source(str(have[b])) for b in out_bands),
                scl=Source(str(have["scl"])) if "scl" in have else None,
                cloud=Source(str(have["cloud"])) if "cloud" in have else None,
                layers={
                    r.split(":", 1)[1]: Source(str(p)) for r, p in have.items() if r.startswith("layer:")
                },
                origin=str(have[out_bands[0]].parent),
            )
        )
    return ScanResult(out_bands, scenes, skipped)


# --------------------------------------------------------------------------------------------------
# Ingest
# --------------------------------------------------------------------------------------------------


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
    date: str | np.datetime64 | None = None,
    grid: Grid | None = None,
    resolution: float | None = None,
    resampling: str = "nearest",
    allow_reproject: bool = False,
    nodata: float | None = None,
    scale_factor: float | None = None,
    add_offset: float | None = None,
    processing_baseline: str | None = None,
    validity: Validity | None = None,
    layers: Mapping[str, tuple[str, LayerSpec]] | None = None,
    strict: bool = False,
    orbit: str | None = None,
    append: bool = False,
    overwrite: bool = False,
    title: str = "",
    stats: bool = True,
    progress: bool = True,
    read_threads: int = 2,
    nested_reads: bool = True,
) -> ScanResult:
    r"""Ingest a raster time series into sensor group ``group`` of ``store`` (module docstring).

    Args:
        files: a directory (its ``.tif``/``.tiff``/``.jp2``, recursively), a glob pattern, a file, or a list.
        store: the store path.
        group: the sensor group to write (``s2``, ``s1``, ...).
        sensor: catalogue sensor name (``sentinel2_l2a``, ``s1``, ...).
        units: physical units after scaling (``reflectance``, ``dB``, ``linear``, ``DN``): a fact about
            the data that is never guessed.
        bands: multi-band layout: the band names in file order (default: the files' band descriptions);
            per-band layout: the bands to store, in this order (default: all found, catalogue order).
        band_pattern: regular expression that finds the band name in a file name (default: name tokens).
        date_pattern: regular expression that finds the date in a file or folder name.
        date_format: ``strptime`` format of the matched date text (default: the common ones).
        date: the acquisition time of a single scene (ISO 8601), overriding every other source.
        grid: the target grid (default: see the module docstring).
        resolution: pixel size of the target grid in CRS units, over the reference file's bounds.
        resampling: rasterio resampling method for files not on the target grid (default ``nearest``).
        allow_reproject: warp files whose CRS differs from the grid's instead of failing.
        nodata: raw nodata value (default: declared by the files, else a STAC item, else the product's).
        scale_factor: physical = raw * scale_factor + add_offset (default: STAC item, else product rules,
            else 1).
        add_offset: see ``scale_factor``.
        processing_baseline: Sentinel-2 processing baseline (``04.00``) when nothing else tells the offset.
        validity: SCL classes and cloud threshold for the quality layers.
        layers: extra per-date layers: ``{name: (file-name regex, LayerSpec)}``.
        strict: files that are no band are an error instead of skipped.
        orbit: SAR orbit direction (``ascending``/``descending``) when known.
        append: add to an existing store (new group, or later dates of an existing group).
        overwrite: replace an existing store (create mode).
        title: store title (create mode).
        stats: store statistics accumulated during the ingest.
        progress: show a progress bar.
        read_threads: threads reading the band files of a row of chunks.
        nested_reads: read bands on nested grids (S2 20/60 m on 10 m) directly with ``nearest``;
            ``False``: through GDAL's warper (the same values, slower; kept for comparison).

    Returns:
        The scan: bands, scenes, skipped files and where the dates came from.

    Raises:
        IngestError: bad input (see the module docstring); UnknownSensorError / UnknownBandError for
            names the catalogue does not know.

    """
    method = resampling_method(resampling)
    cat = get_sensor(sensor)
    try:
        units = canonical_units(units)
    except StoreError as err:
        raise IngestError(f"--units {units!r}: {err}") from None
    layer_specs = dict(layers or {})
    scan = scan_geotiffs(
        files,
        cat.name,
        bands,
        band_pattern,
        date_pattern,
        date_format,
        date,
        {k: v[0] for k, v in layer_specs.items()},
        strict,
    )
    out_bands, scenes = scan.bands, scan.scenes
    all_files = [p for s in scenes for p in s.files]
    first = scenes[0].bands[0]
    with open_raster(first.path) as src:
        dtype = src.dtypes[first.index - 1]
    if nodata is not None:
        nodata_fact: Fact | None = Fact(nodata, "given (--nodata)")
    else:
        declared = set()
        for p in dict.fromkeys(all_files):
            with open_raster(p) as src:
                declared.add(src.nodata)
        if len(declared) > 1:
            raise IngestError(
                f"the files declare different nodata values {sorted(declared, key=str)}; pass --nodata"
            )
        value = declared.pop()
        if value is not None:
            nodata_fact = Fact(value, "declared by the files")
        else:
            nodata_fact = scan.stac.get("nodata") or default_nodata(cat.name, dtype, units)
    scale, offset = s2_reflectance_scaling(
        cat.name,
        dtype,
        units,
        [Path(all_files[0])],
        scale_factor,
        add_offset,
        processing_baseline,
        stac=(scan.stac.get("scale"), scan.stac.get("offset")),
    )
    source = (
        f"raster ingest of {len(set(all_files))} files ({len(scenes)} dates) from "
        f"{Path(all_files[0]).parent}; dates from {', '.join(sorted(scan.date_sources))}"
    )
    mode = "append" if append else "create"
    with StoreTransaction(store, mode=mode, overwrite=overwrite, title=title) as tx:
        target = grid or tx.grid()
        if target is not None:
            reference = "the given grid" if grid is not None else f"the grid of {store}"
        else:
            ref_file = finest_file(scenes[0].files)
            target = reference_grid(ref_file, resolution)
            reference = str(ref_file)
        write_scenes(
            tx,
            group,
            cat.name,
            out_bands,
            scenes,
            target,
            alignment_check(reference, allow_reproject),
            units=units,
            dtype=dtype,
            scale=scale,
            offset=offset,
            nodata=nodata_fact,
            resampling=method,
            validity=validity,
            layers={k: v[1] for k, v in layer_specs.items()},
            stats=stats,
            orbit=orbit,
            source=source,
            attrs={"resampling": method.name},
            progress=progress,
            read_threads=read_threads,
            nested_reads=nested_reads,
        )
    return scan
