"""Target transforms for regression: the model learns ``z = f(y)``, every output is mapped back to ``y``.

Kinds (``TargetTransform.kind``):

* ``none``: ``z = y``;
* ``standardise``: ``z = (y - mean) / std`` with the training split's mean and standard deviation;
* ``log1p``: ``z = log(1 + y)`` (AGB is skewed: many low values, a long tail of dense stands);
* ``log1p_standardise``: ``z = (log(1 + y) - mean) / std``, the statistics taken in log space.

The statistics are computed once from the training split when a fit starts (:func:`fit_statistics`), kept as
buffers (in every checkpoint) and as the task's hyperparameters, and inverted on every output. Every kind is
monotone increasing, so predicted quantiles map to quantiles exactly (:meth:`TargetTransform.inverse`);
a predicted mean in a log space maps to the median in target units.

``log1p`` needs ``y > -1``: targets below 0 (AGB cannot be negative) are clipped to 0 first.

Units are facts: a target layer must carry a ``units`` attribute that :func:`target_units` knows (AGB in
``t/ha``, the same as ``Mg/ha``); a missing or unknown unit is an error, never a guess.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError

UNIT_SPELLINGS: dict[str, str] = {
    **dict.fromkeys(
        ("t/ha", "t ha-1", "t ha^-1", "t.ha-1", "mg/ha", "mg ha-1", "mg ha^-1", "mg.ha-1"), "t/ha"
    ),
    **dict.fromkeys(("m", "metre", "meter", "metres", "meters"), "m"),
    **dict.fromkeys(("percent", "%"), "percent"),
    **dict.fromkeys(("1", "fraction", "dimensionless"), "1"),
}
"""Target unit spellings (lower case) -> canonical name: biomass density (1 t/ha = 1 Mg/ha), height, cover."""
BIOMASS_TARGETS = ("agb", "biomass", "agbd")
"""Target names that are biomass densities: their unit must be t/ha (Mg/ha)."""

TargetTransformKind = Literal["none", "standardise", "log1p", "log1p_standardise"]
KINDS: tuple[str, ...] = ("none", "standardise", "log1p", "log1p_standardise")


def needs_statistics(kind: str) -> bool:
    """Whether ``kind`` standardises (and so needs the training split's statistics)."""
    return kind.endswith("standardise")


def uses_log(kind: str) -> bool:
    """Whether ``kind`` takes ``log1p`` of the target."""
    return kind.startswith("log1p")


def fit_statistics(values: np.ndarray, kind: str) -> tuple[float, float]:
    """Mean and standard deviation of the finite ``values`` in the domain ``kind`` standardises in.

    Raises:
        ModelConfigError: no finite value, or a constant target (std 0).

    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ModelConfigError("no finite target value to compute the target statistics from")
    if uses_log(kind):
        v = np.log1p(np.clip(v, 0.0, None))
    mean, std = float(v.mean()), float(v.std())
    if not std > 0:
        raise ModelConfigError(f"the target is constant ({mean:g}) over the training split: nothing to learn")
    return mean, std


def target_units(name: str, units: str, where: str) -> str:
    """The canonical unit of target ``name`` from its ``units`` attribute (``Mg/ha`` -> ``t/ha``).

    Args:
        name: the target layer (``agb``).
        units: its ``units`` attribute.
        where: the store (for the error).

    Raises:
        ModelConfigError: no unit, an unknown spelling, or a biomass target in anything but t/ha (Mg/ha).

    """
    if not units.strip():
        raise ModelConfigError(
            f"{where}: target {name!r} has no units attribute; a target's unit is a fact (AGB: t/ha = Mg/ha)"
        )
    canonical = UNIT_SPELLINGS.get(units.strip().lower())
    if canonical is None:
        known = ", ".join(sorted(set(UNIT_SPELLINGS.values())))
        raise ModelConfigError(
            f"{where}: target {name!r} is in unknown units {units!r}; known: {known} (t/ha = Mg/ha)"
        )
    if name.lower() in BIOMASS_TARGETS and canonical != "t/ha":
        raise ModelConfigError(
            f"{where}: target {name!r} is a biomass density but its units are {units!r}; "
            "expected t/ha (Mg/ha)"
        )
    return canonical


class TargetTransform(nn.Module):
    """``z = f(y)`` and its inverse (see the module docstring).

    Args:
        kind: ``none``, ``standardise``, ``log1p`` or ``log1p_standardise``.
        mean: location of the standardisation (in log space for ``log1p_standardise``).
        std: scale of the standardisation.

    """

    loc: Tensor
    scale: Tensor

    def __init__(
        self, kind: TargetTransformKind = "standardise", mean: float = 0.0, std: float = 1.0
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ModelConfigError(f"target_transform must be one of {', '.join(KINDS)}; got {kind!r}")
        if not std > 0 or not np.isfinite(mean) or not np.isfinite(std):
            raise ModelConfigError(
                f"target statistics mean={mean}, std={std} are not usable (std must be > 0)"
            )
        self.kind = kind
        self.register_buffer("loc", torch.tensor(float(mean) if needs_statistics(kind) else 0.0))
        self.register_buffer("scale", torch.tensor(float(std) if needs_statistics(kind) else 1.0))

    def set_statistics(self, mean: float, std: float) -> None:
        """Replace the standardisation statistics (when a fit computed them)."""
        if needs_statistics(self.kind):
            with torch.no_grad():
                self.loc.fill_(float(mean))
                self.scale.fill_(float(std))

    def forward(self, y: Tensor) -> Tensor:
        """``z = f(y)`` (NaN stays NaN)."""
        z = torch.log1p(y.clamp_min(0.0)) if uses_log(self.kind) else y
        return (z - self.loc) / self.scale

    def inverse(self, z: Tensor) -> Tensor:
        """``y = f^-1(z)``: maps a value, a quantile or an interval bound back to target units."""
        y = z * self.scale + self.loc
        return torch.expm1(y.clamp_max(80.0)) if uses_log(self.kind) else y  # exp(88) overflows float32

    def extra_repr(self) -> str:
        """``kind``, ``mean`` and ``std`` in the module's repr."""
        return f"kind={self.kind!r}, mean={float(self.loc):.4g}, std={float(self.scale):.4g}"


__all__ = [
    "BIOMASS_TARGETS",
    "KINDS",
    "UNIT_SPELLINGS",
    "TargetTransform",
    "TargetTransformKind",
    "fit_statistics",
    "needs_statistics",
    "target_units",
    "uses_log",
]
