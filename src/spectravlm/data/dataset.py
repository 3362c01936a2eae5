"""A map-style dataset of windows over one or many cube stores, yielding raw :class:`SensorStack` samples.

Each item is one window (B=1) with, per requested sensor group, the stored values ``[1,T,C,H,W]`` (uint16
S2 digital numbers stay uint16) together with their physical unit and the store's ``scale_factor`` and
``add_offset`` (``physical = stored * scale + offset``), the acquisition days, a validity mask and the
requested targets. Nothing is normalised here: the encoder owns normalisation (its statistics travel with
its weights) and folds the scale and offset into it. A unit the library does not know is an error when the
dataset is built; stores of several regions with different scales or offsets for one group are delivered
as float32 physical values (scale 1, offset 0) so that a batch has one encoding.

Each batch also carries two host-side facts the models use to pick fast paths without asking the device:
``all_valid`` (every pixel valid) and ``finite`` (always True: non-finite pixels are marked invalid).

Regions and stores:
    ``stores`` lists *regions*. A region is one store path/URL, or a list of stores on the same grid
    whose groups and targets are merged (e.g. an S2 store and an S1 store of one area). Stores of one
    region must share their grid exactly; regions may differ in size and CRS but not in pixel size.

Time steps (``n_times`` per group, ``None`` = all dates; shorter series are padded with masked steps):
    * ``mask``: the first ``n_times`` dates, whatever they hold; cloudy/nodata pixels and dates are
      masked (``valid == False``), never dropped.
    * ``skip``: dates without a single valid pixel in the window are dropped; the first ``n_times`` of
      the rest are kept. With a cloud layer the choice uses the cloud layer alone (cheap), so a date
      chosen that way but holding only nodata stays in, masked.
    * ``sample``: ``n_times`` dates drawn without replacement (torch's global RNG, so seeded runs
      repeat) from the dates with valid pixels, kept in time order.

Empty windows (no valid pixel in any group and date, or, when targets are requested, no finite target):
    * ``skip`` (default): found by one read pass over the windows when the dataset is built, and
      removed from :attr:`CubeDataset.windows`; :attr:`CubeDataset.n_empty` says how many.
    * ``mask``: kept; they come with ``valid == False`` everywhere and NaN targets, so every masked
      loss ignores them (no read pass at build time; better for very large or remote stores).

Store handles are opened lazily in the process that reads (each DataLoader worker opens its own, once,
and keeps them), never carried over a fork.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from spectravlm.data.batchpool import BatchPool, LeasedStack, shared_empty
from spectravlm.data.reader import ChunkSource, WindowReader, is_transient
from spectravlm.data.stats import normalisation_stats, valid_pixels
from spectravlm.data.store import CubeStore, Grid
from spectravlm.data.windows import PAD_INDEX, Window, window_grid
from spectravlm.errors import DataConfigError, StoreError, StoreReadError, UnknownUnitError
from spectravlm.sensors import canonical_unit
from spectravlm.stack import SensorSeries, SensorStack, check_sar_unit

MissingDates = Literal["mask", "skip", "sample"]
EmptyWindows = Literal["skip", "mask"]
DEFAULT_CLOUD_THRESHOLD = 50.0


@dataclass(frozen=True)
class GroupInfo:
    """What the dataset knows about one requested sensor group (the same for every region).

    Attributes:
        name: group name in the stores (``s2``, ``s1_asc``).
        sensor: catalogue sensor name.
        bands: bands delivered, in this order.
        dtype: raw stored dtype.
        units: canonical physical unit of ``stored * scale + offset`` (``reflectance``, ``dB``, ``linear``,
            ``DN``).
        scale: the stores' ``scale_factor``, or ``None`` when regions differ (then values arrive as float32
            physical values).
        offset: the stores' ``add_offset``, or ``None`` when regions differ.
        orbit: SAR orbit direction when known.
        kind: ``optical`` or ``sar``.

    """

    name: str
    sensor: str
    bands: tuple[str, ...]
    dtype: np.dtype[Any]
    units: str
    orbit: str | None
    kind: str
    scale: float | None = 1.0
    offset: float | None = 0.0


@dataclass(frozen=True)
class _RegionGroup:
    """One group of one region: where it lives and how to read it."""

    store: int
    band_idx: tuple[int, ...]
    days: np.ndarray
    nodata: float | None
    has_cloud: bool
    cloud_threshold: float
    norm_stats: dict[str, tuple[int, float, float]] | None
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class _Region:
    paths: tuple[str, ...]
    grid: Grid
    height: int
    width: int
    chunk: tuple[int, int]
    groups: dict[str, _RegionGroup]
    targets: dict[str, int]


def _open(path: str, storage_options: dict[str, Any] | None, retries: int, backoff_s: float) -> CubeStore:
    """Open a store; transient errors are retried, then raised as :class:`StoreReadError` naming the URL."""
    for attempt in range(retries + 1):
        try:
            return CubeStore.open(path, storage_options=storage_options)
        except StoreError:
            raise
        except Exception as err:  # aiohttp and other fsspec backends raise their own types
            if is_transient(err) and attempt < retries:
                time.sleep(backoff_s * 2**attempt)
                continue
            raise StoreReadError(
                f"{path}: cannot open the store after {attempt + 1} attempt(s): {type(err).__name__}: {err}"
            ) from err
    raise AssertionError("unreachable")  # pragma: no cover


def _as_regions(stores: Sequence[str | os.PathLike[str] | Sequence[str]]) -> list[tuple[str, ...]]:
    if isinstance(stores, str | os.PathLike):
        stores = [stores]
    out: list[tuple[str, ...]] = []
    for s in stores:
        if isinstance(s, str | os.PathLike):
            out.append((os.fspath(s),))
        else:
            out.append(tuple(os.fspath(p) for p in s))
    if not out or any(not r for r in out):
        raise DataConfigError(f"stores must name at least one store per region, got {stores!r}")
    return out


def _as_groups(
    groups: Sequence[str] | Mapping[str, Sequence[str] | None],
) -> dict[str, tuple[str, ...] | None]:
    if isinstance(groups, str):
        groups = [groups]
    if isinstance(groups, Mapping):
        return {g: None if b is None else tuple(b) for g, b in groups.items()}
    return {g: None for g in groups}


def _torch_dtype(dtype: np.dtype[Any]) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype


def _pixel_size(grid: Grid) -> tuple[float, float] | None:
    if grid.crs_wkt is None:
        return None
    return abs(grid.transform.a), abs(grid.transform.e)


class CubeDataset(Dataset[SensorStack]):
    """Windows over cube stores (see the module docstring for regions, time and empty-window policies).

    Args:
        stores: regions: store paths/fsspec URLs, or lists of stores on one grid.
        groups: sensor groups to load: names, or ``{name: bands or None}`` for band subsets.
        targets: target layers to load (``["agb"]``).
        window_size: window edge in pixels.
        stride: step between windows (default ``window_size``).
        n_times: time steps per group (``None``: all dates of the group).
        missing_dates: ``mask``, ``skip`` or ``sample``.
        empty_windows: ``skip`` or ``mask``.
        cloud_threshold: cloud probability (0-100) at or above which a pixel is invalid; default the
            threshold stored with the group's statistics, else 50.
        align_to_chunks: keep windows inside chunk tiles (see :func:`~spectravlm.data.windows.window_grid`).
        windows: use exactly these windows (e.g. one split) instead of the full grid.
        storage_options: fsspec options for URL stores.
        retries: extra attempts for transient remote read errors.
        retry_backoff_s: first wait before a retry (doubles on each further attempt).
        direct_decode: decode chunks with numcodecs where possible (``False``: always zarr).
        pool_slots: reusable shared-memory batches per DataLoader worker (0: a fresh one per batch).

    """

    def __init__(
        self,
        stores: Sequence[str | os.PathLike[str] | Sequence[str]],
        groups: Sequence[str] | Mapping[str, Sequence[str] | None] = ("s2",),
        targets: Sequence[str] = (),
        window_size: int = 128,
        stride: int | None = None,
        n_times: int | None = None,
        missing_dates: MissingDates = "mask",
        empty_windows: EmptyWindows = "skip",
        cloud_threshold: float | None = None,
        align_to_chunks: bool = True,
        windows: Sequence[Window] | None = None,
        storage_options: dict[str, Any] | None = None,
        retries: int = 3,
        retry_backoff_s: float = 0.2,
        direct_decode: bool = True,
        pool_slots: int = 8,
    ) -> None:
        if missing_dates not in ("mask", "skip", "sample"):
            raise DataConfigError(f"missing_dates must be 'mask', 'skip' or 'sample', got {missing_dates!r}")
        if empty_windows not in ("skip", "mask"):
            raise DataConfigError(f"empty_windows must be 'skip' or 'mask', got {empty_windows!r}")
        if n_times is not None and n_times < 1:
            raise DataConfigError(f"n_times must be >= 1 or None, got {n_times}")
        self.regions_paths = _as_regions(stores)
        self.group_request = _as_groups(groups)
        if not self.group_request:
            raise DataConfigError("request at least one sensor group")
        self.target_names = tuple(targets)
        self.window_size = window_size
        self.n_times = n_times
        self.missing_dates = missing_dates
        self.empty_windows = empty_windows
        self.storage_options = storage_options
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.direct_decode = direct_decode
        self.pool_slots = pool_slots
        self._pool = BatchPool(max(pool_slots, 1))
        self._cloud_threshold = cloud_threshold
        self.groups: dict[str, GroupInfo] = {}
        self.regions = [self._inspect(i, paths) for i, paths in enumerate(self.regions_paths)]
        self._check_pixel_sizes()
        self._pid: int | None = None
        self._units_checked: set[str] = set()
        self._readers: list[dict[str, tuple[WindowReader, WindowReader | None, WindowReader | None]]] = []
        self._target_readers: list[dict[str, WindowReader]] = []
        if windows is None:
            windows = [
                w
                for i, r in enumerate(self.regions)
                for w in window_grid(
                    r.height, r.width, window_size, stride, r.chunk, align_to_chunks, region=i
                )
            ]
        else:
            for w in windows:
                if w.region >= len(self.regions) or w.size != window_size:
                    raise DataConfigError(
                        f"window {w} does not belong to these stores/window size {window_size}"
                    )
        self.n_empty = 0
        if empty_windows == "skip":
            kept = [w for w in windows if self.has_data(w)]
            self.n_empty = len(windows) - len(kept)
            windows = kept
        self.windows: list[Window] = list(windows)

    # -- set-up ------------------------------------------------------------------------------------

    def _inspect(self, index: int, paths: tuple[str, ...]) -> _Region:
        stores = [_open(p, self.storage_options, self.retries, self.retry_backoff_s) for p in paths]
        grid = stores[0].grid if stores[0].groups else None
        for s in stores:
            if s.groups and grid is not None and not s.grid.same_as(grid):
                raise DataConfigError(
                    f"inconsistent grids in region {index}: {s.path} has {s.grid.to_attrs()} but "
                    f"{stores[0].path} has {grid.to_attrs()}; stores of one region must share one grid"
                )
        groups: dict[str, _RegionGroup] = {}
        chunk: tuple[int, int] | None = None
        for name, bands in self.group_request.items():
            holders = [i for i, s in enumerate(stores) if name in s.groups]
            if not holders:
                have = sorted({g for s in stores for g in s.groups})
                raise DataConfigError(
                    f"region {index} ({', '.join(paths)}) has no sensor group {name!r}; "
                    f"groups: {', '.join(have)}"
                )
            if len(holders) > 1:
                raise DataConfigError(
                    f"region {index}: sensor group {name!r} is in several stores of the region"
                )
            g = stores[holders[0]][name]
            try:
                units = canonical_unit(g.units)
            except UnknownUnitError as err:
                raise DataConfigError(f"{g.store.path}/{name}: {err}") from None
            info = self.groups.get(name)
            if info is None:
                wanted = g.bands if bands is None else g.sensor.canonical_names(bands)
                info = GroupInfo(
                    name=name,
                    sensor=g.sensor.name,
                    bands=tuple(wanted),
                    dtype=g.data.dtype,
                    units=units,
                    orbit=g.orbit,
                    kind=g.sensor.kind,
                    scale=g.scale_factor,
                    offset=g.add_offset,
                )
                self.groups[name] = info
            elif (g.sensor.name, g.data.dtype, units) != (info.sensor, info.dtype, info.units):
                raise DataConfigError(
                    f"{g.store.path}/{name}: sensor {g.sensor.name} {g.data.dtype} in {units!r}, but other "
                    f"regions hold {info.sensor} {info.dtype} in {info.units!r} in group {name!r}"
                )
            elif (g.scale_factor, g.add_offset) != (info.scale, info.offset):
                # regions encode this group differently: deliver float32 physical values instead
                self.groups[name] = replace(info, scale=None, offset=None)
            try:
                band_idx = tuple(g.band_index(info.bands))
            except StoreError as err:
                raise DataConfigError(str(err)) from err
            threshold = self._cloud_threshold
            if threshold is None:
                threshold = float(g.zgroup.attrs.get("cloud_threshold", DEFAULT_CLOUD_THRESHOLD))  # type: ignore[arg-type]
            groups[name] = _RegionGroup(
                store=holders[0],
                band_idx=band_idx,
                days=g.times.astype("datetime64[D]").astype(np.int64),
                nodata=g.nodata,
                has_cloud=g.cloud is not None,
                cloud_threshold=threshold,
                norm_stats=normalisation_stats(g),
                scale=g.scale_factor,
                offset=g.add_offset,
            )
            chunk = chunk or (int(g.data.chunks[2]), int(g.data.chunks[3]))
            grid = g.grid
        targets: dict[str, int] = {}
        for t in self.target_names:
            holders = [i for i, s in enumerate(stores) if t in s.targets]
            if not holders:
                have = sorted({n for s in stores for n in s.targets})
                raise DataConfigError(
                    f"region {index} ({', '.join(paths)}) has no target {t!r}; "
                    f"targets: {', '.join(have) or '(none)'}"
                )
            targets[t] = holders[0]
        assert grid is not None and chunk is not None
        if self.window_size > min(grid.height, grid.width):
            raise DataConfigError(
                f"window of {self.window_size}x{self.window_size} px is larger than the store grid of "
                f"{grid.height}x{grid.width} px ({', '.join(paths)}); choose window_size <= "
                f"{min(grid.height, grid.width)}"
            )
        return _Region(paths, grid, grid.height, grid.width, chunk, groups, targets)

    def _check_pixel_sizes(self) -> None:
        sizes = {i: _pixel_size(r.grid) for i, r in enumerate(self.regions)}
        known = {i: s for i, s in sizes.items() if s is not None}
        if known and not all(np.allclose(s, next(iter(known.values())), rtol=1e-6) for s in known.values()):
            raise DataConfigError(
                f"inconsistent grids across stores: pixel sizes {known} differ; resample the stores to one "
                "pixel size"
            )

    def _reader(self, array: Any, source: ChunkSource) -> WindowReader:
        return WindowReader(array, source, self.retries, self.retry_backoff_s, self.direct_decode)

    def _open_readers(self) -> None:
        """(Re)open the stores in this process: once per worker, kept for its lifetime."""
        self._readers, self._target_readers = [], []
        for region in self.regions:
            stores = [
                _open(p, self.storage_options, self.retries, self.retry_backoff_s) for p in region.paths
            ]
            sources = [ChunkSource(p, self.storage_options) for p in region.paths]
            readers = {}
            for name, rg in region.groups.items():
                g = stores[rg.store][name]
                readers[name] = (
                    self._reader(g.data, sources[rg.store]),
                    None if g.cloud is None else self._reader(g.cloud, sources[rg.store]),
                    None if g.mask is None else self._reader(g.mask, sources[rg.store]),
                )
            self._readers.append(readers)
            self._target_readers.append(
                {t: self._reader(stores[i].targets[t], sources[i]) for t, i in region.targets.items()}
            )
        self._pool = BatchPool(max(self.pool_slots, 1))  # slots belong to one process
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pid"], state["_readers"], state["_target_readers"] = None, [], []
        state["_pool"] = BatchPool(max(self.pool_slots, 1))
        return state

    # -- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.windows)

    def _steps(self, name: str) -> int:
        """Time steps of group ``name`` in every sample: ``n_times``, else the longest series."""
        if self.n_times is not None:
            return self.n_times
        return max(len(r.groups[name].days) for r in self.regions)

    def _valid(
        self, values: np.ndarray, cloud: np.ndarray | None, mask: np.ndarray | None, rg: _RegionGroup
    ) -> np.ndarray:
        """Compute validity ``(T,h,w)`` of raw ``(T,C,h,w)`` by the store's rule (:func:`valid_pixels`).

        The rule: nodata, non-finite values, the cloud probability and the quality mask (SCL) of the group.
        """
        return valid_pixels(values.swapaxes(0, 1), rg.nodata, cloud, rg.cloud_threshold, mask)

    def _group_window(
        self,
        region: int,
        name: str,
        rows: slice,
        cols: slice,
        policy: MissingDates,
        n_times: int | None,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw values ``(T,C,h,w)``, validity ``(T,h,w)`` and days ``(T,)`` of one group in one window.

        With ``policy="mask"`` the values are decoded straight into ``out`` (``(>=T,C,h,w)``) when given.
        """
        rg = self.regions[region].groups[name]
        data_r, cloud_r, mask_r = self._readers[region][name]
        t_all = len(rg.days)
        n = t_all if n_times is None else n_times
        if policy == "mask":
            t_idx = list(range(min(n, t_all)))
            target = None if out is None else out[: len(t_idx)]
            values = data_r.read(rows, cols, t_idx, rg.band_idx, out=target)
            cloud = None if cloud_r is None else cloud_r.read(rows, cols, t_idx)
            mask = None if mask_r is None else mask_r.read(rows, cols, t_idx)
        elif cloud_r is not None or mask_r is not None:  # choose dates from the quality layers alone (cheap)
            cloud_all = None if cloud_r is None else cloud_r.read(rows, cols)
            mask_all = None if mask_r is None else mask_r.read(rows, cols)
            clear = np.ones((t_all, rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
            if cloud_all is not None:
                clear &= cloud_all < rg.cloud_threshold
            if mask_all is not None:
                clear &= mask_all == 0
            t_idx = self._choose(np.flatnonzero(clear.any(axis=(1, 2))), n, policy)
            values = data_r.read(rows, cols, t_idx, rg.band_idx)
            cloud = None if cloud_all is None else cloud_all[t_idx]
            mask = None if mask_all is None else mask_all[t_idx]
        else:
            values_all = data_r.read(rows, cols, None, rg.band_idx)
            ok = self._valid(values_all, None, None, rg).any(axis=(1, 2))
            t_idx = self._choose(np.flatnonzero(ok), n, policy)
            values, cloud, mask = values_all[t_idx], None, None
        return values, self._valid(values, cloud, mask, rg), rg.days[t_idx]

    @staticmethod
    def _choose(usable: np.ndarray, n: int, policy: MissingDates) -> list[int]:
        if policy == "skip" or len(usable) <= n:
            return usable[:n].tolist()
        pick = torch.randperm(len(usable))[:n].sort().values.numpy()
        return usable[pick].tolist()

    def _ensure_open(self) -> None:
        if self._pid != os.getpid():
            self._open_readers()

    def has_data(self, window: Window) -> bool:
        """Whether the window has a valid pixel in some group and date (and finite targets, if requested)."""
        self._ensure_open()
        rows, cols = window.slices()
        for t in self.target_names:
            if not np.isfinite(self._target_readers[window.region][t].read(rows, cols)).any():
                return False
        for name in self.groups:
            _, valid, _ = self._group_window(window.region, name, rows, cols, "mask", None)
            if valid.any():
                return True
        return False

    def __getitem__(self, index: int) -> SensorStack:
        """Window ``index`` as a :class:`SensorStack` with ``B=1`` (``-1``: an empty padding sample)."""
        return self.read_batch([index])

    def __getitems__(self, indices: Sequence[int]) -> list[SensorStack]:
        """Read a whole batch as one :class:`SensorStack` (the DataLoader's batched fetch)."""
        return [self.read_batch(indices)]

    def padding_sample(self) -> SensorStack:
        """Make an empty sample (never read): zeros, ``valid == False``, NaN targets, index/origin ``-1``."""
        return self.read_batch([PAD_INDEX])

    def read_batch(self, indices: Sequence[int]) -> SensorStack:
        """Windows ``indices`` (``-1``: an empty padding sample) as one :class:`SensorStack` ``[B,...]``.

        The windows are decoded straight into the batch tensors, which live in shared memory inside a
        DataLoader worker, so a batch crosses to the main process without another copy. (Per-sample
        tensors concatenated by a collate function, then copied into shared memory, cost three fresh
        buffers and two copies per byte; on the S1 benchmark group that halved the throughput.) The
        buffers come from this process's :class:`~spectravlm.data.batchpool.BatchPool` and the batch is a
        :class:`~spectravlm.data.batchpool.LeasedStack`: release it when done (``CubeDataModule`` does).
        """
        self._ensure_open()
        b, s = len(indices), self.window_size
        in_worker = torch.utils.data.get_worker_info() is not None
        pool = self._pool if self.pool_slots > 0 else None
        lease = None if pool is None else pool.acquire()
        slot = None if lease is None else lease[0]

        def _empty(key: tuple[Any, ...], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            if pool is not None and slot is not None:
                return pool.tensor(slot, key, shape, dtype)
            return shared_empty(shape, dtype) if in_worker else torch.empty(shape, dtype=dtype)

        wins = [None if i == PAD_INDEX else self.windows[i] for i in indices]
        series = {}
        for name, info in self.groups.items():
            n, c = self._steps(name), len(info.bands)
            mixed = info.scale is None or info.offset is None  # regions differ: float32 physical values
            dtype = torch.float32 if mixed else _torch_dtype(info.dtype)
            values = _empty(("values", name), (b, n, c, s, s), dtype)
            valid = _empty(("valid", name), (b, n, s, s), torch.bool)
            times = torch.zeros((b, n), dtype=torch.int64)
            v_np, m_np, t_np = values.numpy(), valid.numpy(), times.numpy()
            for k, w in enumerate(wins):
                t = 0
                if w is not None:
                    rows, cols = w.slices()
                    vals, ok, days = self._group_window(
                        w.region,
                        name,
                        rows,
                        cols,
                        self.missing_dates,
                        self.n_times,
                        out=None if mixed else v_np[k],
                    )
                    t = len(days)
                    if mixed:
                        rg = self.regions[w.region].groups[name]
                        v_np[k, :t] = vals * np.float32(rg.scale) + np.float32(rg.offset)
                    elif not np.may_share_memory(vals, v_np[k]):  # "mask" decodes in place
                        v_np[k, :t] = vals
                    m_np[k, :t] = ok
                    t_np[k, :t] = days
                v_np[k, t:] = 0  # pad to n time steps with masked zeros
                m_np[k, t:] = False
            series[name] = SensorSeries(
                sensor=info.sensor,
                bands=info.bands,
                values=values,
                times=times,
                valid=valid,
                units=info.units,
                scale=1.0 if mixed else float(info.scale),  # type: ignore[arg-type]
                offset=0.0 if mixed else float(info.offset),  # type: ignore[arg-type]
                orbit=info.orbit,
                all_valid=bool(m_np.all()),  # host-side facts: models need not ask the device
                finite=True,  # non-finite pixels are invalid (valid_pixels)
            )
            if info.kind == "sar" and name not in self._units_checked and bool(m_np.any()):
                self._check_sar_units(name, series[name])
        targets = {}
        for name in self.target_names:
            tgt = _empty(("target", name), (b, s, s), torch.float32)
            t_np = tgt.numpy()
            for k, w in enumerate(wins):
                if w is None:
                    t_np[k] = np.nan
                else:
                    t_np[k] = self._target_readers[w.region][name].read(*w.slices())
            targets[name] = tgt
        origin = torch.tensor([[-1, -1] if w is None else [w.row, w.col] for w in wins], dtype=torch.int64)
        index = torch.tensor([int(i) for i in indices], dtype=torch.int64)
        if lease is None:
            return SensorStack(series=series, targets=targets, origin=origin.view(b, 2), index=index)
        return LeasedStack(
            series=series,
            targets=targets,
            origin=origin.view(b, 2),
            index=index,
            lease=pool.flags if pool is not None else None,
            slot=lease[0],
            generation=lease[1],
        )

    def _check_sar_units(self, name: str, series: SensorSeries) -> None:
        """Check the first SAR window this process reads against its stated unit (on the CPU, once)."""
        physical = series.values.float() * series.scale + series.offset
        where = f"{', '.join(self.regions_paths[0])}/{name}"
        check_sar_unit(physical, series.valid.unsqueeze(2), series.units, where)
        self._units_checked.add(name)

    # -- statistics --------------------------------------------------------------------------------

    def sensor_statistics(self) -> dict[str, list[tuple[str, dict[str, tuple[int, float, float]]]]]:
        """Per catalogue sensor, the stored statistics of every region's group of it, in the encoder's domain.

        Returns:
            ``{sensor: [(store path, {band: (count, mean, std)}), ...]}`` for the requested bands (optical:
            reflectance; SAR: dB; see :func:`spectravlm.data.stats.normalisation_stats`). Groups without
            statistics are left out; :meth:`groups_without_statistics` names them.

        """
        out: dict[str, list[tuple[str, dict[str, tuple[int, float, float]]]]] = {}
        for region in self.regions:
            for name, rg in region.groups.items():
                if rg.norm_stats is None:
                    continue
                info = self.groups[name]
                bands = {b: rg.norm_stats[b] for b in info.bands}
                out.setdefault(info.sensor, []).append((region.paths[rg.store], bands))
        return out

    def groups_without_statistics(self) -> list[str]:
        """``store/group`` of every requested group without stored statistics (``spectravlm data stats``)."""
        return [
            f"{region.paths[rg.store]}/{name}"
            for region in self.regions
            for name, rg in region.groups.items()
            if rg.norm_stats is None
        ]


# --------------------------------------------------------------------------------------------------
# Extra layers beside the bands: a separate code path (the window read above is not involved)
# --------------------------------------------------------------------------------------------------


class LayerReader:
    """Read the extra layers of a store for the windows of a batch, beside the bands.

    Layer names:

    * ``"<group>/<layer>"``: a per-date layer of a sensor group: one listed in its ``layers`` attribute
      (``s2/scl``, ``s2/ndvi``), or ``s2/mask`` (quality mask, 1 = invalid) or ``s2/cloud`` (cloud
      probability). Delivered ``[B,T,h,w]`` float32, aligned with ``batch.series[group].times`` (by day).
    * ``"static/<name>"``: a static layer (``static/dem``, ``static/lulc``): ``[B,h,w]`` float32.

    Values are NaN where the layer holds its declared fill value (``_FillValue``), for padded time steps
    and for padding samples (``index == -1``). Stores are opened lazily in the reading process.

    Args:
        dataset: the dataset whose windows the batches come from.
        layers: layer names (see above); every region must have each of them.

    Raises:
        DataConfigError: a malformed name, or a layer that some region's stores lack.

    """

    def __init__(self, dataset: CubeDataset, layers: Sequence[str]) -> None:
        self.dataset = dataset
        self.layers = tuple(layers)
        self._pid: int | None = None
        self._stores: list[list[CubeStore]] = []
        for name in self.layers:
            head, _, layer = name.partition("/")
            if not layer:
                raise DataConfigError(f"layer {name!r}: expected '<group>/<layer>' or 'static/<name>'")
            for i, paths in enumerate(dataset.regions_paths):
                stores = [
                    _open(p, dataset.storage_options, dataset.retries, dataset.retry_backoff_s) for p in paths
                ]
                if head == "static":
                    ok = any(layer in s.static for s in stores)
                    have = sorted({n for s in stores for n in s.static})
                else:
                    if head not in dataset.groups:
                        raise DataConfigError(
                            f"layer {name!r}: group {head!r} is not loaded; "
                            f"loaded groups: {', '.join(dataset.groups)}"
                        )
                    g = next(s[head] for s in stores if head in s.groups)
                    builtin = {"mask": g.mask is not None, "cloud": g.cloud is not None}
                    ok = layer in g.layers or builtin.get(layer, False)
                    have = sorted([*g.layers, *(k for k, v in builtin.items() if v)])
                if not ok:
                    raise DataConfigError(
                        f"region {i} ({', '.join(paths)}) has no layer {name!r}; "
                        f"it has {', '.join(have) or 'none'}"
                    )

    def _ensure_open(self) -> None:
        if self._pid != os.getpid():
            ds = self.dataset
            self._stores = [
                [_open(p, ds.storage_options, ds.retries, ds.retry_backoff_s) for p in paths]
                for paths in ds.regions_paths
            ]
            self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_pid": None, "_stores": []}

    def _array(self, region: int, name: str) -> tuple[Any, bool]:
        """The zarr array of layer ``name`` in ``region``, and whether it has a time axis."""
        head, _, layer = name.partition("/")
        stores = self._stores[region]
        if head == "static":
            return next(s.static[layer] for s in stores if layer in s.static), False
        g = next(s[head] for s in stores if head in s.groups)
        array = {"mask": g.mask, "cloud": g.cloud}.get(layer) if layer not in g.layers else g.layers[layer]
        return array, True

    def read(self, batch: SensorStack) -> dict[str, torch.Tensor]:
        """The requested layers for every window of ``batch`` (see the class docstring)."""
        self._ensure_open()
        if batch.index is None or batch.origin is None:
            raise DataConfigError("the batch carries no window index/origin: read it from a CubeDataset")
        size = self.dataset.window_size
        index = batch.index.tolist()
        origin = batch.origin.tolist()
        out: dict[str, torch.Tensor] = {}
        for name in self.layers:
            head = name.partition("/")[0]
            if head == "static":
                values = np.full((len(index), size, size), np.nan, dtype=np.float32)
            else:
                times = batch.series[head].times.numpy()
                values = np.full((len(index), times.shape[1], size, size), np.nan, dtype=np.float32)
            for k, (i, (row, col)) in enumerate(zip(index, origin, strict=True)):
                if i == PAD_INDEX:
                    continue
                region = self.dataset.windows[i].region
                array, per_date = self._array(region, name)
                fill = array.fill_value if "_FillValue" in array.attrs else None
                rows, cols = slice(row, row + size), slice(col, col + size)
                if not per_date:
                    values[k] = _layer_values(array[rows, cols], fill)
                    continue
                days = self.dataset.regions[region].groups[head].days
                for s, day in enumerate(times[k]):
                    hits = np.flatnonzero(days == day)
                    if day == 0 or hits.size == 0:
                        continue  # a padded step
                    if hits.size > 1:
                        raise DataConfigError(
                            f"layer {name!r}: group {head!r} has {hits.size} acquisitions on day {day}; "
                            "per-date layers are aligned by day"
                        )
                    values[k, s] = _layer_values(array[int(hits[0]), rows, cols], fill)
            out[name] = torch.from_numpy(values)
        return out

    def attach(self, batch: SensorStack) -> SensorStack:
        """``batch`` with the layers added to its targets (the augmentation then transforms them too).

        Targets are ``[B,H,W]``: a static layer is one target under its name (``static/dem``); a
        per-date layer is one target per time step, ``"s2/scl[0]"``, ``"s2/scl[1]"``, ...;
        :func:`layer_steps` stacks them back into ``[B,T,H,W]``.
        """
        from dataclasses import replace

        targets = dict(batch.targets)
        for name, values in self.read(batch).items():
            if values.ndim == 3:
                targets[name] = values
            else:
                targets |= {f"{name}[{t}]": values[:, t] for t in range(values.shape[1])}
        return replace(batch, targets=targets)


def layer_steps(batch: SensorStack, name: str) -> torch.Tensor:
    """The per-date layer ``name`` that :meth:`LayerReader.attach` put in the targets, ``[B,T,H,W]``."""
    steps: list[torch.Tensor] = []
    while f"{name}[{len(steps)}]" in batch.targets:
        steps.append(batch.targets[f"{name}[{len(steps)}]"])
    if not steps:
        raise DataConfigError(
            f"the batch carries no per-date layer {name!r}; targets: {', '.join(batch.targets)}"
        )
    return torch.stack(steps, dim=1)


def _layer_values(values: np.ndarray, fill: Any) -> np.ndarray:
    out = np.asarray(values, dtype=np.float32)
    if fill is not None and not (isinstance(fill, float) and np.isnan(fill)):
        out = np.where(np.asarray(values) == fill, np.float32(np.nan), out)
    return out


class LayeredDataset(Dataset[SensorStack]):
    """A :class:`CubeDataset` whose batches carry extra layers in their targets (see :class:`LayerReader`).

    Use it where a ``CubeDataset`` is used (DataLoader, batched fetch): the layers are read in the same
    worker as the bands and then travel, and are augmented, with the batch.
    """

    def __init__(self, dataset: CubeDataset, layers: Sequence[str]) -> None:
        self.dataset = dataset
        self.reader = LayerReader(dataset, layers)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> SensorStack:
        """Window ``index`` with its layers."""
        return self.reader.attach(self.dataset.read_batch([index]))

    def __getitems__(self, indices: Sequence[int]) -> list[SensorStack]:
        """A whole batch with its layers (the DataLoader's batched fetch)."""
        return [self.reader.attach(self.dataset.read_batch(indices))]
