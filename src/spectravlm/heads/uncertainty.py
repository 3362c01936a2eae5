"""What a regression head's channels mean, its loss over valid targets, and its predictions in target units.

Axis legend: ``B`` batch, ``k`` head channels, ``...`` pixels (``H, W``) or nothing (one value per window).

Three kinds (``Likelihood.kind``), all in the transformed target space ``z`` of
:class:`~spectravlm.heads.targets.TargetTransform`:

* ``none``: one channel, the value; squared error.
* ``gaussian``: two channels, mean ``mu`` and variance ``softplus(raw) + 1e-6``; Gaussian negative
  log-likelihood (:class:`torch.nn.GaussianNLLLoss`; Nix & Weigend 1994, Kendall & Gal,
  https://arxiv.org/abs/1703.04977).
* ``quantile``: one channel per quantile level; pinball loss (Koenker & Bassett 1978). Crossing quantiles are
  sorted at prediction time (monotone rearrangement, Chernozhukov et al., https://arxiv.org/abs/0704.3649).

Losses are means over the positions where ``mask`` is True (finite targets, real samples): NaN or nodata
targets and padding samples contribute nothing, and a batch without any valid target gives a loss of
exactly 0 (with a graph, so ``backward`` works and every gradient is 0), never NaN.

Outputs in target units (:class:`RegressionOutput`): the point prediction (``none``: the value; ``gaussian``:
``f^-1(mu)``, the mean for linear transforms and the median for ``log1p``; ``quantile``: the median), the
central interval at level ``interval`` (``f^-1`` of the bounds in ``z``), and ``std``, a sigma-equivalent
spread: half the width of the central 68.3% interval (``gaussian``) or the interval width divided by
``2 z_(1+interval)/2`` (``quantile``); for linear transforms it is the predicted standard deviation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError
from spectravlm.heads.targets import TargetTransform

Uncertainty = Literal["none", "gaussian", "quantile"]
UNCERTAINTIES: tuple[str, ...] = ("none", "gaussian", "quantile")
MIN_VARIANCE = 1e-6


@dataclass
class RegressionOutput:
    """Predictions in target units, each ``[B,...]``.

    Attributes:
        mean: the point prediction.
        std: sigma-equivalent spread (``None`` without uncertainty).
        lower: lower bound of the central ``interval`` (``None`` without uncertainty).
        upper: upper bound of the central ``interval``.

    """

    mean: Tensor
    std: Tensor | None = None
    lower: Tensor | None = None
    upper: Tensor | None = None


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is True; exactly 0 (keeping the graph) where nothing is."""
    kept = torch.where(mask, values, values.new_zeros(()))
    return kept.sum() / mask.sum().clamp_min(1).to(values.dtype)


def normal_quantile(p: float) -> float:
    """Standard normal quantile ``z_p`` (``p = 0.95`` -> 1.645)."""
    return math.sqrt(2.0) * float(torch.erfinv(torch.tensor(2.0 * p - 1.0, dtype=torch.float64)))


class Likelihood(nn.Module):
    """Channels, loss and decoding of a regression head (see the module docstring).

    Args:
        kind: ``none``, ``gaussian`` or ``quantile``.
        quantiles: levels predicted with ``quantile`` (must include 0.5 and the bounds of ``interval``).
        interval: level of the central prediction interval (0.9: from the 5% to the 95% quantile).

    """

    def __init__(
        self,
        kind: Uncertainty = "none",
        quantiles: tuple[float, ...] = (0.05, 0.5, 0.95),
        interval: float = 0.9,
    ) -> None:
        super().__init__()
        if kind not in UNCERTAINTIES:
            raise ModelConfigError(f"uncertainty must be one of {', '.join(UNCERTAINTIES)}; got {kind!r}")
        if not 0 < interval < 1:
            raise ModelConfigError(f"interval must be in (0, 1), got {interval}")
        self.kind = kind
        self.interval = float(interval)
        self.quantiles = tuple(float(q) for q in quantiles)
        self.z = normal_quantile(0.5 + interval / 2)
        if kind == "quantile":
            qs = self.quantiles
            if list(qs) != sorted(set(qs)) or not all(0 < q < 1 for q in qs):
                raise ModelConfigError(f"quantiles must be increasing levels in (0, 1), got {list(qs)}")
            lo, hi = 0.5 - interval / 2, 0.5 + interval / 2
            need = {"0.5": 0.5, f"{lo:g}": lo, f"{hi:g}": hi}
            missing = [
                name for name, q in need.items() if not any(math.isclose(q, x, abs_tol=1e-9) for x in qs)
            ]
            if missing:
                raise ModelConfigError(
                    f"quantiles {list(qs)} lack {', '.join(missing)}: the median and the bounds of the "
                    f"{interval:g} interval are needed"
                )
            self.median_index = min(range(len(qs)), key=lambda i: abs(qs[i] - 0.5))
            self.lower_index = min(range(len(qs)), key=lambda i: abs(qs[i] - lo))
            self.upper_index = min(range(len(qs)), key=lambda i: abs(qs[i] - hi))
            self.register_buffer("levels", torch.tensor(qs), persistent=False)
        self.nll = nn.GaussianNLLLoss(full=False, eps=MIN_VARIANCE, reduction="none")

    @property
    def channels(self) -> int:
        """Head channels ``k``."""
        return {"none": 1, "gaussian": 2, "quantile": len(self.quantiles)}[self.kind]

    @property
    def has_uncertainty(self) -> bool:
        """Whether the outputs carry an interval."""
        return self.kind != "none"

    def loss(self, raw: Tensor, z: Tensor, mask: Tensor) -> Tensor:
        """Mean loss over the valid positions.

        Args:
            raw: ``[B,k,...]`` head outputs.
            z: ``[B,...]`` transformed targets (NaN allowed where ``mask`` is False).
            mask: ``[B,...]`` bool, True where the target counts.

        """
        z = torch.where(mask, z, z.new_zeros(()))  # a NaN target must not reach any gradient
        raw = raw.float()
        if self.kind == "none":
            per = (raw[:, 0] - z) ** 2
        elif self.kind == "gaussian":
            per = self.nll(raw[:, 0], z, self.variance(raw[:, 1]))
        else:
            levels = self.get_buffer("levels").view(1, -1, *[1] * (z.ndim - 1)).to(raw.dtype)  # (1, Q, 1...)
            diff = z.unsqueeze(1) - raw  # (B, Q, ...)
            per = torch.maximum(levels * diff, (levels - 1) * diff).mean(dim=1)
        return masked_mean(per, mask)

    @staticmethod
    def variance(raw: Tensor) -> Tensor:
        """Predicted variance from its raw channel: ``softplus(raw) + 1e-6``."""
        return F.softplus(raw) + MIN_VARIANCE

    def decode(self, raw: Tensor, transform: TargetTransform) -> RegressionOutput:
        """``[B,k,...]`` head outputs -> :class:`RegressionOutput` in target units."""
        raw = raw.float()
        if self.kind == "none":
            return RegressionOutput(transform.inverse(raw[:, 0]))
        if self.kind == "gaussian":
            mu, sd = raw[:, 0], self.variance(raw[:, 1]).sqrt()
            return RegressionOutput(
                mean=transform.inverse(mu),
                std=(transform.inverse(mu + sd) - transform.inverse(mu - sd)) / 2,
                lower=transform.inverse(mu - self.z * sd),
                upper=transform.inverse(mu + self.z * sd),
            )
        q = raw.sort(dim=1).values
        lower = transform.inverse(q[:, self.lower_index])
        upper = transform.inverse(q[:, self.upper_index])
        return RegressionOutput(
            mean=transform.inverse(q[:, self.median_index]),
            std=(upper - lower) / (2 * self.z),
            lower=lower,
            upper=upper,
        )


__all__ = [
    "UNCERTAINTIES",
    "Likelihood",
    "RegressionOutput",
    "Uncertainty",
    "masked_mean",
    "normal_quantile",
]
