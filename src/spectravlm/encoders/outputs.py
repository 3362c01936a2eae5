"""Typed outputs of the sensor-native encoder.

Axis legend: ``B`` batch, ``N`` tokens, ``D`` width, ``T`` dates, ``n`` tokens of one date
(``G*h*w``: spectral groups x patch rows x patch columns).
"""

from __future__ import annotations

from dataclasses import dataclass

from einops import rearrange
from torch import Tensor

from spectravlm.encoders.temporal.types import DatedTokens
from spectravlm.tokenizers.tokens import TokenCoords, TokenGrid


@dataclass
class EncoderOutput:
    """Encoded tokens of every sensor group and date of a batch, attended jointly.

    Attributes:
        tokens: ``[B,N,D]`` (final norm applied). Invalid tokens hold meaningless values.
        mask: ``[B,N]`` bool, True where the token is valid.
        coords: per-token coordinates (``coords.sensor`` indexes the encoder's ``sensors``).
        spans: per sensor group, the ``(start, stop)`` slice of its tokens along ``N``.
        grids: per sensor group, the ``(T, G, h, w)`` layout of its tokens.

    """

    tokens: Tensor
    mask: Tensor
    coords: TokenCoords
    spans: dict[str, tuple[int, int]]
    grids: dict[str, TokenGrid]

    def pooled(self) -> Tensor:
        """``[B,D]`` mean over valid tokens (zero for a sample without any)."""
        return masked_token_mean(self.tokens, self.mask)

    def per_date(self, group: str) -> tuple[Tensor, Tensor]:
        """Tokens ``[B,T,n,D]`` and mask ``[B,T,n]`` of one sensor group, split by date."""
        start, stop = self.spans[group]
        t = self.grids[group].dates
        tokens = rearrange(self.tokens[:, start:stop], "b (t n) d -> b t n d", t=t)
        return tokens, rearrange(self.mask[:, start:stop], "b (t n) -> b t n", t=t)


@dataclass
class DateTokens:
    """Per-date token grids of one sensor group, each date encoded on its own.

    Attributes:
        tokens: ``[B,T,n,D]`` with ``n = G*h*w`` ordered ``(g h w)``; zero where invalid.
        mask: ``[B,T,n]`` bool valid tokens (all False for a padded or fully invalid date).
        times: ``[B,T]`` int64 days since 1970-01-01.
        grid: the ``(T, G, h, w)`` layout.
        sensor: catalogue name of the group's sensor.

    """

    tokens: Tensor
    mask: Tensor
    times: Tensor
    grid: TokenGrid
    sensor: str

    def locations(self) -> tuple[Tensor, Tensor]:
        """One token per patch location: mean over spectral groups.

        Returns:
            ``[B,T,h*w,D]`` tokens and ``[B,T,h*w]`` mask (valid if any group is valid). With one
            group (wavelength tokenizer) this is :attr:`tokens` itself.

        """
        if self.grid.groups == 1:
            return self.tokens, self.mask
        g = self.grid.groups
        tokens = rearrange(self.tokens, "b t (g n) d -> b t n g d", g=g)
        mask = rearrange(self.mask, "b t (g n) -> b t n g", g=g)
        return masked_token_mean(tokens, mask), mask.any(-1)

    def to_dated(self) -> DatedTokens:
        """Return these tokens as :class:`spectravlm.encoders.temporal.types.DatedTokens` (per location)."""
        tokens, mask = self.locations()
        return DatedTokens(tokens=tokens, times=self.times, valid=mask, grid=(self.grid.rows, self.grid.cols))


def masked_token_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``tokens [...,K,D]`` over the ``K`` entries where ``mask [...,K]`` is True (0 if none)."""
    w = mask.to(tokens.dtype).unsqueeze(-1)
    total = (tokens * w).sum(-2)
    return total / w.sum(-2).clamp_min(1.0)


__all__ = ["DateTokens", "EncoderOutput", "TokenCoords", "TokenGrid", "masked_token_mean"]
