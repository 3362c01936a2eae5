"""The data side of a whole-scene prediction: every window of the plan, tile by tile, each rank its own tiles.

:func:`extent_dataloader` is what ``CubeDataModule.predict_dataloader`` returns with
``predict_windows="extent"``: a :class:`~spectravlm.data.dataset.CubeDataset` over the plan's windows
(:mod:`spectravlm.predict.tiling`; no targets needed, empty windows kept and masked, no read pass up front),
read in the plan's order by a :class:`TileSampler` that gives this rank its own tiles. The sampler is a
``DistributedSampler`` so that Lightning keeps it as it is under DDP, and it carries the plan, which
:class:`spectravlm.predict.MapWriter` reads back from the loader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numcodecs
from torch.utils.data import DataLoader, DistributedSampler

from spectravlm.data.dataset import CubeDataset
from spectravlm.predict.tiling import PredictionPlan, plan_prediction
from spectravlm.stack import SensorStack, collate_stacks

if TYPE_CHECKING:
    from spectravlm.data.datamodule import CubeDataModule


class TileSampler(DistributedSampler):
    """The plan's window entries of one rank's tiles, in order (no shuffling, no padding).

    Args:
        plan: the prediction plan.
        rank: this process's rank.
        world_size: number of ranks.

    """

    def __init__(self, plan: PredictionPlan, rank: int = 0, world_size: int = 1) -> None:
        # The parent's attributes, set without its constructor (which needs a dataset and a process group).
        self.plan = plan
        self.entries = plan.rank_entries(rank, world_size)
        self.tiles = plan.rank_tiles(rank, world_size)
        self.num_replicas = world_size
        self.rank = rank
        self.epoch = 0
        self.shuffle = False
        self.seed = 0
        self.drop_last = False
        self.num_samples = len(self.entries)
        self.total_size = len(plan.windows)

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def _one_decode_thread(_: int) -> None:
    numcodecs.blosc.set_nthreads(1)


def extent_dataset(
    dm: CubeDataModule,
    stores: Sequence[str | Sequence[str]],
    overlap: int | None = None,
    tile_size: int = 1024,
) -> tuple[CubeDataset, PredictionPlan]:
    """The windows covering every pixel of ``stores`` with the data module's groups, dates and window size.

    Args:
        dm: the data module (groups, window size, time steps, cloud threshold, remote-store options).
        stores: regions to predict: store paths/URLs, or lists of stores sharing a grid.
        overlap: pixels shared by neighbouring windows (``None``: a quarter of the window).
        tile_size: output tile edge in pixels (a multiple of 256).

    """
    window = dm.window_size
    ds = CubeDataset(
        stores=list(stores),
        groups=dm.groups,
        targets=(),
        window_size=window,
        n_times=dm.n_times,
        # a prediction is deterministic: random dates ("sample") become the first valid ones
        missing_dates="skip" if dm.missing_dates == "sample" else dm.missing_dates,
        empty_windows="mask",
        cloud_threshold=dm.cloud_threshold,
        align_to_chunks=False,
        windows=[],
        storage_options=dm.storage_options,
        retries=dm.retries,
        pool_slots=dm.pool_slots,
    )
    plan = plan_prediction(
        [(r.paths, r.grid) for r in ds.regions],
        window,
        window // 4 if overlap is None else overlap,
        tile_size,
    )
    ds.windows = list(plan.windows)
    return ds, plan


def extent_dataloader(
    dm: CubeDataModule,
    stores: Sequence[str | Sequence[str]],
    overlap: int | None = None,
    tile_size: int = 1024,
) -> DataLoader[SensorStack]:
    """A loader over :func:`extent_dataset` for this rank (``dm.rank_world()``), ``dm.batch_size`` batches."""
    ds, plan = extent_dataset(dm, stores, overlap, tile_size)
    rank, world = dm.rank_world()
    return DataLoader(
        ds,
        batch_size=dm.batch_size,
        sampler=TileSampler(plan, rank, world),
        num_workers=dm.num_workers,
        collate_fn=collate_stacks,
        pin_memory=dm.pin_memory,
        worker_init_fn=_one_decode_thread,
    )


def find_plan(loaders: object) -> PredictionPlan | None:
    """The plan carried by the :class:`TileSampler` of a loader (or of the first of a list of loaders)."""
    if isinstance(loaders, list | tuple):
        loaders = loaders[0] if loaders else None
    sampler = getattr(loaders, "sampler", None)
    if not isinstance(sampler, TileSampler):
        sampler = getattr(getattr(loaders, "batch_sampler", None), "sampler", None)
    return sampler.plan if isinstance(sampler, TileSampler) else None


__all__ = ["TileSampler", "extent_dataloader", "extent_dataset", "find_plan"]
