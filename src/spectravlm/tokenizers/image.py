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

from spectravlm.errors import ModelConfigError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries
from spectravlm.tokenizers.channels import Channel, sensor_channels

# SensorSeries.units values that optical preparation accepts, and the factor to the catalogue's
# stored unit (reflectance x 1e4) that the default statistics are given in.
_OPTICAL_SCALE = {"raw": 1.0, "reflectance": 1e4}


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
        unit: the physical unit the values were normalised from (``reflectance*1e4``, ``dB``).
        orbit: SAR orbit direction when known.
        finite_checked: True when non-finite pixels are already marked invalid; False when the
            values may still hold NaN/inf at "valid" pixels (the tokenizer then checks).
        gain: ``[C]``; when set (with ``shift``), ``values`` are *not yet normalised*: the normalised
            values are ``values * gain + shift`` per channel. Tokenizers fold this affine map into
            their patch projection instead of making a normalised copy of the image (one pass and
            one image-sized allocation fewer); :meth:`normalised` applies it. Only used when every
            pixel is valid (an invalid pixel must be 0 *after* normalisation).
        shift: ``[C]``, see ``gain``.

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

    def normalised(self) -> ChannelImage:
        """Return the image with ``gain``/``shift`` applied and invalid pixels zeroed (no-op if applied)."""
        if self.gain is None or self.shift is None:
            return self
        gain = rearrange(self.gain, "c -> 1 1 c 1 1")
        shift = rearrange(self.shift, "c -> 1 1 c 1 1")
        values, valid = mask_invalid(torch.addcmul(shift, self.values, gain), self.valid, check_finite=False)
        return replace(self, values=values, valid=valid, gain=None, shift=None)

    def __post_init__(self) -> None:
        if self.values.ndim != 5 or self.values.shape[2] != len(self.channels):
            raise ModelConfigError(
                f"{self.sensor}: values must be [B,T,C,H,W] with C={len(self.channels)} channels, "
                f"got shape {tuple(self.values.shape)}"
            )


def mask_invalid(values: Tensor, valid: Tensor, check_finite: bool = True) -> tuple[Tensor, Tensor]:
    """Mark non-finite pixels invalid and zero every invalid pixel.

    Args:
        values: ``[B,T,C,H,W]``.
        valid: ``[B,T,H,W]`` bool.
        check_finite: look for NaN/inf pixels (a full pass over ``values``). Without it only the
            given ``valid`` is applied; the tokenizers then detect non-finite values from their
            (much smaller) output and call this again with the check (see ``PatchTokenizer``).

    Returns:
        ``(values, valid)`` with NaN/inf pixels (in any channel) invalid and all invalid pixels 0.

    """
    if check_finite:
        valid = valid & torch.isfinite(values).all(dim=2)
    if bool(valid.all()):
        return values, valid  # nothing to zero (the common case; saves a pass over the values)
    values = torch.where(rearrange(valid, "b t h w -> b t 1 h w"), values, values.new_zeros(()))
    return values, valid


def normalisation_stats(sensor: str, bands: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """Default per-band (mean, std) from the catalogue, each ``[C]``, in the bands' stored units.

    Raises:
        ModelConfigError: when a band has no default statistics in the catalogue.

    """
    s = get_sensor(sensor)
    means, stds = [], []
    for name in bands:
        stats = s.band(name).stats
        if stats is None:
            raise ModelConfigError(f"band {name!r} of {s.name} has no default statistics in the catalogue")
        means.append(stats.mean)
        stds.append(stats.std)
    return torch.tensor(means), torch.tensor(stds)


def prepare_optical(series: SensorSeries, lazy: bool = True) -> ChannelImage:
    """Normalise an optical series with the catalogue's default statistics.

    ``series.units`` selects the conversion: ``raw`` (reflectance x 1e4, the catalogue's stored
    unit), ``reflectance`` (0-1, multiplied by 1e4 first) or ``normalised`` (used as given).
    With ``lazy`` and every pixel valid, the normalisation is returned as ``gain``/``shift`` for
    the tokenizer to fold into its projection (see :class:`ChannelImage`); the values then are
    the input as float.

    Raises:
        ModelConfigError: a SAR series, or units that are not one of the above.

    """
    sensor = get_sensor(series.sensor)
    if sensor.kind != "optical":
        raise ModelConfigError(f"prepare_optical got SAR series {series.sensor}; use the SAR front-end")
    x = series.values.float()
    if series.units != "normalised":
        if series.units not in _OPTICAL_SCALE:
            raise ModelConfigError(
                f"{series.sensor}: unknown optical units {series.units!r}; expected one of "
                f"{', '.join([*_OPTICAL_SCALE, 'normalised'])}"
            )
        mean, std = normalisation_stats(sensor.name, series.bands)
        image = ChannelImage(
            sensor=sensor.name,
            channels=sensor_channels(sensor.name, series.bands),
            values=x,
            times=series.times,
            valid=series.valid,
            unit="reflectance*1e4",
            finite_checked=False,  # NaN/inf: found by the tokenizer from its output
            gain=(_OPTICAL_SCALE[series.units] / std).to(x.device),  # (x * scale - mean) / std
            shift=(-mean / std).to(x.device),
        )
        return image if lazy and bool(series.valid.all()) else image.normalised()
    values, valid = mask_invalid(x, series.valid, check_finite=False)
    return ChannelImage(
        sensor=sensor.name,
        channels=sensor_channels(sensor.name, series.bands),
        values=values,
        times=series.times,
        valid=valid,
        unit="reflectance*1e4",
        finite_checked=False,
    )
