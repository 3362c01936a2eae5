"""Normalisation of raw :class:`SensorStack` batches, applied once, as late as possible (on the device).

Raw values travel from the store to the device in their stored dtype (uint16 reflectance x 1e4 is half
the bytes of float32); :class:`Normalizer` turns them into float32 on the batch, after transfer:

* optical bands: ``(raw - mean) / std`` with per-band statistics in raw units;
* SAR bands, by choice (``sar_units``):
    - ``db``: ``(dB - mean_dB) / std_dB`` (stored linear power is converted to dB first);
    - ``linear``: linear power divided by the power of the mean dB value, ``10^((dB - mean_dB) / 10)``:
      multiplicative structure (speckle, ratios) stays as it is and typical values are near 1.

Statistics come from the stores (``spectravlm data stats``; pooled over regions by pixel count) or,
when a store has none, from the sensor catalogue's defaults (:mod:`spectravlm.sensors`), with their
source recorded in :attr:`GroupNorm.source`. Invalid pixels (``valid == False``: nodata, cloud,
padding) are set to 0 after normalisation, so no nodata value (-9999 dB) or NaN reaches a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from spectravlm.data.dataset import CubeDataset
from spectravlm.errors import DataConfigError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack

SarUnits = Literal["db", "linear"]


@dataclass(frozen=True)
class GroupNorm:
    """Normalisation constants of one sensor group.

    Attributes:
        sensor: catalogue sensor name.
        bands: band names, in the order of ``mean``/``std``.
        mean: per-band mean in the normalisation domain (raw units; dB for SAR).
        std: per-band standard deviation, same units.
        stored_units: units of the raw values (``dB`` or ``linear power`` for SAR).
        source: where the numbers come from (store statistics or the catalogue default's source).

    """

    sensor: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stored_units: str
    source: str

    @property
    def is_sar(self) -> bool:
        """Whether the group is a SAR sensor."""
        return get_sensor(self.sensor).kind == "sar"

    @property
    def stored_db(self) -> bool:
        """Whether raw SAR values are in dB (``False``: linear power)."""
        units = self.stored_units.strip().lower()
        if units in ("db", "decibel"):
            return True
        if units in ("linear", "linear power", "power"):
            return False
        raise DataConfigError(
            f"{self.sensor}: SAR values in units {self.stored_units!r}; expected 'dB' or 'linear'"
        )

    @classmethod
    def from_defaults(cls, sensor: str, bands: tuple[str, ...], stored_units: str) -> GroupNorm:
        """Constants from the sensor catalogue's default statistics."""
        spec = get_sensor(sensor)
        stats = [spec.band(b).stats for b in bands]
        missing = [b for b, s in zip(bands, stats, strict=True) if s is None]
        if missing:
            raise DataConfigError(f"{sensor}: no default statistics for bands {missing}; compute store stats")
        sources = sorted({s.source for s in stats if s is not None})
        return cls(
            sensor=spec.name,
            bands=bands,
            mean=tuple(s.mean for s in stats if s is not None),
            std=tuple(s.std for s in stats if s is not None),
            stored_units=stored_units,
            source="sensor defaults: " + "; ".join(sources),
        )


class Normalizer:
    """Normalise the raw series of a :class:`SensorStack` (see the module docstring).

    Args:
        groups: per sensor group name, its :class:`GroupNorm`.
        sar_units: ``db`` or ``linear`` for SAR groups.

    """

    def __init__(self, groups: Mapping[str, GroupNorm], sar_units: SarUnits = "db") -> None:
        if sar_units not in ("db", "linear"):
            raise DataConfigError(f"sar_units must be 'db' or 'linear', got {sar_units!r}")
        self.groups = dict(groups)
        self.sar_units = sar_units
        self._cache: dict[tuple[str, torch.device], tuple[Tensor, Tensor]] = {}

    def _constants(self, group: str, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (group, device)
        if key not in self._cache:
            g = self.groups[group]
            mean = torch.tensor(g.mean, dtype=torch.float32, device=device).view(1, 1, -1, 1, 1)
            std = torch.tensor(g.std, dtype=torch.float32, device=device).view(1, 1, -1, 1, 1)
            self._cache[key] = (mean, std)
        return self._cache[key]

    def series(self, name: str, s: SensorSeries) -> SensorSeries:
        """Normalise one series (``units`` must be ``raw``)."""
        if s.units != "raw":
            raise DataConfigError(
                f"sensor group {name!r} is already {s.units!r}; normalise raw values only once"
            )
        if name not in self.groups:
            raise DataConfigError(
                f"no normalisation constants for sensor group {name!r}; have {list(self.groups)}"
            )
        g = self.groups[name]
        if s.bands != g.bands:
            raise DataConfigError(f"sensor group {name!r}: batch bands {s.bands} differ from {g.bands}")
        mean, std = self._constants(name, s.values.device)
        x = s.values.float()
        if g.is_sar:
            if not g.stored_db:
                x = 10.0 * torch.log10(x.clamp_min(1e-10))
            x = torch.pow(10.0, (x - mean) / 10.0) if self.sar_units == "linear" else (x - mean) / std
        else:
            x = (x - mean) / std
        x = torch.where(s.valid.unsqueeze(2), x, torch.zeros((), dtype=x.dtype, device=x.device))
        return replace(s, values=x, units="normalised")

    def __call__(self, stack: SensorStack) -> SensorStack:
        """Normalise every series of ``stack``; targets are left as they are."""
        series = {k: self.series(k, s) for k, s in stack.series.items()}
        return replace(stack, series=series)

    def describe(self) -> str:
        """One line per group: where its constants come from."""
        return "\n".join(f"{k}: {g.sensor} {len(g.bands)} bands, {g.source}" for k, g in self.groups.items())


def group_norms(dataset: CubeDataset) -> dict[str, GroupNorm]:
    """Constants for every group of ``dataset``: pooled store statistics, else sensor defaults.

    SAR groups stored in linear power use the catalogue's dB defaults (the store's statistics are then
    in linear units, which the dB normalisation cannot use).
    """
    out = {}
    for name, info in dataset.groups.items():
        pooled = dataset.pooled_stats(name)
        linear_sar = info.kind == "sar" and info.units.strip().lower() != "db"
        if pooled is None or linear_sar:
            out[name] = GroupNorm.from_defaults(info.sensor, info.bands, info.units)
            continue
        out[name] = GroupNorm(
            sensor=info.sensor,
            bands=info.bands,
            mean=tuple(pooled[b][1] for b in info.bands),
            std=tuple(max(pooled[b][2], 1e-6) for b in info.bands),
            stored_units=info.units,
            source=f"store statistics pooled over {len(dataset.regions)} region(s), "
            f"{min(pooled[b][0] for b in info.bands)} valid pixels",
        )
    return out
