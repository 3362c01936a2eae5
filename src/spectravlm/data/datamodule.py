"""``CubeDataModule``: train/val/test windows of cube stores for Lightning, sharded without repeats.

What happens where:

* ``setup``: the chunk-aligned window grid of every region (:func:`~spectravlm.data.windows.window_grid`),
  the spatial-block split (:func:`~spectravlm.data.windows.split_windows`, deterministic for ``seed``),
  one :class:`~spectravlm.data.dataset.CubeDataset` per split, normalisation constants from the stores.
* DataLoader workers: each opens its own store handles once and reads windows by decoding only the
  chunks they touch; samples stay raw (uint16 stays uint16) and are collated with
  :func:`~spectravlm.stack.collate_stacks`.
* Sharding: :class:`~spectravlm.data.windows.WindowSampler` gives each rank a disjoint share of the
  epoch's shuffled windows; the DataLoader gives each batch of that share to one worker. In one epoch every
  window of a split is read exactly once across all ranks and workers (short shards are padded with empty,
  fully masked samples so that ranks step together).
* ``on_after_batch_transfer`` (on the device): augmentation (training only, when ``augment_on="device"``).
  With ``augment_on="worker"`` the augmentation runs in the workers instead. Nothing is normalised here:
  batches carry stored values with their unit, scale and offset, and the encoder normalises them with its
  own statistics (see :mod:`spectravlm.encoders.statistics`); :meth:`CubeDataModule.sensor_statistics`
  gives the stores' statistics for a pretraining run to adopt.

Example:
    >>> dm = CubeDataModule(stores=["data/demo.zarr"], groups=["s2", "s1"], targets=["agb"])  # doctest: +SKIP
    >>> dm.setup("fit")  # doctest: +SKIP
    >>> batch = dm.transform(next(iter(dm.train_dataloader())), train=True)  # doctest: +SKIP

"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import lightning as L
import numcodecs
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from spectravlm.data.augment import SpatialAugment
from spectravlm.data.batchpool import LeasedStack
from spectravlm.data.dataset import CubeDataset, EmptyWindows, MissingDates
from spectravlm.data.windows import (
    SPLITS,
    Window,
    WindowSampler,
    auto_block_size,
    dist_rank_world,
    split_windows,
)
from spectravlm.errors import DataConfigError
from spectravlm.stack import SensorStack, collate_stacks

# CubeDataModule saves the training position itself (state_dict below): Lightning's warning that a mid-epoch
# checkpoint has no resumable loader does not apply to it.
warnings.filterwarnings(
    "ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended"
)


def _worker_init(_: int) -> None:
    """One decode thread per worker: parallelism comes from the workers, not from blosc's own threads."""
    numcodecs.blosc.set_nthreads(1)


def _storage(t: Tensor) -> int:
    return int(t.untyped_storage().data_ptr())


def _own_copy(out: SensorStack, raw: SensorStack) -> SensorStack:
    """``out`` as a plain stack whose tensors share no memory with ``raw`` (cloning those that do).

    Tensors are compared by their storage, so a view at an offset into a pooled tensor (a crop, a slice) is
    cloned too.
    """
    pooled = {_storage(t) for s in raw.series.values() for t in (s.values, s.valid)}
    pooled |= {_storage(t) for t in raw.targets.values()}

    def own(t: Tensor) -> Tensor:
        return t.clone() if _storage(t) in pooled else t

    series = {k: replace(s, values=own(s.values), valid=own(s.valid)) for k, s in out.series.items()}
    targets = {k: own(v) for k, v in out.targets.items()}
    return SensorStack(series=series, targets=targets, origin=out.origin, index=out.index)


class _AugmentingCollate:
    """Collate, then augment (for ``augment_on="worker"``); a class so that it pickles for workers."""

    def __init__(self, augment: SpatialAugment) -> None:
        self.augment = augment

    def __call__(self, samples: Sequence[SensorStack]) -> SensorStack:
        raw = collate_stacks(samples)
        out = self.augment(raw)
        if isinstance(raw, LeasedStack):  # the augmented copy is all that travels on: free the slot now
            out = _own_copy(out, raw)
            raw.release()
        return out


class CubeDataModule(L.LightningDataModule):
    """Windows of one or many cube stores, split by spatial blocks, sharded across workers and ranks.

    Args:
        stores: regions: store paths or fsspec URLs, or lists of stores sharing one grid.
        groups: sensor groups, or ``{group: [bands]}`` for band subsets (``None``: all bands).
        targets: target layers to load (e.g. ``["agb"]``).
        window_size: window edge in pixels (read size; see ``crop_size``).
        stride: step between windows (default ``window_size``).
        n_times: time steps per group (``None``: all dates).
        missing_dates: ``mask`` (keep, masked), ``skip`` (drop empty dates) or ``sample`` (random dates).
        empty_windows: ``skip`` (removed at setup after one read pass) or ``mask`` (kept, fully masked).
        cloud_threshold: cloud probability at/above which a pixel is invalid (default: the store's).
        block_size: edge in pixels of the spatial blocks dealt to train/val/test; a multiple of
            ``window_size`` (and ``stride``). ``None`` (default): at least 4 x 4 blocks in the smallest store
            (:func:`~spectravlm.data.windows.auto_block_size`). Stores smaller than a block are split as whole
            stores.
        split_fractions: train, val, test fractions of the blocks.
        seed: seed of the split and of the epoch shuffles.
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches for faster host-to-GPU copies.
        augment: flips and 90-degree rotations (and ``crop_size`` crops) on training batches.
        crop_size: random square crop of each training window (``None``: none); val/test are not cropped.
        augment_on: ``device`` (after transfer, in ``on_after_batch_transfer``) or ``worker``.
        align_to_chunks: keep windows inside chunk tiles.
        pad_to_even: pad short rank shards with empty samples so every rank has as many batches.
        storage_options: fsspec options for URL stores.
        retries: extra attempts for transient remote read errors.
        pool_slots: reusable shared-memory batches per worker (:mod:`spectravlm.data.batchpool`; 0: none).
        rank: this process's rank (default: the trainer's, else torch.distributed's, else 0).
        world_size: number of ranks (default likewise).
        predict_windows: what ``predict_dataloader`` reads: ``test`` (the test windows) or ``extent`` (every
            pixel of each store: overlapping windows, tile by tile, each rank its own tiles; see
            :mod:`spectravlm.predict`).
        predict_stores: regions to predict with ``extent`` (default: ``stores``).
        predict_overlap: pixels shared by neighbouring windows with ``extent`` (default: a quarter window).
        predict_tile_size: output tile edge with ``extent`` (a multiple of 256 px).

    """

    def __init__(
        self,
        stores: Sequence[str | Sequence[str]],
        groups: Sequence[str] | Mapping[str, Sequence[str] | None] = ("s2",),
        targets: Sequence[str] = (),
        window_size: int = 128,
        stride: int | None = None,
        n_times: int | None = None,
        missing_dates: MissingDates = "mask",
        empty_windows: EmptyWindows = "skip",
        cloud_threshold: float | None = None,
        block_size: int | None = None,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 2,
        pin_memory: bool = False,
        augment: bool = True,
        crop_size: int | None = None,
        augment_on: Literal["device", "worker"] = "device",
        align_to_chunks: bool = True,
        pad_to_even: bool = True,
        storage_options: dict[str, Any] | None = None,
        retries: int = 3,
        pool_slots: int = 8,
        rank: int | None = None,
        world_size: int | None = None,
        predict_windows: Literal["test", "extent"] = "test",
        predict_stores: Sequence[str | Sequence[str]] | None = None,
        predict_overlap: int | None = None,
        predict_tile_size: int = 1024,
    ) -> None:
        super().__init__()
        if augment_on not in ("device", "worker"):
            raise DataConfigError(f"augment_on must be 'device' or 'worker', got {augment_on!r}")
        if block_size is not None and block_size % window_size:
            raise DataConfigError(
                f"block_size {block_size} must be a multiple of window_size {window_size} "
                "(windows that straddle two blocks would be dropped)"
            )
        self.save_hyperparameters(ignore=["storage_options"])  # may hold credentials: keep out of checkpoints
        self.stores = [
            os.fspath(s) if isinstance(s, str | os.PathLike) else [os.fspath(p) for p in s] for s in stores
        ]
        self.groups = groups
        self.targets = tuple(targets)
        self.window_size = window_size
        self.stride = stride
        self.n_times = n_times
        self.missing_dates = missing_dates
        self.empty_windows = empty_windows
        self.cloud_threshold = cloud_threshold
        self.block_size = block_size
        self.split_fractions = split_fractions
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.augment_on = augment_on
        self.align_to_chunks = align_to_chunks
        self.pad_to_even = pad_to_even
        self.storage_options = storage_options
        self.retries = retries
        self.pool_slots = pool_slots
        self._rank, self._world_size = rank, world_size
        self.predict_windows = predict_windows
        self.predict_stores = predict_stores
        self.predict_overlap = predict_overlap
        self.predict_tile_size = predict_tile_size
        self.augmenter = SpatialAugment(crop_size=crop_size) if augment else None
        self.datasets: dict[str, CubeDataset] = {}
        self._held: LeasedStack | None = None  # the batch in use, released when the next one arrives
        self._train_sampler: WindowSampler | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, samples done) from a checkpoint

    # -- set-up ------------------------------------------------------------------------------------

    def _dataset(self, windows: Sequence[Any] | None, empty: EmptyWindows) -> CubeDataset:
        return CubeDataset(
            stores=self.stores,
            groups=self.groups,
            targets=self.targets,
            window_size=self.window_size,
            stride=self.stride,
            n_times=self.n_times,
            missing_dates=self.missing_dates,
            empty_windows=empty,
            cloud_threshold=self.cloud_threshold,
            align_to_chunks=self.align_to_chunks,
            windows=windows,
            storage_options=self.storage_options,
            retries=self.retries,
            pool_slots=self.pool_slots,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the windows, the split and one dataset per split (idempotent)."""
        if self.datasets:
            return
        full = self._dataset(None, "mask")  # the whole grid; empty windows are handled per split below
        if self.block_size is None:
            extents = [(r.height, r.width) for r in full.regions]
            self.block_size = auto_block_size(extents, self.window_size, self.stride)
        splits = split_windows(full.windows, self.block_size, self.split_fractions, self.seed)
        keep = self._windows_with_data(full, [w for name in SPLITS for w in splits[name]])
        for name in SPLITS:
            kept = [w for w in splits[name] if keep is None or keep[w]]
            self.datasets[name] = self._dataset(kept, "mask")  # empty windows are already removed
            self.datasets[name].n_empty = len(splits[name]) - len(kept)

    def _windows_with_data(self, full: CubeDataset, windows: list[Window]) -> dict[Window, bool] | None:
        """Which windows hold data (``empty_windows="skip"``), found once: on rank 0, then broadcast.

        Every rank needs the same answer; reading every window of every store is the costly part of
        ``setup``, so under ``torch.distributed`` rank 0 reads and the others receive its result.
        """
        if self.empty_windows != "skip":
            return None
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        flags: list[bool] | None = None
        if not distributed or dist.get_rank() == 0:
            flags = [full.has_data(w) for w in windows]
        if distributed:
            box = [flags]
            dist.broadcast_object_list(box, src=0)
            flags = box[0]
        assert flags is not None
        return dict(zip(windows, flags, strict=True))

    def rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: the constructor's, else the trainer's, else torch.distributed's."""
        if self._rank is not None or self._world_size is not None:
            return self._rank or 0, self._world_size or 1
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return dist_rank_world()

    def _loader(self, split: str, shuffle: bool) -> DataLoader[SensorStack]:
        if not self.datasets:
            self.setup()
        ds = self.datasets[split]
        if len(ds) == 0:
            raise DataConfigError(
                f"the {split} split has no windows: {len(ds.windows)} windows, {ds.n_empty} empty; "
                f"use smaller block_size ({self.block_size}) or other split_fractions {self.split_fractions}"
            )
        rank, world = self.rank_world()
        sampler = WindowSampler(len(ds), shuffle, self.seed, rank, world, self.pad_to_even)
        collate = collate_stacks
        if shuffle and self.augmenter is not None and self.augment_on == "worker":
            collate = _AugmentingCollate(self.augmenter)
        if split == "train":
            self._train_sampler = sampler
            if self._resume is not None:
                sampler.resume(*self._resume)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_worker_init,
        )

    # -- position in the epoch, saved with checkpoints ---------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the training loop stands: the epoch and the batches it processed (saved in checkpoints).

        The count comes from the trainer's progress, not from the loader's iterator, which runs ahead by
        the prefetched batches. (Lightning's stateful-loader hook is not used: Lightning builds the train
        loader to estimate the number of steps before it restores a checkpoint, and then never hands the
        loader its state.)
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None or self._train_sampler is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"train_epoch": int(self._train_sampler.epoch), "train_batches": int(progress.processed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the saved epoch after its processed batches (the train sampler skips them)."""
        if "train_epoch" not in state:
            return
        self._resume = (int(state["train_epoch"]), int(state["train_batches"]) * self.batch_size)
        if self._train_sampler is not None:  # the loader exists already: tell its sampler
            self._train_sampler.resume(*self._resume)

    def train_dataloader(self) -> DataLoader[SensorStack]:
        """Return the training windows, shuffled per epoch."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[SensorStack]:
        """Return the validation windows, in order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[SensorStack]:
        """Return the test windows, in order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[SensorStack]:
        """Return the test windows in order, or with ``predict_windows="extent"`` every window of the stores.

        ``extent``: :func:`spectravlm.predict.loader.extent_dataloader` over ``predict_stores`` (default
        ``stores``), the windows ``predict_overlap`` px apart from their neighbours, tile by tile, each rank
        its own tiles (what :class:`spectravlm.predict.MapWriter` turns into whole-scene maps).
        """
        if self.predict_windows == "extent":
            from spectravlm.predict.loader import extent_dataloader

            stores = self.predict_stores or self.stores
            return extent_dataloader(self, stores, self.predict_overlap, self.predict_tile_size)
        return self._loader("test", shuffle=False)

    # -- on the device -----------------------------------------------------------------------------

    def transform(self, batch: SensorStack, train: bool) -> SensorStack:
        """Device-side steps: augmentation (``train`` and ``augment_on="device"``).

        A raw batch still in a worker's shared-memory slot (:class:`LeasedStack`) is released once these
        steps made new tensors from it; a batch used as it is (validation, no augmentation) is released when
        the next batch arrives, after its step. Keep the returned batch, not the one passed in.
        """
        if self._held is not None:
            self._held.release()
            self._held = None
        out = batch
        if train and self.augmenter is not None and self.augment_on == "device":
            out = self.augmenter(out)
        if isinstance(batch, LeasedStack):
            if out is not batch:
                out = _own_copy(out, batch)
                batch.release()
            else:
                self._held = batch
        return out

    def sensor_statistics(self) -> dict[str, list[tuple[str, dict[str, tuple[int, float, float]]]]]:
        """The stores' statistics per catalogue sensor (see :meth:`CubeDataset.sensor_statistics`)."""
        if not self.datasets:
            self.setup()
        return self.datasets["train"].sensor_statistics()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning hook: :meth:`transform` on the device, once per batch."""
        if not isinstance(batch, SensorStack):
            return batch
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training
        return self.transform(batch, train=training)
