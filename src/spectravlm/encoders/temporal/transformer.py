"""Temporal transformer: each location's dates attend to each other (the temporal half of a factorised model).

Axis legend: B batch, T dates, N locations, L = (B N) locations with a valid date, D width.

Every location's sequence ``[T,D]`` is its own short sequence: the date encoding is added to its
tokens, a learned summary token is prepended, and pre-norm transformer blocks
(:class:`~spectravlm.encoders.blocks.Block`, SDPA with a key mask) run over ``[L, 1+T, D]``. Invalid
dates (padding, missing, cloudy at that location) are masked out of every key, so they reach neither
the summary token nor any valid date. The summary token's output is the per-location embedding; the
date tokens' outputs are returned as ``sequence``.

Cost per location: ``O(T^2 D + T D^2)``; for ``N`` locations ``O(N (T^2 D + T D^2))``, against
``O((T N)^2 D)`` for joint space-time attention.

References:
    * Arnab et al., "ViViT: A Video Vision Transformer" (factorised encoder), 2021.
      https://arxiv.org/abs/2103.15691
    * Tarasiou et al., "ViTs for SITS: Vision Transformers for Satellite Image Time Series" (TSViT:
      temporal-then-spatial factorisation with acquisition-date encodings), 2023.
      https://arxiv.org/abs/2301.04944

"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from spectravlm.encoders.blocks import AttentionBackend, Block
from spectravlm.encoders.temporal.dates import DateEncoding, ElapsedOrigin
from spectravlm.encoders.temporal.types import (
    TemporalOutput,
    check_temporal_inputs,
    pool_locations,
    zero_invalid,
)


class TemporalTransformer(nn.Module):
    """Per-location transformer over dates: tokens ``[B,T,N,D]`` -> ``locations [B,N,D]``.

    Args:
        dim: token width ``D``.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``D``.
        drop_path: stochastic depth, increasing linearly to this value over the blocks.
        doy_harmonics: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        elapsed_frequencies: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        max_period_days: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        elapsed_origin: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        backend: attention backend of the blocks (``"auto"``, ``"sdpa"``, ``"xformers"``).

    """

    def __init__(
        self,
        dim: int = 192,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        doy_harmonics: int = 3,
        elapsed_frequencies: int = 8,
        max_period_days: float = 4000.0,
        elapsed_origin: ElapsedOrigin = "sequence",
        backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = dim
        self.dates = DateEncoding(
            dim,
            doy_harmonics=doy_harmonics,
            elapsed_frequencies=elapsed_frequencies,
            max_period_days=max_period_days,
            elapsed_origin=elapsed_origin,
        )
        self.summary = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.summary, std=0.02)
        rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=mlp_ratio, drop_path=r, backend=backend) for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(
        self, tokens: Tensor, times: Tensor, valid: Tensor, reference: Tensor | None = None
    ) -> TemporalOutput:
        """Encode each location's sequence of dates.

        Args:
            tokens: ``[B,T,N,D]`` per-date tokens (spatial position already in them, if any).
            times: ``[B,T]`` int64 days since 1970-01-01.
            valid: ``[B,T,N]`` bool; False entries contribute nothing.
            reference: optional ``[B]`` day to count elapsed time from (default: first valid date).

        Returns:
            :class:`TemporalOutput` with ``locations [B,N,D]``, ``pooled [B,D]`` and ``sequence [B,T,N,D]``.

        """
        check_temporal_inputs(tokens, times, valid, dim=self.dim)
        b, t, n, _ = tokens.shape
        x = zero_invalid(tokens, valid) + rearrange(
            self.dates(times, valid.any(dim=2), reference), "b t d -> b t 1 d"
        )
        x = zero_invalid(x, valid)

        seq = rearrange(x, "b t n d -> (b n) t d")
        mask = rearrange(valid, "b t n -> (b n) t")
        keep = mask.any(dim=1)  # locations with at least one valid date
        all_kept = bool(keep.all())
        if not all_kept:
            seq, mask = seq[keep], mask[keep]
        num = seq.shape[0]
        h = torch.cat([repeat(self.summary, "1 1 d -> l 1 d", l=num).to(seq.dtype), seq], dim=1)  # [L,1+T,D]
        m = torch.cat([mask.new_ones(num, 1), mask], dim=1)
        for blk in self.blocks:
            h = blk(h, m)
        h = self.norm(h)

        loc, per_date = h[:, 0], zero_invalid(h[:, 1:], mask)
        if not all_kept:
            loc_full = loc.new_zeros(b * n, self.dim)
            loc_full[keep] = loc
            seq_full = per_date.new_zeros(b * n, t, self.dim)
            seq_full[keep] = per_date
            loc, per_date = loc_full, seq_full
        locations = rearrange(loc, "(b n) d -> b n d", b=b)
        location_valid = rearrange(keep, "(b n) -> b n", b=b)
        return TemporalOutput(
            locations=locations,
            location_valid=location_valid,
            pooled=pool_locations(locations, location_valid),
            sequence=rearrange(per_date, "(b n) t d -> b t n d", b=b),
        )
