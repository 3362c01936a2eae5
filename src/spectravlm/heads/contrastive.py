"""Cross-modal contrastive learning between S1 and S2 embeddings of the same place (CROMA style).

Axis legend: ``B`` local batch, ``R`` ranks, ``D`` encoder width, ``F`` projection width.

CROMA (Fuller et al., https://arxiv.org/abs/2311.00566) encodes the radar and the optical image of one
location with separate (unimodal) encoders, pools each, projects them and pulls the two projections of
the same location together while pushing apart those of other locations (InfoNCE, symmetric, as in
CLIP: Radford et al., https://arxiv.org/abs/2103.00020). Negatives come from the whole global batch:
with several ranks the caller passes an all-gather so each sample is contrasted against every other
rank's samples too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError


class ProjectionHead(nn.Module):
    """MLP projection of pooled features onto the unit sphere: ``[B,D] -> [B,F]``.

    Args:
        in_dim: pooled feature width ``D``.
        out_dim: projection width ``F``.
        hidden_dim: hidden width (default ``D``).

    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.mlp = Mlp(in_dim, hidden_dim or in_dim, out_dim, act_layer=nn.GELU)

    def forward(self, x: Tensor) -> Tensor:
        """``[B,D]`` -> L2-normalised ``[B,F]``."""
        return F.normalize(self.mlp(x), dim=-1)


def info_nce(
    a: Tensor,
    b: Tensor,
    keep: Tensor,
    temperature: float,
    gather: Callable[[Tensor], Tensor] | None = None,
    rank: int = 0,
) -> Tensor:
    """Symmetric InfoNCE between paired, L2-normalised embeddings of two modalities.

    Args:
        a: ``[B,F]`` embeddings of modality A (e.g. S2).
        b: ``[B,F]`` embeddings of modality B (e.g. S1) of the same locations.
        keep: ``[B]`` bool, samples where both modalities were seen (others are neither anchors nor
            negatives).
        temperature: softmax temperature (CLIP initialises at 0.07).
        gather: all-gather across ranks, ``[B,...] -> [R*B,...]`` (``None``: single process).
        rank: this process's rank (position of the local batch in the gathered one).

    Returns:
        Scalar loss; zero (still attached to the graph) when no sample is kept.

    """
    if temperature <= 0:
        raise ModelConfigError(f"contrastive temperature must be > 0, got {temperature}")
    n = a.shape[0]
    if gather is not None:
        a_all, b_all, keep_all = gather(a), gather(b), gather(keep.float()) > 0.5
        offset = rank * n
    else:
        a_all, b_all, keep_all, offset = a, b, keep, 0
    if not bool(keep.any()):
        return (a.sum() + b.sum()) * 0.0
    labels = torch.arange(offset, offset + n, device=a.device)[keep]
    blocked = ~keep_all  # excluded samples are no negatives either
    logits_ab = (a[keep] @ b_all.T / temperature).masked_fill(blocked, float("-inf"))
    logits_ba = (b[keep] @ a_all.T / temperature).masked_fill(blocked, float("-inf"))
    return 0.5 * (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels))
