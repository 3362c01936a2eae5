"""Which tokens the MAE encoder does not see: random, whole bands, whole dates or a whole sensor.

Axis legend: ``B`` batch, ``N`` tokens, ``U`` masking units.

Every strategy hides whole *units* of tokens, a ratio of each sample's valid units:

* ``random``: a unit is one token (MAE, He et al., https://arxiv.org/abs/2111.06377);
* ``dates``: a unit is one date of one sensor stream: every token of that date is hidden, so the model
  must fill in a date from the other dates and the other sensor (temporal masking as in SatMAE's
  independent masking across time, Cong et al., https://arxiv.org/abs/2207.08051);
* ``bands``: a unit is one spectral group of one stream (tokenizers with several spectral groups per
  patch: SatMAE band groups, SpectralGPT cubes). With the wavelength tokenizer, whose one token per patch
  folds all bands together, whole bands are instead removed from the encoder's input (the same bands for
  the whole batch: see :mod:`spectravlm.pretraining.mae`) and reconstructed from the others;
* ``sensor``: every token of all sensors but one (the one kept is chosen at random per sample among the
  sensors it has; both S1 orbit streams are one sensor) is hidden, and ``ratio`` of the kept sensor's
  tokens at random: the model reconstructs S1 from S2 or the reverse (cross-modal masking, as in CROMA,
  Fuller et al., https://arxiv.org/abs/2311.00566). A sample with one sensor only is masked at random.

Rounding: of ``n`` valid units a sample keeps ``max(1, floor(n * (1 - ratio)))`` visible (MAE keeps
``int(L * (1 - ratio))``); invalid tokens are never visible and never hidden. Randomness comes only from
the ``generator`` passed in, so a seeded caller gets the same masks again (exact resumption).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from spectravlm.errors import ModelConfigError

MaskStrategy = Literal["random", "bands", "dates", "sensor"]
MASK_STRATEGIES: tuple[str, ...] = ("random", "bands", "dates", "sensor")


def check_mask(ratio: float, strategy: str) -> None:
    """Refuse a ratio outside ``[0, 1)`` or an unknown strategy."""
    if strategy not in MASK_STRATEGIES:
        raise ModelConfigError(f"mask_strategy must be one of {', '.join(MASK_STRATEGIES)}; got {strategy!r}")
    if not 0.0 <= ratio < 1.0:
        raise ModelConfigError(
            f"mask_ratio must be in [0, 1) (the share of tokens hidden from the encoder), got {ratio}"
        )


def hide_units(unit: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Hide a ratio of each sample's units, at random.

    Args:
        unit: ``[B,N]`` long unit of each token, ``-1`` for invalid tokens.
        ratio: share of valid units to hide, in ``[0, 1)``.
        generator: source of randomness (on ``unit``'s device).

    Returns:
        ``[B,N]`` bool, True for the tokens of hidden units.

    """
    b = unit.shape[0]
    if unit.numel() == 0 or ratio == 0.0:
        return torch.zeros_like(unit, dtype=torch.bool)
    u = int(unit.max()) + 1
    if u <= 0:
        return torch.zeros_like(unit, dtype=torch.bool)
    present = torch.zeros(b, u, dtype=torch.bool, device=unit.device)
    present.scatter_(1, unit.clamp_min(0), unit >= 0)  # (B, U) units with at least one valid token
    score = torch.rand(b, u, generator=generator, device=unit.device)
    score = score.masked_fill(~present, 2.0)
    rank = score.argsort(dim=1).argsort(dim=1)  # (B, U) 0 = first kept
    n_present = present.sum(dim=1, keepdim=True)
    n_keep = torch.floor(n_present * (1.0 - ratio)).long().clamp_min(1)
    hidden_unit = present & (rank >= n_keep)
    return hidden_unit.gather(1, unit.clamp_min(0)) & (unit >= 0)


def choose_hidden(
    strategy: MaskStrategy,
    ratio: float,
    valid: Tensor,
    date: Tensor,
    group: Tensor,
    stream: Tensor,
    sensor: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Tokens hidden from the encoder under ``strategy``.

    Args:
        strategy: ``random``, ``bands``, ``dates`` or ``sensor`` (see the module docstring).
        ratio: masking ratio in ``[0, 1)``.
        valid: ``[B,N]`` bool valid tokens.
        date: ``[B,N]`` long date index of each token within its stream.
        group: ``[B,N]`` long spectral-group index within its stream.
        stream: ``[N]`` long sensor-stream index of each token.
        sensor: ``[B,N]`` long catalogue-sensor index of each token.
        generator: source of randomness.

    Returns:
        ``[B,N]`` bool hidden tokens (a subset of ``valid``).

    """
    check_mask(ratio, strategy)
    b, n = valid.shape
    stream_bn = stream.view(1, n).expand(b, n)
    if strategy == "random":
        unit = torch.arange(n, device=valid.device).view(1, n).expand(b, n)
    elif strategy == "dates":
        unit = stream_bn * (int(date.max()) + 1) + date
    elif strategy == "bands":
        unit = stream_bn * (int(group.max()) + 1) + group
    else:  # sensor: all sensors but one (keeps max(1, floor(n * 1e-6)) = 1), then ``ratio`` of the rest
        whole = hide_units(torch.where(valid, sensor, -1), 1.0 - 1e-6, generator)
        rest = torch.arange(n, device=valid.device).view(1, n).expand(b, n)
        return whole | hide_units(torch.where(valid & ~whole, rest, -1), ratio, generator)
    return hide_units(torch.where(valid, unit, -1), ratio, generator)
