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


Gather = Callable[[Tensor], tuple[Tensor, int]]
"""An all-gather across ranks: ``[B,...] -> ([R*M,...], M)``, every rank's tensor padded to ``M`` rows."""


def padded_all_gather(all_gather: Callable[[Tensor], Tensor], t: Tensor) -> tuple[Tensor, int]:
    """All-gather ``t [B,...]`` from ranks whose ``B`` may differ (an uneven last batch), without hanging.

    Collective gathers need one shape on every rank: the sizes are gathered first, every rank pads its
    tensor with zero rows to the largest ``B``, and the padded tensors are gathered.

    Args:
        all_gather: the strategy's gather, ``[M,...] -> [R,M,...]`` (Lightning's ``self.all_gather``).
        t: this rank's ``[B,...]``.

    Returns:
        ``([R*M,...], M)``: every rank's rows, rank ``r``'s first ``B_r`` of them at ``r*M``.

    """
    sizes = all_gather(torch.tensor([t.shape[0]], device=t.device))
    m = int(sizes.max())
    if t.shape[0] < m:
        t = torch.cat([t, t.new_zeros(m - t.shape[0], *t.shape[1:])])
    return all_gather(t).flatten(0, 1), m


def info_nce(
    a: Tensor,
    b: Tensor,
    keep: Tensor,
    temperature: float,
    gather: Gather | None = None,
    rank: int = 0,
) -> Tensor:
    """Symmetric InfoNCE between paired, L2-normalised embeddings of two modalities.

    Args:
        a: ``[B,F]`` embeddings of modality A (e.g. S2).
        b: ``[B,F]`` embeddings of modality B (e.g. S1) of the same locations.
        keep: ``[B]`` bool, samples where both modalities were seen (others are neither anchors nor
            negatives).
        temperature: softmax temperature (CLIP initialises at 0.07).
        gather: all-gather across ranks, ``[B,...] -> ([R*M,...], M)`` with every rank's rows padded to
            ``M`` (:func:`padded_all_gather`; padding rows are excluded), ``None``: single process.
        rank: this process's rank (its rows start at ``rank * M`` in the gathered tensors).

    Returns:
        Scalar loss; zero (still attached to the graph) when no sample is kept.

    """
    if temperature <= 0:
        raise ModelConfigError(f"contrastive temperature must be > 0, got {temperature}")
    n = a.shape[0]
    if gather is not None:
        (a_all, m), (b_all, _), (keep_f, _) = gather(a), gather(b), gather(keep.float())
        keep_all, offset = keep_f > 0.5, rank * m
    else:
        a_all, b_all, keep_all, offset = a, b, keep, 0
    if not bool(keep.any()):
        return (a.sum() + b.sum()) * 0.0
    labels = torch.arange(offset, offset + n, device=a.device)[keep]
    blocked = ~keep_all  # excluded samples are no negatives either
    logits_ab = (a[keep] @ b_all.T / temperature).masked_fill(blocked, float("-inf"))
    logits_ba = (b[keep] @ a_all.T / temperature).masked_fill(blocked, float("-inf"))
    return 0.5 * (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels))
