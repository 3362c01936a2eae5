"""Batches of pixel time series for Lightning: :class:`PixelBatch` and :class:`PixelSeriesDataModule`.

Axis legend: ``B`` samples, ``T`` dates of one sensor group, ``C`` bands, ``k`` neighbourhood edge, ``S``
static
covariates, ``T'`` dates of the per-date covariates, ``K`` per-date covariates.

A :class:`PixelBatch` carries the same :class:`~spectravlm.stack.SensorStack` the cube loader gives
(``[B,T,C,k,k]`` per group: stored values with their unit, scale and offset, dates in days since 1970, a
validity mask), so the sensor-native encoder normalises and tokenizes it as it does windows; beside it the
target ``[B]`` (and its standard error), the static covariates ``[B,S]`` and the per-date covariates
``[B,T',K]`` with their dates, raw (NaN where missing): the model normalises covariates with the training
split's statistics it keeps (:meth:`PixelSeriesDataModule.covariate_statistics`).

The data module reads a points store into memory once (``read_points_store``: a 100k-sample, 12-date,
10-band store of single pixels is ~50 MB), splits its samples by **spatial blocks** (squares of
``block_size`` in the samples' coordinate units, dealt to train/val/test in a seeded order until each split
holds its share of samples: samples of one block, hence every sample at one pixel, share a split), and gives
each rank a disjoint share of every epoch through :class:`~spectravlm.data.windows.WindowSampler`, padded with
empty samples (target NaN, nothing valid) so that ranks step together. Samples without a target are kept
for ``predict`` only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from spectravlm.data.points.pointstore import read_points_store
from spectravlm.data.points.series import PixelSeries
from spectravlm.data.windows import PAD_INDEX, SPLITS, WindowSampler, dist_rank_world
from spectravlm.errors import DataConfigError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack

EPOCH = np.datetime64("1970-01-01", "D")


@dataclass
class PixelBatch:
    """A batch of pixel time series (see the module docstring).

    Attributes:
        stack: per sensor group ``[B,T,C,k,k]`` series (no dense targets).
        target: ``[B]`` float32 target (NaN: none, or a padding sample).
        target_se: ``[B]`` float32 standard error of the target (NaN: unknown).
        static: ``[B,S]`` float32 static covariates (NaN: missing).
        dynamic: ``[B,T',K]`` float32 per-date covariates (NaN: missing or padded).
        dynamic_times: ``[B,T']`` int64 days since 1970-01-01 of ``dynamic`` (0: padded).
        index: ``[B]`` int64 sample index in the store (``-1``: padding).

    """

    stack: SensorStack
    target: Tensor
    target_se: Tensor
    static: Tensor
    dynamic: Tensor
    dynamic_times: Tensor
    index: Tensor

    @property
    def batch_size(self) -> int:
        """``B``."""
        return int(self.target.shape[0])

    def to(self, *args: Any, **kwargs: Any) -> PixelBatch:
        """Move every tensor (Lightning calls this to put a batch on the device)."""
        stack = self.stack.to(*args, **kwargs)
        device = next(iter(stack.series.values())).values.device
        return PixelBatch(
            stack=stack,
            **{k: getattr(self, k).to(device=device) for k in
               ("target", "target_se", "static", "dynamic", "dynamic_times", "index")},
        )  # fmt: skip

    def pin_memory(self) -> PixelBatch:
        """Pinned copy, for ``DataLoader(pin_memory=True)``."""
        return PixelBatch(
            stack=self.stack.pin_memory(),
            **{k: getattr(self, k).pin_memory() for k in
               ("target", "target_se", "static", "dynamic", "dynamic_times", "index")},
        )  # fmt: skip


def spatial_split(
    x: np.ndarray,
    y: np.ndarray,
    block_size: float,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Sample indices per split, by square blocks of ``block_size`` (coordinate units).

    Blocks are shuffled with ``seed`` and dealt in that order: the train split takes blocks until it holds
    ``fractions[0]`` of the samples, then val, then test (every split with a positive fraction gets at least
    one block when there are at least three). Samples of one block are in one split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise DataConfigError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    if not block_size > 0:
        raise DataConfigError(f"block_size must be positive, got {block_size}")
    bx = np.floor(np.asarray(x) / block_size).astype(np.int64)
    by = np.floor(np.asarray(y) / block_size).astype(np.int64)
    blocks, inverse, counts = np.unique(
        np.stack([bx, by], 1), axis=0, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    order = np.random.default_rng(seed).permutation(len(blocks))
    cum = np.cumsum(counts[order]) / counts.sum()
    bounds = np.cumsum(fractions)[:2]
    which = np.searchsorted(bounds, cum - 0.5 * counts[order] / counts.sum())  # by each block's midpoint
    which = np.minimum(which, 2)
    if len(blocks) >= 3:  # each split with a share gets a block: take it from the largest split
        for s in range(3):
            if fractions[s] > 0 and not (which == s).any():
                donor = int(np.argmax([(which == d).sum() for d in range(3)]))
                spots = np.flatnonzero(which == donor)
                which[spots[-1] if s > donor else spots[0]] = s
    split_of_block = np.empty(len(blocks), dtype=np.int64)
    split_of_block[order] = which
    per_sample = split_of_block[inverse]
    return {name: np.flatnonzero(per_sample == i) for i, name in enumerate(SPLITS)}


def auto_block_size(x: np.ndarray, y: np.ndarray) -> float:
    """The default block edge: the samples' larger extent divided by 8 (about 64 blocks over the area)."""
    extent = max(float(np.ptp(x)) if len(x) else 0.0, float(np.ptp(y)) if len(y) else 0.0)
    return max(extent / 8.0, 1e-9)


class PixelSeriesDataset(Dataset[PixelBatch]):
    """The samples ``indices`` of a :class:`PixelSeries` as :class:`PixelBatch` es (batched fetch).

    Args:
        series: the samples (in memory).
        indices: which samples, in dataset order.
        groups: sensor groups to deliver.
        static: static covariates to deliver, in order.
        dynamic: per-date covariates to deliver, in order.

    """

    def __init__(
        self,
        series: PixelSeries,
        indices: np.ndarray,
        groups: Sequence[str],
        static: Sequence[str],
        dynamic: Sequence[str],
    ) -> None:
        self.series = series
        self.indices = np.asarray(indices, dtype=np.int64)
        self.groups = tuple(groups)
        self.static = tuple(static)
        self.dynamic = tuple(dynamic)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> PixelBatch:
        """Sample ``i`` as a batch of one."""
        return self.batch([i])

    def __getitems__(self, positions: Sequence[int]) -> list[PixelBatch]:
        """A whole batch (the DataLoader's batched fetch)."""
        return [self.batch(positions)]

    def batch(self, positions: Sequence[int]) -> PixelBatch:
        """The samples at ``positions`` of this dataset (``-1``: an empty padding sample)."""
        pos = np.asarray(list(positions), dtype=np.int64)
        pad = pos == PAD_INDEX
        idx = np.where(pad, 0, self.indices[np.where(pad, 0, pos)])
        s = self.series
        series = {}
        for g in self.groups:
            grp = s.groups[g]
            assert grp.valid is not None
            valid = grp.valid[idx] & ~pad[:, None, None, None]
            steps = int((~np.isnat(grp.times[idx]) & ~pad[:, None]).sum(1).max(initial=0))
            steps = max(steps, 1)
            values = grp.values[idx, :steps]
            valid = valid[:, :steps]
            if values.dtype.kind == "f":
                values = np.where(valid[:, :, None], values, values.dtype.type(0))
            days = (grp.times[idx, :steps].astype("datetime64[D]") - EPOCH).astype(np.int64)
            days = np.where(np.isnat(grp.times[idx, :steps]) | pad[:, None], 0, days)
            series[g] = SensorSeries(
                sensor=grp.sensor,
                bands=tuple(grp.bands),
                values=torch.from_numpy(np.ascontiguousarray(values)),
                times=torch.from_numpy(days),
                valid=torch.from_numpy(np.ascontiguousarray(valid)),
                units=grp.units,
                scale=grp.scale,
                offset=grp.offset,
                orbit=grp.orbit,
                all_valid=bool(valid.all()),
                finite=True,
            )
        b = len(pos)
        nan = np.float32(np.nan)
        target = np.full(b, nan, np.float32) if s.target is None else np.where(pad, nan, s.target[idx])
        se = np.full(b, nan, np.float32) if s.target_se is None else np.where(pad, nan, s.target_se[idx])
        static = (
            np.stack([np.where(pad, nan, s.static[n].values[idx]) for n in self.static], 1)
            if self.static
            else np.zeros((b, 0), np.float32)
        )
        if self.dynamic and s.dynamic_times is not None:
            dyn = np.stack([s.dynamic[n].values[idx] for n in self.dynamic], -1)
            dyn = np.where(pad[:, None, None], nan, dyn)
            dt = s.dynamic_times[idx]
            dyn_days = np.where(
                np.isnat(dt) | pad[:, None], 0, (dt.astype("datetime64[D]") - EPOCH).astype(np.int64)
            )
        else:
            dyn = np.zeros((b, 0, 0), np.float32)
            dyn_days = np.zeros((b, 0), np.int64)
        return PixelBatch(
            stack=SensorStack(series=series, index=torch.from_numpy(np.where(pad, PAD_INDEX, idx))),
            target=torch.from_numpy(target.astype(np.float32)),
            target_se=torch.from_numpy(se.astype(np.float32)),
            static=torch.from_numpy(static.astype(np.float32)),
            dynamic=torch.from_numpy(dyn.astype(np.float32)),
            dynamic_times=torch.from_numpy(dyn_days.astype(np.int64)),
            index=torch.from_numpy(np.where(pad, PAD_INDEX, idx)),
        )


def _first(batches: Sequence[PixelBatch]) -> PixelBatch:
    """Collate of a batched fetch: the dataset already returns the whole batch."""
    if len(batches) != 1:
        raise DataConfigError("PixelSeriesDataset batches are fetched whole (one item per batch)")
    return batches[0]


class PixelSeriesDataModule(L.LightningDataModule):
    """Train/val/test batches of a points store, split by spatial blocks (see the module docstring).

    Args:
        store: a points store (``spectravlm data sample`` / ``spectravlm data points series``).
        groups: sensor groups to deliver (default: all).
        static: static covariates (default: all the store has; ``[]``: none).
        dynamic: per-date covariates (default: all; ``[]``: none).
        block_size: edge of the split blocks in the samples' coordinate units (metres, or pixels for a store
            without CRS); default: the samples' extent / 8.
        split_fractions: train, val, test shares of the samples.
        seed: seed of the split and of the epoch shuffles.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (the data is in memory: 0 is usually fastest).
        rank: this process's rank (default: the trainer's, else torch.distributed's).
        world_size: number of ranks (default likewise).

    """

    def __init__(
        self,
        store: str,
        groups: Sequence[str] | None = None,
        static: Sequence[str] | None = None,
        dynamic: Sequence[str] | None = None,
        block_size: float | None = None,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.store = os.fspath(store)
        self.groups = None if groups is None else list(groups)
        self.static = None if static is None else list(static)
        self.dynamic = None if dynamic is None else list(dynamic)
        self.block_size = block_size
        self.split_fractions = (
            float(split_fractions[0]),
            float(split_fractions[1]),
            float(split_fractions[2]),
        )
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._rank, self._world_size = rank, world_size
        self.series: PixelSeries | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.datasets: dict[str, PixelSeriesDataset] = {}

    # -- set-up ------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Read the store, split the labelled samples by spatial blocks, build one dataset per split."""
        if self.datasets:
            return
        series = read_points_store(self.store)
        self.series = series
        groups = list(series.groups) if self.groups is None else self.groups
        checks: tuple[tuple[str, Any, str], ...] = (
            *((g, series.groups, "sensor group") for g in groups),
            *((n, series.static, "static covariate") for n in (self.static or [])),
            *((n, series.dynamic, "per-date covariate") for n in (self.dynamic or [])),
        )
        for name, have, kind in checks:
            if name not in have:
                raise DataConfigError(
                    f"{self.store}: no {kind} {name!r}; the store has {', '.join(have) or '(none)'}"
                )
        self.groups = groups
        self.static = list(series.static) if self.static is None else self.static
        self.dynamic = list(series.dynamic) if self.dynamic is None else self.dynamic
        labelled = (
            np.flatnonzero(np.isfinite(series.target)) if series.target is not None else np.zeros(0, int)
        )
        if self.block_size is None:
            self.block_size = (
                auto_block_size(series.x[labelled], series.y[labelled]) if len(labelled) else 1.0
            )
        parts = spatial_split(
            series.x[labelled], series.y[labelled], self.block_size, self.split_fractions, self.seed
        )
        self.splits = {name: labelled[idx] for name, idx in parts.items()}
        self.splits["predict"] = np.arange(series.n_samples)
        self.datasets = {
            name: PixelSeriesDataset(series, idx, self.groups, self.static, self.dynamic)
            for name, idx in self.splits.items()
        }

    @property
    def bands(self) -> dict[str, list[str]]:
        """Bands per delivered sensor group."""
        self.setup()
        assert self.series is not None and self.groups is not None
        return {g: list(self.series.groups[g].bands) for g in self.groups}

    @property
    def neighbourhood(self) -> int:
        """``k``: the neighbourhood edge of the samples."""
        self.setup()
        assert self.series is not None
        return self.series.neighbourhood

    @property
    def dynamic_steps(self) -> int:
        """The most per-date covariate dates of any sample (the length the model reserves)."""
        self.setup()
        s = self.series
        if not self.dynamic or s is None or s.dynamic_times is None:
            return 0
        return int((~np.isnat(s.dynamic_times)).sum(1).max(initial=0))

    @property
    def target_facts(self) -> tuple[str, str]:
        """``(name, units)`` of the store's target."""
        self.setup()
        assert self.series is not None
        return self.series.target_name, self.series.target_units

    def rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: the constructor's, else the trainer's, else torch.distributed's."""
        if self._rank is not None or self._world_size is not None:
            return self._rank or 0, self._world_size or 1
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return dist_rank_world()

    def _loader(self, split: str, shuffle: bool) -> DataLoader[PixelBatch]:
        self.setup()
        ds = self.datasets[split]
        if len(ds) == 0:
            raise DataConfigError(
                f"the {split} split of {self.store} has no labelled sample; use a smaller block_size "
                f"({self.block_size}) or other split_fractions {self.split_fractions}"
            )
        rank, world = self.rank_world()
        sampler = WindowSampler(len(ds), shuffle, self.seed, rank, world, pad_to_even=True)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_first,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[PixelBatch]:
        """Shuffled training samples."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[PixelBatch]:
        """Validation samples, in order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[PixelBatch]:
        """Test samples, in order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[PixelBatch]:
        """Every sample of the store (labelled or not), in order."""
        return self._loader("predict", shuffle=False)

    # -- statistics from the training split --------------------------------------------------------

    def sensor_statistics(self) -> dict[str, list[tuple[str, dict[str, tuple[int, float, float]]]]]:
        """Per catalogue sensor, ``[(source, {band: (count, mean, std)})]`` of the training samples.

        Over their valid pixels, in the encoder's domain (optical: reflectance; SAR: dB), the format of
        :meth:`spectravlm.data.dataset.CubeDataset.sensor_statistics`.
        """
        self.setup()
        assert self.series is not None and self.groups is not None
        idx = self.splits["train"]
        out: dict[str, list[tuple[str, dict[str, tuple[int, float, float]]]]] = {}
        for g in self.groups:
            grp = self.series.groups[g]
            assert grp.valid is not None
            values = grp.values[idx].astype(np.float64) * grp.scale + grp.offset  # (N, T, C, k, k)
            ok = np.broadcast_to(grp.valid[idx][:, :, None], values.shape)
            if get_sensor(grp.sensor).kind == "sar" and grp.units == "linear":
                ok = ok & (values > 0)
                values = 10.0 * np.log10(np.where(ok, values, 1.0))
            stats = {}
            for c, band in enumerate(grp.bands):
                v = values[:, :, c][ok[:, :, c]]
                stats[band] = (
                    int(v.size),
                    float(v.mean()) if v.size else 0.0,
                    float(v.std()) if v.size else 0.0,
                )
            out.setdefault(grp.sensor, []).append((f"points:{self.store}/{g} (train split)", stats))
        return out

    def covariate_statistics(self) -> dict[str, dict[str, tuple[float, float]]]:
        """``{"static": {name: (mean, std)}, "dynamic": {name: (mean, std)}}`` over the training samples."""
        self.setup()
        assert self.series is not None
        idx = self.splits["train"]
        out: dict[str, dict[str, tuple[float, float]]] = {"static": {}, "dynamic": {}}
        for kind, names, table in (
            ("static", self.static or [], self.series.static),
            ("dynamic", self.dynamic or [], self.series.dynamic),
        ):
            for n in names:
                v = table[n].values[idx].astype(np.float64)
                v = v[np.isfinite(v)]
                out[kind][n] = (float(v.mean()), float(v.std())) if v.size else (0.0, 1.0)
        return out

    def covariate_units(self) -> dict[str, str]:
        """Units of every delivered covariate."""
        self.setup()
        assert self.series is not None
        units = {n: self.series.static[n].units for n in self.static or []}
        return units | {n: self.series.dynamic[n].units for n in self.dynamic or []}


__all__ = ["PixelBatch", "PixelSeriesDataModule", "PixelSeriesDataset", "auto_block_size", "spatial_split"]
