"""Typed tokenizer output: tokens, validity and the coordinates of every token.

Axis legend: ``B`` batch, ``N`` tokens, ``D`` width, ``T`` dates, ``G`` spectral groups,
``h``/``w`` patch rows/columns.

Tokens of one series are ordered ``(t g h w)``: all tokens of date 0 first, and within a date by
spectral group, then row-major patches. :meth:`Tokens.per_date` therefore is a reshape, giving the
per-date token grids ``[B,T,G*h*w,D]`` that a temporal encoder consumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor


@dataclass
class TokenCoords:
    """Where each token comes from; every field is ``[B,N]``.

    Fields may be broadcast views of shared per-layout tables: read them, do not write into them.

    Attributes:
        t: index of the token's date in its series (``T`` axis).
        time: acquisition date, int64 days since 1970-01-01 (0 where the date is padding).
        group: index of the token's spectral group in :attr:`Tokens.groups`.
        spectral_nm: mean catalogue centre wavelength of the group's channels (NaN for SAR groups).
        row: patch row.
        col: patch column.
        sensor: index of the token's sensor in the tokenizer's (or encoder's) sensor list.

    """

    t: Tensor
    time: Tensor
    group: Tensor
    spectral_nm: Tensor
    row: Tensor
    col: Tensor
    sensor: Tensor

    @staticmethod
    def cat(parts: list[TokenCoords]) -> TokenCoords:
        """Concatenate coordinates of several token sets along ``N``."""
        return TokenCoords(
            **{f: torch.cat([getattr(p, f) for p in parts], dim=1) for f in TokenCoords.__dataclass_fields__}
        )

    def select(self, index: Tensor) -> TokenCoords:
        """Coordinates of the tokens ``index`` ``[B,K]`` (per-sample gather along ``N``)."""
        return TokenCoords(**{f: getattr(self, f).gather(1, index) for f in TokenCoords.__dataclass_fields__})


@dataclass
class TokenGrid:
    """The layout of one series' tokens: ``T`` dates x ``G`` groups x ``h`` x ``w`` patches."""

    dates: int
    groups: int
    rows: int
    cols: int

    @property
    def per_date(self) -> int:
        """Tokens per date, ``G*h*w``."""
        return self.groups * self.rows * self.cols

    @property
    def size(self) -> int:
        """All tokens, ``T*G*h*w``."""
        return self.dates * self.per_date


@dataclass
class Tokens:
    """Tokens of one sensor series.

    Attributes:
        tokens: ``[B,N,D]``, ``N = T*G*h*w`` ordered ``(t g h w)``.
        mask: ``[B,N]`` bool, True where the token is valid (enough valid pixels, date present).
        coords: per-token coordinates.
        grid: the ``(T, G, h, w)`` layout.
        groups: channel keys of each spectral group, indexed by ``coords.group``.
        sensor: catalogue name of the series' sensor.
        patch_size: pixels per patch side.

    """

    tokens: Tensor
    mask: Tensor
    coords: TokenCoords
    grid: TokenGrid
    groups: tuple[tuple[str, ...], ...]
    sensor: str
    patch_size: int

    def per_date(self) -> tuple[Tensor, Tensor]:
        """Per-date token grids: tokens ``[B,T,G*h*w,D]`` and mask ``[B,T,G*h*w]``."""
        tokens = rearrange(self.tokens, "b (t n) d -> b t n d", t=self.grid.dates)
        mask = rearrange(self.mask, "b (t n) -> b t n", t=self.grid.dates)
        return tokens, mask
