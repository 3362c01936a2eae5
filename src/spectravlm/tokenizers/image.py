"""The tokenizer input: normalised channels with their catalogue identity, and optical preparation.

Axis legend: ``B`` batch, ``T`` dates, ``C`` channels, ``H``/``W`` rows/columns.

A :class:`ChannelImage` is what every tokenizer consumes: normalised values ``[B,T,C,H,W]``, one
:class:`~spectravlm.tokenizers.channels.Channel` per plane, the dates and a pixel validity mask. It is
made from a :class:`~spectravlm.stack.SensorSeries` by :func:`prepare_optical` (here) or by the SAR
front-end (:mod:`spectravlm.tokenizers.sar`), which may add derived channels such as ``VV/VH``.

Masking policy (documented once, used everywhere): a pixel is invalid where the series says so, or
where any channel is NaN/inf; invalid pixels are set to 0 (the band mean after normalisation), so
their content can never reach a token. For optical input the NaN/inf search is deferred to the
tokenizer, which looks at its output (8-16x smaller than the image) and, only if something is not
finite, masks the offending pixels and tokenizes again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from einops import rearrange
from torch import Tensor

from spectravlm.errors import ModelConfigError, UnknownUnitError
from spectravlm.sensors import ACCEPTED_UNITS, get_sensor
from spectravlm.stack import SensorSeries
from spectravlm.tokenizers.channels import Channel, sensor_channels

RATIO_DB_STATS: tuple[float, float] = (6.0, 3.0)
"""(mean, std) of the SAR co/cross-pol ratio in dB, rounded from two real samples measured for the SAR
front-end: BigEarthNet-S1 v1.0 examples (6 patches, 86,400 px): 6.00 +- 3.33 dB; BioMassters chip 0060c0a5
(12 months, both orbits, 1.57 M px): 6.11 +- 1.54 dB."""
RATIO_DB_STATS_BY_NAME: dict[str, tuple[float, float]] = {"VV/VH": RATIO_DB_STATS, "HH/HV": RATIO_DB_STATS}


@dataclass
class ChannelImage:
    """Normalised image channels ready for a tokenizer.

    Attributes:
        sensor: catalogue name of the sensor.
        channels: one :class:`Channel` per plane of ``values``.
        values: ``[B,T,C,H,W]`` float, normalised (zero mean, unit variance per channel by default
            statistics), 0 at invalid pixels.
        times: ``[B,T]`` int64 days since 1970-01-01.
        valid: ``[B,T,H,W]`` bool pixel validity.
        unit: the physical unit the values were normalised from (``reflectance``, ``dB``).
        orbit: SAR orbit direction when known.
        finite_checked: True when non-finite pixels are already marked invalid; False when the
            values may still hold NaN/inf at "valid" pixels (the tokenizer then checks).
        gain: ``[C]``; when set (with ``shift``), ``values`` are *not yet normalised*: the normalised
            values are ``values * gain + shift`` per channel. Tokenizers fold this affine map into
            their patch projection instead of making a normalised copy of the image (one pass and
            one image-sized allocation fewer); :meth:`normalised` applies it. Only used when every
            pixel is valid (an invalid pixel must be 0 *after* normalisation).
        shift: ``[C]``, see ``gain``.
        all_valid: host-side fact: every pixel of ``valid`` is True (``None``: unknown, computed when
            needed). Lets the tokenizer pick its fast paths without a device synchronisation.

    """

    sensor: str
    channels: tuple[Channel, ...]
    values: Tensor
    times: Tensor
    valid: Tensor
    unit: str
    orbit: str | None = None
    finite_checked: bool = True
    gain: Tensor | None = None
    shift: Tensor | None = None
    all_valid: bool | None = None

    def normalised(self) -> ChannelImage:
        """Return the image with ``gain``/``shift`` applied and invalid pixels zeroed (no-op if applied)."""
        if self.gain is None or self.shift is None:
            return self
        gain = rearrange(self.gain, "c -> 1 1 c 1 1")
        shift = rearrange(self.shift, "c -> 1 1 c 1 1")
        values = torch.addcmul(shift, self.values, gain)
        if self.all_valid is not True:
            values, valid = mask_invalid(values, self.valid, check_finite=False)
            return replace(self, values=values, valid=valid, gain=None, shift=None)
        return replace(self, values=values, gain=None, shift=None)

    def __post_init__(self) -> None:
        if self.values.ndim != 5 or self.values.shape[2] != len(self.channels):
            raise ModelConfigError(
                f"{self.sensor}: values must be [B,T,C,H,W] with C={len(self.channels)} channels, "
                f"got shape {tuple(self.values.shape)}"
            )


def mask_invalid(
    values: Tensor, valid: Tensor, check_finite: bool = True, all_valid: bool | None = None
) -> tuple[Tensor, Tensor]:
    """Mark non-finite pixels invalid and zero every invalid pixel.

    Args:
        values: ``[B,T,C,H,W]``.
        valid: ``[B,T,H,W]`` bool.
        check_finite: look for NaN/inf pixels (a full pass over ``values``). Without it only the
            given ``valid`` is applied; the tokenizers then detect non-finite values from their
            (much smaller) output and call this again with the check (see ``PatchTokenizer``).
        all_valid: without ``check_finite``, whether ``valid`` is known to be all True (skips the
            where-pass without asking the device); ``None``: find out.

    Returns:
        ``(values, valid)`` with NaN/inf pixels (in any channel) invalid and all invalid pixels 0.

    """
    if check_finite:
        valid = valid & torch.isfinite(values).all(dim=2)
    elif all_valid is True:
        return values, valid
    if all_valid is None and bool(valid.all()):
        return values, valid  # nothing to zero (the common case; saves a pass over the values)
    values = torch.where(rearrange(valid, "b t h w -> b t 1 h w"), values, values.new_zeros(()))
    return values, valid


def default_statistics(sensor: str, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """The catalogue's default (mean, std) of channels ``names`` of ``sensor``, each ``[C]``.

    In the encoder's normalisation domain: optical bands in reflectance, SAR polarisations in dB, SAR
    ratio channels (``VV/VH``) in dB from :data:`RATIO_DB_STATS`. An encoder starts from these and replaces
    them with statistics of the stores it is pretrained on (see :mod:`spectravlm.encoders.statistics`).

    Raises:
        ModelConfigError: a band without default statistics in the catalogue.

    """
    s = get_sensor(sensor)
    means, stds = [], []
    for name in names:
        if name in RATIO_DB_STATS_BY_NAME:
            mean, std = RATIO_DB_STATS_BY_NAME[name]
        else:
            stats = s.band(name).stats
            if stats is None:
                raise ModelConfigError(
                    f"band {name!r} of {s.name} has no default statistics in the catalogue"
                )
            mean, std = stats.mean, stats.std
        means.append(mean)
        stds.append(std)
    return torch.tensor(means, dtype=torch.float32), torch.tensor(stds, dtype=torch.float32)


def check_units(series: SensorSeries, where: str = "") -> None:
    """Refuse a series whose physical unit the encoder cannot take (optical: reflectance; SAR: dB, linear).

    Raises:
        UnknownUnitError: naming the group (``where``), the unit found and the units accepted.

    """
    kind = get_sensor(series.sensor).kind
    accepted = ACCEPTED_UNITS[kind]
    if series.units not in accepted:
        hint = ""
        if series.units == "DN":
            hint = (
                " (uncalibrated digital numbers: re-ingest with calibration, `spectravlm data ingest s1-grd "
                "SCENE STORE --db` reads the product's calibration, or `--calibration-constant K --db`)"
                if kind == "sar"
                else " (digital numbers: re-ingest with `--units reflectance --scale-factor 1e-4`)"
            )
        raise UnknownUnitError(
            f"{where or series.sensor}: values in {series.units!r}{hint}; this encoder takes {kind} values "
            f"in {' or '.join(repr(u) for u in accepted)} (physical = stored * scale + offset)"
        )


def series_all_valid(series: SensorSeries) -> bool:
    """``series.all_valid`` when the loader stated it, else computed (a device-to-host synchronisation)."""
    if series.all_valid is not None:
        return series.all_valid
    return bool(series.valid.all())


def prepare_optical(
    series: SensorSeries, mean: Tensor | None = None, std: Tensor | None = None, lazy: bool = True
) -> ChannelImage:
    """Normalise an optical series in reflectance: ``((values * scale + offset) - mean) / std`` per band.

    Args:
        series: an optical series in ``reflectance`` (after its ``scale`` and ``offset``).
        mean: ``[C]`` per-band means in reflectance (default: the catalogue's, see
            :func:`default_statistics`; an encoder passes its own statistics).
        std: ``[C]`` per-band standard deviations, likewise.
        lazy: with every pixel valid, return the normalisation as ``gain``/``shift`` for the tokenizer to
            fold into its projection (see :class:`ChannelImage`); the values then are the input as float.

    Raises:
        ModelConfigError: a SAR series.
        UnknownUnitError: a unit other than reflectance.

    """
    sensor = get_sensor(series.sensor)
    if sensor.kind != "optical":
        raise ModelConfigError(f"prepare_optical got SAR series {series.sensor}; use the SAR front-end")
    check_units(series)
    if mean is None or std is None:
        mean, std = default_statistics(sensor.name, series.bands)
    x = series.values.float()
    all_valid = series_all_valid(series)
    image = ChannelImage(
        sensor=sensor.name,
        channels=sensor_channels(sensor.name, series.bands),
        values=x,
        times=series.times,
        valid=series.valid,
        unit="reflectance",
        finite_checked=series.finite,  # else NaN/inf are found by the tokenizer from its output
        gain=(series.scale / std).to(x.device),  # ((x * scale + offset) - mean) / std
        shift=((series.offset - mean) / std).to(x.device),
        all_valid=all_valid,
    )
    return image if lazy and all_valid else image.normalised()
