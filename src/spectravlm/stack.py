"""The batch type that flows from the data stores to every model: :class:`SensorStack`.

Axis legend (used in every docstring and einops pattern of the library):

    B  batch            T  time steps (dates)       C  bands of one sensor
    H  height (rows)    W  width (columns)

A :class:`SensorStack` holds, per sensor group (``"s2"``, ``"s1_asc"``, ...), a :class:`SensorSeries`
with values ``[B,T,C,H,W]``, the band names, their physical unit with the scale and offset that turn the
stored values into it, the acquisition dates ``[B,T]`` and a validity mask ``[B,T,H,W]``, plus optional
dense targets such as AGB ``[B,H,W]``. Sequences of different length are
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

from spectravlm.errors import DataConfigError, UnknownUnitError
from spectravlm.sensors import canonical_unit, get_sensor

EPOCH_DAY = "1970-01-01"
"""Acquisition times are whole days since this date (int64)."""


@dataclass
class SensorSeries:
    """A time series of images from one sensor group.

    The physical value of a pixel is ``values * scale + offset`` in ``units``; stored integers (uint16 S2
    digital numbers) travel as they are and the encoder applies the affine map inside its normalisation.

    Attributes:
        sensor: catalogue name of the sensor (``sentinel2_l2a``, ``sentinel1_grd``).
        bands: canonical band names, one per channel of ``values``.
        values: ``[B,T,C,H,W]`` stored values (any dtype).
        times: ``[B,T]`` int64 acquisition dates in days since 1970-01-01 (0 where padded).
        valid: ``[B,T,H,W]`` bool, True where a pixel is observed (not nodata, not cloud, not padding).
        units: physical unit of ``values * scale + offset``: one of :data:`spectravlm.sensors.UNITS`
            (``reflectance``, ``dB``, ``linear``, ``DN``); other spellings are mapped by
            :func:`~spectravlm.sensors.canonical_unit`, unknown ones are an error. There is no default.
        scale: multiplier from stored values to ``units`` (S2 digital numbers: ``1e-4``).
        offset: added after ``scale`` (S2 L2A baseline >= 04.00: ``-0.1``).
        orbit: ``ascending``/``descending`` for SAR when known, else ``None``.
        all_valid: host-side fact, ``True`` when every pixel of ``valid`` is True, ``False`` when some is
            not, ``None`` when unknown. The loader sets it on the CPU so that models need no
            device-to-host synchronisation to choose their fast path.
        finite: ``True`` when the loader vouches for ``values``: finite wherever ``valid`` (it marks
            non-finite pixels invalid) and, for SAR, consistent with ``units`` (it checks the first window
            of each group on the CPU), so that models skip their own checks.

    """

    sensor: str
    bands: tuple[str, ...]
    values: Tensor
    times: Tensor
    valid: Tensor
    units: str
    scale: float = 1.0
    offset: float = 0.0
    orbit: str | None = None
    all_valid: bool | None = None
    finite: bool = False

    def __post_init__(self) -> None:
        sensor = get_sensor(self.sensor)
        self.sensor = sensor.name  # canonical catalogue name, whatever spelling was given
        self.bands = sensor.canonical_names(self.bands)
        self.units = canonical_unit(self.units)
        self.scale, self.offset = float(self.scale), float(self.offset)
        if self.scale == 0.0 or self.scale != self.scale or self.offset != self.offset:
            raise DataConfigError(
                f"{self.sensor}: scale {self.scale} and offset {self.offset} must be finite, scale != 0"
            )
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

    def __repr__(self) -> str:
        b, t, _, h, w = self.values.shape
        affine = "" if (self.scale, self.offset) == (1.0, 0.0) else f" x{self.scale:g}{self.offset:+g}"
        return (
            f"SensorSeries({self.sensor}, B={b} T={t} {h}x{w} px, bands {','.join(self.bands)}, "
            f"{self.values.dtype}{affine} -> {self.units}, {self.values.device})"
        )

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

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}(B={self.batch_size})"]
        for g, s in self.series.items():
            lines.append(f"  {g}: {s!r}")
        for k, v in self.targets.items():
            lines.append(f"  target {k}: {tuple(v.shape)} {v.dtype}")
        return "\n".join(lines)

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


def clone_stack(stack: SensorStack) -> SensorStack:
    """A copy of a batch that shares no memory with it (a plain :class:`SensorStack`)."""
    series = {
        k: replace(s, values=s.values.clone(), valid=s.valid.clone(), times=s.times.clone())
        for k, s in stack.series.items()
    }
    return SensorStack(
        series=series,
        targets={k: v.clone() for k, v in stack.targets.items()},
        origin=None if stack.origin is None else stack.origin.clone(),
        index=None if stack.index is None else stack.index.clone(),
    )


def check_sar_unit(values: Tensor, valid: Tensor, unit: str, name: str = "SAR series") -> None:
    """Refuse SAR backscatter whose claimed unit is contradicted by the data (physical values).

    Real sigma0 in dB is mostly negative, linear power is never negative: "dB" values that are all > 0 are
    linear power, "linear" values below 0 are dB. The loader runs this on the CPU on the first window of
    each SAR group it reads; the SAR front-end runs it on CPU batches.

    Args:
        values: ``[..., C, H, W]`` backscatter (``stored * scale + offset``).
        valid: boolean mask broadcastable to ``values`` (pixels to look at).
        unit: ``dB`` or ``linear``.
        name: what to call the data in the message.

    Raises:
        UnknownUnitError: dB values that are all > 0, or linear power with negative values.

    """
    seen = values[valid.expand_as(values) & torch.isfinite(values)]
    if seen.numel() == 0:
        return
    if unit == "dB" and bool((seen > 0).all()):
        raise UnknownUnitError(
            f"{name}: every valid value is > 0 dB (min {float(seen.min()):.3g}); this looks like linear "
            "power: set the group's units to 'linear' (or convert to dB at ingest)"
        )
    if unit == "linear" and bool((seen < 0).any()):
        raise UnknownUnitError(
            f"{name}: linear power cannot be negative (min {float(seen.min()):.3g}); this looks like dB: set "
            "the group's units to 'dB'"
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
        if any(
            (p.units, p.scale, p.offset) != (parts[0].units, parts[0].scale, parts[0].offset) for p in parts
        ):
            raise DataConfigError(
                f"sensor group {g!r}: samples have different units, scales or offsets "
                f"{sorted({(p.units, p.scale, p.offset) for p in parts})}; one batch holds one encoding"
            )
        t_max = max(p.values.shape[1] for p in parts)
        series[g] = SensorSeries(
            sensor=parts[0].sensor,
            bands=bands,
            values=torch.cat([_pad_time(p.values, t_max) for p in parts]),
            times=torch.cat([_pad_time(p.times, t_max) for p in parts]),
            valid=torch.cat([_pad_time(p.valid, t_max, False) for p in parts]),
            units=parts[0].units,
            scale=parts[0].scale,
            offset=parts[0].offset,
            orbit=parts[0].orbit,
            all_valid=_all_valid(parts),
            finite=all(p.finite for p in parts),
        )
    targets = {k: torch.cat([s.targets[k] for s in samples]) for k in samples[0].targets}
    origins = [s.origin for s in samples]
    origin = None if any(o is None for o in origins) else torch.cat([o for o in origins if o is not None])
    indices = [s.index for s in samples]
    index = None if any(i is None for i in indices) else torch.cat([i for i in indices if i is not None])
    return SensorStack(series=series, targets=targets, origin=origin, index=index)


def _all_valid(parts: Sequence[SensorSeries]) -> bool | None:
    """``all_valid`` of series concatenated along ``B`` and padded along ``T`` (padding is invalid)."""
    t_max = max(p.values.shape[1] for p in parts)
    if any(p.values.shape[1] < t_max for p in parts):
        return False
    flags = [p.all_valid for p in parts]
    if any(f is False for f in flags):
        return False
    return True if all(f is True for f in flags) else None
