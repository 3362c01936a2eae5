"""Typed outputs of the sensor-native encoder and the views downstream heads take from them.

Axis legend: ``B`` batch, ``N`` tokens of all sensor groups, ``D`` width, ``T`` dates of one group, ``n``
tokens of one date (``G*h*w``: spectral groups x patch rows x patch columns), ``L = h*w`` patch locations,
``S`` tokens of one location (every group, date and spectral group at that patch position).

Whatever attention pattern the encoder runs (joint space-time or factorised), its output has the same
layout: per sensor group, tokens ordered ``(t g h w)``, groups concatenated along ``N``. The views:

============================  ==========================  ===========================================
view                          shape                       for
============================  ==========================  ===========================================
``tokens``, ``mask``          ``[B,N,D]``, ``[B,N]``      a Q-Former (every sensor, date and group)
:meth:`EncoderOutput.per_date`  ``[B,T,n,D]``, ``[B,T,n]``  temporal heads on one sensor group
:meth:`EncoderOutput.locations` ``[B,L,D]``, ``[B,L]``      dense (per-pixel) heads, with the grid
:meth:`EncoderOutput.pooled`    ``[B,D]``                   scalar (per-chip) heads
============================  ==========================  ===========================================

``locations`` pools the ``S`` tokens of each patch location: a masked mean by default, or the encoder's
own date-aware pooling module when it has one (``location_pool="ltae"``), which is part of the encoder and
travels with its weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from einops import rearrange
from torch import Tensor

from spectravlm.tokenizers.tokens import TokenCoords, TokenGrid

LocationPool = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(tokens [B,S,L,D], times [B,S], valid [B,S,L]) -> [B,L,D]``: pools each location's tokens."""


@dataclass
class LocationTokens:
    """One embedding per patch location: what a dense head turns into a per-pixel map.

    Attributes:
        tokens: ``[B,L,D]`` with ``L = h*w`` row-major; zero where invalid.
        valid: ``[B,L]`` bool, True where the location has at least one valid token.
        grid: ``(h, w)`` patch rows and columns.
        patch_size: pixels per patch side (the map is ``h*p x w*p`` pixels, padding included).

    """

    tokens: Tensor
    valid: Tensor
    grid: tuple[int, int]
    patch_size: int

    def image(self) -> Tensor:
        """``tokens`` as an image ``[B,D,h,w]``."""
        return rearrange(self.tokens, "b (h w) d -> b d h w", h=self.grid[0], w=self.grid[1])


@dataclass
class EncoderOutput:
    """Encoded tokens of every sensor group and date of a batch.

    Attributes:
        tokens: ``[B,N,D]`` (final norm applied), zero where ``mask`` is False.
        mask: ``[B,N]`` bool, True where the token is valid.
        coords: per-token coordinates (``coords.sensor`` indexes the encoder's ``sensors``; ``coords.time``
            holds each token's acquisition day).
        spans: per sensor group, the ``(start, stop)`` slice of its tokens along ``N``.
        grids: per sensor group, the ``(T, G, h, w)`` layout of its tokens.
        patch_size: pixels per patch side.
        location_pool: the encoder's pooling of a location's tokens, or ``None`` for the masked mean.

    """

    tokens: Tensor
    mask: Tensor
    coords: TokenCoords
    spans: dict[str, tuple[int, int]]
    grids: dict[str, TokenGrid]
    patch_size: int = 1
    location_pool: LocationPool | None = None

    def pooled(self) -> Tensor:
        """``[B,D]`` mean over valid tokens (zero for a sample without any)."""
        return masked_token_mean(self.tokens, self.mask)

    def per_date(self, group: str) -> tuple[Tensor, Tensor]:
        """Tokens ``[B,T,n,D]`` and mask ``[B,T,n]`` of one sensor group, split by date."""
        start, stop = self.spans[group]
        t = self.grids[group].dates
        tokens = rearrange(self.tokens[:, start:stop], "b (t n) d -> b t n d", t=t)
        return tokens, rearrange(self.mask[:, start:stop], "b (t n) -> b t n", t=t)

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` patch grid shared by every sensor group."""
        first = next(iter(self.grids.values()))
        return first.rows, first.cols

    def location_sequences(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every token of each patch location: ``tokens [B,S,L,D]``, ``times [B,S]``, ``valid [B,S,L]``."""
        index = location_index(self.spans, self.grids, self.tokens.device)  # (S, L)
        tokens = self.tokens[:, index]  # (B, S, L, D)
        valid = self.mask[:, index]
        times = self.coords.time[:, index[:, 0]]  # a token's date does not depend on its location
        return tokens, times, valid

    def locations(self) -> LocationTokens:
        """One embedding per patch location, pooled over groups, dates and spectral groups."""
        tokens, times, valid = self.location_sequences()
        if self.location_pool is not None:
            pooled = self.location_pool(tokens, times, valid)
        else:
            pooled = masked_token_mean(
                rearrange(tokens, "b s l d -> b l s d"), rearrange(valid, "b s l -> b l s")
            )
        ok = valid.any(dim=1)
        return LocationTokens(pooled * ok.unsqueeze(-1), ok, self.grid, self.patch_size)


def location_index(
    spans: Mapping[str, tuple[int, int]], grids: Mapping[str, TokenGrid], device: torch.device
) -> Tensor:
    """``[S,L]`` positions along ``N`` of the tokens of each patch location (groups, dates, spectral groups).

    Every token appears exactly once, so ``x[:, index]`` regroups a sequence by location and a scatter with
    the same index puts it back.
    """
    key = tuple((spans[g], (grids[g].dates, grids[g].groups, grids[g].rows, grids[g].cols)) for g in spans)
    return _location_index(key).to(device)


@lru_cache(maxsize=64)
@torch.inference_mode(False)  # a table first built while predicting must still serve training (autograd)
def _location_index(layout: tuple[tuple[tuple[int, int], tuple[int, int, int, int]], ...]) -> Tensor:
    parts = []
    sizes = {(r, c) for _, (_, _, r, c) in layout}
    if len(sizes) != 1:
        from spectravlm.errors import ModelConfigError

        raise ModelConfigError(
            f"sensor groups have different patch grids {sorted(sizes)}; they must share one"
        )
    for (start, _), (t, g, r, c) in layout:
        per_location = torch.arange(t * g) * (r * c)  # (t g) blocks of h*w tokens
        parts.append(start + per_location[:, None] + torch.arange(r * c)[None, :])
    return torch.cat(parts, dim=0)


def masked_token_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``tokens [...,K,D]`` over the ``K`` entries where ``mask [...,K]`` is True (0 if none)."""
    w = mask.to(tokens.dtype).unsqueeze(-1)
    total = (tokens * w).sum(-2)
    return total / w.sum(-2).clamp_min(1.0)


__all__ = [
    "EncoderOutput",
    "LocationTokens",
    "TokenCoords",
    "TokenGrid",
    "location_index",
    "masked_token_mean",
]
