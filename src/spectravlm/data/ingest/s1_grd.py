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
data. Calibrated backscatter is sigma0 = DN^2 / A^2 with ``A`` the ``sigmaNought`` look-up table of the
product's ``annotation/calibration/calibration-*.xml`` (one per polarisation; vectors of ``A`` at
``(line, pixel)`` positions, interpolated bilinearly to every pixel, ESA's "Radiometric Calibration of
S-1 Level-1 Products" rule), or, when the user gives one, a single constant ``K`` (sigma0 = DN^2 / K^2).
When the measurement raster is smaller than the product's full resolution (an overview, a downsampled
copy), the LUT positions are scaled by the full size that the product annotation
(``annotation/*.xml``: ``numberOfLines``, ``numberOfSamples``) gives; without an annotation a LUT
that does not fit the raster is an error, never stretched by a guess.

The store holds float32 (the store's rule for SAR), by ``output``:

* ``db``: 10 log10(sigma0), nodata -9999 (units ``dB``); needs calibration;
* ``linear``: sigma0 as linear power, nodata 0 (units ``linear``); needs calibration;
* ``dn``: uncalibrated, DN^2 (``quantity="intensity"``, proportional to power, so multilooking and
  ratios keep their meaning) or DN as is (``quantity="amplitude"``), nodata 0 (units ``DN``); the
  encoder refuses it and the group attribute ``calibration`` says which flags to re-ingest with;
* ``auto`` (default): ``linear`` when calibration is available (the product's files or a constant),
  else ``dn``.

Calibration is applied in the radar geometry, before warping; the warp then resamples linear power
(averaging power, never dB or amplitude), and ``db`` converts after the warp. DN 0 is nodata: it is
kept out of the resampling kernels and written as the group's nodata value.

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
from xml.etree import ElementTree

import numpy as np
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.warp import calculate_default_transform, reproject
from rasterio.warp import transform as warp_transform
from tqdm.auto import tqdm

from spectravlm.data.ingest.common import GroupIngest
from spectravlm.data.ingest.geotiff import canonical_crs_wkt, resampling_method
from spectravlm.data.store import Grid, SensorSpec, StoreTransaction
from spectravlm.errors import IngestError, UnknownBandError
from spectravlm.sensors import get_sensor

Quantity = Literal["intensity", "amplitude"]
Output = Literal["auto", "db", "linear", "dn"]
OUTPUTS = ("auto", "db", "linear", "dn")
QUANTITY_TEXT: dict[str, str] = {
    "intensity": "DN^2 (uncalibrated linear intensity)",
    "amplitude": "DN (uncalibrated amplitude)",
}
UNCALIBRATED = (
    "none: values are Level-1 GRD digital numbers ({what}); to store calibrated sigma0 re-ingest with "
    "`spectravlm data ingest s1-grd SCENE STORE --db` from a product with "
    "annotation/calibration/calibration-*.xml, or with `--calibration-constant K --db` (sigma0 = DN^2 / K^2)"
)
NODATA = 0.0
DB_NODATA = -9999.0
_POL_RE = re.compile(r"(?:^|[-_])(vv|vh|hh|hv)(?=[-_.])", re.IGNORECASE)
_PRODUCT_RE = re.compile(r"S1[A-D]_[A-Z0-9]{2}_GRD[HMF]_1S[DS][VH]_(\d{8}T\d{6})_\d{8}T\d{6}_\w+")
_MANIFEST_START = re.compile(r"<safe:startTime>([^<]+)</safe:startTime>")
_XML_POL = re.compile(r"(?:^|[-_])(vv|vh|hh|hv)(?=[-_.])", re.IGNORECASE)


@dataclass(frozen=True)
class GrdScene:
    """One GRD product: its measurement rasters by polarisation and its acquisition start time.

    Attributes:
        product_id: the product name (``S1A_IW_GRDH_1SDV_...``) or the directory name.
        time: acquisition start time (UTC).
        files: polarisation (``VV``, ``VH``, ...) -> measurement raster.
        calibration: polarisation -> ``annotation/calibration/calibration-*.xml`` (when present).
        annotation: polarisation -> product annotation ``annotation/*.xml`` (when present).

    """

    product_id: str
    time: np.datetime64
    files: dict[str, Path] = field(default_factory=dict)
    calibration: dict[str, Path] = field(default_factory=dict)
    annotation: dict[str, Path] = field(default_factory=dict)


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
    return GrdScene(
        product_id=product_id,
        time=time,
        files=files,
        calibration=_xml_by_pol(root / "annotation" / "calibration", "calibration"),
        annotation=_xml_by_pol(root / "annotation", ""),
    )


def _xml_by_pol(folder: Path, prefix: str) -> dict[str, Path]:
    """``{polarisation: file}`` of the ``*.xml`` in ``folder`` whose name starts with ``prefix``."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.xml")):
        if not p.name.startswith(prefix) or (
            not prefix and p.name.startswith(("calibration", "noise", "rfi"))
        ):
            continue
        m = _XML_POL.search(p.name)
        if m:
            out.setdefault(m.group(1).upper(), p)
    return out


@dataclass(frozen=True)
class CalibrationLut:
    """The ``sigmaNought`` look-up table of one polarisation (ESA Sentinel-1 Level-1 calibration).

    Attributes:
        source: the XML file.
        lines: ``(V,)`` image line of each calibration vector (full-resolution product coordinates).
        pixels: ``(P,)`` image pixels at which the vectors are given.
        sigma: ``(V, P)`` the ``A_sigma`` values: sigma0 = DN^2 / A^2.

    """

    source: str
    lines: np.ndarray
    pixels: np.ndarray
    sigma: np.ndarray

    def gains(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``A`` at full-resolution positions ``rows`` ``(h,)`` x ``cols`` ``(w,)``, bilinear: ``(h, w)``.

        Positions outside the table take the value of its edge (the LUT spans the image).
        """
        across = np.stack([np.interp(cols, self.pixels, v) for v in self.sigma])  # (V, w)
        i1 = np.clip(np.searchsorted(self.lines, rows, side="right"), 1, len(self.lines) - 1)
        i0 = i1 - 1
        l0, l1 = self.lines[i0], self.lines[i1]
        wgt = np.clip((rows - l0) / np.where(l1 > l0, l1 - l0, 1), 0.0, 1.0)[:, None]
        if len(self.lines) == 1:
            return np.broadcast_to(across[0], (len(rows), len(cols))).copy()
        return (1 - wgt) * across[i0] + wgt * across[i1]


def read_calibration(path: Path) -> CalibrationLut:
    """Parse a Sentinel-1 ``calibration-*.xml`` into its ``sigmaNought`` :class:`CalibrationLut`."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as err:
        raise IngestError(f"{path}: not a readable calibration XML: {err}") from err
    vectors = root.findall("./calibrationVectorList/calibrationVector")
    if not vectors:
        raise IngestError(
            f"{path}: no calibrationVectorList/calibrationVector (not a Sentinel-1 calibration file)"
        )
    lines, pixel_lists, values = [], [], []
    for v in vectors:
        try:
            line = int((v.findtext("line") or "").strip())
            pixels = np.array((v.findtext("pixel") or "").split(), dtype=np.float64)
            sigma = np.array((v.findtext("sigmaNought") or "").split(), dtype=np.float64)
        except ValueError as err:
            raise IngestError(f"{path}: a calibrationVector does not parse: {err}") from err
        if pixels.size == 0 or pixels.size != sigma.size:
            raise IngestError(
                f"{path}: vector at line {line} has {pixels.size} pixels and {sigma.size} sigmaNought values"
            )
        if (sigma <= 0).any() or not np.isfinite(sigma).all():
            raise IngestError(f"{path}: vector at line {line} has non-positive sigmaNought values")
        lines.append(line)
        pixel_lists.append(pixels)
        values.append(sigma)
    order = np.argsort(lines, kind="stable")
    common = pixel_lists[0]
    sigma_grid = np.stack([np.interp(common, pixel_lists[i], values[i]) for i in order])
    return CalibrationLut(str(path), np.asarray(lines, dtype=np.float64)[order], common, sigma_grid)


def full_resolution_shape(path: Path) -> tuple[int, int]:
    """``(numberOfLines, numberOfSamples)`` of the product image, from its annotation XML."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as err:
        raise IngestError(f"{path}: not a readable annotation XML: {err}") from err
    info = root.find("./imageAnnotation/imageInformation")
    lines = None if info is None else info.findtext("numberOfLines")
    samples = None if info is None else info.findtext("numberOfSamples")
    if lines is None or samples is None:
        raise IngestError(f"{path}: no imageAnnotation/imageInformation/numberOfLines and numberOfSamples")
    return int(lines), int(samples)


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


@dataclass(frozen=True)
class Calibration:
    """How digital numbers become sigma0 for one raster: a LUT (with the product's full size) or a constant.

    Attributes:
        describe: one line for the group attribute ``calibration``.
        lut: the ``sigmaNought`` table, or ``None``.
        full_shape: ``(lines, samples)`` of the full-resolution product from its annotation, or ``None``.
        constant: ``K`` in sigma0 = DN^2 / K^2, or ``None``.

    """

    describe: str
    lut: CalibrationLut | None = None
    full_shape: tuple[int, int] | None = None
    constant: float | None = None


def scene_calibration(scene: GrdScene, pol: str, constant: float | None = None) -> Calibration | None:
    """The calibration of ``pol`` in ``scene``: ``constant`` when given, else the product's LUT, else None."""
    if constant is not None:
        if not constant > 0 or not math.isfinite(constant):
            raise IngestError(f"--calibration-constant must be a positive number, got {constant}")
        return Calibration(f"constant: sigma0 = DN^2 / {constant:g}^2 (given by the user)", constant=constant)
    if pol not in scene.calibration:
        return None
    lut = read_calibration(scene.calibration[pol])
    full = full_resolution_shape(scene.annotation[pol]) if pol in scene.annotation else None
    return Calibration(
        f"sigmaNought LUT of {scene.calibration[pol].name} (sigma0 = DN^2 / A^2, A bilinear in line, pixel)",
        lut=lut,
        full_shape=full,
    )


def sigma0(raster: _GcpRaster, cal: Calibration, block_rows: int = 512) -> np.ndarray:
    """Calibrated sigma0 (linear power, float32) of a GRD raster in its radar geometry; 0.0 where DN is 0."""
    dn = raster.dn
    h, w = dn.shape
    out = np.empty((h, w), dtype=np.float32)
    if cal.constant is not None:
        np.multiply(dn, dn, out=out, dtype=np.float32)
        out /= np.float32(cal.constant**2)
        return out
    lut = cal.lut
    assert lut is not None
    if cal.full_shape is not None:
        full_h, full_w = cal.full_shape
        if full_h < h or full_w < w:
            raise IngestError(
                f"{raster.path}: {h}x{w} px, larger than the product's {full_h}x{full_w} in its annotation"
            )
    else:
        full_h, full_w = h, w
        last_line, last_pixel = float(lut.lines.max()), float(lut.pixels.max())
        if not (0.9 * (h - 1) <= last_line <= 1.1 * h + 10 and 0.9 * (w - 1) <= last_pixel <= 1.1 * w + 10):
            raise IngestError(
                f"{raster.path}: the calibration LUT {lut.source} spans lines 0..{last_line:g} and pixels "
                f"0..{last_pixel:g}, the raster is {h}x{w} px: the raster is not at the product's full "
                "resolution and no annotation/*.xml gives that size; add the product annotation or pass "
                "--calibration-constant"
            )
    # full-resolution position of each raster pixel centre (the identity at full resolution)
    rows = (np.arange(h) + 0.5) * (full_h / h) - 0.5
    cols = (np.arange(w) + 0.5) * (full_w / w) - 0.5
    for r0 in range(0, h, block_rows):
        r1 = min(r0 + block_rows, h)
        gain = lut.gains(rows[r0:r1], cols)
        block = dn[r0:r1].astype(np.float64)
        out[r0:r1] = block * block / (gain * gain)
    return out


def warp_grd(
    raster: _GcpRaster,
    grid: Grid,
    quantity: Quantity = "intensity",
    resampling: str = "bilinear",
    values: np.ndarray | None = None,
) -> np.ndarray:
    """``(H, W)`` float32 values of ``raster`` on ``grid``; 0.0 where no valid DN contributes.

    ``values`` (e.g. calibrated sigma0, 0 where DN is 0) are warped instead of the DN ``quantity``.
    """
    if grid.crs_wkt is None:
        raise IngestError(f"{raster.path}: the target grid has no CRS; GRD scenes need a projected grid")
    if values is None:
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


def to_db(linear: np.ndarray) -> np.ndarray:
    """10 log10 of linear power (float32); :data:`DB_NODATA` where the power is 0 (nodata)."""
    out = np.full(linear.shape, DB_NODATA, dtype=np.float32)
    positive = linear > 0
    out[positive] = 10.0 * np.log10(linear[positive])
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
    output: Output = "auto",
    calibration_constant: float | None = None,
    quantity: Quantity = "intensity",
    orbit: str | None = None,
    append: bool = False,
    overwrite: bool = False,
    title: str = "",
    stats: bool = True,
    progress: bool = True,
) -> str:
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
        resampling: rasterio resampling method, applied to linear power (or the DN quantity) (default
            ``bilinear``; ``average`` multilooks onto a coarser grid; ``nearest`` keeps the source values).
        output: ``db``, ``linear``, ``dn`` or ``auto`` (module docstring).
        calibration_constant: ``K`` in sigma0 = DN^2 / K^2, used instead of the product's LUT.
        quantity: for ``output="dn"``: ``intensity`` (DN^2, default) or ``amplitude`` (DN).
        orbit: orbit direction; default inferred from the GCPs, and an explicit value must not
            contradict the geometry.
        append: add to an existing store (new group, or later dates of an existing group).
        overwrite: replace an existing store (create mode).
        title: store title (create mode).
        stats: store per-band statistics computed during the ingest.
        progress: show a progress bar.

    Returns:
        The units written (``dB``, ``linear`` or ``DN``).

    Raises:
        IngestError: missing or unreadable rasters, no GCPs, a dtype other than uint16, a scene that
            lacks a polarisation or misses the grid, mixed orbit directions, a unit clash on append,
            ``db``/``linear`` without calibration.

    """
    if output not in OUTPUTS:
        raise IngestError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
    if quantity not in QUANTITY_TEXT:
        raise IngestError(f"quantity {quantity!r} is not one of {', '.join(QUANTITY_TEXT)}")
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
    calibrations = {
        (scene.product_id, p): scene_calibration(scene, p, calibration_constant)
        for scene in found
        for p in pols
    }
    uncalibrated = sorted({f"{sid} {p}" for (sid, p), c in calibrations.items() if c is None})
    if output == "auto":
        output = "dn" if uncalibrated else "linear"
    if output in ("db", "linear") and uncalibrated:
        raise IngestError(
            f"--{'db' if output == 'db' else 'linear'} needs calibration, but {', '.join(uncalibrated)} "
            "have no annotation/calibration/calibration-*.xml; pass --calibration-constant K "
            "(sigma0 = DN^2 / K^2) or ingest without it to store uncalibrated DN"
        )
    units = {"db": "dB", "linear": "linear", "dn": "DN"}[output]
    nodata = DB_NODATA if output == "db" else NODATA
    if output == "dn":
        what = QUANTITY_TEXT[quantity]
        calibration_text = UNCALIBRATED.format(what="squared" if quantity == "intensity" else "as is")
    else:
        what = "sigma0"
        calibration_text = "; ".join(sorted({c.describe for c in calibrations.values() if c is not None}))
    target_crs = CRS.from_user_input(crs) if crs is not None else None
    mode = "append" if append else "create"
    with StoreTransaction(store, mode=mode, overwrite=overwrite, title=title) as tx:
        target = grid or tx.grid()
        stored = tx.group_attrs(group)
        if stored is not None and (stored.get("units"), stored.get("quantity")) != (units, what):
            raise IngestError(
                f"{store}/{group} holds {stored.get('quantity', stored.get('units'))!r} in "
                f"{stored.get('units')!r}; these scenes would add {what!r} in {units!r}"
            )
        group_orbit = orbit if orbit is not None else (stored or {}).get("orbit")
        writer: GroupIngest | None = None
        for k, scene in enumerate(tqdm(found, desc=f"ingest {group}", disable=not progress)):
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
            planes = []
            for pol, raster in zip(pols, rasters, strict=True):
                cal = calibrations[(scene.product_id, pol)]
                linear = None if output == "dn" or cal is None else sigma0(raster, cal)
                warped = warp_grd(raster, target, quantity, resampling, values=linear)
                planes.append(to_db(warped) if output == "db" else warped)
            if writer is None:
                spec = SensorSpec(
                    sensor=cat.name,
                    bands=pols,
                    times=np.array(times, dtype="datetime64[s]"),
                    grid=target,
                    dtype="float32",
                    nodata=nodata,
                    units=units,
                    orbit=group_orbit,
                    source="; ".join(s.product_id for s in found),
                    attrs={"calibration": calibration_text, "quantity": what, "resampling": resampling},
                )
                writer = GroupIngest(tx, group, spec, stats=stats)
            writer.write(k, np.stack(planes))
        assert writer is not None
        writer.finish()
    return units
