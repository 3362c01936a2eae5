"""The spectravlm cube store: one Zarr v3 store per region, one group per sensor.

Layout (the full specification, with the reasoning for the chunking, is in ``docs/store-format.md``)::

    region.zarr/                     root attrs: spectravlm.format_version, title, synthetic
      s2/                            attrs: sensor, bands, crs_wkt, transform, nodata, cloud_threshold, stats
        data        (time, band, y, x)  raw values (uint16 reflectance x 1e4, float32 dB, ...)
        cloud       (time, y, x)        uint8 cloud probability 0..100 (optional)
        time        (time,)             int64 seconds since 1970-01-01 (CF units attribute)
        band        (band,)             str canonical band names
        y, x        (y,), (x,)          float64 pixel-centre coordinates in the CRS
        spatial_ref ()                  CF grid mapping: crs_wkt, GeoTransform
      s1_asc/ ...                      the same for another sensor group
      targets/
        agb         (y, x)              float32 t/ha, NaN where unknown

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
)
from spectravlm.io import build_dir_for, replace_dir, stale_build_dirs
from spectravlm.sensors import Sensor, get_sensor

FORMAT_VERSION = 1
"""Version of the store layout written by this library. Readers refuse newer versions."""

CHUNK_XY = 256
"""Spatial chunk edge in pixels (see docs/store-format.md for the reasoning)."""

TIME_UNITS = "seconds since 1970-01-01T00:00:00"
TARGETS_GROUP = "targets"
_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
# Chunk keys "c.0.0.0.0" in the array's folder instead of nested "c/0/0/0/0" folders: on local disks,
# creating and deleting hundreds of folders cost more than the data itself (see docs/store-format.md).
_CHUNK_KEYS: dict[str, Any] = {"name": "default", "separator": "."}


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
        units: physical units after scaling (``reflectance``, ``dB``, ``linear power``).
        orbit: ``ascending``/``descending`` for SAR when known.
        source: free-text provenance (file names, product ids).
        attrs: extra JSON-able group attributes (e.g. ``calibration`` for uncalibrated SAR), written
            when the group is created; they may not replace the attributes the store itself writes.

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


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


class SensorGroup:
    """Read access to one sensor group of an open store."""

    def __init__(self, store: CubeStore, name: str, group: zarr.Group) -> None:
        self.store = store
        self.name = name
        self.zgroup = group
        attrs = dict(group.attrs)
        try:
            self.sensor: Sensor = get_sensor(attrs["sensor"])
            self.grid = Grid.from_attrs(attrs["grid"])
            self.data: zarr.Array = group["data"]  # type: ignore[assignment]
            self.bands: tuple[str, ...] = tuple(attrs["bands"])
            time = np.asarray(group["time"][:], dtype="int64")
        except KeyError as err:
            raise StoreError(
                f"{store.path}: sensor group {name!r} lacks {err} (not a spectravlm group?)"
            ) from err
        self.times = time.astype("datetime64[s]")
        self.cloud: zarr.Array | None = group["cloud"] if "cloud" in group else None  # type: ignore[assignment]
        self.nodata: float | None = attrs.get("nodata")
        self.scale_factor = float(attrs.get("scale_factor", 1.0))
        self.add_offset = float(attrs.get("add_offset", 0.0))
        self.units: str = attrs.get("units", "")
        self.orbit: str | None = attrs.get("orbit")
        self.stats: dict[str, dict[str, float]] = attrs.get("stats", {})
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
        attrs = dict(root.attrs)
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
            self.groups[name] = SensorGroup(self, name, root[name])  # type: ignore[arg-type]
        self.targets: dict[str, zarr.Array] = {}
        if TARGETS_GROUP in root:
            tg = root[TARGETS_GROUP]
            for name in meta.get("targets", []):
                self.targets[name] = tg[name]  # type: ignore[index,assignment]

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
        """A human-readable summary (what ``spectravlm data info`` prints)."""
        lines = [
            f"cube store {self.path} (format v{self.format_version})"
            + (" [SYNTHETIC]" if self.synthetic else "")
        ]
        if self.title:
            lines.append(f"  title: {self.title}")
        for name, g in self.groups.items():
            t, c, h, w = g.data.shape
            dates = f"{g.times.min()} .. {g.times.max()}" if t else "no dates"
            crs = "no CRS" if g.grid.crs_wkt is None else g.grid.crs_wkt.split('"')[1]
            lines.append(
                f"  {name}: {g.sensor.name} {t} dates ({dates}), {c} bands {','.join(g.bands)}, "
                f"{h}x{w} px, {g.data.dtype}, chunks {g.data.chunks}, {crs}"
                + (", cloud layer" if g.cloud is not None else "")
                + (f", orbit {g.orbit}" if g.orbit else "")
                + (", stats" if g.stats else ", no stats")
            )
        for name, arr in self.targets.items():
            values = np.asarray(arr[:])
            finite = values[np.isfinite(values)]
            rng = (
                f"{finite.min():.1f}..{finite.max():.1f}, mean {finite.mean():.1f}"
                if finite.size
                else "empty"
            )
            lines.append(
                f"  target {name}: {arr.shape[0]}x{arr.shape[1]} {arr.attrs.get('units', '')} ({rng})"
            )
        return "\n".join(lines)


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
        return dict(self._root.attrs["spectravlm"])  # type: ignore[arg-type]

    def _grid_check(self, grid: Grid, what: str) -> None:
        meta = self._meta()
        for name in meta["groups"]:
            other = Grid.from_attrs(dict(self._root[name].attrs)["grid"])  # type: ignore[arg-type]
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
            return Grid.from_attrs(dict(self._root[name].attrs)["grid"])  # type: ignore[arg-type]
        return None

    def group_attrs(self, group: str) -> dict[str, Any] | None:
        """Return the attributes of group ``group`` as written so far, or ``None`` when it does not exist."""
        if group not in self._meta()["groups"]:
            return None
        return dict(self._root[group].attrs)

    def write_sensor(self, group: str, cube: SensorCube) -> None:
        """Write (or, in append mode, extend along time) sensor group ``group``."""
        from spectravlm.data.validate import check_cube

        check_cube(cube, where=f"{self.path}/{group}")
        sensor = get_sensor(cube.sensor)
        bands = sensor.canonical_names(cube.bands)
        order = np.argsort(cube.times, kind="stable")
        data = cube.data[order]
        cloud = None if cube.cloud is None else cube.cloud[order]
        seconds = cube.times[order].astype("datetime64[s]").astype("int64")
        meta = self._meta()
        if group in meta["groups"]:
            self._append_dates(group, bands, data, cloud, seconds, cube)
            return
        self._grid_check(cube.grid, f"{self.path}/{group}")
        group_attrs: dict[str, Any] = {
            "sensor": sensor.name,
            "bands": list(bands),
            "grid": cube.grid.to_attrs(),
            "nodata": cube.nodata,
            "scale_factor": cube.scale_factor,
            "add_offset": cube.add_offset,
            "units": cube.units,
            "orbit": cube.orbit,
            "source": cube.source,
            "chunking": "(time=1, band=all, y=256, x=256): one date, all bands, one tile per chunk",
        }
        clash = sorted(set(cube.attrs) & set(group_attrs))
        if clash:
            raise StoreError(f"{self.path}/{group}: extra attrs {clash} would replace the store's attrs")
        # Attributes go in with each node's creation: every later update rewrites its zarr.json (a round
        # trip through zarr's event loop and the file system), which made metadata ~half of a small write.
        g = self._root.create_group(group, attributes=group_attrs | cube.attrs)
        t, c, h, w = data.shape
        chunk_xy = (min(CHUNK_XY, h), min(CHUNK_XY, w))
        fill = cube.nodata if cube.nodata is not None else 0
        arr_attrs: dict[str, Any] = {
            "long_name": f"{sensor.platform} {sensor.kind} values",
            "units": cube.units,
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
        }
        if cube.scale_factor != 1.0 or cube.add_offset != 0.0:
            arr_attrs |= {"scale_factor": cube.scale_factor, "add_offset": cube.add_offset}
        if cube.nodata is not None:
            # xarray's own encoding of _FillValue for Zarr (base64 for floats), so open_zarr masks nodata.
            arr_attrs["_FillValue"] = FillValueCoder.encode(cube.nodata, data.dtype)
        arr = g.create_array(
            "data",
            shape=data.shape,
            chunks=(1, c, *chunk_xy),
            dtype=data.dtype,
            fill_value=fill,
            compressors=_COMPRESSOR,
            chunk_key_encoding=_CHUNK_KEYS,
            dimension_names=("time", "band", "y", "x"),
            attributes=arr_attrs,
        )
        arr[:] = data
        if cloud is not None:
            ca = g.create_array(
                "cloud",
                shape=cloud.shape,
                chunks=(1, *chunk_xy),
                dtype="uint8",
                fill_value=0,
                compressors=_COMPRESSOR,
                chunk_key_encoding=_CHUNK_KEYS,
                dimension_names=("time", "y", "x"),
                attributes={
                    "long_name": "cloud probability",
                    "units": "percent",
                    "coordinates": "spatial_ref",
                },
            )
            ca[:] = cloud
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
        _write_xy(g, cube.grid)
        meta["groups"] = [*meta["groups"], group]
        self._root.attrs["spectravlm"] = meta

    def _append_dates(
        self,
        group: str,
        bands: tuple[str, ...],
        data: np.ndarray,
        cloud: np.ndarray | None,
        seconds: np.ndarray,
        cube: SensorCube,
    ) -> None:
        g = self._root[group]
        attrs = dict(g.attrs)
        where = f"{self.path}/{group}"
        if tuple(attrs["bands"]) != bands:
            raise StoreError(
                f"{where}: cannot append bands {bands} to a group with bands {tuple(attrs['bands'])}"
            )
        if not cube.grid.same_as(Grid.from_attrs(attrs["grid"])):
            raise StoreError(f"{where}: appended data has a different grid than the stored one")
        arr: zarr.Array = g["data"]  # type: ignore[assignment]
        if arr.dtype != data.dtype:
            raise StoreError(f"{where}: appended data is {data.dtype}, the store holds {arr.dtype}")
        old_times = np.asarray(g["time"][:], dtype="int64")
        if np.isin(seconds, old_times).any():
            dup = seconds[np.isin(seconds, old_times)].astype("datetime64[s]")
            raise StoreError(f"{where}: dates {dup.tolist()} are already in the store")
        if seconds.min() <= old_times.max():
            raise StoreError(
                f"{where}: appended dates must follow the stored ones (last stored "
                f"{old_times.max().astype('datetime64[s]')}, "
                f"first new {seconds.min().astype('datetime64[s]')})"
            )
        if (cloud is None) != ("cloud" not in g):
            raise StoreError(f"{where}: appended data must have a cloud layer exactly when the store has one")
        t0, n = arr.shape[0], data.shape[0]
        arr.resize((t0 + n, *arr.shape[1:]))
        arr[t0:] = data
        if cloud is not None:
            ca: zarr.Array = g["cloud"]  # type: ignore[assignment]
            ca.resize((t0 + n, *ca.shape[1:]))
            ca[t0:] = cloud
        ta: zarr.Array = g["time"]  # type: ignore[assignment]
        ta.resize((t0 + n,))
        ta[t0:] = seconds
        if cube.source and cube.source not in attrs.get("source", ""):
            g.attrs["source"] = "; ".join(s for s in (attrs.get("source", ""), cube.source) if s)

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
        tg = root[TARGETS_GROUP] if TARGETS_GROUP in root else root.create_group(TARGETS_GROUP)
        if name in tg:
            del tg[name]
        chunk_xy = (min(CHUNK_XY, grid.height), min(CHUNK_XY, grid.width))
        arr = tg.create_array(  # type: ignore[union-attr]
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
            _write_xy(tg, grid)  # type: ignore[arg-type]
        meta = self._meta()
        if name not in meta["targets"]:
            meta["targets"] = [*meta["targets"], name]
        root.attrs["spectravlm"] = meta

    def set_group_attrs(self, group: str, attrs: dict[str, Any]) -> None:
        """Update attributes of a sensor group (used by the stats pass)."""
        self._root[group].attrs.update(attrs)


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
