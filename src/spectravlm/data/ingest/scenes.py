"""Write scenes (one date each, bands from raster files) into a sensor group, one row of chunks at a time.

Every file-based ingest (GeoTIFF/COG/JP2 folders, STAC items) ends here. A :class:`Scene` names, for one
acquisition, the raster (and band index) of each stored band, and optionally a Sentinel-2 scene
classification (SCL) raster, a cloud-probability raster and extra per-date layers. :func:`write_scenes`:

1. checks every file's header first (band count, dtype, alignment with the target grid), so that bad
   input fails before a pixel is decoded;
2. reads each scene window by window: a window is one row of the store's 256 px chunks across the whole
   grid (``256 x W``), so memory holds one such row of every band, never the scene. A 10980 x 10980 x
   13-band uint16 tile needs ~73 MB per row; each file is read through rasterio (a
   :class:`~rasterio.vrt.WarpedVRT` when it is not on the grid), the files of a row in parallel threads
   (GDAL releases the GIL while it decodes), with GDAL's block cache capped at ``gdal_cache_mb``;
3. writes the row (its chunks are encoded by zarr's thread pool) and feeds it to the statistics, so no
   pass reads the store back;
4. derives the validity layers: SCL classes in ``validity.scl_invalid`` become the group's ``mask``
   (nonzero = invalid) and the classes themselves are kept as the per-date layer ``scl``; a cloud
   probability raster becomes the ``cloud`` layer (0..100; values above 100, e.g. 255 = unknown, are
   stored as 100: never clear);
5. with no nodata declared or known for the product, watches the scene border: when one value fills a
   large share of the border (fill outside a swath or tile footprint), it warns with the share of the
   scene's pixels that hold it and the ``--nodata`` flag to pass.

SCL and cloud probability are resampled with ``nearest`` (classes and probabilities are not averaged);
bands with the chosen method; extra layers with their own.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from tqdm.auto import tqdm

from spectravlm.data.ingest.common import GroupIngest
from spectravlm.data.ingest.product import DEFAULT_SCL_INVALID, SCL_CLASSES, Fact
from spectravlm.data.store import CHUNK_XY, Grid, Layer, SensorSpec, StoreTransaction
from spectravlm.errors import IngestError

BORDER_SHARE = 0.25
"""A value on at least this share of a scene's border (with no nodata declared) triggers the warning."""
SCENE_SHARE = 0.01
"""... when it also fills at least this share of the scene."""


@dataclass(frozen=True)
class Source:
    """One band of a raster: a path or URL rasterio opens, and the 1-based band index."""

    path: str
    index: int = 1


@dataclass
class Scene:
    """What is read for one acquisition.

    Attributes:
        time: acquisition time (UTC).
        bands: the source of each stored band, in stored order.
        scl: Sentinel-2 scene classification raster, or ``None``.
        cloud: cloud-probability raster (percent), or ``None``.
        layers: sources of extra per-date layers by layer name.
        origin: where the scene came from (a folder, a STAC item id), named in messages.

    """

    time: np.datetime64
    bands: tuple[Source, ...]
    scl: Source | None = None
    cloud: Source | None = None
    layers: dict[str, Source] = field(default_factory=dict)
    origin: str = ""

    @property
    def files(self) -> tuple[str, ...]:
        """The band rasters, in stored band order."""
        return tuple(s.path for s in self.bands)


@dataclass(frozen=True)
class Validity:
    """How quality layers become validity.

    Attributes:
        scl_invalid: SCL classes that make a pixel invalid (default: no data, saturated, cloud shadow,
            medium and high cloud probability, cirrus; add 11 for snow).
        cloud_threshold: cloud probability (percent) at or above which a pixel is invalid.

    """

    scl_invalid: tuple[int, ...] = DEFAULT_SCL_INVALID
    cloud_threshold: float = 50.0

    def rule(self) -> str:
        """The mask rule stored with the ``mask`` array."""
        names = ", ".join(f"{c} {SCL_CLASSES.get(c, '?')}" for c in self.scl_invalid)
        return f"Sentinel-2 SCL classes invalid: {names}"


@dataclass(frozen=True)
class LayerSpec:
    """An extra per-date layer: its units and description, and how to resample it onto the grid.

    Attributes:
        units: the layer's units (``1`` for an index, ``percent``, ``class``, ``m``).
        long_name: a human-readable name.
        nodata: value meaning "no value" (default: the file's).
        resampling: rasterio resampling method onto the grid (default ``nearest``).

    """

    units: str
    long_name: str = ""
    nodata: float | None = None
    resampling: str = "nearest"


def open_raster(path: str) -> rasterio.DatasetReader:
    """Open a raster (path or URL) with rasterio; an :class:`IngestError` naming it when that fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        raise IngestError(f"{path}: cannot be read as a raster: {err}") from err


def grid_reader(
    stack: ExitStack,
    path: str,
    grid: Grid,
    on_grid: bool,
    resampling: Resampling,
    nodata: float | None,
    nested: bool = True,
) -> Any:
    """A dataset to read ``grid`` windows from: the file itself, a nested-grid view, or a warped view.

    With ``nearest`` resampling, a file whose grid nests in the target grid (same CRS, pixel an integer
    multiple of the target's, origins a whole number of target pixels apart: Sentinel-2's 20 m and 60 m
    bands on its 10 m grid) is read at its own resolution and each pixel repeated, which is what GDAL's
    nearest warp gives (pixel-centre sampling) at a fraction of its cost; ``nested=False`` forces the warp.
    """
    src = stack.enter_context(open_raster(path))
    if on_grid:
        return src
    if nested and resampling == Resampling.nearest:
        fast = NestedReader.of(src, grid)
        if fast is not None:
            return fast
    src_nodata = src.nodata if nodata is None else nodata
    assert grid.crs_wkt is not None  # check_alignment refuses a warp without CRS
    return stack.enter_context(
        WarpedVRT(
            src,
            crs=CRS.from_wkt(grid.crs_wkt),
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            src_nodata=src_nodata,
            nodata=src_nodata,
        )
    )


class NestedReader:
    """Reads target-grid windows of a raster whose grid nests in the target grid (see :func:`grid_reader`).

    Target pixel ``(i, j)`` is source pixel ``((i + ky) // f, (j + kx) // f)`` with ``f`` the integer pixel
    ratio and ``(ky, kx)`` the target origin's offset from the source origin in target pixels.
    """

    def __init__(self, src: Any, factor: int, ky: int, kx: int, width: int) -> None:
        self.src = src
        self.f = factor
        self.ky = ky
        self.kx = kx
        self.width = width

    @classmethod
    def of(cls, src: Any, grid: Grid) -> NestedReader | None:
        """The nested view of ``src`` on ``grid``, or ``None`` when the grids do not nest."""
        from spectravlm.data.ingest.geotiff import canonical_crs_wkt

        t, g = src.transform, grid.transform
        if grid.crs_wkt is None or canonical_crs_wkt(src.crs) != grid.crs_wkt:
            return None
        if t.b or t.d or g.b or g.d or g.a <= 0 or g.e >= 0:
            return None
        ratio = t.a / g.a
        factor = round(ratio)
        if factor < 1 or abs(ratio - factor) > 1e-9 * factor or abs(-t.e / -g.e - factor) > 1e-9 * factor:
            return None
        kx_f, ky_f = (g.c - t.c) / g.a, (g.f - t.f) / -g.e
        kx, ky = round(kx_f), round(ky_f)
        if abs(kx_f - kx) > 1e-6 or abs(ky_f - ky) > 1e-6:
            return None
        if kx < 0 or ky < 0 or (kx + grid.width - 1) // factor >= src.width:
            return None
        if (ky + grid.height - 1) // factor >= src.height:
            return None
        return cls(src, factor, ky, kx, grid.width)

    def read(self, index: int, window: Window, out: np.ndarray | None = None) -> np.ndarray:
        """Band ``index`` over target ``window`` (``(h, w)``; into ``out`` when given)."""
        f = self.f
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        s0, s1 = (r0 + self.ky) // f, (r0 + h - 1 + self.ky) // f + 1
        t0, t1 = (c0 + self.kx) // f, (c0 + w - 1 + self.kx) // f + 1
        block = self.src.read(index, window=Window(t0, s0, t1 - t0, s1 - s0))
        if f > 1:
            block = np.repeat(np.repeat(block, f, axis=0), f, axis=1)
        dy, dx = r0 + self.ky - s0 * f, c0 + self.kx - t0 * f
        view = block[dy : dy + h, dx : dx + w]
        if out is None:
            return np.ascontiguousarray(view)
        out[...] = view
        return out


class _BorderWatch:
    """The most common border value of a scene and how many pixels hold it (module docstring, step 5)."""

    def __init__(self, edge: np.ndarray) -> None:
        values, counts = np.unique(edge, return_counts=True)
        k = int(np.argmax(counts))
        self.value = values[k]
        self.border_share = counts[k] / edge.size
        self.active = self.border_share >= BORDER_SHARE and not (
            np.issubdtype(edge.dtype, np.floating) and np.isnan(self.value)
        )
        self.count = 0
        self.total = 0

    def add(self, slab: np.ndarray) -> None:
        if self.active:
            self.count += int((slab == self.value).all(0).sum())
            self.total += slab.shape[1] * slab.shape[2]

    def message(self, origin: str) -> str | None:
        if not self.active or self.total == 0 or self.count / self.total < SCENE_SHARE:
            return None
        v = self.value.item()
        return (
            f"{origin}: value {v:g} fills {self.count / self.total:.1%} of the scene "
            f"({self.border_share:.0%} of its border) and no nodata is declared, so it is stored as data; "
            "if it marks no data, "
            f"ingest again with --nodata {v:g}"
        )


def _border(reader: Any, index: int, grid: Grid) -> np.ndarray:
    """The band's outer ring of pixels on the grid (top, bottom, left and right edges), flattened."""
    h, w = grid.height, grid.width
    return np.concatenate(
        [
            reader.read(index, window=Window(0, 0, w, 1)).ravel(),
            reader.read(index, window=Window(0, h - 1, w, 1)).ravel(),
            reader.read(index, window=Window(0, 0, 1, h)).ravel(),
            reader.read(index, window=Window(w - 1, 0, 1, h)).ravel(),
        ]
    )


class _SceneReader:
    """The open rasters of one scene, read one row of chunks at a time (files in parallel threads)."""

    def __init__(
        self,
        scene: Scene,
        grid: Grid,
        on_grid: dict[str, bool],
        resampling: Resampling,
        nodata: float | None,
        layers: dict[str, LayerSpec],
        layer_dtypes: dict[str, str],
        pool: ThreadPoolExecutor,
        nested: bool = True,
    ) -> None:
        self.stack = ExitStack()
        self.pool = pool
        self.by_path: dict[str, list[tuple[int, int]]] = {}
        for pos, ref in enumerate(scene.bands):
            self.by_path.setdefault(ref.path, []).append((pos, ref.index))
        self.readers = {
            p: grid_reader(self.stack, p, grid, on_grid[p], resampling, nodata, nested) for p in self.by_path
        }
        self.extra: dict[str, tuple[Any, int, np.dtype[Any] | None]] = {}
        if scene.scl is not None:
            r = grid_reader(
                self.stack, scene.scl.path, grid, on_grid[scene.scl.path], Resampling.nearest, None
            )
            self.extra["scl"] = (r, scene.scl.index, np.dtype("uint8"))
        if scene.cloud is not None:
            path = scene.cloud.path
            r = grid_reader(self.stack, path, grid, on_grid[path], Resampling.nearest, None)
            self.extra["cloud"] = (r, scene.cloud.index, None)
        for name, ref in scene.layers.items():
            if name in layers:
                method = Resampling[layers[name].resampling]
                r = grid_reader(self.stack, ref.path, grid, on_grid[ref.path], method, layers[name].nodata)
                self.extra[name] = (r, ref.index, np.dtype(layer_dtypes[name]))

    def __enter__(self) -> _SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _read_file(self, path: str, window: Window, slab: np.ndarray) -> None:
        members = self.by_path[path]
        if len(members) == 1:
            pos, idx = members[0]
            self.readers[path].read(idx, window=window, out=slab[pos])
            return
        values = self.readers[path].read([i for _, i in members], window=window)
        for k, (pos, _) in enumerate(members):
            slab[pos] = values[k]

    @staticmethod
    def _read_extra(item: tuple[Any, int, np.dtype[Any] | None], window: Window) -> np.ndarray:
        reader, idx, out_dtype = item
        values = reader.read(idx, window=window)
        return values if out_dtype is None else values.astype(out_dtype, copy=False)

    def read_row(
        self, r0: int, rh: int, w: int, n_bands: int, dtype: str
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rows ``r0 .. r0 + rh`` of every band ``(C, rh, w)`` and of the extra rasters."""
        window = Window(0, r0, w, rh)
        slab = np.empty((n_bands, rh, w), dtype=dtype)
        futures = [self.pool.submit(self._read_file, p, window, slab) for p in self.by_path]
        extra = {name: self.pool.submit(self._read_extra, item, window) for name, item in self.extra.items()}
        for f in futures:
            f.result()
        return slab, {name: f.result() for name, f in extra.items()}


def write_scenes(
    tx: StoreTransaction,
    group: str,
    sensor: str,
    bands: tuple[str, ...],
    scenes: Sequence[Scene],
    grid: Grid,
    check: Any,
    *,
    units: str,
    dtype: str,
    scale: Fact,
    offset: Fact,
    nodata: Fact | None,
    resampling: Resampling = Resampling.nearest,
    validity: Validity | None = None,
    layers: dict[str, LayerSpec] | None = None,
    stats: bool = True,
    orbit: str | None = None,
    source: str = "",
    attrs: dict[str, Any] | None = None,
    progress: bool = True,
    read_threads: int = 2,
    gdal_cache_mb: int = 256,
    nested_reads: bool = True,
) -> list[str]:
    """Write ``scenes`` (ascending, unique times) as sensor group ``group`` of the open transaction.

    Args:
        tx: the open store transaction.
        group: the sensor group (created, or extended by later dates).
        sensor: catalogue sensor name.
        bands: canonical band names, in the order of each scene's ``bands``.
        scenes: the scenes, ascending in time.
        grid: the target grid.
        check: ``check(src, grid) -> bool``: raises when a file cannot be put on the grid, True when it
            is on it already (the caller's alignment rule).
        units: canonical units after scaling.
        dtype: the dtype every band file has.
        scale: scale factor and its source.
        offset: add offset and its source.
        nodata: the raw nodata value and its source, or ``None``.
        resampling: kernel for band files not on the grid.
        validity: how SCL / cloud-probability sources become validity (default :class:`Validity`).
        layers: the extra per-date layers the scenes provide.
        stats: accumulate statistics during the write.
        orbit: SAR orbit direction.
        source: provenance text.
        attrs: extra group attributes.
        progress: show a progress bar (one step per row of chunks).
        read_threads: threads reading the files of one row.
        gdal_cache_mb: GDAL block cache during the ingest (bounds the memory GDAL keeps).
        nested_reads: read files on nested grids at their own resolution (see :func:`grid_reader`);
            ``False`` sends them through GDAL's warper (the reference the fast path is tested against).

    Returns:
        Warnings given (border fill), also issued with :func:`warnings.warn`.

    """
    validity = validity or Validity()
    layers = layers or {}
    if not scenes:
        raise IngestError(f"{group}: no scenes to write")
    times = np.array([s.time for s in scenes], dtype="datetime64[s]")
    has_scl = [s.scl is not None for s in scenes]
    has_cloud = [s.cloud is not None for s in scenes]
    for what, flags in (("an SCL layer", has_scl), ("a cloud-probability layer", has_cloud)):
        if any(flags) and not all(flags):
            lacking = [str(s.time) for s, f in zip(scenes, flags, strict=True) if not f]
            raise IngestError(f"{group}: some scenes have {what}, the dates {', '.join(lacking)} do not")
    for name in layers:
        lacking = [str(s.time) for s in scenes if name not in s.layers]
        if lacking:
            raise IngestError(f"{group}: layer {name!r} is missing for the dates {', '.join(lacking)}")
    nodata_value = None if nodata is None else nodata.value
    on_grid: dict[str, bool] = {}
    layer_dtypes: dict[str, str] = {}
    for scene in scenes:  # header checks first: fail before any pixel is decoded
        for src_ref in scene.bands:
            with open_raster(src_ref.path) as src:
                if not 1 <= src_ref.index <= src.count:
                    raise IngestError(f"{src_ref.path}: {src.count} bands, no band {src_ref.index} to read")
                if src.dtypes[src_ref.index - 1] != dtype:
                    raise IngestError(
                        f"{src_ref.path}: dtype {src.dtypes[src_ref.index - 1]}, expected {dtype} "
                        f"like {scenes[0].bands[0].path}"
                    )
                on_grid[src_ref.path] = check(src, grid)
        extras = [("scl", scene.scl), ("cloud", scene.cloud), *scene.layers.items()]
        for name, ref in extras:
            if ref is None:
                continue
            with open_raster(ref.path) as src:
                on_grid[ref.path] = check(src, grid)
                ref_dtype = np.dtype(src.dtypes[ref.index - 1])
                if name in ("scl", "cloud") and ref_dtype.kind not in "ui":
                    what = "SCL classes" if name == "scl" else "cloud probability in percent 0..100"
                    raise IngestError(f"{ref.path}: dtype {ref_dtype}; expected integer {what}")
                if name in layers:
                    layer_dtypes.setdefault(name, src.dtypes[ref.index - 1])
    group_attrs = dict(attrs or {}) | {
        "scale_source": scale.source,
        "offset_source": offset.source,
        "nodata_source": "none declared" if nodata is None else nodata.source,
    }
    layer_descr: dict[str, Layer] = {}
    if any(has_scl):
        layer_descr["scl"] = Layer(
            None,
            "class",
            "Sentinel-2 scene classification",
            None,
            "uint8",
            {"flag_values": list(SCL_CLASSES), "flag_meanings": " ".join(SCL_CLASSES.values())},
        )
    for name, lspec in layers.items():
        layer_descr[name] = Layer(None, lspec.units, lspec.long_name, lspec.nodata, layer_dtypes[name])
    spec = SensorSpec(
        sensor=sensor,
        bands=bands,
        times=times,
        grid=grid,
        dtype=dtype,
        nodata=nodata_value,
        scale_factor=float(scale.value if scale.value is not None else 1.0),
        add_offset=float(offset.value if offset.value is not None else 0.0),
        units=units,
        orbit=orbit,
        source=source,
        attrs=group_attrs,
        cloud=any(has_cloud),
        mask_rule=validity.rule() if any(has_scl) else None,
        layers=layer_descr,
    )
    writer = GroupIngest(
        tx, group, spec, stats=stats, cloud_threshold=validity.cloud_threshold, background=True
    )
    if any(has_cloud) and "cloud_threshold" not in (tx.group_attrs(group) or {}):
        tx.set_group_attrs(group, {"cloud_threshold": validity.cloud_threshold})
    messages: list[str] = []
    h, w = grid.height, grid.width
    rows = list(range(0, h, CHUNK_XY))
    invalid = np.array(validity.scl_invalid, dtype=np.int64)
    with (
        rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb),
        ThreadPoolExecutor(max(read_threads, 1)) as pool,
        ThreadPoolExecutor(1) as prefetch,
        tqdm(total=len(scenes) * len(rows), desc=f"ingest {group}", disable=not progress) as bar,
    ):
        for t, scene in enumerate(scenes):
            with _SceneReader(
                scene, grid, on_grid, resampling, nodata_value, layers, layer_dtypes, pool, nested_reads
            ) as sr:
                watch = None
                if nodata is None:
                    first = scene.bands[0]
                    watch = _BorderWatch(_border(sr.readers[first.path], first.index, grid))
                # the next row is read (GDAL, GIL released) while this one is encoded and written
                ahead = prefetch.submit(sr.read_row, rows[0], min(CHUNK_XY, h), w, len(bands), dtype)
                for k, r0 in enumerate(rows):
                    slab, got = ahead.result()
                    if k + 1 < len(rows):
                        r1 = rows[k + 1]
                        ahead = prefetch.submit(sr.read_row, r1, min(CHUNK_XY, h - r1), w, len(bands), dtype)
                    mask = None
                    layer_values = {name: got[name] for name in layers}
                    if "scl" in got:
                        mask = np.isin(got["scl"], invalid).astype(np.uint8)
                        layer_values["scl"] = got["scl"]
                    cloud = None if "cloud" not in got else np.minimum(got["cloud"], 100).astype(np.uint8)
                    writer.write(t, slab, row=r0, cloud=cloud, mask=mask, layers=layer_values)
                    if watch is not None:
                        watch.add(slab)
                    bar.update(1)
            if watch is not None and (msg := watch.message(scene.origin or str(scene.time))):
                warnings.warn(msg, stacklevel=2)
                messages.append(msg)
    writer.finish()
    return messages
