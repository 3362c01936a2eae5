"""The spectravlm cube store: one Zarr v3 store per region, one group per sensor.

Layout (the full specification, with the reasoning for the chunking, is in ``docs/store-format.md``)::

    region.zarr/                     root attrs: spectravlm.format_version, title, synthetic
      s2/                            attrs: sensor, bands, grid, units, scale_factor, add_offset, stats
        data        (time, band, y, x)  raw values (uint16 reflectance x 1e4, float32 dB, ...)
        cloud       (time, y, x)        uint8 cloud probability 0..100 (optional)
        mask        (time, y, x)        uint8 quality mask, nonzero = invalid (optional; e.g. from SCL)
        scl, ...    (time, y, x)        extra per-date layers listed in attrs["layers"] (optional)
        time        (time,)             int64 seconds since 1970-01-01 (CF units attribute)
        band        (band,)             str canonical band names
        y, x        (y,), (x,)          float64 pixel-centre coordinates in the CRS
        spatial_ref ()                  CF grid mapping: crs_wkt, GeoTransform
      s1_asc/ ...                      the same for another sensor group
      targets/
        agb         (y, x)              float32 t/ha, NaN where unknown
      static/
        dem, ...    (y, x)              static layers (DEM, slope, land cover) with units (optional)

Every array is chunked ``(1, C, 256, 256)`` for data (one date, all bands, one 256 px tile): a training
window of <= 256 px and T dates decodes T x (1..4) chunks and nothing else. It opens with
``xarray.open_zarr(path, group="s2")`` with real dimension names and coordinates.

Writes go through :class:`StoreTransaction`: the new or changed store is assembled in a hidden sibling
directory and swapped into place with one atomic rename, so a failed or killed write leaves either the
previous store or no store, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from affine import Affine
from xarray.backends.zarr import FillValueCoder
from zarr.codecs import BloscCodec

from spectravlm.errors import (
    StoreCorruptError,
    StoreError,
    StoreExistsError,
    StoreVersionError,
    UnknownUnitError,
)
from spectravlm.io import build_dir_for, replace_dir, stale_build_dirs
from spectravlm.sensors import Sensor, canonical_unit, get_sensor

FORMAT_VERSION = 1
"""Version of the store layout written by this library. Readers refuse newer versions."""

CHUNK_XY = 256
"""Spatial chunk edge in pixels (see docs/store-format.md for the reasoning)."""

TIME_UNITS = "seconds since 1970-01-01T00:00:00"
TARGETS_GROUP = "targets"
STATIC_GROUP = "static"
RESERVED_ARRAYS = ("data", "cloud", "mask", "time", "band", "y", "x", "spatial_ref")
"""Array names of a sensor group that extra layers may not take."""
_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
# Chunk keys "c.0.0.0.0" in the array's folder instead of nested "c/0/0/0/0" folders: on local disks,
# creating and deleting hundreds of folders cost more than the data itself (see docs/store-format.md).
_CHUNK_KEYS: dict[str, Any] = {"name": "default", "separator": "."}


def canonical_units(text: str) -> str:
    """The canonical unit name (``reflectance``, ``dB``, ``linear``, ``DN``) of a spelling.

    Uses :func:`spectravlm.sensors.canonical_unit`; ``linear power`` is ``linear``, ``db`` is ``dB``, any
    spelling starting with ``DN`` (``DN^2 (uncalibrated linear intensity)``) is ``DN``.

    Raises:
        StoreError: an empty or unknown spelling (a unit is a fact, never guessed).

    """
    try:
        return canonical_unit(text)
    except UnknownUnitError as err:
        raise StoreError(str(err)) from None


@dataclass(frozen=True)
class Grid:
    """A pixel grid: shape, affine transform (pixel corner -> CRS) and CRS.

    Attributes:
        height: rows.
        width: columns.
        transform: GDAL-style affine transform of the top-left pixel corner.
        crs_wkt: the CRS as WKT, or ``None`` for data without georeference (BioMassters).

    """

    height: int
    width: int
    transform: Affine = field(default_factory=Affine.identity)
    crs_wkt: str | None = None

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre ``y`` and ``x`` coordinates (for north-up, unrotated grids)."""
        t = self.transform
        y = t.f + t.e * (np.arange(self.height) + 0.5)
        x = t.c + t.a * (np.arange(self.width) + 0.5)
        return y, x

    def to_attrs(self) -> dict[str, Any]:
        """JSON-able form stored in group attributes."""
        return {
            "height": self.height,
            "width": self.width,
            "transform": list(self.transform)[:6],
            "crs_wkt": self.crs_wkt,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_attrs`."""
        return cls(
            height=int(attrs["height"]),
            width=int(attrs["width"]),
            transform=Affine(*attrs["transform"]),
            crs_wkt=attrs.get("crs_wkt"),
        )

    def same_as(self, other: Grid, tol: float = 1e-6) -> bool:
        """True when both grids cover the same pixels in the same CRS."""
        return (
            (self.height, self.width) == (other.height, other.width)
            and self.crs_wkt == other.crs_wkt
            and self.transform.almost_equals(other.transform, precision=tol)
        )


@dataclass
class Layer:
    """An extra layer: per date of a sensor group ``(T, H, W)`` (SCL, an index) or static ``(H, W)`` (DEM).

    Attributes:
        data: the values (``None`` in a :class:`SensorSpec`, where only the description matters).
        units: what the values are (``m``, ``degree``, ``class``, ``1`` for an index, ``percent``); stored
            as the CF ``units`` attribute.
        long_name: a human-readable name.
        nodata: the value meaning "no value" (stored as ``_FillValue``), or ``None``.
        dtype: the stored dtype (default: that of ``data``).
        attrs: extra attributes (``flag_values``/``flag_meanings`` for classes, ``source``).

    """

    data: np.ndarray | None
    units: str
    long_name: str = ""
    nodata: float | None = None
    dtype: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def stored_dtype(self) -> np.dtype[Any]:
        """The dtype the layer is stored in."""
        if self.dtype:
            return np.dtype(self.dtype)
        if self.data is None:
            raise StoreError(f"layer {self.long_name!r} has neither data nor a dtype")
        return self.data.dtype


@dataclass
class SensorCube:
    """In-memory data for one sensor group, as handed to the writer.

    Attributes:
        sensor: catalogue name of the sensor.
        bands: band names (any catalogue spelling; stored canonical).
        data: ``(T, C, H, W)`` raw values.
        times: ``(T,)`` acquisition times (``datetime64``).
        grid: the pixel grid.
        nodata: raw value meaning "no observation", or ``None``.
        cloud: ``(T, H, W)`` uint8 cloud probability 0..100, or ``None``.
        scale_factor: physical = raw * scale_factor + add_offset.
        add_offset: see ``scale_factor``.
        units: physical units after scaling (``reflectance``, ``dB``, ``linear``, ``DN``; other spellings
            that :func:`canonical_units` knows are stored canonical).
        orbit: ``ascending``/``descending`` for SAR when known.
        source: free-text provenance (file names, product ids).
        attrs: extra JSON-able group attributes (e.g. ``calibration`` for uncalibrated SAR), written
            when the group is created; they may not replace the attributes the store itself writes.
        mask: ``(T, H, W)`` uint8 quality mask (nonzero = invalid, e.g. from Sentinel-2 SCL classes), or
            ``None``.
        mask_rule: how ``mask`` was derived (stored with it; required with a mask).
        layers: extra per-date layers ``(T, H, W)`` by name (``scl``, ``ndvi``).

    """

    sensor: str
    bands: Sequence[str]
    data: np.ndarray
    times: np.ndarray
    grid: Grid
    nodata: float | None = None
    cloud: np.ndarray | None = None
    scale_factor: float = 1.0
    add_offset: float = 0.0
    units: str = ""
    orbit: str | None = None
    source: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None
    mask_rule: str = ""
    layers: dict[str, Layer] = field(default_factory=dict)

    def spec(self) -> SensorSpec:
        """The description of this cube without its pixels (for :meth:`StoreTransaction.sensor_writer`)."""
        return SensorSpec(
            sensor=self.sensor,
            bands=tuple(self.bands),
            times=np.asarray(self.times),
            grid=self.grid,
            dtype=str(self.data.dtype),
            nodata=self.nodata,
            scale_factor=self.scale_factor,
            add_offset=self.add_offset,
            units=self.units,
            orbit=self.orbit,
            source=self.source,
            attrs=dict(self.attrs),
            cloud=self.cloud is not None,
            mask_rule=self.mask_rule if self.mask is not None else None,
            layers={
                k: Layer(None, v.units, v.long_name, v.nodata, str(v.stored_dtype), dict(v.attrs))
                for k, v in self.layers.items()
            },
        )


@dataclass
class SensorSpec:
    """Everything about a sensor group but its pixels: written first, then filled date by date.

    Attributes:
        sensor: catalogue sensor name.
        bands: band names.
        times: ``(T,)`` acquisition times, ascending and unique.
        grid: the pixel grid.
        dtype: raw dtype of ``data``.
        nodata: raw nodata value or ``None``.
        scale_factor: physical = raw * scale_factor + add_offset.
        add_offset: see ``scale_factor``.
        units: physical units after scaling.
        orbit: SAR orbit direction when known.
        source: provenance.
        attrs: extra group attributes.
        cloud: whether a ``cloud`` layer is written.
        mask_rule: the rule of the ``mask`` layer, or ``None`` for no mask.
        layers: extra per-date layers (their ``data`` is ``None``).

    """

    sensor: str
    bands: tuple[str, ...]
    times: np.ndarray
    grid: Grid
    dtype: str
    nodata: float | None = None
    scale_factor: float = 1.0
    add_offset: float = 0.0
    units: str = ""
    orbit: str | None = None
    source: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    cloud: bool = False
    mask_rule: str | None = None
    layers: dict[str, Layer] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


class SensorGroup:
    """Read access to one sensor group of an open store."""

    def __init__(self, store: CubeStore, name: str, group: zarr.Group) -> None:
        self.store = store
        self.name = name
        self.zgroup = group
        attrs = _attrs(group)
        self.attrs = attrs
        try:
            self.sensor: Sensor = get_sensor(attrs["sensor"])
            self.grid = Grid.from_attrs(attrs["grid"])
            self.data: zarr.Array = _child_array(group, "data")
            self.bands: tuple[str, ...] = tuple(attrs["bands"])
            time = np.asarray(_child_array(group, "time")[:], dtype="int64")
        except KeyError as err:
            raise StoreError(
                f"{store.path}: sensor group {name!r} lacks {err} (not a spectravlm group?)"
            ) from err
        self.times = time.astype("datetime64[s]")
        self.cloud: zarr.Array | None = _child_array(group, "cloud") if "cloud" in group else None
        self.mask: zarr.Array | None = _child_array(group, "mask") if "mask" in group else None
        self.layers: dict[str, zarr.Array] = {}
        for layer in attrs.get("layers", {}):
            if layer not in group:
                raise StoreError(f"{store.path}/{name}: layer {layer!r} is listed in the attrs but missing")
            self.layers[layer] = _child_array(group, layer)
        self.nodata: float | None = attrs.get("nodata")
        self.scale_factor = float(attrs.get("scale_factor", 1.0))
        self.add_offset = float(attrs.get("add_offset", 0.0))
        self.units: str = attrs.get("units", "")
        self.orbit: str | None = attrs.get("orbit")
        self.stats: dict[str, dict[str, float]] = attrs.get("stats", {})
        self.stats_db: dict[str, dict[str, float]] = attrs.get("stats_db", {})
        if self.data.shape[1] != len(self.bands):
            raise StoreError(
                f"{store.path}/{name}: data has {self.data.shape[1]} bands but attrs list {len(self.bands)}"
            )

    def __repr__(self) -> str:
        t, _, h, w = self.data.shape
        return f"SensorGroup({self.name!r}, sensor={self.sensor.name}, T={t}, bands={self.bands}, {h}x{w})"

    def band_index(self, bands: Sequence[str]) -> list[int]:
        """Positions of ``bands`` in this group (error naming the missing band and those present)."""
        out = []
        for b in bands:
            name = self.sensor.canonical_name(b)
            if name not in self.bands:
                raise StoreError(
                    f"{self.store.path}/{self.name}: band {name!r} is not in the store; "
                    f"stored bands: {', '.join(self.bands)}"
                )
            out.append(self.bands.index(name))
        return out

    def read(self, selection: tuple[Any, ...]) -> np.ndarray:
        """``data[selection]`` with decode errors turned into :class:`StoreCorruptError`."""
        return _read(self.data, selection, f"{self.store.path}/{self.name}/data")

    def read_cloud(self, selection: tuple[Any, ...]) -> np.ndarray | None:
        """``cloud[selection]`` or ``None`` when the group has no cloud layer."""
        if self.cloud is None:
            return None
        return _read(self.cloud, selection, f"{self.store.path}/{self.name}/cloud")

    def read_mask(self, selection: tuple[Any, ...]) -> np.ndarray | None:
        """``mask[selection]`` (nonzero = invalid) or ``None`` when the group has no quality mask."""
        if self.mask is None:
            return None
        return _read(self.mask, selection, f"{self.store.path}/{self.name}/mask")

    def read_layer(self, layer: str, selection: tuple[Any, ...]) -> np.ndarray:
        """``layer[selection]`` of an extra per-date layer (error naming the layers present)."""
        if layer not in self.layers:
            raise StoreError(
                f"{self.store.path}/{self.name} has no layer {layer!r}; "
                f"layers: {', '.join(self.layers) or '(none)'}"
            )
        return _read(self.layers[layer], selection, f"{self.store.path}/{self.name}/{layer}")


def _attrs(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """A node's attributes as a plain dict (JSON values)."""
    return dict(node.attrs)


def _child_group(parent: zarr.Group, name: str) -> zarr.Group:
    node = parent[name]
    if not isinstance(node, zarr.Group):
        raise StoreError(f"{parent.store_path}/{name} is an array where a group was expected")
    return node


def _child_array(parent: zarr.Group, name: str) -> zarr.Array:
    node = parent[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{parent.store_path}/{name} is a group where an array was expected")
    return node


def _read(array: zarr.Array, selection: tuple[Any, ...], where: str) -> np.ndarray:
    try:
        return np.asarray(array[selection])
    except (ValueError, RuntimeError, OSError, TypeError) as err:
        raise StoreCorruptError(f"{where}: cannot decode the chunks for {selection}: {err}") from err


class CubeStore:
    """An open cube store (local path or fsspec URL), read-only.

    Example:
        >>> store = CubeStore.open("data/demo.zarr")          # doctest: +SKIP
        >>> store["s2"].data.shape                             # doctest: +SKIP
        (12, 10, 512, 512)

    """

    def __init__(self, path: str, root: zarr.Group) -> None:
        self.path = path
        self.root = root
        attrs = _attrs(root)
        meta = attrs.get("spectravlm")
        if not isinstance(meta, dict) or "format_version" not in meta:
            raise StoreError(f"{path} is a Zarr store but not a spectravlm cube store (no spectravlm attrs)")
        version = int(meta["format_version"])
        if version > FORMAT_VERSION:
            raise StoreVersionError(
                f"{path} was written with store format version {version}; this spectravlm reads up to "
                f"version {FORMAT_VERSION}: upgrade spectravlm"
            )
        self.format_version = version
        self.title: str = attrs.get("title", "")
        self.synthetic: bool = bool(attrs.get("synthetic", False))
        self.groups: dict[str, SensorGroup] = {}
        for name in meta.get("groups", []):
            if name not in root:
                raise StoreError(f"{path}: sensor group {name!r} is listed in the attrs but missing")
            self.groups[name] = SensorGroup(self, name, _child_group(root, name))
        self.targets: dict[str, zarr.Array] = {}
        if TARGETS_GROUP in root:
            tg = _child_group(root, TARGETS_GROUP)
            for name in meta.get("targets", []):
                self.targets[name] = _child_array(tg, name)
        self.static: dict[str, zarr.Array] = {}
        for name in meta.get("static", []):
            if STATIC_GROUP not in root or name not in _child_group(root, STATIC_GROUP):
                raise StoreError(f"{path}: static layer {name!r} is listed in the attrs but missing")
            self.static[name] = _child_array(_child_group(root, STATIC_GROUP), name)

    @classmethod
    def open(cls, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> CubeStore:
        """Open a store read-only; ``path`` may be an fsspec URL (``http://``, ``s3://``, ...)."""
        spath = os.fspath(path)
        is_url = "://" in spath
        if not is_url and not Path(spath).is_dir():
            raise StoreError(f"{spath} is not a cube store: no such directory")
        try:
            if is_url:
                root = zarr.open_group(
                    spath, mode="r", storage_options=storage_options or {}, use_consolidated=True
                )
            else:
                root = zarr.open_group(spath, mode="r", use_consolidated=True)
        except (FileNotFoundError, KeyError, ValueError) as err:
            raise StoreError(f"{spath} is not a cube store: {err}") from err
        except json.JSONDecodeError as err:
            raise StoreCorruptError(f"{spath}: metadata is not valid JSON: {err}") from err
        return cls(spath, root)

    def __getitem__(self, group: str) -> SensorGroup:
        """The sensor group called ``group``."""
        if group not in self.groups:
            raise StoreError(
                f"{self.path} has no sensor group {group!r}; groups: {', '.join(self.groups) or '(none)'}"
            )
        return self.groups[group]

    @property
    def grid(self) -> Grid:
        """The grid shared by every group of the store."""
        first = next(iter(self.groups.values()))
        return first.grid

    def summary(self) -> str:
        """A human-readable summary (what ``spectravlm data info`` prints).

        Per sensor group: sensor, date count and range (ISO), bands, size, dtype, CRS; units with the
        scale and offset that make them physical, nodata; the chunking; cloud, mask and extra layers;
        whether statistics are present and where they came from. Then targets and static layers.
        """
        lines = [
            f"cube store {self.path} (format v{self.format_version})"
            + (" [SYNTHETIC]" if self.synthetic else "")
        ]
        if self.title:
            lines.append(f"  title: {self.title}")
        for name, g in self.groups.items():
            lines.extend(_group_summary(name, g))
        for name, arr in self.targets.items():
            lines.append(f"  target {name}: {_layer_summary(arr)}")
        for name, arr in self.static.items():
            lines.append(f"  static {name}: {_layer_summary(arr)}")
        return "\n".join(lines)


def _crs_name(crs_wkt: str | None) -> str:
    if crs_wkt is None:
        return "no CRS"
    parts = crs_wkt.split('"')
    return parts[1] if len(parts) > 1 else crs_wkt[:40]


def _group_summary(name: str, g: SensorGroup) -> list[str]:
    t, c, h, w = g.data.shape
    if t:
        first, last = str(g.times.min()), str(g.times.max())
        dates = f"{t} dates ({first} .. {last})" if t > 1 else f"1 date ({first})"
    else:
        dates = "no dates"
    pixel = f", {abs(g.grid.transform.a):g} m px" if g.grid.crs_wkt else ""
    lines = [
        f"  {name}: {g.sensor.name} {dates}, {c} bands {','.join(g.bands)}, {h}x{w} px{pixel}, "
        f"{_crs_name(g.grid.crs_wkt)}" + (f", orbit {g.orbit}" if g.orbit else "")
    ]
    try:
        unit = canonical_units(g.units)
    except StoreError:
        unit = f"{g.units!r} (UNKNOWN: not a physical unit the library knows)" if g.units else "(UNKNOWN)"
    nodata = "none declared" if g.nodata is None else f"{g.nodata:g}"
    lines.append(
        f"    values: {g.data.dtype} raw; physical = raw * {g.scale_factor:g} + {g.add_offset:g} in {unit}; "
        f"nodata {nodata}"
    )
    n_chunks = int(np.prod([-(-s // k) for s, k in zip(g.data.shape, g.data.chunks, strict=True)]))
    lines.append(f"    chunks {tuple(g.data.chunks)} (time, band, y, x): {n_chunks} chunks of data")
    extras = []
    if g.cloud is not None:
        extras.append(f"cloud probability (invalid at >= {g.attrs.get('cloud_threshold', 50)})")
    if g.mask is not None:
        extras.append(f"quality mask ({g.mask.attrs.get('rule', 'nonzero = invalid')})")
    for layer, arr in g.layers.items():
        extras.append(f"{layer} [{arr.attrs.get('units', '?')}]")
    if extras:
        lines.append(f"    layers: {'; '.join(extras)}")
    if g.stats:
        counts = [int(v.get("count", 0)) for v in g.stats.values()]
        source = g.attrs.get("stats_source", "spectravlm data stats (source not recorded)")
        lines.append(
            f"    stats: {len(g.stats)} bands, {min(counts)}..{max(counts)} valid px per band"
            + (", with dB stats (stats_db)" if g.stats_db else "")
            + f"; from {source}"
        )
    else:
        lines.append(f"    stats: none (run `spectravlm data stats {g.store.path}`)")
    return lines


def _layer_summary(arr: zarr.Array) -> str:
    values = np.asarray(arr[:])
    if np.issubdtype(values.dtype, np.floating):
        finite = values[np.isfinite(values)]
    else:
        fill = arr.attrs.get("_FillValue")
        finite = values.ravel() if fill is None else values[values != fill]
    rng = (
        f"{float(finite.min()):.1f}..{float(finite.max()):.1f}, mean {float(finite.mean()):.1f}"
        if finite.size
        else "empty"
    )
    return f"{arr.shape[0]}x{arr.shape[1]} {arr.dtype} {arr.attrs.get('units', '')} ({rng})"


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _hardlink_copy(src: Path, dst: Path) -> None:
    """Copy a store tree by hard links (zarr rewrites files via temp + rename, so links stay safe)."""
    shutil.copytree(src, dst, copy_function=os.link)


class StoreTransaction:
    """Create, overwrite or append to a store atomically.

    The work happens in ``.<name>.tmp-<pid>-<id>`` beside the target. On success the directory is
    swapped in with a single atomic rename; on an exception it is removed; after a kill it stays behind
    as a hidden directory (removed by the next transaction on the same path) and the target is untouched.

    Args:
        path: the store directory.
        mode: ``create`` (new store; error if one exists unless ``overwrite``) or ``append``
            (start from the existing store, add dates or groups).
        overwrite: replace an existing store in ``create`` mode.
        title: free-text title stored in the root attributes.
        synthetic: mark the store as synthetic data (the demo store).

    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "create",
        overwrite: bool = False,
        title: str = "",
        synthetic: bool = False,
    ) -> None:
        if mode not in ("create", "append"):
            raise ValueError(f"mode must be 'create' or 'append', got {mode!r}")
        self.path = Path(path).absolute()
        self.mode = mode
        self.overwrite = overwrite
        self.title = title
        self.synthetic = synthetic
        self.tmp = build_dir_for(self.path)
        self.root: zarr.Group | None = None

    def __enter__(self) -> StoreTransaction:
        for stale in stale_build_dirs(self.path):
            shutil.rmtree(stale, ignore_errors=True)
        exists = self.path.exists()
        if self.mode == "create" and exists and not self.overwrite:
            raise StoreExistsError(
                f"{self.path} already exists; pass overwrite=True (--overwrite) to replace it"
            )
        if self.mode == "append" and not exists:
            raise StoreError(f"cannot append: {self.path} does not exist")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.mode == "append":
            CubeStore.open(self.path)  # validates format and version before touching anything
            _hardlink_copy(self.path, self.tmp)
            self.root = zarr.open_group(self.tmp, mode="r+", zarr_format=3, use_consolidated=False)
        else:
            self.root = zarr.open_group(self.tmp, mode="w", zarr_format=3)
            self.root.attrs.update(
                {
                    "spectravlm": {"format_version": FORMAT_VERSION, "groups": [], "targets": []},
                    "title": self.title,
                    "synthetic": self.synthetic,
                    "Conventions": "CF-1.8",
                }
            )
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            with warnings.catch_warnings():  # consolidated metadata is a zarr-python extension for v3
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                zarr.consolidate_metadata(str(self.tmp), zarr_format=3)
            self._commit()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def _commit(self) -> None:
        replace_dir(self.tmp, self.path)

    # -- content ------------------------------------------------------------------------------------

    @property
    def _root(self) -> zarr.Group:
        if self.root is None:
            raise RuntimeError("StoreTransaction used outside a `with` block")
        return self.root

    def _meta(self) -> dict[str, Any]:
        return dict(_attrs(self._root)["spectravlm"])

    def _grid_check(self, grid: Grid, what: str) -> None:
        meta = self._meta()
        for name in meta["groups"]:
            other = Grid.from_attrs(_attrs(_child_group(self._root, name))["grid"])
            if not grid.same_as(other):
                raise StoreError(
                    f"{what}: grid {grid.to_attrs()} differs from the grid of group {name!r} "
                    f"{other.to_attrs()}; every group of a store shares one grid (resample first)"
                )
            return

    def grid(self) -> Grid | None:
        """Return the grid shared by the groups written so far (append mode: the stored one), or None."""
        meta = self._meta()
        for name in meta["groups"]:
            return Grid.from_attrs(_attrs(_child_group(self._root, name))["grid"])
        return None

    def group_attrs(self, group: str) -> dict[str, Any] | None:
        """Return the attributes of group ``group`` as written so far, or ``None`` when it does not exist."""
        if group not in self._meta()["groups"]:
            return None
        return _attrs(_child_group(self._root, group))

    def write_sensor(self, group: str, cube: SensorCube) -> None:
        """Write (or, in append mode, extend along time) sensor group ``group`` from an in-memory cube."""
        from spectravlm.data.validate import check_cube

        check_cube(cube, where=f"{self.path}/{group}")
        order = np.argsort(cube.times, kind="stable")
        spec = cube.spec()
        spec.times = np.asarray(cube.times)[order]
        writer = self.sensor_writer(group, spec)
        writer.write(  # every date in one call: their chunks are encoded concurrently
            0,
            cube.data[order],
            cloud=None if cube.cloud is None else cube.cloud[order],
            mask=None if cube.mask is None else cube.mask[order],
            layers={name: layer.data[order] for name, layer in cube.layers.items()},  # type: ignore[index]
        )

    def sensor_writer(self, group: str, spec: SensorSpec) -> SensorWriter:
        """Create sensor group ``group`` (or extend an existing one by later dates) and return its writer.

        The arrays are created (or resized) at once for every date of ``spec.times``; the pixels are then
        written by :meth:`SensorWriter.write`, a date and a window (typically a row of chunks) at a time,
        so that an ingest holds one slab in memory, not the scene.
        """
        from spectravlm.data.validate import check_spec

        where = f"{self.path}/{group}"
        check_spec(spec, where)
        sensor = get_sensor(spec.sensor)
        bands = sensor.canonical_names(spec.bands)
        units = canonical_units(spec.units) if spec.units else ""
        seconds = spec.times.astype("datetime64[s]").astype("int64")
        meta = self._meta()
        if group in meta["groups"]:
            return self._extend_group(group, bands, units, seconds, spec)
        self._grid_check(spec.grid, where)
        group_attrs: dict[str, Any] = {
            "sensor": sensor.name,
            "bands": list(bands),
            "grid": spec.grid.to_attrs(),
            "nodata": spec.nodata,
            "scale_factor": spec.scale_factor,
            "add_offset": spec.add_offset,
            "units": units,
            "orbit": spec.orbit,
            "source": spec.source,
            "chunking": "(time=1, band=all, y=256, x=256): one date, all bands, one tile per chunk",
        }
        if spec.layers:
            group_attrs["layers"] = {
                k: {"units": v.units, "long_name": v.long_name} for k, v in spec.layers.items()
            }
        clash = sorted(set(spec.attrs) & set(group_attrs))
        if clash:
            raise StoreError(f"{where}: extra attrs {clash} would replace the store's attrs")
        # Attributes go in with each node's creation: every later update rewrites its zarr.json (a round
        # trip through zarr's event loop and the file system), which made metadata ~half of a small write.
        g = self._root.create_group(group, attributes=group_attrs | spec.attrs)
        t, c = len(seconds), len(bands)
        h, w = spec.grid.height, spec.grid.width
        dtype = np.dtype(spec.dtype)
        arr_attrs: dict[str, Any] = {
            "long_name": f"{sensor.platform} {sensor.kind} values",
            "units": units,
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
        }
        if spec.scale_factor != 1.0 or spec.add_offset != 0.0:
            arr_attrs |= {"scale_factor": spec.scale_factor, "add_offset": spec.add_offset}
        if spec.nodata is not None:
            # xarray's own encoding of _FillValue for Zarr (base64 for floats), so open_zarr masks nodata.
            arr_attrs["_FillValue"] = FillValueCoder.encode(spec.nodata, dtype)
        fill = spec.nodata if spec.nodata is not None else 0
        _create_array(g, "data", (t, c, h, w), dtype, fill, ("time", "band", "y", "x"), arr_attrs)
        if spec.cloud:
            _create_array(
                g,
                "cloud",
                (t, h, w),
                np.dtype("uint8"),
                0,
                ("time", "y", "x"),
                {"long_name": "cloud probability", "units": "percent", "coordinates": "spatial_ref"},
            )
        if spec.mask_rule is not None:
            if not spec.mask_rule:
                raise StoreError(f"{where}: a quality mask needs its rule (how it was derived)")
            _create_array(
                g,
                "mask",
                (t, h, w),
                np.dtype("uint8"),
                0,
                ("time", "y", "x"),
                {
                    "long_name": "quality mask: nonzero where the product flags the pixel as invalid",
                    "units": "1",
                    "flag_values": [0, 1],
                    "flag_meanings": "valid invalid",
                    "rule": spec.mask_rule,
                    "coordinates": "spatial_ref",
                },
            )
        for name, layer in spec.layers.items():
            _create_layer(g, name, (t, h, w), ("time", "y", "x"), layer, where)
        ta = g.create_array(
            "time",
            shape=(t,),
            dtype="int64",
            fill_value=0,
            dimension_names=("time",),
            attributes={"units": TIME_UNITS, "calendar": "proleptic_gregorian", "standard_name": "time"},
        )
        ta[:] = seconds
        ba = g.create_array("band", shape=(c,), dtype=str, dimension_names=("band",))
        ba[:] = np.array(bands)
        _write_xy(g, spec.grid)
        meta["groups"] = [*meta["groups"], group]
        self._root.attrs["spectravlm"] = meta
        return SensorWriter(g, where, 0, spec, bands)

    def _extend_group(
        self, group: str, bands: tuple[str, ...], units: str, seconds: np.ndarray, spec: SensorSpec
    ) -> SensorWriter:
        g = _child_group(self._root, group)
        attrs = _attrs(g)
        where = f"{self.path}/{group}"
        if tuple(attrs["bands"]) != bands:
            raise StoreError(
                f"{where}: cannot append bands {bands} to a group with bands {tuple(attrs['bands'])}"
            )
        if not spec.grid.same_as(Grid.from_attrs(attrs["grid"])):
            raise StoreError(f"{where}: appended data has a different grid than the stored one")
        arr = _child_array(g, "data")
        if arr.dtype != np.dtype(spec.dtype):
            raise StoreError(f"{where}: appended data is {spec.dtype}, the store holds {arr.dtype}")
        stored_units = attrs.get("units", "")
        if (canonical_units(stored_units) if stored_units else "") != units:
            raise StoreError(f"{where}: appended data is in {units!r}, the store holds {stored_units!r}")
        for key, value in (
            ("nodata", spec.nodata),
            ("scale_factor", spec.scale_factor),
            ("add_offset", spec.add_offset),
        ):
            if attrs.get(key) != value and not (key != "nodata" and attrs.get(key) is None):
                raise StoreError(f"{where}: appended data has {key} {value}, the store {attrs.get(key)}")
        ta = _child_array(g, "time")
        old_times = np.asarray(ta[:], dtype="int64")
        if np.isin(seconds, old_times).any():
            dup = [str(d) for d in seconds[np.isin(seconds, old_times)].astype("datetime64[s]")]
            raise StoreError(f"{where}: dates {', '.join(dup)} are already in the store")
        if seconds.min() <= old_times.max():
            raise StoreError(
                f"{where}: appended dates must follow the stored ones (last stored "
                f"{old_times.max().astype('datetime64[s]')}, "
                f"first new {seconds.min().astype('datetime64[s]')})"
            )
        if spec.cloud != ("cloud" in g):
            raise StoreError(f"{where}: appended data must have a cloud layer exactly when the store has one")
        if (spec.mask_rule is not None) != ("mask" in g):
            raise StoreError(
                f"{where}: appended data must have a quality mask exactly when the store has one"
            )
        if sorted(spec.layers) != sorted(attrs.get("layers", {})):
            raise StoreError(
                f"{where}: appended data has layers {sorted(spec.layers)}, the store "
                f"{sorted(attrs.get('layers', {}))}"
            )
        t0, n = arr.shape[0], len(seconds)
        for name in ("data", "cloud", "mask", *spec.layers):
            if name in g:
                a = _child_array(g, name)
                a.resize((t0 + n, *a.shape[1:]))
        ta.resize((t0 + n,))
        ta[t0:] = seconds
        new_attrs: dict[str, Any] = {}
        if spec.source and spec.source not in attrs.get("source", ""):
            new_attrs["source"] = "; ".join(s for s in (attrs.get("source", ""), spec.source) if s)
        if attrs.get("stats"):  # statistics of the old dates only would be wrong: drop them
            new_attrs |= {"stats": {}, "stats_db": {}, "stats_source": "stale after an append: recompute"}
        if new_attrs:
            g.attrs.update(new_attrs)
        return SensorWriter(g, where, t0, spec, bands)

    def write_target(
        self, name: str, values: np.ndarray, grid: Grid, units: str, long_name: str = ""
    ) -> None:
        """Write a 2-D target layer (e.g. ``agb`` in t/ha) on the store's grid; NaN marks no value."""
        if values.ndim != 2 or values.shape != (grid.height, grid.width):
            raise StoreError(
                f"{self.path}/targets/{name}: expected shape {(grid.height, grid.width)}, got {values.shape}"
            )
        self._grid_check(grid, f"{self.path}/targets/{name}")
        root = self._root
        tg = _child_group(root, TARGETS_GROUP) if TARGETS_GROUP in root else root.create_group(TARGETS_GROUP)
        if name in tg:
            del tg[name]
        chunk_xy = (min(CHUNK_XY, grid.height), min(CHUNK_XY, grid.width))
        arr = tg.create_array(
            name,
            shape=values.shape,
            chunks=chunk_xy,
            dtype="float32",
            fill_value=np.nan,
            compressors=_COMPRESSOR,
            chunk_key_encoding=_CHUNK_KEYS,
            dimension_names=("y", "x"),
            attributes={"units": units, "long_name": long_name or name, "coordinates": "spatial_ref"},
        )
        arr[:] = values.astype("float32")
        if "x" not in tg:
            _write_xy(tg, grid)
        meta = self._meta()
        if name not in meta["targets"]:
            meta["targets"] = [*meta["targets"], name]
        root.attrs["spectravlm"] = meta

    def write_static(self, name: str, layer: Layer, grid: Grid) -> None:
        """Write a static 2-D layer (DEM in m, slope in degree, land-cover classes) into the ``static`` group.

        Static layers are covariates on the store's grid, not targets: the loader delivers them only when
        asked. ``layer.units`` is required (a layer's unit is a fact).
        """
        where = f"{self.path}/{STATIC_GROUP}/{name}"
        if layer.data is None or layer.data.shape != (grid.height, grid.width):
            shape = None if layer.data is None else layer.data.shape
            raise StoreError(f"{where}: expected shape {(grid.height, grid.width)}, got {shape}")
        self._grid_check(grid, where)
        root = self._root
        sg = _child_group(root, STATIC_GROUP) if STATIC_GROUP in root else root.create_group(STATIC_GROUP)
        if name in sg:
            del sg[name]
        arr = _create_layer(sg, name, layer.data.shape, ("y", "x"), layer, where)
        arr[:] = layer.data.astype(layer.stored_dtype)
        if "x" not in sg:
            _write_xy(sg, grid)
        meta = self._meta()
        if name not in meta.get("static", []):
            meta["static"] = [*meta.get("static", []), name]
        root.attrs["spectravlm"] = meta

    def set_group_attrs(self, group: str, attrs: dict[str, Any]) -> None:
        """Update attributes of a sensor group (used by the stats pass)."""
        _child_group(self._root, group).attrs.update(attrs)


class SensorWriter:
    """Writes the pixels of one sensor group created by :meth:`StoreTransaction.sensor_writer`.

    Each call of :meth:`write` stores one date's values in a window (a whole date, or a row of chunks for
    a bounded-memory ingest), with the cloud, mask and extra layers of that window. Windows aligned to
    the 256 px chunk grid are written without reading anything back.
    """

    def __init__(
        self, group: zarr.Group, where: str, t0: int, spec: SensorSpec, bands: tuple[str, ...]
    ) -> None:
        self.group = group
        self.bands = bands
        self.where = where
        self.t0 = t0
        self.spec = spec
        self.n_bands = len(spec.bands)
        self.dtype = np.dtype(spec.dtype)
        self.times = spec.times
        self._arrays: dict[str, zarr.Array] = {
            name: _child_array(group, name)
            for name in ("data", "cloud", "mask", *spec.layers)
            if name in group
        }
        self._direct = {name: ChunkFiles.of(a) for name, a in self._arrays.items()}
        self.direct_writes = True
        """Encode and write whole chunks ourselves (see :class:`ChunkFiles`); ``False``: through zarr."""

    def _put(self, name: str, selection: tuple[Any, ...], values: np.ndarray) -> None:
        direct = self._direct[name] if self.direct_writes else None
        if direct is None or not direct.write(selection, values):
            self._arrays[name][selection] = values

    def write(
        self,
        t: int,
        data: np.ndarray,
        row: int = 0,
        col: int = 0,
        cloud: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        layers: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write ``data`` ``(C, h, w)`` of date ``t`` (an index into ``spec.times``) at ``(row, col)``.

        ``data`` may also be ``(n, C, h, w)``: dates ``t .. t + n - 1`` in one call (with ``(n, h, w)``
        cloud, mask and layers), which lets zarr encode all their chunks concurrently.
        """
        from spectravlm.data.validate import check_slab

        layers = layers or {}
        if data.ndim == 4:
            n = data.shape[0]
            for k in range(n):
                check_slab(
                    self,
                    t + k,
                    data[k],
                    row,
                    col,
                    None if cloud is None else cloud[k],
                    None if mask is None else mask[k],
                    {name: v[k] for name, v in layers.items()},
                )
            ti: int | slice = slice(self.t0 + t, self.t0 + t + n)
        else:
            check_slab(self, t, data, row, col, cloud, mask, layers)
            ti = self.t0 + t
        h, w = data.shape[-2:]
        ys, xs = slice(row, row + h), slice(col, col + w)
        self._put("data", (ti, slice(None), ys, xs), data)
        if cloud is not None:
            self._put("cloud", (ti, ys, xs), cloud)
        if mask is not None:
            self._put("mask", (ti, ys, xs), mask)
        for name, values in layers.items():
            self._put(name, (ti, ys, xs), values)


_CHUNK_POOL: ThreadPoolExecutor | None = None


def _chunk_pool() -> ThreadPoolExecutor:
    global _CHUNK_POOL
    if _CHUNK_POOL is None:
        _CHUNK_POOL = ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="chunks")
    return _CHUNK_POOL


class ChunkFiles:
    """Writes whole chunks of one store array as zarr would, without zarr's per-chunk machinery.

    For the layout this module writes (local store, ``.`` chunk keys, codecs exactly Bytes little-endian
    + Blosc, no sharding) a chunk file is ``blosc(chunk bytes)`` at ``<array>/c.<i>.<j>...``: edge chunks
    are padded with the fill value to the chunk shape and chunks that hold only the fill value are not
    written (zarr's ``write_empty_chunks=False``). Chunks are encoded and written by a small thread pool
    (Blosc releases the GIL). The files are byte for byte those zarr writes (tested), at a fraction of
    its per-chunk cost in Python (``benchmarks/RESULTS.md``, ingest). Writes that do not cover whole
    chunks are left to zarr.
    """

    def __init__(self, array: zarr.Array, folder: Path, codec: Any) -> None:
        self.array = array
        self.folder = folder
        self.codec = codec
        self.chunks = tuple(int(c) for c in array.chunks)
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill = array.fill_value

    @classmethod
    def of(cls, array: zarr.Array) -> ChunkFiles | None:
        """The direct writer of ``array``, or ``None`` when its layout is not the one described above."""
        import numcodecs
        from zarr.codecs import BloscCodec, BytesCodec
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
        from zarr.storage import LocalStore

        meta = array.metadata
        store = array.store_path.store
        codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
        key = getattr(meta, "chunk_key_encoding", None)
        if not isinstance(store, LocalStore) or len(codecs) != 2:
            return None
        raw, blosc = codecs
        if not isinstance(raw, BytesCodec) or not isinstance(blosc, BloscCodec):
            return None
        if not isinstance(key, DefaultChunkKeyEncoding) or key.separator != ".":
            return None
        if raw.endian is not None and raw.endian.value != "little":
            return None
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc.shuffle.value]
        codec = numcodecs.Blosc(
            cname=blosc.cname.value,
            clevel=blosc.clevel,
            shuffle=shuffle,
            blocksize=blosc.blocksize,
            typesize=blosc.typesize,
        )
        return cls(array, Path(store.root) / array.store_path.path, codec)

    def write(self, selection: tuple[Any, ...], values: np.ndarray) -> bool:
        """Write ``values`` at ``selection`` (ints, slices); False (nothing written) unless chunk-aligned."""
        starts, stops = [], []
        for sel, size, chunk in zip(selection, self.shape, self.chunks, strict=True):
            if isinstance(sel, int | np.integer):
                start, stop = int(sel), int(sel) + 1
            elif isinstance(sel, slice) and sel.step in (None, 1):
                start, stop, _ = sel.indices(size)
            else:
                return False
            if start % chunk or (stop % chunk and stop != size) or stop <= start:
                return False
            starts.append(start)
            stops.append(stop)
        block = np.asarray(values).reshape([b - a for a, b in zip(starts, stops, strict=True)])
        ranges = [range(a // c, -(-b // c)) for a, b, c in zip(starts, stops, self.chunks, strict=True)]
        jobs = [idx for idx in _product(ranges)]
        list(_chunk_pool().map(lambda idx: self._one(idx, starts, block), jobs))
        return True

    def _one(self, idx: tuple[int, ...], starts: list[int], block: np.ndarray) -> None:
        lo = [i * c for i, c in zip(idx, self.chunks, strict=True)]
        hi = [min(a + c, s) for a, c, s in zip(lo, self.chunks, self.shape, strict=True)]
        part = block[tuple(slice(a - s0, b - s0) for a, b, s0 in zip(lo, hi, starts, strict=True))]
        nan_fill = self.dtype.kind == "f" and self.fill is not None and bool(np.isnan(self.fill))
        empty = bool(np.isnan(part).all()) if nan_fill else bool((part == self.fill).all())
        if empty:
            path = self.folder / ("c." + ".".join(map(str, idx)))
            path.unlink(missing_ok=True)  # zarr's rule: a chunk of fill values is not stored
            return
        if part.shape != self.chunks:
            padded = np.full(self.chunks, self.fill, dtype=self.dtype)
            padded[tuple(slice(0, n) for n in part.shape)] = part
            part = padded
        data = self.codec.encode(np.ascontiguousarray(part, dtype=self.dtype))
        path = self.folder / ("c." + ".".join(map(str, idx)))
        # An append starts from a hard-link copy of the user's store: never write through a link (a new
        # file replaces it), so the previous store stays byte for byte what it was.
        path.unlink(missing_ok=True)
        path.write_bytes(data)


def _product(ranges: list[range]) -> list[tuple[int, ...]]:
    from itertools import product

    return list(product(*ranges))


def _create_array(
    g: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    fill: float,
    dims: tuple[str, ...],
    attrs: dict[str, Any],
) -> zarr.Array:
    """Create a chunked array of the store layout: (1 date, all bands, 256, 256) tiles."""
    h, w = shape[-2:]
    chunk_xy = (min(CHUNK_XY, h), min(CHUNK_XY, w))
    lead = {4: (1, shape[1]), 3: (1,), 2: ()}[len(shape)]
    return g.create_array(
        name,
        shape=shape,
        chunks=(*lead, *chunk_xy),
        dtype=dtype,
        fill_value=fill,
        compressors=_COMPRESSOR,
        chunk_key_encoding=_CHUNK_KEYS,
        dimension_names=dims,
        attributes=attrs,
    )


def _create_layer(
    g: zarr.Group, name: str, shape: tuple[int, ...], dims: tuple[str, ...], layer: Layer, where: str
) -> zarr.Array:
    if name in RESERVED_ARRAYS or not name.isidentifier():
        raise StoreError(
            f"{where}: layer name {name!r} is reserved or not an identifier; "
            f"reserved: {', '.join(RESERVED_ARRAYS)}"
        )
    if not layer.units:
        raise StoreError(f"{where}: layer {name!r} needs its units (m, degree, class, 1, percent, ...)")
    dtype = layer.stored_dtype
    attrs: dict[str, Any] = {
        "long_name": layer.long_name or name,
        "units": layer.units,
        "grid_mapping": "spatial_ref",
        "coordinates": "spatial_ref",
    } | layer.attrs
    if layer.nodata is not None:
        attrs["_FillValue"] = FillValueCoder.encode(layer.nodata, dtype)
    fill: float = layer.nodata if layer.nodata is not None else (np.nan if dtype.kind == "f" else 0)
    return _create_array(g, name, shape, dtype, fill, dims, attrs)


def _write_xy(g: zarr.Group, grid: Grid) -> None:
    y, x = grid.coords()
    for name, values in (("y", y), ("x", x)):
        standard = f"projection_{name}_coordinate" if grid.crs_wkt else f"{name}_pixel"
        a = g.create_array(
            name,
            shape=values.shape,
            dtype="float64",
            fill_value=0.0,
            dimension_names=(name,),
            attributes={"standard_name": standard},
        )
        a[:] = values
    gt = grid.transform
    g.create_array(
        "spatial_ref",
        shape=(),
        dtype="int64",
        fill_value=0,
        attributes={
            "crs_wkt": grid.crs_wkt or "",
            "spatial_ref": grid.crs_wkt or "",
            "GeoTransform": " ".join(str(v) for v in (gt.c, gt.a, gt.b, gt.f, gt.d, gt.e)),
        },
    )
