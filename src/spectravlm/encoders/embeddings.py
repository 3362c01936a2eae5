"""Fixed position and date embeddings added to tokens by the encoders.

Both are sine/cosine embeddings (Vaswani et al., https://arxiv.org/abs/1706.03762), built on
TorchGeo's DOFA ``position_embedding`` (1-D, ``[M] -> [M,D]``), always in float32 (see
:func:`~spectravlm.tokenizers.spectral.sincos_embedding`). They are computed from token
coordinates rather than stored as a table, so any image size and any number of dates works.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from spectravlm.errors import ModelConfigError
from spectravlm.tokenizers.spectral import sincos_embedding


def grid_embedding(row: Tensor, col: Tensor, dim: int) -> Tensor:
    """2-D sine/cosine embedding of patch positions: half the width for rows, half for columns.

    Args:
        row: ``[...]`` patch rows.
        col: ``[...]`` patch columns (same shape).
        dim: width ``D`` (a multiple of 4).

    Returns:
        ``[..., D]``.

    """
    if dim % 4:
        raise ModelConfigError(f"2-D sine/cosine position embedding needs a width divisible by 4, got {dim}")
    shape = row.shape
    rows = sincos_embedding(dim // 2, row.reshape(-1))
    cols = sincos_embedding(dim // 2, col.reshape(-1))
    emb = torch.cat([rows, cols], dim=1)
    return emb.reshape(*shape, dim)


def date_embedding(days: Tensor, valid: Tensor, dim: int) -> Tensor:
    """Sine/cosine embedding of days elapsed since each sample's first valid date.

    Args:
        days: ``[B,N]`` int64 days since 1970-01-01 of each token.
        valid: ``[B,N]`` bool; the reference date is the earliest valid token's.
        dim: width ``D`` (even).

    Returns:
        ``[B,N,D]``.

    """
    big = torch.iinfo(days.dtype).max
    first = torch.where(valid, days, torch.full_like(days, big)).amin(dim=1, keepdim=True)
    first = torch.where(first == big, torch.zeros_like(first), first)
    rel = (days - first).float()
    return rearrange(sincos_embedding(dim, rel.reshape(-1)), "(b n) d -> b n d", b=days.shape[0])
