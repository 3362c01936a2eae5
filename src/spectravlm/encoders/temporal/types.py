"""Inputs and outputs shared by the temporal encoders, and the masked reductions they use.

Axis legend (the library's, see :mod:`spectravlm.stack`, plus two):

    B  batch        T  dates        N  locations (tokens of one date: patches or pixels)
    D  width        h, w  grid of the N locations, when they form one (N = h * w)

Every temporal encoder takes per-date tokens ``[B,T,N,D]``, their acquisition days ``[B,T]`` (int64 days
since 1970-01-01) and a validity mask ``[B,T,N]`` (False for padded dates, missing dates, cloudy or nodata
locations), and returns a :class:`TemporalOutput`: one embedding per location for dense heads and one
pooled embedding per sample for scalar heads. Invalid entries are zeroed on the way in (so a NaN or a
nodata value under the mask cannot leak through a ``0 * x`` product) and excluded from every attention
and every mean, so they contribute nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from spectravlm.encoders.temporal.dates import check_times
from spectravlm.errors import ModelConfigError


@dataclass
class DatedTokens:
    """Per-date tokens of one sensor group, ready for a temporal encoder.

    Attributes:
        tokens: ``[B,T,N,D]`` per-date tokens (or per-pixel features).
        times: ``[B,T]`` int64 days since 1970-01-01.
        valid: ``[B,T,N]`` bool, True where a token is observed.
        grid: ``(h, w)`` when the ``N`` locations are a row-major grid, else ``None``.

    """

    tokens: Tensor
    times: Tensor
    valid: Tensor
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_temporal_inputs(self.tokens, self.times, self.valid)
        if self.grid is not None and self.grid[0] * self.grid[1] != self.tokens.shape[2]:
            raise ModelConfigError(f"grid {self.grid} does not hold N={self.tokens.shape[2]} locations")


@dataclass
class TemporalOutput:
    """What a temporal encoder returns.

    Attributes:
        locations: ``[B,N,D]`` one embedding per location, summarising its sequence (dense heads).
            Zero at locations with no valid date.
        location_valid: ``[B,N]`` bool, True where a location has at least one valid date.
        pooled: ``[B,D]`` mean of ``locations`` over valid locations (scalar heads); zero for a sample
            with no valid location.
        sequence: ``[B,T,N,D]`` per-date contextualised tokens (transformer encoders), zero where
            invalid; ``None`` for the L-TAE, which only pools.
        attention: ``[B,N,heads,T]`` L-TAE attention weights over dates (zero at invalid dates);
            ``None`` for the other encoders.
        grid: ``(h, w)`` of the locations when known, for :meth:`dense`.

    """

    locations: Tensor
    location_valid: Tensor
    pooled: Tensor
    sequence: Tensor | None = None
    attention: Tensor | None = None
    grid: tuple[int, int] | None = None

    def dense(self, grid: tuple[int, int] | None = None) -> Tensor:
        """``locations`` as an image ``[B,D,h,w]`` for dense heads (``grid`` defaults to ``self.grid``)."""
        hw = grid or self.grid
        if hw is None:
            raise ModelConfigError("locations have no grid; pass grid=(h, w)")
        return rearrange(self.locations, "b (h w) d -> b d h w", h=hw[0], w=hw[1])


def check_temporal_inputs(tokens: Tensor, times: Tensor, valid: Tensor, dim: int | None = None) -> None:
    """Raise :class:`ModelConfigError` unless tokens, times and valid have matching shapes."""
    if tokens.ndim != 4:
        raise ModelConfigError(f"tokens must be [B,T,N,D] per-date tokens, got shape {tuple(tokens.shape)}")
    b, t, n, d = tokens.shape
    check_times(times)
    if tuple(times.shape) != (b, t):
        raise ModelConfigError(f"times must be [B,T]=({b},{t}) to match tokens, got {tuple(times.shape)}")
    if tuple(valid.shape) != (b, t, n) or valid.dtype != torch.bool:
        raise ModelConfigError(
            f"valid must be bool [B,T,N]=({b},{t},{n}) to match tokens, "
            f"got {valid.dtype} {tuple(valid.shape)}"
        )
    if dim is not None and d != dim:
        raise ModelConfigError(f"tokens have width D={d}, the encoder expects {dim}")


def zero_invalid(tokens: Tensor, valid: Tensor) -> Tensor:
    """Tokens with every invalid entry set to exactly 0 (``valid`` has one axis fewer than ``tokens``)."""
    return torch.where(valid.unsqueeze(-1), tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))


def masked_mean(x: Tensor, valid: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over axis ``dim`` counting only entries where ``valid``; 0 where none is valid.

    Args:
        x: ``[..., D]`` values; ``valid`` has the shape of ``x`` without its last axis.
        valid: bool mask.
        dim: the axis to reduce (an axis of ``valid``, given as an index into it).

    """
    w = valid.to(x.dtype).unsqueeze(-1)
    total = (zero_invalid(x, valid) * w).sum(dim=dim)
    count = w.sum(dim=dim).clamp_min(1.0)
    return total / count


def pool_locations(locations: Tensor, location_valid: Tensor) -> Tensor:
    """``[B,N,D] -> [B,D]``: mean over valid locations (the pooled embedding for scalar heads)."""
    return masked_mean(locations, location_valid, dim=1)
