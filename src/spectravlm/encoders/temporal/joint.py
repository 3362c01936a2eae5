"""Joint space-time attention: every (date, location) token attends to every other, for small inputs.

Axis legend: B batch, T dates, N locations, D width.

The per-date tokens ``[B,T,N,D]`` get the date encoding of their acquisition day and are flattened to one
sequence ``[B,(T N),D]``; pre-norm transformer blocks (:class:`~spectravlm.encoders.blocks.Block`) attend
over it with the validity mask as key mask, so invalid tokens reach no valid one. A location's embedding
is the mean of its valid date tokens; the pooled embedding is the mean over valid locations.

Attention cost is ``O((T N)^2 D)``, quadratic in the number of dates *and* of locations: this is the
encoder for small windows and short series (it is the most expressive: a date at one location can
attend to another date at another location). ``max_tokens`` guards against running it on inputs for
which the factorised encoder (:mod:`spectravlm.encoders.temporal.factorised`) is the right choice.
Spatial position must already be in the tokens (the tokenizers add it); here only dates are encoded.

References:
    * Bertasius et al., "Is Space-Time Attention All You Need for Video Understanding?" (TimeSformer,
      joint vs divided attention), 2021. https://arxiv.org/abs/2102.05095
    * Arnab et al., "ViViT: A Video Vision Transformer" (model 1: spatio-temporal attention), 2021.
      https://arxiv.org/abs/2103.15691

"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from spectravlm.encoders.blocks import AttentionBackend, Block
from spectravlm.encoders.temporal.dates import DateEncoding, ElapsedOrigin
from spectravlm.encoders.temporal.types import (
    TemporalOutput,
    check_temporal_inputs,
    masked_mean,
    pool_locations,
    zero_invalid,
)
from spectravlm.errors import ModelConfigError


class JointSpaceTimeEncoder(nn.Module):
    """Transformer over all (date, location) tokens of a sample at once.

    Args:
        dim: token width ``D``.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``D``.
        drop_path: stochastic depth, increasing linearly to this value over the blocks.
        max_tokens: largest ``T * N`` accepted; beyond it a :class:`ModelConfigError` says to use the
            factorised encoder (joint attention memory grows with ``(T N)^2`` on the math kernel).
        doy_harmonics: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        elapsed_frequencies: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        max_period_days: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        elapsed_origin: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        backend: attention backend of the blocks.

    """

    def __init__(
        self,
        dim: int = 192,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        max_tokens: int = 4096,
        doy_harmonics: int = 3,
        elapsed_frequencies: int = 8,
        max_period_days: float = 4000.0,
        elapsed_origin: ElapsedOrigin = "sequence",
        backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = dim
        self.max_tokens = max_tokens
        self.dates = DateEncoding(
            dim,
            doy_harmonics=doy_harmonics,
            elapsed_frequencies=elapsed_frequencies,
            max_period_days=max_period_days,
            elapsed_origin=elapsed_origin,
        )
        rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=mlp_ratio, drop_path=r, backend=backend) for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(
        self, tokens: Tensor, times: Tensor, valid: Tensor, reference: Tensor | None = None
    ) -> TemporalOutput:
        """Attend jointly over dates and locations.

        Args:
            tokens: ``[B,T,N,D]`` per-date tokens with spatial position already added.
            times: ``[B,T]`` int64 days since 1970-01-01.
            valid: ``[B,T,N]`` bool; False entries contribute nothing.
            reference: optional ``[B]`` day to count elapsed time from (default: first valid date).

        Returns:
            :class:`TemporalOutput` with ``locations [B,N,D]``, ``pooled [B,D]`` and ``sequence [B,T,N,D]``.

        """
        check_temporal_inputs(tokens, times, valid, dim=self.dim)
        _, t, n, _ = tokens.shape
        if t * n > self.max_tokens:
            raise ModelConfigError(
                f"joint space-time attention over T*N = {t}*{n} = {t * n} tokens exceeds "
                f"max_tokens={self.max_tokens}; use FactorisedSpaceTimeEncoder (or raise max_tokens)"
            )
        x = zero_invalid(tokens, valid) + rearrange(
            self.dates(times, valid.any(dim=2), reference), "b t d -> b t 1 d"
        )
        x = rearrange(zero_invalid(x, valid), "b t n d -> b (t n) d")
        mask = rearrange(valid, "b t n -> b (t n)")
        for blk in self.blocks:
            x = blk(x, mask)
        seq = zero_invalid(rearrange(self.norm(x), "b (t n) d -> b t n d", t=t), valid)
        locations = masked_mean(seq, valid, dim=1)  # [B,N,D]
        location_valid = valid.any(dim=1)
        return TemporalOutput(
            locations=locations,
            location_valid=location_valid,
            pooled=pool_locations(locations, location_valid),
            sequence=seq,
        )
