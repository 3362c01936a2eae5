"""The MAE pretraining decoder: a light transformer that reconstructs hidden tokens' pixels.

Axis legend: ``B`` batch, ``N`` tokens of the whole sequence (every sensor stream, date, spectral group
and patch), ``K`` visible tokens that went through the encoder, ``D`` encoder width, ``E`` decoder
width, ``P`` values predicted per token (``p*p*C``: patch pixels x channels of the stream).

As in MAE (He et al., https://arxiv.org/abs/2111.06377), the encoder sees the visible tokens only; the
decoder puts them back at their places in the full sequence, fills every other place with one learned
mask token, adds fixed position information (computed by the caller from token coordinates: patch row
and column, date) and learned stream and spectral-group embeddings, runs a few transformer blocks and
predicts every token's pixels. Invalid tokens (padded dates, clouded patches) are removed from the keys
of every query, so they cannot influence any prediction. The loss is the caller's business (it decides
which tokens and pixels count).

The blocks are the library's one transformer block (:class:`spectravlm.encoders.blocks.Block`, the
encoder's), with the valid tokens as key mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from spectravlm.encoders.blocks import Block
from spectravlm.errors import ModelConfigError


class MaskedDecoder(nn.Module):
    """MAE decoder over the full token sequence of several sensor streams.

    Args:
        encoder_dim: width ``D`` of the encoder tokens.
        outputs: per sensor stream (``"s2"``, ``"s1"``), in sequence order, the number ``P`` of values
            predicted per token (``patch_size**2 * channels``).
        dim: decoder width ``E`` (a multiple of 4 for the caller's 2-D position embedding).
        depth: decoder blocks (MAE: 8 for ViT-L; a light decoder of 1-4 blocks is enough for
            small encoders).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``E``.
        max_groups: size of the spectral-group embedding table (tokens carry a group index per stream).

    """

    def __init__(
        self,
        encoder_dim: int,
        outputs: Mapping[str, int],
        dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        max_groups: int = 16,
    ) -> None:
        super().__init__()
        if not outputs:
            raise ModelConfigError("the decoder needs at least one sensor stream to reconstruct")
        if dim % num_heads or dim % 4:
            raise ModelConfigError(f"decoder dim={dim} must be divisible by num_heads={num_heads} and by 4")
        if depth < 1:
            raise ModelConfigError(f"decoder depth must be >= 1, got {depth}")
        self.dim = dim
        self.streams = tuple(outputs)
        self.input_proj = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.stream_embed = nn.Embedding(len(self.streams), dim)
        self.group_embed = nn.Embedding(max_groups, dim)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n) for name, n in outputs.items()})
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.stream_embed.weight, std=0.02)
        nn.init.normal_(self.group_embed.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # MAE's initialisation of linear layers
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Learned tokens and embedding tables (no weight decay)."""
        return {"mask_token", "stream_embed.weight", "group_embed.weight"}

    def forward(
        self,
        encoded: Tensor,
        placed: Tensor,
        position: Tensor,
        group: Tensor,
        valid: Tensor,
        spans: Mapping[str, tuple[int, int]],
    ) -> dict[str, Tensor]:
        """Predict every token's values.

        Args:
            encoded: ``[B,N,D]`` the encoder's output, meaningful where ``placed``.
            placed: ``[B,N]`` bool, True where the encoder saw (and encoded) the token.
            position: ``[B,N,E]`` fixed position embedding of every token of the full sequence.
            group: ``[B,N]`` long spectral-group index of every token.
            valid: ``[B,N]`` bool, tokens that exist (invalid ones are not attended to).
            spans: per stream, its ``(start, stop)`` range along ``N`` (the streams of ``outputs``).

        Returns:
            Per stream, ``[B,N_s,P_s]`` predictions.

        """
        if set(spans) != set(self.streams):
            raise ModelConfigError(f"decoder built for streams {self.streams}, got {tuple(spans)}")
        if int(group.max()) >= self.group_embed.num_embeddings:
            raise ModelConfigError(
                f"spectral group index {int(group.max())} exceeds the decoder's table of "
                f"{self.group_embed.num_embeddings}; raise max_groups"
            )
        x = self.input_proj(encoded)  # (B, N, E)
        x = torch.where(placed.unsqueeze(-1), x, self.mask_token.to(x.dtype))
        stream = torch.cat(
            [
                torch.full((stop - start,), self.streams.index(s), device=x.device)
                for s, (start, stop) in spans.items()
            ]
        )
        x = x + position.to(x.dtype) + self.stream_embed(stream) + self.group_embed(group)
        for blk in self.blocks:
            x = blk(x, valid)  # a sample without valid tokens attends to all of its own (Block's guard)
        x = self.norm(x)
        return {s: self.heads[s](x[:, start:stop]) for s, (start, stop) in spans.items()}
