"""The encoder's normalisation statistics: one owner, saved with the weights, printed with their source.

Axis legend: ``K`` channels of one sensor (its bands, plus the SAR ratio channels ``VV/VH``, ``HH/HV``).

Normalisation has one owner, the encoder. For every sensor it accepts, :class:`BandStatistics` holds a
``[2,K]`` buffer (mean, std) per channel, in the encoder's normalisation domain: optical bands in
reflectance, SAR polarisations and ratios in dB. Buffers are part of the ``state_dict``, so the statistics
travel with ``save_pretrained`` folders and Lightning checkpoints; where they came from (``catalogue: ...``
or ``store:<path>`` from ``spectravlm data stats``) is kept per sensor in the encoder config's
``stats_source``.

Life cycle: a new encoder starts from the catalogue defaults
(:func:`~spectravlm.tokenizers.image.default_statistics`); a pretraining fit replaces them with the
statistics of its stores when it starts (:func:`store_statistics`); fine-tuning keeps the pretrained ones
unless asked to refit them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError
from spectravlm.sensors import get_sensor
from spectravlm.tokenizers.channels import SAR_RATIOS
from spectravlm.tokenizers.image import default_statistics

CATALOGUE = "catalogue"
"""``stats_source`` of statistics that are the catalogue's defaults."""


def channel_names(sensor: str) -> tuple[str, ...]:
    """Channels an encoder normalises for ``sensor``: its bands, and for SAR the ratio channels."""
    s = get_sensor(sensor)
    names = s.band_names
    if s.kind == "sar":
        names = names + tuple(SAR_RATIOS)
    return names


class BandStatistics(nn.Module):
    """Per-sensor, per-channel (mean, std) buffers (see the module docstring).

    Args:
        sensors: catalogue names of the sensors, one ``[2,K]`` buffer each (named after the sensor).

    """

    def __init__(self, sensors: tuple[str, ...]) -> None:
        super().__init__()
        self.names: dict[str, tuple[str, ...]] = {}
        for name in sensors:
            channels = channel_names(name)
            mean, std = default_statistics(name, channels)
            self.register_buffer(name, torch.stack([mean, std]))
            self.names[name] = channels

    def table(self, sensor: str) -> Tensor:
        """The ``[2,K]`` buffer of ``sensor``."""
        if sensor not in self.names:
            raise ModelConfigError(
                f"no statistics for sensor {sensor}; the encoder has {', '.join(self.names)}"
            )
        out: Tensor = getattr(self, sensor)
        return out

    def lookup(self, sensor: str, channels: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        """``(mean [C], std [C])`` of ``channels`` of ``sensor``, on the buffers' device."""
        table = self.table(sensor)
        index = [self.names[sensor].index(c) for c in channels]
        sel = table[:, index]
        return sel[0], sel[1]

    def update(self, sensor: str, stats: Mapping[str, tuple[float, float]]) -> None:
        """Replace the (mean, std) of the channels named in ``stats`` (others keep theirs).

        Raises:
            ModelConfigError: an unknown channel, or a std that is not positive and finite.

        """
        table = self.table(sensor)
        for channel, (mean, std) in stats.items():
            if channel not in self.names[sensor]:
                raise ModelConfigError(
                    f"statistics for {sensor} channel {channel!r}; channels: {', '.join(self.names[sensor])}"
                )
            if not (std > 0 and std < float("inf")) or mean != mean:
                raise ModelConfigError(
                    f"{sensor} {channel}: statistics mean={mean}, std={std} are not usable"
                )
            k = self.names[sensor].index(channel)
            with torch.no_grad():
                table[0, k] = float(mean)
                table[1, k] = float(std)

    def as_dict(self, sensor: str) -> dict[str, dict[str, float]]:
        """``{channel: {"mean": .., "std": ..}}`` of ``sensor`` (for JSON and printing)."""
        table = self.table(sensor).detach().cpu()
        return {
            c: {"mean": float(table[0, k]), "std": float(table[1, k])}
            for k, c in enumerate(self.names[sensor])
        }


def store_statistics(
    sensor_stats: Mapping[str, list[tuple[str, dict[str, tuple[int, float, float]]]]],
) -> dict[str, tuple[dict[str, tuple[float, float]], str]]:
    """Pool the statistics of several stores and groups per sensor, weighted by pixel count.

    Args:
        sensor_stats: per catalogue sensor, a list of ``(source, {band: (count, mean, std)})`` in the
            encoder's domain (one entry per store group; see
            :func:`spectravlm.data.stats.normalisation_stats`).

    Returns:
        Per sensor: ``({band: (mean, std)}, source)`` where ``source`` names the stores.

    """
    out: dict[str, tuple[dict[str, tuple[float, float]], str]] = {}
    for sensor, parts in sensor_stats.items():
        bands = set.intersection(*(set(p) for _, p in parts)) if parts else set()
        pooled: dict[str, tuple[float, float]] = {}
        for band in sorted(bands):
            rows = [p[band] for _, p in parts if p[band][0] > 0]
            total = sum(n for n, _, _ in rows)
            if total == 0:
                continue
            mean = sum(n * m for n, m, _ in rows) / total
            var = sum(n * (s * s + (m - mean) ** 2) for n, m, s in rows) / total
            pooled[band] = (mean, max(var, 0.0) ** 0.5)
        sources = sorted({src for src, _ in parts})
        out[sensor] = (pooled, ", ".join(f"store:{s}" for s in sources))
    return out
