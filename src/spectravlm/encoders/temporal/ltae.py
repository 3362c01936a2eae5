"""Lightweight Temporal Attention Encoder (L-TAE), masked and date-aware.

Axis legend: B batch, T dates, N locations, L = valid (B N) locations, C input width, D model width,
h heads, k key width, c = D / h channels per head. (Tensors of one location's sequence are ``[L,T,...]``.)

The L-TAE pools a sequence with one learned *master query* per head instead of full self-attention: keys
come from a linear map of each date, every head attends over the dates with its own query, and the heads
read disjoint channel groups of the input as values. The cost is linear in the number of dates ``T``.

Why not ``torchgeo.models.LTAE`` (torchgeo 0.8.1), which we use as the baseline in
``benchmarks/temporal.py``: it does not fit irregular, masked series.

* It encodes the *index* in the sequence (``PositionalEncoding`` over ``arange(T)``); its ``positions``
  argument is stored but never used, so acquisition dates cannot be given.
* Its ``forward(x)`` takes no mask: padded, missing and cloudy dates are attended to and averaged in.
* With ``d_model`` set it normalises with ``LayerNorm([d_model, len_max_seq])`` over the time axis, so it
  only runs for ``T == len_max_seq`` and every date influences the normalisation of every other.
* It replaced the master query by full ``nn.MultiheadAttention`` self-attention followed by a mean over
  dates, which is quadratic in ``T`` (not the paper's L-TAE).
* Its MLP uses ``BatchNorm1d``, so in training a sample's output depends on the rest of the batch.

This module follows the paper (master query per head, values split by head) with U-TAE's change of
feeding acquisition days instead of indices, and these further changes, each needed for the masking and
batching guarantees: a per-token ``LayerNorm`` (no statistic across dates or samples), masked softmax over
valid dates only, invalid tokens zeroed before use, locations with no valid date skipped, and the date
encoding of :mod:`spectravlm.encoders.temporal.dates` (season + elapsed days).

References:
    * Garnot & Landrieu, "Lightweight Temporal Self-Attention for Classifying Satellite Image Time
      Series", 2020. https://arxiv.org/abs/2007.00586
      (code: VSainteuf/lightweight-temporal-attention-pytorch)
    * Garnot & Landrieu, "Panoptic Segmentation of Satellite Image Time Series with Convolutional
      Temporal Attention Networks", 2021. https://arxiv.org/abs/2107.07933 (U-TAE, ``LTAE2d``)

"""

from __future__ import annotations

import itertools
import math

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from spectravlm.encoders.temporal.dates import DateEncoding, ElapsedOrigin
from spectravlm.encoders.temporal.types import (
    TemporalOutput,
    check_temporal_inputs,
    pool_locations,
    zero_invalid,
)
from spectravlm.errors import ModelConfigError


class LTAE(nn.Module):
    """Masked, date-aware L-TAE: per-date tokens ``[B,T,N,C]`` -> per-location embeddings ``[B,N,E]``.

    Args:
        in_dim: width ``C`` of the input tokens.
        d_model: width the input is projected to before attention (``D``); divisible by ``num_heads``.
        num_heads: attention heads (each with its own master query; paper default 16).
        d_k: key/query width per head (paper default 8).
        mlp_dims: widths of the MLP after the concatenated heads; the last is the output width.
        dropout: dropout on attention weights and on the MLP output (paper default 0.2).
        doy_harmonics: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        elapsed_frequencies: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        max_period_days: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.
        elapsed_origin: see :class:`~spectravlm.encoders.temporal.dates.DateEncoding`.

    """

    def __init__(
        self,
        in_dim: int = 128,
        d_model: int = 256,
        num_heads: int = 16,
        d_k: int = 8,
        mlp_dims: tuple[int, ...] = (128,),
        dropout: float = 0.0,
        doy_harmonics: int = 3,
        elapsed_frequencies: int = 8,
        max_period_days: float = 4000.0,
        elapsed_origin: ElapsedOrigin = "sequence",
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ModelConfigError(f"L-TAE d_model={d_model} must be divisible by num_heads={num_heads}")
        if not mlp_dims:
            raise ModelConfigError("L-TAE mlp_dims must name at least the output width")
        self.in_dim = in_dim
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_k = d_k
        self.out_dim = mlp_dims[-1]
        # A per-token LayerNorm over a single channel subtracts the value from itself: every input would
        # become 0 and the output a constant. One channel (an index such as NDVI) is normalised after the
        # projection instead, over the model width, where its value survives.
        self.norm_first = in_dim > 1
        self.in_norm = nn.LayerNorm(in_dim if self.norm_first else d_model)
        self.in_proj = nn.Linear(in_dim, d_model)
        self.dates = DateEncoding(
            d_model,
            doy_harmonics=doy_harmonics,
            elapsed_frequencies=elapsed_frequencies,
            max_period_days=max_period_days,
            elapsed_origin=elapsed_origin,
        )
        self.key = nn.Linear(d_model, num_heads * d_k)
        self.query = nn.Parameter(torch.randn(num_heads, d_k) * math.sqrt(2.0 / d_k))  # paper's init
        layers: list[nn.Module] = []
        widths = (d_model, *mlp_dims)
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.attn_drop = nn.Dropout(dropout)
        self.out_drop = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(self.out_dim)

    def no_weight_decay(self) -> set[str]:
        """The master queries are learned tokens: no weight decay."""
        return {"query"}

    def forward(
        self,
        tokens: Tensor,
        times: Tensor,
        valid: Tensor,
        reference: Tensor | None = None,
        return_attention: bool = False,
    ) -> TemporalOutput:
        """Pool each location's sequence with the master-query attention.

        Args:
            tokens: ``[B,T,N,C]`` per-date tokens.
            times: ``[B,T]`` int64 days since 1970-01-01.
            valid: ``[B,T,N]`` bool; False entries contribute nothing.
            reference: optional ``[B]`` day to count elapsed time from (default: first valid date).
            return_attention: also return the attention weights ``[B,N,heads,T]``.

        Returns:
            :class:`TemporalOutput` with ``locations [B,N,out_dim]`` and ``pooled [B,out_dim]``.

        """
        check_temporal_inputs(tokens, times, valid, dim=self.in_dim)
        b, t, n, _ = tokens.shape
        x = zero_invalid(tokens, valid)
        x = self.in_proj(self.in_norm(x)) if self.norm_first else self.in_norm(self.in_proj(x))  # [B,T,N,D]
        x = x + rearrange(self.dates(times, valid.any(dim=2), reference), "b t d -> b t 1 d")
        x = zero_invalid(x, valid)

        seq = rearrange(x, "b t n d -> (b n) t d")
        mask = rearrange(valid, "b t n -> (b n) t")
        keep = mask.any(dim=1)  # locations with at least one valid date
        seq, mask = seq[keep], mask[keep]  # [L,T,D], [L,T]

        k = rearrange(self.key(seq), "l t (h k) -> l h t k", h=self.num_heads)
        scores = einsum(self.query, k, "h k, l h t k -> l h t") / math.sqrt(self.d_k)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        attn = self.attn_drop(scores.softmax(dim=-1))  # [L,h,T], exactly 0 at invalid dates
        v = rearrange(seq, "l t (h c) -> l h t c", h=self.num_heads)
        heads = einsum(attn, v, "l h t, l h t c -> l h c")
        out = self.out_norm(self.out_drop(self.mlp(rearrange(heads, "l h c -> l (h c)"))))  # [L,out]

        flat = out.new_zeros(b * n, self.out_dim)
        flat[keep] = out
        locations = rearrange(flat, "(b n) d -> b n d", b=b)
        location_valid = rearrange(keep, "(b n) -> b n", b=b)
        attention = None
        if return_attention:
            full = attn.new_zeros(b * n, self.num_heads, t)
            full[keep] = attn
            attention = rearrange(full, "(b n) h t -> b n h t", b=b)
        return TemporalOutput(
            locations=locations,
            location_valid=location_valid,
            pooled=pool_locations(locations, location_valid),
            attention=attention,
        )
