"""Ingest Sentinel-1 GRD scenes georeferenced only by ground control points (GCPs).

Sentinel-1 Level-1 GRD measurement rasters (``measurement/*-vv-*.tiff`` in a SAFE product, or
``measurement/iw-vv.tiff`` in the AWS ``sentinel-s1-l1c`` layout) are in radar geometry: rows are
azimuth (time), columns ground range, and the georeference is a set of GCPs in EPSG:4326, not an
affine transform. Each polarisation is warped with GDAL (``rasterio.warp.reproject`` with the GCPs,
GDAL's GCP polynomial transformer) onto a projected, north-up grid:

* ``grid`` when given; when appending to a store that has groups, the store's grid (so S1 lands on an
  S2 grid, and later scenes on the first one's);
* otherwise a grid in ``crs`` (default: the WGS 84 / UTM zone of the scene's centre, from the GCPs;
  standard 6-degree zones, no Norway/Svalbard exceptions) at ``resolution`` metres (default: the
  scene's own pixel spacing estimated from the GCPs, rounded to a multiple of 10 m: 10 m for a
  full-resolution IW GRDH product), its edges snapped to multiples of the resolution.

**Values.** GRD pixels are uint16 digital numbers (DN), amplitude-like, with 0 where there is no
data. They are *not* calibrated backscatter: sigma0 = DN^2 / A^2 with the calibration LUT ``A`` of
the product's ``annotation/calibration`` files, which this ingest does not read. So the store holds,
as float32 (the store's rule for SAR), one of:

* ``quantity="intensity"`` (default): DN^2, an *uncalibrated linear intensity*, proportional to
  power, so linear <-> dB conversions and multilooking are physically meaningful up to the
  calibration constant. The warp resamples this intensity (averaging power, not amplitude or dB).
* ``quantity="amplitude"``: DN as is.

The ``units`` attribute says exactly that (``DN^2 (uncalibrated linear intensity)`` or
``DN (uncalibrated amplitude)``), never ``dB`` or ``linear power`` (which the catalogue's default
statistics, in calibrated dB, would assume), and the group attribute ``calibration`` repeats it.
DN 0 is nodata; it is kept out of the resampling kernels and stored as 0.0 (the group's ``nodata``),
which no valid intensity takes (0 is minus infinity in dB).

The orbit direction is read from the geometry: GRD rows run in azimuth time, so the latitude of the
GCPs falls with the row on a descending pass and rises on an ascending one.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.warp import calculate_default_transform, reproject
from rasterio.warp import transform as warp_transform
from tqdm.auto import tqdm

from spectravlm.data.ingest.geotiff import canonical_crs_wkt, resampling_method
from spectravlm.data.store import Grid, SensorCube, StoreTransaction
from spectravlm.errors import IngestError, UnknownBandError
from spectravlm.sensors import get_sensor

Quantity = Literal["intensity", "amplitude"]
UNITS: dict[str, str] = {
    "intensity": "DN^2 (uncalibrated linear intensity)",
    "amplitude": "DN (uncalibrated amplitude)",
}
CALIBRATION = (
    "none: values are Level-1 GRD digital numbers ({what}); calibrated sigma0 = DN^2 / A_sigma^2 needs the "
    "calibration LUT of the product's annotation/calibration files"
)
NODATA = 0.0
_POL_RE = re.compile(r"(?:^|[-_])(vv|vh|hh|hv)(?=[-_.])", re.IGNORECASE)
_PRODUCT_RE = re.compile(r"S1[A-D]_[A-Z0-9]{2}_GRD[HMF]_1S[DS][VH]_(\d{8}T\d{6})_\d{8}T\d{6}_\w+")
_MANIFEST_START = re.compile(r"<safe:startTime>([^<]+)</safe:startTime>")


@dataclass(frozen=True)
class GrdScene:
    """One GRD product: its measurement rasters by polarisation and its acquisition start time.

    Attributes:
        product_id: the product name (``S1A_IW_GRDH_1SDV_...``) or the directory name.
        time: acquisition start time (UTC).
        files: polarisation (``VV``, ``VH``, ...) -> measurement raster.

    """

    product_id: str
    time: np.datetime64
    files: dict[str, Path] = field(default_factory=dict)


def _parse_time(text: str, where: str) -> np.datetime64:
    text = text.strip().rstrip("Z")
    if re.fullmatch(r"\d{8}T\d{6}", text):
        text = f"{text[:4]}-{text[4:6]}-{text[6:11]}:{text[11:13]}:{text[13:15]}"
    try:
        return np.datetime64(text, "s")
    except ValueError:
        raise IngestError(f"{where}: acquisition time {text!r} is not an ISO time") from None


def find_grd_scene(path: str | os.PathLike[str]) -> GrdScene:
    """Describe the GRD product in directory ``path`` (SAFE or AWS ``sentinel-s1-l1c`` layout).

    The measurement rasters are the ``*.tif``/``*.tiff`` in ``path`` or ``path/measurement`` whose name
    holds a polarisation (``iw-vv.tiff``, ``s1a-iw-grd-vh-....tiff``). The start time comes from
    ``productInfo.json`` (``startTime``), else ``manifest.safe`` (``safe:startTime``), else the product
    name in the directory name.
    """
    root = Path(path)
    if not root.is_dir():
        raise IngestError(f"{root}: not a directory holding a Sentinel-1 GRD product")
    folders = [root / "measurement", root] if (root / "measurement").is_dir() else [root]
    files: dict[str, Path] = {}
    for folder in folders:
        for p in sorted(folder.iterdir()):
            m = _POL_RE.search(p.name)
            if m and p.suffix.lower() in (".tif", ".tiff") and p.is_file():
                pol = m.group(1).upper()
                if pol in files:
                    raise IngestError(f"{root}: two rasters for polarisation {pol}: {files[pol]} and {p}")
                files[pol] = p
        if files:
            break
    if not files:
        raise IngestError(f"{root}: no measurement raster named with a polarisation (e.g. iw-vv.tiff)")
    product_id = root.name.removesuffix(".SAFE")
    info, manifest = root / "productInfo.json", root / "manifest.safe"
    product = _PRODUCT_RE.search(root.name)
    if info.is_file():
        meta = json.loads(info.read_text())
        if "startTime" not in meta:
            raise IngestError(f"{info}: no startTime")
        time = _parse_time(meta["startTime"], str(info))
        product_id = meta.get("id", product_id)
    elif manifest.is_file() and (m := _MANIFEST_START.search(manifest.read_text(errors="replace"))):
        time = _parse_time(m.group(1), str(manifest))
    elif product is not None:
        time = _parse_time(product.group(1), str(root))
    else:
        raise IngestError(
            f"{root}: no acquisition time (no productInfo.json, no manifest.safe, no S1 product name)"
        )
    return GrdScene(product_id=product_id, time=time, files=files)


@dataclass(frozen=True)
class _GcpRaster:
    """A GRD measurement raster read into memory with its GCPs."""

    path: Path
    dn: np.ndarray  # (rows, cols) uint16
    gcps: tuple[GroundControlPoint, ...]
    gcp_crs: CRS


def _read_grd(path: Path) -> _GcpRaster:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.count != 1:
                    raise IngestError(
                        f"{path}: {src.count} bands, expected 1 (one GRD polarisation per file)"
                    )
                if src.dtypes[0] != "uint16":
                    raise IngestError(f"{path}: dtype {src.dtypes[0]}, expected uint16 digital numbers (GRD)")
                gcps, gcp_crs = src.gcps
                if not gcps or gcp_crs is None:
                    raise IngestError(
                        f"{path}: no ground control points; this ingest warps GCP-georeferenced GRD rasters "
                        "(use the GeoTIFF ingest for rasters that already have a transform)"
                    )
                return _GcpRaster(path, src.read(1), tuple(gcps), gcp_crs)
    except RasterioIOError as err:
        raise IngestError(f"{path}: cannot be read as a raster: {err}") from err


def orbit_direction(gcps: Sequence[GroundControlPoint]) -> str | None:
    """``descending`` when latitude falls with the row (azimuth time), ``ascending`` when it rises."""
    rows = np.array([g.row for g in gcps])
    lat = np.array([g.y for g in gcps])
    if len(gcps) < 3 or rows.std() == 0 or lat.std() == 0:
        return None
    r = float(np.corrcoef(rows, lat)[0, 1])
    if abs(r) < 0.5:
        return None  # near the orbit's turning latitude: the geometry does not tell
    return "descending" if r < 0 else "ascending"


def utm_crs(lon: float, lat: float) -> CRS:
    """WGS 84 / UTM (standard 6-degree zone) containing ``lon``, ``lat``."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def scene_grid(raster: _GcpRaster, crs: CRS | None = None, resolution: float | None = None) -> Grid:
    """Return a north-up grid over the scene in ``crs`` at ``resolution`` (defaults: module doc)."""
    lon = np.array([g.x for g in raster.gcps])
    lat = np.array([g.y for g in raster.gcps])
    if crs is None:
        if raster.gcp_crs.to_epsg() != 4326:
            raise IngestError(
                f"{raster.path}: GCPs in {raster.gcp_crs}, expected EPSG:4326 to choose a UTM zone"
            )
        crs = utm_crs(float((lon.min() + lon.max()) / 2), float((lat.min() + lat.max()) / 2))
    h, w = raster.dn.shape
    if resolution is None:
        t, _, _ = calculate_default_transform(raster.gcp_crs, crs, w, h, gcps=list(raster.gcps))
        resolution = max(10.0, 10.0 * round(abs(t.a) / 10.0))
    x, y = warp_transform(raster.gcp_crs, crs, lon.tolist(), lat.tolist())
    left = math.floor(min(x) / resolution) * resolution
    right = math.ceil(max(x) / resolution) * resolution
    bottom = math.floor(min(y) / resolution) * resolution
    top = math.ceil(max(y) / resolution) * resolution
    return Grid(
        height=round((top - bottom) / resolution),
        width=round((right - left) / resolution),
        transform=Affine(resolution, 0.0, left, 0.0, -resolution, top),
        crs_wkt=canonical_crs_wkt(crs),
    )


def warp_grd(
    raster: _GcpRaster, grid: Grid, quantity: Quantity = "intensity", resampling: str = "bilinear"
) -> np.ndarray:
    """``(H, W)`` float32 values of ``raster`` on ``grid``; 0.0 where no valid DN contributes."""
    if grid.crs_wkt is None:
        raise IngestError(f"{raster.path}: the target grid has no CRS; GRD scenes need a projected grid")
    values = raster.dn.astype(np.float32)
    if quantity == "intensity":
        values = values * values  # DN 0 stays 0 = nodata
    out = np.zeros((grid.height, grid.width), dtype=np.float32)
    reproject(
        source=values,
        destination=out,
        src_crs=raster.gcp_crs,
        gcps=list(raster.gcps),
        dst_crs=CRS.from_wkt(grid.crs_wkt),
        dst_transform=grid.transform,
        src_nodata=NODATA,
        dst_nodata=NODATA,
        resampling=resampling_method(resampling),
    )
    return out


def _overlaps(raster: _GcpRaster, grid: Grid) -> bool:
    crs = CRS.from_wkt(grid.crs_wkt)
    x, y = warp_transform(raster.gcp_crs, crs, [g.x for g in raster.gcps], [g.y for g in raster.gcps])
    t = grid.transform
    gx = sorted((t.c, t.c + t.a * grid.width))
    gy = sorted((t.f, t.f + t.e * grid.height))
    return min(x) < gx[1] and max(x) > gx[0] and min(y) < gy[1] and max(y) > gy[0]


def ingest_s1_grd(
    scenes: str | os.PathLike[str] | GrdScene | Sequence[str | os.PathLike[str] | GrdScene],
    store: str | os.PathLike[str],
    group: str = "s1",
    polarisations: Sequence[str] | None = None,
    grid: Grid | None = None,
    crs: str | None = None,
    resolution: float | None = None,
    resampling: str = "bilinear",
    quantity: Quantity = "intensity",
    orbit: str | None = None,
    append: bool = False,
    overwrite: bool = False,
    title: str = "",
    progress: bool = True,
) -> None:
    """Warp GCP-georeferenced Sentinel-1 GRD scenes onto one grid and store them as sensor group ``group``.

    Args:
        scenes: one or more product directories (see :func:`find_grd_scene`) or :class:`GrdScene` s;
            one date each, written in time order.
        store: the store path.
        group: sensor group to write (one orbit direction per group).
        polarisations: bands to store, in this order (default: those of the first scene, catalogue order).
        grid: target grid (default: the store's grid when appending to a store with groups, else a grid
            over the earliest scene; see the module docstring).
        crs: CRS of a derived grid (``EPSG:32643``, WKT, ...; default: UTM zone of the scene centre).
        resolution: pixel size of a derived grid in metres (default: the scene's, rounded to 10 m).
        resampling: rasterio resampling method, applied to the stored quantity (default ``bilinear``;
            ``average`` multilooks onto a coarser grid; ``nearest`` keeps the source values).
        quantity: ``intensity`` (DN^2, default) or ``amplitude`` (DN); both uncalibrated.
        orbit: orbit direction; default inferred from the GCPs, and an explicit value must not
            contradict the geometry.
        append: add to an existing store (new group, or later dates of an existing group).
        overwrite: replace an existing store (create mode).
        title: store title (create mode).
        progress: show a progress bar.

    Raises:
        IngestError: missing or unreadable rasters, no GCPs, a dtype other than uint16, a scene that
            lacks a polarisation or misses the grid, mixed orbit directions, a unit clash on append.

    """
    if quantity not in UNITS:
        raise IngestError(f"quantity {quantity!r} is not one of {', '.join(UNITS)}")
    resampling_method(resampling)  # fail early on a bad name
    items = [scenes] if isinstance(scenes, str | os.PathLike | GrdScene) else list(scenes)
    if not items:
        raise IngestError("no Sentinel-1 GRD scenes given")
    found = sorted((s if isinstance(s, GrdScene) else find_grd_scene(s) for s in items), key=lambda s: s.time)
    times = [s.time for s in found]
    if len(set(times)) != len(times):
        raise IngestError(f"several scenes share a start time: {[s.product_id for s in found]}")
    cat = get_sensor("sentinel1_grd")
    try:
        pols = cat.canonical_names(polarisations or [b for b in cat.band_names if b in found[0].files])
    except UnknownBandError as err:
        raise UnknownBandError(f"polarisations {polarisations}: {err}") from None
    for scene in found:
        missing = [p for p in pols if p not in scene.files]
        if missing:
            raise IngestError(
                f"scene {scene.product_id} lacks polarisation(s) {', '.join(missing)}; "
                f"it has {', '.join(scene.files)}"
            )
    units = UNITS[quantity]
    target_crs = CRS.from_user_input(crs) if crs is not None else None
    mode = "append" if append else "create"
    with StoreTransaction(store, mode=mode, overwrite=overwrite, title=title) as tx:
        target = grid or tx.grid()
        stored = tx.group_attrs(group)
        if stored is not None and stored.get("units") != units:
            raise IngestError(
                f"{store}/{group} holds {stored.get('units')!r}; these scenes would add {units!r}"
            )
        group_orbit = orbit if orbit is not None else (stored or {}).get("orbit")
        for scene in tqdm(found, desc=f"ingest {group}", disable=not progress):
            rasters = [_read_grd(scene.files[p]) for p in pols]
            geometry = orbit_direction(rasters[0].gcps)
            if orbit is not None and geometry is not None and geometry != orbit:
                raise IngestError(
                    f"scene {scene.product_id}: orbit={orbit!r} given, but its geometry is {geometry}"
                )
            scene_orbit = geometry if orbit is None else orbit
            if group_orbit is not None and scene_orbit is not None and scene_orbit != group_orbit:
                raise IngestError(
                    f"scene {scene.product_id} is {scene_orbit}, group {group!r} holds {group_orbit} scenes; "
                    "write each orbit direction to its own group (e.g. s1_asc, s1_desc)"
                )
            group_orbit = group_orbit or scene_orbit
            if target is None:
                target = scene_grid(rasters[0], target_crs, resolution)
            elif not _overlaps(rasters[0], target):
                raise IngestError(
                    f"scene {scene.product_id} ({rasters[0].path}) does not overlap the target grid"
                )
            data = np.stack([warp_grd(r, target, quantity, resampling) for r in rasters])
            tx.write_sensor(
                group,
                SensorCube(
                    sensor=cat.name,
                    bands=pols,
                    data=data[None],
                    times=np.array([scene.time], dtype="datetime64[s]"),
                    grid=target,
                    nodata=NODATA,
                    units=units,
                    orbit=group_orbit,
                    source=scene.product_id,
                    attrs={
                        "calibration": CALIBRATION.format(
                            what="squared" if quantity == "intensity" else "as is"
                        ),
                        "resampling": resampling,
                    },
                ),
            )
