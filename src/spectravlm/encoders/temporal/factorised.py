"""Factorised space-time encoder: a spatial encoder per date, then a temporal encoder per location.

Axis legend: B batch, T dates, N locations (tokens of one date), K = dates with a valid token, D width.

Stage 1 runs any spatial encoder over the tokens of each date ``[K,N,D]`` (dates with no valid token
are skipped, not computed: they cost nothing), with the validity mask as key mask. Stage 2 runs a temporal
encoder (:class:`~spectravlm.encoders.temporal.transformer.TemporalTransformer` or
:class:`~spectravlm.encoders.temporal.ltae.LTAE`) over each location's dates. Attention cost is
``O(T N^2 D)`` + ``O(N T^2 D)`` instead of joint attention's ``O(T^2 N^2 D)``.

The spatial encoder is any ``nn.Module`` called as ``spatial(tokens, mask)`` with tokens ``[K,N,D]`` and
mask ``[K,N]`` (bool, True = valid) that returns tokens ``[K,N,D]``, and whose masked tokens reach no valid
token. :class:`SpatialBlocks` (a stack of :class:`~spectravlm.encoders.blocks.Block`) is one. For
images, the sensor-native encoder is the spatial stage:
:class:`~spectravlm.encoders.temporal_spectral.SpectralTemporalEncoder` runs
:meth:`~spectravlm.encoders.spectral.SpectralEncoder.forward_dates` (tokenizer + blocks per date) and then
the temporal encoder.

References:
    * Arnab et al., "ViViT: A Video Vision Transformer" (model 2: factorised encoder), 2021.
      https://arxiv.org/abs/2103.15691

"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from spectravlm.encoders.blocks import AttentionBackend, Block
from spectravlm.encoders.temporal.ltae import LTAE
from spectravlm.encoders.temporal.transformer import TemporalTransformer
from spectravlm.encoders.temporal.types import TemporalOutput, check_temporal_inputs, zero_invalid
from spectravlm.errors import ModelConfigError


class SpatialBlocks(nn.Module):
    """Transformer blocks over the tokens of one date: ``(tokens [K,N,D], mask [K,N]) -> [K,N,D]``.

    Args:
        dim: token width ``D``.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``D``.
        drop_path: stochastic depth, increasing linearly to this value over the blocks.
        backend: attention backend.

    """

    def __init__(
        self,
        dim: int = 192,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        self.dim = dim
        rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=mlp_ratio, drop_path=r, backend=backend) for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Tokens ``[K,N,D]``, mask ``[K,N]`` (True = valid) -> tokens ``[K,N,D]``."""
        x = tokens
        for blk in self.blocks:
            x = blk(x, mask)
        out: Tensor = self.norm(x)
        return out


class FactorisedSpaceTimeEncoder(nn.Module):
    """Spatial encoder per date, then a temporal encoder per location.

    Args:
        spatial: module called as ``spatial(tokens [K,N,D], mask [K,N]) -> [K,N,D]`` (see module docs).
        temporal: the temporal stage, :class:`TemporalTransformer` or :class:`LTAE`, whose input width
            is the spatial encoder's output width.

    """

    def __init__(self, spatial: nn.Module, temporal: TemporalTransformer | LTAE) -> None:
        super().__init__()
        self.spatial = spatial
        self.temporal = temporal
        self.dim = temporal.in_dim if isinstance(temporal, LTAE) else temporal.dim
        self.out_dim = temporal.out_dim

    def forward(
        self, tokens: Tensor, times: Tensor, valid: Tensor, reference: Tensor | None = None
    ) -> TemporalOutput:
        """Encode space per date, then time per location.

        Args:
            tokens: ``[B,T,N,D]`` per-date tokens with spatial position already added.
            times: ``[B,T]`` int64 days since 1970-01-01.
            valid: ``[B,T,N]`` bool; False entries contribute nothing.
            reference: optional ``[B]`` day to count elapsed time from (default: first valid date).

        Returns:
            The temporal stage's :class:`TemporalOutput`.

        """
        check_temporal_inputs(tokens, times, valid)
        b = tokens.shape[0]
        frames = rearrange(zero_invalid(tokens, valid), "b t n d -> (b t) n d")
        mask = rearrange(valid, "b t n -> (b t) n")
        present = mask.any(dim=1)  # dates with at least one valid token; the rest are not computed
        encoded = self.spatial(frames[present], mask[present])
        if encoded.ndim != 3 or encoded.shape[:2] != frames[present].shape[:2]:
            raise ModelConfigError(
                f"spatial encoder must return tokens [K,N,D] = {tuple(frames[present].shape[:2])} + (D,), "
                f"got {tuple(encoded.shape)}"
            )
        out = encoded.new_zeros(frames.shape[0], *encoded.shape[1:])
        out[present] = encoded
        per_date = rearrange(out, "(b t) n d -> b t n d", b=b)
        return self.temporal(per_date, times, valid, reference)
