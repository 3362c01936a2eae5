"""Fixed pseudo-RGB composites of Sentinel-2 and Sentinel-1 bands, as per-channel affine maps.

Axis legend: ``C`` input bands, ``K`` output channels (3: R, G, B), ``H``/``W`` pixels.

Every composite is ``rgb_k = clip(b_k + sum_c A_kc x_c, 0, 1)``, an affine map of the bands followed
by a clip. Written this way, a learned 1x1 adapter (:mod:`spectravlm.adapters.learned`) initialised
to ``(A, b)`` reproduces the composite exactly, and both share :func:`affine_channels`.

The composites:

* ``s2_true_colour``: R, G, B = B04, B03, B02 as surface reflectance times a gain of 2.5 (reflectance
  0.4 maps to white), clipped to [0, 1]. The gain of 2.5 is the one of Sentinel Hub's standard
  true-colour script (``return [2.5 * B04, 2.5 * B03, 2.5 * B02]``,
  https://custom-scripts.sentinel-hub.com/sentinel-2/true_color/); inputs are reflectance (the series'
  physical values, ``stored * scale + offset``), so ``A = 2.5``.
* ``s1_vv_vh_ratio``: R = VV over [-25, 0] dB, G = VH over [-30, -5] dB, B = VV-VH (the
  cross-pol ratio in dB) over [0, 15] dB, each stretched linearly to [0, 1] and clipped. The ranges
  cover the bulk of land backscatter: BigEarthNet-S1 means are VV -12.6 +- 5.1 dB and
  VH -19.3 +- 5.5 dB (catalogue statistics), the ratio 6.0 +- 3.3 dB (measured, see
  :mod:`spectravlm.tokenizers.sar`); water is dark, vegetation green-blue, built-up bright red.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from spectravlm.errors import ModelConfigError, UnknownUnitError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries


@dataclass(frozen=True)
class Composite:
    """An affine pseudo-RGB composite.

    Attributes:
        name: registry key.
        platform: mission whose bands it reads (``Sentinel-2``, ``Sentinel-1``).
        bands: the input bands, in the order of the columns of ``matrix``.
        matrix: ``3 x C`` coefficients ``A``.
        offset: the three offsets ``b``.
        unit: the physical unit the inputs are taken in (``reflectance`` or ``dB``).

    """

    name: str
    platform: str
    bands: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]
    offset: tuple[float, float, float]
    unit: str

    def weights(self, bands: tuple[str, ...] | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(A [3,C'], b [3])`` for inputs with ``bands`` (default: :attr:`bands`); other bands get 0.

        Raises:
            ModelConfigError: ``bands`` lacks a band the composite needs.

        """
        bands = self.bands if bands is None else bands
        missing = [b for b in self.bands if b not in bands]
        if missing:
            raise ModelConfigError(
                f"composite {self.name} needs bands {', '.join(self.bands)}; missing {', '.join(missing)}"
            )
        a = torch.zeros(3, len(bands), dtype=torch.float64)
        for j, name in enumerate(self.bands):
            a[:, bands.index(name)] = torch.tensor([row[j] for row in self.matrix], dtype=torch.float64)
        return a.float(), torch.tensor(self.offset, dtype=torch.float32)


S2_TRUE_COLOUR = Composite(
    name="s2_true_colour",
    platform="Sentinel-2",
    bands=("B04", "B03", "B02"),
    matrix=((2.5, 0.0, 0.0), (0.0, 2.5, 0.0), (0.0, 0.0, 2.5)),
    offset=(0.0, 0.0, 0.0),
    unit="reflectance",
)

S1_VV_VH_RATIO = Composite(
    name="s1_vv_vh_ratio",
    platform="Sentinel-1",
    bands=("VV", "VH"),
    matrix=((1 / 25, 0.0), (0.0, 1 / 25), (1 / 15, -1 / 15)),
    offset=(25 / 25, 30 / 25, 0.0),
    unit="dB",
)

COMPOSITES: dict[str, Composite] = {c.name: c for c in (S2_TRUE_COLOUR, S1_VV_VH_RATIO)}


def get_composite(name: str | Composite) -> Composite:
    """Look a composite up by name."""
    if isinstance(name, Composite):
        return name
    if name not in COMPOSITES:
        raise ModelConfigError(f"unknown composite {name!r}; known: {', '.join(COMPOSITES)}")
    return COMPOSITES[name]


def affine_channels(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``out_k = bias_k + sum_c weight_kc x_c`` over ``x [N,C,H,W]`` -> ``[N,K,H,W]``.

    Summed band by band in a fixed order (not a GEMM), so that zero weights add exactly nothing and
    a composite and an adapter initialised to it agree bit for bit.
    """
    out = bias.view(1, -1, 1, 1).expand(x.shape[0], -1, x.shape[2], x.shape[3])
    for c in range(x.shape[1]):
        out = out + weight[:, c].view(1, -1, 1, 1) * x[:, c : c + 1]
    return out


def composite_inputs(series: SensorSeries, bands: tuple[str, ...], unit: str) -> tuple[Tensor, Tensor]:
    """Bands of a series in the given order, in physical ``unit``, flattened over dates.

    Args:
        series: the input (its ``scale`` and ``offset`` are applied).
        bands: bands to take, in this order.
        unit: ``reflectance`` (optical) or ``dB`` (SAR; linear power is converted).

    Returns:
        ``x [(B T),C,H,W]`` with invalid pixels set to 0, and ``valid [(B T),H,W]``.

    """
    sensor = get_sensor(series.sensor)
    index = [series.bands.index(sensor.canonical_name(b)) if b in series.bands else -1 for b in bands]
    missing = [b for b, i in zip(bands, index, strict=True) if i < 0]
    if missing:
        raise ModelConfigError(
            f"{series.sensor} series lacks bands {', '.join(missing)} (has {', '.join(series.bands)})"
        )
    raw = series.values[:, :, index]
    x = raw.float() * series.scale + series.offset
    if unit == "dB" and series.units == "linear":
        x = 10.0 * torch.log10(x)
    elif series.units != unit:
        raise UnknownUnitError(f"composite needs {series.sensor} values in {unit!r}, got {series.units!r}")
    valid = series.valid & torch.isfinite(x).all(dim=2) & (raw != -9999.0).all(dim=2)
    x = torch.where(valid.unsqueeze(2), x, torch.zeros((), dtype=x.dtype))
    return x.flatten(0, 1), valid.flatten(0, 1)


def apply_composite(series: SensorSeries, composite: str | Composite) -> Tensor:
    """Apply the fixed composite to a series: ``[B,T,3,H,W]`` in [0, 1], 0 at invalid pixels.

    Raises:
        ModelConfigError: the series is of another platform, lacks a band, or has unusable units.

    """
    comp = get_composite(composite)
    if get_sensor(series.sensor).platform != comp.platform:
        raise ModelConfigError(f"composite {comp.name} is for {comp.platform}, got a {series.sensor} series")
    x, valid = composite_inputs(series, comp.bands, comp.unit)
    weight, bias = comp.weights()
    rgb = affine_channels(x, weight.to(x.device), bias.to(x.device)).clamp(0.0, 1.0) * valid.unsqueeze(1)
    return rgb.unflatten(0, series.values.shape[:2])
