"""Windows of cube stores for a sparse target: weighted by their points, with the points' errors and dates.

Axis legend: ``B`` windows, ``T`` dates, ``H``/``W`` pixels.

:class:`PointsDataModule` is a :class:`~spectravlm.data.datamodule.CubeDataModule` whose target is a sparse
layer written by :func:`~spectravlm.data.points.attach.attach_points` (``agb_points``: NaN except at points).
On top of the cube data module it

* delivers the layer's siblings beside it in ``batch.targets``: ``<name>_se`` (standard error, for
  inverse-variance loss weights) and ``<name>_date`` (days since 1970, for the temporal match), read for the
  same windows (:class:`SparseTargetDataset`);
* keeps only windows with at least one point (``empty_windows="skip"`` already drops windows without a finite
  target), and with ``window_weighting`` draws each training epoch's windows in proportion to their number of
  points (``points``), its square root (``sqrt``) or uniformly (``uniform``): ``samples_per_epoch`` windows
  (default: as many as the training windows) by systematic resampling, so a window of weight share ``q`` is
  read ``floor`` or ``ceil`` of ``q * samples_per_epoch`` times; the epoch's order is then shuffled and
  sharded across ranks and workers as for any cube data module;
* with ``match_days = N``, keeps in each window only the dates within ``N`` days of one of the window's
  point dates (:func:`match_dates`; windows without a dated point keep every date); ``match_date`` gives the
  date to match where a window has no point (whole-scene prediction for one season).

The split is the cube data module's spatial-block split, so no point's pixel is in two splits, and the
validation and test metrics are computed at the held-out points only (the loss and metrics ignore NaN).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.dataset import CubeDataset, EmptyWindows, MissingDates
from spectravlm.data.store import CubeStore
from spectravlm.data.windows import PAD_INDEX
from spectravlm.errors import DataConfigError
from spectravlm.stack import SensorStack

WindowWeighting = Literal["points", "sqrt", "uniform"]


def sparse_siblings(store: str, name: str) -> dict[str, str]:
    """``{"se": "<name>_se", "count": ..., "date": ...}`` of a sparse layer (from its attributes).

    Raises:
        DataConfigError: ``name`` is not a sparse target layer of ``store``.

    """
    cube = CubeStore.open(store)
    if name not in cube.targets:
        raise DataConfigError(
            f"{store}: no target layer {name!r}; targets: {', '.join(cube.targets) or '(none)'}"
        )
    meta = dict(cube.targets[name].attrs).get("spectravlm_points")
    if not isinstance(meta, dict) or "layers" not in meta:
        raise DataConfigError(
            f"{store}: target {name!r} is not a sparse point layer (written by spectravlm data points "
            "attach); "
            "for a dense target use CubeDataModule"
        )
    return {str(k): str(v) for k, v in meta["layers"].items()}


def match_dates(
    batch: SensorStack, dates: Tensor, days: float, default_day: float | None = None
) -> SensorStack:
    """Keep, in each window, only the dates within ``days`` of one of the window's point dates.

    Args:
        batch: the windows.
        dates: ``[B,H,W]`` point dates in days since 1970-01-01 (NaN where no dated point).
        days: the half-width ``N`` of the match window.
        default_day: the date (days since 1970) to match in windows without any dated point (``None``: keep
            every date there).

    Returns:
        ``batch`` with ``valid`` False at the dates out of every point's window (the values are unchanged).

    """
    b = dates.shape[0]
    flat = dates.reshape(b, -1)
    series = {}
    for g, s in batch.series.items():
        t = s.times.to(flat.dtype)  # (B, T) days
        diff = (t.unsqueeze(-1) - flat.unsqueeze(1)).abs()  # (B, T, H*W); NaN where no point
        near = (diff <= days).any(dim=-1)  # (B, T)
        dated = torch.isfinite(flat).any(dim=1, keepdim=True)  # (B, 1)
        if default_day is None:
            keep = torch.where(dated, near, torch.ones_like(near))
        else:
            keep = torch.where(dated, near, (t - default_day).abs() <= days)
        keep = keep & (s.times > 0)
        valid = s.valid & keep[:, :, None, None]
        series[g] = replace(s, valid=valid, all_valid=False if not bool(keep.all()) else s.all_valid)
    return replace(batch, series=series)


def systematic_draw(weights: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices drawn in proportion to ``weights`` by systematic resampling (counts floor or ceil)."""
    w = np.asarray(weights, dtype=np.float64)
    if n <= 0 or not (w > 0).any():
        return np.zeros(0, dtype=np.int64)
    cum = np.cumsum(w / w.sum())
    start = np.random.default_rng(seed).uniform(0, 1.0 / n)
    return np.minimum(np.searchsorted(cum, start + np.arange(n) / n, side="right"), len(w) - 1).astype(
        np.int64
    )


class SparseTargetDataset(Dataset[SensorStack]):
    """A :class:`CubeDataset` whose batches also carry a sparse layer's siblings, optionally resampled.

    Args:
        dataset: the windows (its target is the sparse value layer).
        siblings: sibling layers to add to ``batch.targets`` (``agb_points_se``, ``agb_points_date``).
        index_map: the epoch's windows as indices into ``dataset.windows`` (weighted draw), or ``None``.

    Every other attribute (``windows``, ``regions``, ``groups``, ``n_empty``, ``sensor_statistics``...) is
    the wrapped dataset's.

    """

    def __init__(
        self, dataset: CubeDataset, siblings: Sequence[str], index_map: np.ndarray | None = None
    ) -> None:
        self.dataset = dataset
        self.siblings = tuple(siblings)
        self.index_map = index_map
        self._pid: int | None = None
        self._arrays: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "siblings", "index_map", "_pid", "_arrays"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_pid": None, "_arrays": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self.dataset) if self.index_map is None else len(self.index_map)

    def _open(self) -> None:
        if self._pid != os.getpid():
            ds = self.dataset
            self._arrays = []
            for region in ds.regions:
                stores = [CubeStore.open(p, storage_options=ds.storage_options) for p in region.paths]
                self._arrays.append(
                    {s: next(st.targets[s] for st in stores if s in st.targets) for s in self.siblings}
                )
            self._pid = os.getpid()

    def __getitem__(self, index: int) -> SensorStack:
        """Window ``index`` (after the epoch's draw) as a batch of one."""
        return self.read_batch([index])

    def __getitems__(self, indices: Sequence[int]) -> list[SensorStack]:
        """A whole batch (the DataLoader's batched fetch)."""
        return [self.read_batch(indices)]

    def read_batch(self, indices: Sequence[int]) -> SensorStack:
        """The windows at ``indices`` (``-1``: padding) with the sibling layers in their targets."""
        mapped = [
            PAD_INDEX if i == PAD_INDEX else int(i if self.index_map is None else self.index_map[i])
            for i in indices
        ]
        batch = self.dataset.read_batch(mapped)
        self._open()
        size = self.dataset.window_size
        targets = dict(batch.targets)
        for s in self.siblings:
            out = np.full((len(mapped), size, size), np.nan, dtype=np.float32)
            for k, i in enumerate(mapped):
                if i == PAD_INDEX:
                    continue
                w = self.dataset.windows[i]
                out[k] = np.asarray(self._arrays[w.region][s][w.slices()], dtype=np.float32)
            targets[s] = torch.from_numpy(out)
        return replace(batch, targets=targets)


class PointsDataModule(CubeDataModule):
    """A :class:`CubeDataModule` for a sparse point target (see the module docstring).

    The arguments are those of :class:`CubeDataModule` (``targets`` names the sparse value layer, e.g.
    ``[agb_points]``), plus:

    Args:
        window_weighting: ``points`` (default), ``sqrt`` or ``uniform``: how the training windows are drawn.
        samples_per_epoch: training windows per epoch (default: the number of training windows).
        match_days: keep only the dates within this many days of a window's point dates (``None``: all).
        match_date: with ``match_days``, the date (ISO) to match in windows without points (prediction).

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
        window_weighting: WindowWeighting = "points",
        samples_per_epoch: int | None = None,
        match_days: float | None = None,
        match_date: str | None = None,
    ) -> None:
        super().__init__(
            stores=stores,
            groups=groups,
            targets=targets,
            window_size=window_size,
            stride=stride,
            n_times=n_times,
            missing_dates=missing_dates,
            empty_windows=empty_windows,
            cloud_threshold=cloud_threshold,
            block_size=block_size,
            split_fractions=split_fractions,
            seed=seed,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            augment=augment,
            crop_size=crop_size,
            augment_on=augment_on,
            align_to_chunks=align_to_chunks,
            pad_to_even=pad_to_even,
            storage_options=storage_options,
            retries=retries,
            pool_slots=pool_slots,
            rank=rank,
            world_size=world_size,
        )
        if window_weighting not in ("points", "sqrt", "uniform"):
            raise DataConfigError(
                f"window_weighting must be 'points', 'sqrt' or 'uniform', got {window_weighting!r}"
            )
        if len(self.targets) != 1:
            raise DataConfigError(
                f"PointsDataModule learns one sparse target layer; targets: {list(self.targets)} "
                "(its _se and _date layers come with it)"
            )
        if match_date is not None and match_days is None:
            raise DataConfigError("match_date needs match_days (the half-width of the match window in days)")
        self.window_weighting = window_weighting
        self.samples_per_epoch = samples_per_epoch
        self.match_days = match_days
        self.match_day: float | None = None
        if match_date is not None:
            day = np.datetime64(match_date, "D") - np.datetime64("1970-01-01", "D")
            self.match_day = float(day.astype(np.int64))
        self.point_target = self.targets[0]
        self.siblings: dict[str, str] = {}
        self.window_points: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        """The cube data module's set-up, then the siblings, the points per window and the epoch's draw."""
        if self.datasets:
            return
        super().setup(stage)
        first = self.stores[0]
        self.siblings = sparse_siblings(first if isinstance(first, str) else first[0], self.point_target)
        wanted = [self.siblings["se"], self.siblings["date"]]
        for name, ds in list(self.datasets.items()):
            index_map = None
            if name == "train":
                counts = self._points_per_window(ds)
                self.window_points = counts
                weights = {"points": counts, "sqrt": np.sqrt(counts), "uniform": (counts > 0).astype(float)}[
                    self.window_weighting
                ]
                n = self.samples_per_epoch or len(ds.windows)
                index_map = systematic_draw(weights, n, self.seed)
            self.datasets[name] = SparseTargetDataset(ds, wanted, index_map)  # type: ignore[assignment]

    def _points_per_window(self, ds: CubeDataset) -> np.ndarray:
        """Pixels with a point in each of ``ds``'s windows."""
        layers: dict[int, np.ndarray] = {}
        out = np.zeros(len(ds.windows), dtype=np.float64)
        for k, w in enumerate(ds.windows):
            if w.region not in layers:
                region = ds.regions[w.region]
                path = region.paths[region.targets[self.point_target]]
                layers[w.region] = np.isfinite(np.asarray(CubeStore.open(path).targets[self.point_target][:]))
            out[k] = layers[w.region][w.slices()].sum()
        return out

    def target_units(self) -> str:
        """The sparse layer's units (from the first store).

        Raises:
            DataConfigError: the layer declares no unit.

        """
        first = self.stores[0]
        path = first if isinstance(first, str) else first[0]
        units = str(CubeStore.open(path).targets[self.point_target].attrs.get("units", ""))
        if not units:
            raise DataConfigError(f"{path}: target layer {self.point_target!r} declares no units")
        return units

    def split_values(self, split: str) -> np.ndarray:
        """The finite target values at the points of ``split``'s windows (each pixel once)."""
        self.setup()
        ds = self.datasets[split]
        inner = ds.dataset if isinstance(ds, SparseTargetDataset) else ds
        seen: dict[int, np.ndarray] = {}
        taken: dict[int, np.ndarray] = {}
        for w in inner.windows:
            if w.region not in seen:
                region = inner.regions[w.region]
                path = region.paths[region.targets[self.point_target]]
                seen[w.region] = np.asarray(
                    CubeStore.open(path).targets[self.point_target][:], dtype=np.float64
                )
                taken[w.region] = np.zeros(seen[w.region].shape, dtype=bool)
            taken[w.region][w.slices()] = True
        out = [v[taken[r] & np.isfinite(v)] for r, v in seen.items()]
        return np.concatenate(out) if out else np.zeros(0)

    def transform(self, batch: SensorStack, train: bool) -> SensorStack:
        """The cube data module's steps, then the temporal match (with ``match_days``)."""
        out = super().transform(batch, train)
        if self.match_days is None:
            return out
        dates = out.targets.get(self.siblings.get("date", ""))
        if dates is None:  # windows read without the siblings (whole-scene prediction): no point dates
            first = next(iter(out.series.values())).values
            dates = torch.full((out.batch_size, *first.shape[-2:]), float("nan"), device=first.device)
        return match_dates(out, dates, self.match_days, self.match_day)


__all__ = [
    "PointsDataModule",
    "SparseTargetDataset",
    "WindowWeighting",
    "match_dates",
    "sparse_siblings",
    "systematic_draw",
]
