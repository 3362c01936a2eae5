"""The batch type that flows from the data stores to every model: :class:`SensorStack`.

Axis legend (used in every docstring and einops pattern of the library):

    B  batch            T  time steps (dates)       C  bands of one sensor
    H  height (rows)    W  width (columns)

A :class:`SensorStack` holds, per sensor group (``"s2"``, ``"s1_asc"``, ...), a :class:`SensorSeries`
with values ``[B,T,C,H,W]``, the band names, the acquisition dates ``[B,T]`` and a validity mask
``[B,T,H,W]``, plus optional dense targets such as AGB ``[B,H,W]``. Sequences of different length are
padded by :func:`collate_stacks`; padded dates have ``valid == False`` everywhere and contribute nothing.

This module sits at the bottom of the layer stack beside the sensor catalogue, so that model code never
imports the data package and the data package never imports a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from spectravlm.errors import DataConfigError
from spectravlm.sensors import get_sensor

EPOCH_DAY = "1970-01-01"
"""Acquisition times are whole days since this date (int64)."""


@dataclass
class SensorSeries:
    """A time series of images from one sensor group.

    Attributes:
        sensor: catalogue name of the sensor (``sentinel2_l2a``, ``sentinel1_grd``).
        bands: canonical band names, one per channel of ``values``.
        values: ``[B,T,C,H,W]`` image values (raw store units, or normalised: see ``normalised``).
        times: ``[B,T]`` int64 acquisition dates in days since 1970-01-01 (0 where padded).
        valid: ``[B,T,H,W]`` bool, True where a pixel is observed (not nodata, not cloud, not padding).
        units: what ``values`` holds: ``raw``, ``normalised``, ``reflectance``, ``dB`` or ``linear``.
        orbit: ``ascending``/``descending`` for SAR when known, else ``None``.

    """

    sensor: str
    bands: tuple[str, ...]
    values: Tensor
    times: Tensor
    valid: Tensor
    units: str = "raw"
    orbit: str | None = None

    def __post_init__(self) -> None:
        sensor = get_sensor(self.sensor)
        self.sensor = sensor.name  # canonical catalogue name, whatever spelling was given
        self.bands = sensor.canonical_names(self.bands)
        if self.values.ndim != 5:
            raise DataConfigError(
                f"{self.sensor}: values must be [B,T,C,H,W], got shape {tuple(self.values.shape)}"
            )
        b, t, c, h, w = self.values.shape
        if c != len(self.bands):
            raise DataConfigError(f"{self.sensor}: {c} channels but {len(self.bands)} band names")
        if tuple(self.times.shape) != (b, t):
            raise DataConfigError(
                f"{self.sensor}: times must be [B,T]=({b},{t}), got {tuple(self.times.shape)}"
            )
        if tuple(self.valid.shape) != (b, t, h, w):
            raise DataConfigError(
                f"{self.sensor}: valid must be [B,T,H,W]=({b},{t},{h},{w}), got {tuple(self.valid.shape)}"
            )

    @property
    def date_valid(self) -> Tensor:
        """``[B,T]`` bool: dates with at least one valid pixel."""
        return self.valid.flatten(2).any(-1)

    def to(self, *args: Any, **kwargs: Any) -> SensorSeries:
        """Move tensors like :meth:`torch.Tensor.to`; only ``values`` changes dtype."""
        values = self.values.to(*args, **kwargs)
        return replace(
            self,
            values=values,
            times=self.times.to(device=values.device),
            valid=self.valid.to(device=values.device),
        )

    def pin_memory(self) -> SensorSeries:
        """Pinned copy, for ``DataLoader(pin_memory=True)``."""
        return replace(
            self,
            values=self.values.pin_memory(),
            times=self.times.pin_memory(),
            valid=self.valid.pin_memory(),
        )


@dataclass
class SensorStack:
    """A batch: several sensor series on one pixel grid, and optional dense targets.

    Attributes:
        series: per sensor group name, a :class:`SensorSeries` (all with the same ``B,H,W``).
        targets: per target name (``agb``), ``[B,H,W]`` float, NaN where no target value exists.
        origin: ``[B,2]`` int64 (row, column) of each window's top-left pixel in its store, when known.
        index: ``[B]`` int64 position of each window in its dataset (``-1`` for a padding sample that
            holds no data), when known.

    """

    series: dict[str, SensorSeries]
    targets: dict[str, Tensor] = field(default_factory=dict)
    origin: Tensor | None = None
    index: Tensor | None = None

    def __post_init__(self) -> None:
        shapes = {k: (s.values.shape[0], *s.values.shape[3:]) for k, s in self.series.items()}
        shapes |= {f"target {k}": tuple(v.shape) for k, v in self.targets.items()}
        if len(set(shapes.values())) > 1:
            raise DataConfigError(f"sensor series and targets must share [B,H,W]; got {shapes}")

    def __getitem__(self, group: str) -> SensorSeries:
        """The series of sensor group ``group``."""
        try:
            return self.series[group]
        except KeyError:
            raise DataConfigError(
                f"sensor group {group!r} is not in this batch; groups: {', '.join(self.series)}"
            ) from None

    def __contains__(self, group: object) -> bool:
        return group in self.series

    def __iter__(self) -> Iterator[str]:
        return iter(self.series)

    @property
    def batch_size(self) -> int:
        """``B``."""
        first = next(iter(self.series.values()), None)
        if first is not None:
            return int(first.values.shape[0])
        return int(next(iter(self.targets.values())).shape[0])

    def to(self, *args: Any, **kwargs: Any) -> SensorStack:
        """Move every tensor (see :meth:`SensorSeries.to`); targets keep float dtype."""
        series = {k: s.to(*args, **kwargs) for k, s in self.series.items()}
        device = next(iter(series.values())).values.device if series else None
        targets = {k: v.to(device=device) for k, v in self.targets.items()}
        origin = None if self.origin is None else self.origin.to(device=device)
        index = None if self.index is None else self.index.to(device=device)
        return SensorStack(series=series, targets=targets, origin=origin, index=index)

    def pin_memory(self) -> SensorStack:
        """Pinned copy, for ``DataLoader(pin_memory=True)``."""
        return SensorStack(
            series={k: s.pin_memory() for k, s in self.series.items()},
            targets={k: v.pin_memory() for k, v in self.targets.items()},
            origin=None if self.origin is None else self.origin.pin_memory(),
            index=None if self.index is None else self.index.pin_memory(),
        )


def _pad_time(x: Tensor, length: int, value: float | bool = 0) -> Tensor:
    """Pad dimension 1 (time) of ``x`` to ``length`` with ``value``."""
    missing = length - x.shape[1]
    if missing == 0:
        return x
    pad = x.new_full((x.shape[0], missing, *x.shape[2:]), value)
    return torch.cat([x, pad], dim=1)


def collate_stacks(samples: Sequence[SensorStack]) -> SensorStack:
    """Concatenate stacks along ``B``, padding ``T`` per sensor group to the longest sequence.

    Padded dates get ``times == 0``, ``values == 0`` and ``valid == False``. Every sample must have
    the same sensor groups, band lists and window size.
    """
    if not samples:
        raise DataConfigError("collate_stacks needs at least one sample")
    if len(samples) == 1:  # already a batch (e.g. a dataset's batched fetch): nothing to copy
        return samples[0]
    groups = list(samples[0].series)
    for s in samples[1:]:
        if list(s.series) != groups:
            raise DataConfigError(f"samples have different sensor groups: {groups} vs {list(s.series)}")
    series = {}
    for g in groups:
        parts = [s.series[g] for s in samples]
        bands = parts[0].bands
        if any(p.bands != bands for p in parts):
            raise DataConfigError(f"sensor group {g!r}: samples have different band lists")
        t_max = max(p.values.shape[1] for p in parts)
        series[g] = SensorSeries(
            sensor=parts[0].sensor,
            bands=bands,
            values=torch.cat([_pad_time(p.values, t_max) for p in parts]),
            times=torch.cat([_pad_time(p.times, t_max) for p in parts]),
            valid=torch.cat([_pad_time(p.valid, t_max, False) for p in parts]),
            units=parts[0].units,
            orbit=parts[0].orbit,
        )
    targets = {k: torch.cat([s.targets[k] for s in samples]) for k in samples[0].targets}
    origins = [s.origin for s in samples]
    origin = None if any(o is None for o in origins) else torch.cat([o for o in origins if o is not None])
    indices = [s.index for s in samples]
    index = None if any(i is None for i in indices) else torch.cat([i for i in indices if i is not None])
    return SensorStack(series=series, targets=targets, origin=origin, index=index)
