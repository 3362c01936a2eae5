"""SAR front-end: units, nodata/border masking, speckle filtering, polarisation ratio, normalisation.

Axis legend: ``B`` batch, ``T`` dates, ``C`` channels, ``H``/``W`` rows/columns.

SAR is encoded as what it is: backscatter power per polarisation. The front-end turns a
:class:`~spectravlm.stack.SensorSeries` of Sentinel-1 backscatter into a
:class:`~spectravlm.tokenizers.image.ChannelImage` in normalised dB, with:

* **units**: ``series.units`` says what ``values * scale + offset`` is (``dB`` or ``linear`` power; the
  uncalibrated ``DN`` is refused). The output is in dB. Input in the wrong unit is refused where it is
  detectable: "dB" values that are all > 0 (that is linear power: real sigma0 in dB is mostly negative)
  or "linear" power with negative values (that is dB).
* **masking**: pixels equal to ``nodata`` (BioMassters uses -9999), non-finite pixels, and linear
  power <= 0 (the zero-filled borders of GRD scenes) are invalid; invalid pixels are zeroed after
  normalisation and never reach a token.
* **speckle filtering** (optional, on linear power, valid-pixel aware):

  - ``"lee"``: the Lee MMSE filter (J.-S. Lee, "Digital image enhancement and noise filtering by
    use of local statistics", IEEE TPAMI 1980, https://doi.org/10.1109/TPAMI.1980.4766994) over a
    square window: ``x = m + w (z - m)``, ``w = var_x / var_z``,
    ``var_x = (var_z - m^2 Cu^2) / (1 + Cu^2)``, ``Cu^2 = 1 / ENL``.
  - ``"refined_lee"``: Lee's refined filter (J.-S. Lee, "Refined filtering of image noise using
    local statistics", CGIP 1981, https://doi.org/10.1016/S0146-664X(81)80018-4): in a 7x7
    window the nine 3x3 sub-window means give the gradient along four axes; along the strongest
    one, the statistics are taken over the edge-aligned half window on the side whose sub-window
    mean is closer to the centre's, so that edges are not blurred. Noise as for ``"lee"``. (The
    widely used Earth Engine script of Mullissa et al. 2021, https://doi.org/10.3390/rs13101954,
    follows the same scheme but estimates the noise level from the image; here it comes from the
    ENL of the product.)

  The default ENL, 4.4, is that of Sentinel-1 IW GRDH products (ESA Sentinel-1 Product
  Definition, S1-RS-MDA-52-7440, table "GRD products": IW GRDH ENL 4.4).
* **ratio channel**: ``VV/VH`` (and ``HH/HV`` for quad-pol) as a dB difference, when both
  polarisations are present. It is a channel of its own with a spectral key, never a fake band.
* **normalisation** is not done here: the encoder normalises the dB channels with its own statistics
  (catalogue defaults: BigEarthNet-S1 dB statistics for VV/VH/HH/HV, :data:`RATIO_DB_STATS` for the ratio;
  replaced by the stores' statistics at pretraining).

Polarisation handling: VV only, VV+VH (Sentinel-1 IW dual-pol) and quad-pol (VV, VH, HH, HV) all
work; the channels follow the series' bands, ratios are added for each complete co/cross pair.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, check_sar_unit
from spectravlm.tokenizers.channels import SAR_RATIOS, ratio_channel, sensor_channels
from spectravlm.tokenizers.image import ChannelImage, check_units, mask_invalid

SpeckleFilter = Literal["lee", "refined_lee"]

S1_GRDH_ENL = 4.4
"""Equivalent number of looks of Sentinel-1 IW GRDH products (ESA product definition)."""


def to_db(linear: Tensor) -> Tensor:
    """Linear power to decibels, ``10 log10(x)``; ``x <= 0`` gives ``-inf``/NaN (masked downstream)."""
    return 10.0 * torch.log10(linear)


def to_linear(db: Tensor) -> Tensor:
    """Decibels to linear power, ``10^(x / 10)``."""
    return torch.pow(10.0, db / 10.0)


def _box_stats(z: Tensor, v: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor]:
    """Valid-weighted local mean and variance of ``z`` ``[N,1,H,W]`` under kernels ``[K,1,k,k]``."""
    pad = kernel.shape[-1] // 2
    zv = F.pad(torch.cat([z * v, z * z * v, v], dim=1), (pad, pad, pad, pad))  # (N, 3, H+2p, W+2p)
    sums = F.conv2d(rearrange(zv, "n s h w -> (n s) 1 h w"), kernel)  # (3N, K, H, W)
    s1, s2, n = rearrange(sums, "(n s) k h w -> s n k h w", s=3)
    n = n.clamp_min(1e-6)
    mean = s1 / n
    var = (s2 / n - mean * mean).clamp_min(0.0)
    return mean, var


def _lee_combine(z: Tensor, mean: Tensor, var: Tensor, enl: float) -> Tensor:
    cu2 = 1.0 / enl
    var_x = ((var - mean * mean * cu2) / (1.0 + cu2)).clamp_min(0.0)
    weight = torch.where(var > 0, var_x / var.clamp_min(1e-30), torch.zeros_like(var))
    return mean + weight * (z - mean)


def lee_filter(linear: Tensor, valid: Tensor, window: int = 7, enl: float = S1_GRDH_ENL) -> Tensor:
    """Lee MMSE speckle filter over a square window, on linear power.

    Args:
        linear: ``[N,C,H,W]`` linear power (invalid pixels may hold anything finite).
        valid: ``[N,H,W]`` bool; invalid pixels do not enter the local statistics.
        window: odd window size.
        enl: equivalent number of looks of the product.

    Returns:
        ``[N,C,H,W]`` filtered linear power (invalid pixels: left as the local mean).

    """
    if window % 2 != 1 or window < 3:
        raise ModelConfigError(f"Lee filter window must be odd and >= 3, got {window}")
    n, c = linear.shape[:2]
    z = rearrange(linear, "n c h w -> (n c) 1 h w")
    v = rearrange(valid, "n h w -> n 1 h w").to(linear.dtype).repeat_interleave(c, dim=0)
    kernel = linear.new_ones(1, 1, window, window)
    mean, var = _box_stats(z, v, kernel)
    out = _lee_combine(z, mean, var, enl)
    return rearrange(out, "(n c) 1 h w -> n c h w", n=n)


def _refined_lee_kernels(device: torch.device, dtype: torch.dtype) -> Tensor:
    """Return the eight edge-aligned 7x7 half windows: (axis 0 side a, side b, axis 1 ..., axis 3)."""
    r = torch.arange(7).view(7, 1).expand(7, 7)
    c = torch.arange(7).view(1, 7).expand(7, 7)
    halves = [
        r <= 3, r >= 3,  # axis 0 (gradient between rows): top / bottom half
        c >= r, c <= r,  # axis 1 (gradient along /): upper-right / lower-left triangle
        c <= 3, c >= 3,  # axis 2 (gradient between columns): left / right half
        r + c <= 6, r + c >= 6,  # axis 3 (gradient along \): upper-left / lower-right triangle
    ]  # fmt: skip
    return torch.stack(halves).to(device=device, dtype=dtype).unsqueeze(1)  # (8, 1, 7, 7)


def refined_lee_filter(linear: Tensor, valid: Tensor, enl: float = S1_GRDH_ENL) -> Tensor:
    """Lee's refined (edge-aligned window) speckle filter, 7x7, on linear power.

    Args:
        linear: ``[N,C,H,W]`` linear power.
        valid: ``[N,H,W]`` bool; invalid pixels do not enter any statistic.
        enl: equivalent number of looks.

    Returns:
        ``[N,C,H,W]`` filtered linear power.

    """
    n, c, h, w = linear.shape
    z = rearrange(linear, "n c h w -> (n c) 1 h w")
    v = rearrange(valid, "n h w -> n 1 h w").to(linear.dtype).repeat_interleave(c, dim=0)
    # 3x3 sub-window means, sampled at offsets -2, 0, +2 around each pixel: b[dy][dx]
    m3, _ = _box_stats(z, v, linear.new_ones(1, 1, 3, 3))
    m3 = F.pad(m3, (2, 2, 2, 2), mode="replicate")

    def sample(dy: int, dx: int) -> Tensor:
        return m3[:, :, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]

    m = [[sample(2 * i, 2 * j) for j in (-1, 0, 1)] for i in (-1, 0, 1)]  # 3x3 grid of means
    centre = m[1][1]
    # Lee's four directional gradient masks over the 3x3 grid of means; for each axis the two
    # sub-windows on either side (side a, side b) in the order of _refined_lee_kernels.
    gradients = torch.cat(
        [
            (m[0][0] + m[0][1] + m[0][2]) - (m[2][0] + m[2][1] + m[2][2]),  # rows: top - bottom
            (m[0][1] + m[0][2] + m[1][2]) - (m[1][0] + m[2][0] + m[2][1]),  # /: upper right - lower left
            (m[0][0] + m[1][0] + m[2][0]) - (m[0][2] + m[1][2] + m[2][2]),  # columns: left - right
            (m[0][0] + m[0][1] + m[1][0])
            - (m[1][2] + m[2][1] + m[2][2]),  # backslash: upper left - lower right
        ],
        dim=1,
    ).abs()  # (NC, 4, H, W)
    pairs = [(m[0][1], m[2][1]), (m[0][2], m[2][0]), (m[1][0], m[1][2]), (m[0][0], m[2][2])]
    axis = gradients.argmax(dim=1, keepdim=True)
    side_b = torch.cat([(b - centre).abs() < (a - centre).abs() for a, b in pairs], dim=1)
    direction = 2 * axis + side_b.gather(1, axis).long()  # (NC, 1, H, W) in 0..7
    mean, var = _box_stats(z, v, _refined_lee_kernels(linear.device, linear.dtype))  # (NC, 8, H, W)
    out = _lee_combine(z, mean.gather(1, direction), var.gather(1, direction), enl)
    return rearrange(out, "(n c) 1 h w -> n c h w", n=n)


class SARFrontEnd(nn.Module):
    """Sentinel-1 (or any catalogue SAR sensor) front-end: series -> normalised dB channels.

    Args:
        speckle_filter: ``None``, ``"lee"`` or ``"refined_lee"`` (see the module docstring).
        window: window of the plain Lee filter (odd).
        enl: equivalent number of looks used by both filters.
        add_ratio: add ``VV/VH`` (and ``HH/HV``) ratio channels when both polarisations are present.
        nodata: value that marks missing pixels in ``raw``/``dB``/``linear`` input (``None``: none).
        check_units: refuse values whose unit contradicts ``series.units`` (see :func:`check_sar_unit`);
            done for CPU tensors only (on an accelerator it would cost a device synchronisation every
            step: :class:`~spectravlm.data.dataset.CubeDataset` checks the first window of each SAR group
            on the CPU instead).

    """

    def __init__(
        self,
        speckle_filter: SpeckleFilter | None = None,
        window: int = 7,
        enl: float = S1_GRDH_ENL,
        add_ratio: bool = True,
        nodata: float | None = -9999.0,
        check_units: bool = True,
    ) -> None:
        super().__init__()
        if speckle_filter not in (None, "lee", "refined_lee"):
            raise ModelConfigError(
                f"unknown speckle filter {speckle_filter!r}; expected None, 'lee' or 'refined_lee'"
            )
        self.speckle_filter = speckle_filter
        self.window = window
        self.enl = enl
        self.add_ratio = add_ratio
        self.nodata = nodata
        self.check_units = check_units

    def calibrated(self, series: SensorSeries) -> ChannelImage:
        """Backscatter in dB (not normalised), filtered, with ratio channels; invalid pixels masked."""
        sensor = get_sensor(series.sensor)
        if sensor.kind != "sar":
            raise ModelConfigError(f"SAR front-end got optical series {series.sensor}")
        check_units(series)
        unit = series.units
        x = series.values.float()
        if (series.scale, series.offset) != (1.0, 0.0):
            x = x * series.scale + series.offset
        valid = series.valid & torch.isfinite(x).all(dim=2)
        if self.nodata is not None:
            valid = valid & (series.values != self.nodata).all(dim=2)
        # a loader-vetted series (``finite``) was checked on the CPU by the loader; on an accelerator the
        # check would cost a device synchronisation every step
        if self.check_units and not series.finite and x.device.type == "cpu":
            check_sar_unit(x, rearrange(valid, "b t h w -> b t 1 h w"), unit, series.sensor)
        if unit == "linear":
            valid = valid & (x > 0).all(dim=2)  # zero-filled GRD borders
        channels = list(sensor_channels(sensor.name, series.bands))
        b = x.shape[0]
        if self.speckle_filter is not None:
            linear = x if unit == "linear" else to_linear(x)
            flat = rearrange(linear, "b t c h w -> (b t) c h w")
            flat_valid = rearrange(valid, "b t h w -> (b t) h w")
            safe = torch.where(rearrange(flat_valid, "n h w -> n 1 h w"), flat, flat.new_zeros(()))
            if self.speckle_filter == "lee":
                flat = lee_filter(safe, flat_valid, self.window, self.enl)
            else:
                flat = refined_lee_filter(safe, flat_valid, self.enl)
            linear = rearrange(flat, "(b t) c h w -> b t c h w", b=b)
            db = to_db(linear.clamp_min(1e-12))
        else:
            db = x if unit == "dB" else to_db(x)
        planes = [db]
        if self.add_ratio:
            names = [c.name for c in channels]
            for ratio, (num, den) in SAR_RATIOS.items():
                if num in names and den in names:
                    planes.append(
                        db[:, :, names.index(num)].unsqueeze(2) - db[:, :, names.index(den)].unsqueeze(2)
                    )
                    channels.append(ratio_channel(sensor.platform, ratio, sensor.band(num).gsd_m))
        values = torch.cat(planes, dim=2)
        # A batch the loader vouches for (every pixel valid, finite dB values) has nothing to mask; else one
        # where-pass, without asking the device whether it is needed.
        clean = series.all_valid is True and series.finite and unit == "dB" and self.speckle_filter is None
        all_valid: bool | None = True
        if not clean:
            values, valid = mask_invalid(values, valid, check_finite=True, all_valid=False)
            all_valid = None
        return ChannelImage(
            sensor=sensor.name,
            channels=tuple(channels),
            values=values,
            times=series.times,
            valid=valid,
            unit="dB",
            orbit=series.orbit,
            all_valid=all_valid,
        )

    def forward(self, series: SensorSeries) -> ChannelImage:
        """Backscatter in dB, not normalised (the encoder normalises it): :meth:`calibrated`."""
        return self.calibrated(series)
