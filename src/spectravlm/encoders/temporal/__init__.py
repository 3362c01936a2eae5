"""Multitemporal sequence encoders for irregular S1/S2 time series: the choice, in one place.

Axis legend: B batch, T dates, N locations (tokens of one date), D width.

Every encoder here is a plain ``nn.Module`` called as
``encoder(tokens [B,T,N,D], times [B,T], valid [B,T,N])`` (times: int64 days since 1970-01-01; valid: False
for padded, missing, cloudy or nodata entries, which contribute nothing) and returns a
:class:`~spectravlm.encoders.temporal.types.TemporalOutput` with one embedding per location (dense heads)
and a pooled embedding (scalar heads). Dates are encoded from the acquisition day
(:mod:`spectravlm.encoders.temporal.dates`), never from the position in the sequence.

* ``ltae``: :class:`~.ltae.LTAE`; attention ``O(N T)`` (one master query per head); the
  cheapest; pools each location's dates, no per-date outputs.
* ``transformer``: :class:`~.transformer.TemporalTransformer`; ``O(N T^2)``; per-location
  self-attention over dates, per-date outputs.
* ``factorised``: :class:`~.factorised.FactorisedSpaceTimeEncoder`; ``O(T N^2 + N T^2)``;
  spatial attention per date, then temporal per location.
* ``joint``: :class:`~.joint.JointSpaceTimeEncoder`; ``O((T N)^2)``; every token attends to
  every other; small inputs only.

:func:`temporal_encoder` builds one by name (for configs);
:class:`~spectravlm.encoders.temporal.fusion.SensorFusion` puts several sensor groups with their own
dates in front of any of them.
"""

from __future__ import annotations

from typing import Literal

from spectravlm.encoders.blocks import AttentionBackend
from spectravlm.encoders.temporal.factorised import FactorisedSpaceTimeEncoder, SpatialBlocks
from spectravlm.encoders.temporal.joint import JointSpaceTimeEncoder
from spectravlm.encoders.temporal.ltae import LTAE
from spectravlm.encoders.temporal.transformer import TemporalTransformer
from spectravlm.errors import ModelConfigError

TemporalKind = Literal["ltae", "transformer", "factorised", "joint"]
TemporalEncoder = LTAE | TemporalTransformer | FactorisedSpaceTimeEncoder | JointSpaceTimeEncoder

__all__ = ["TemporalEncoder", "TemporalKind", "temporal_encoder"]


def temporal_encoder(
    kind: TemporalKind,
    dim: int = 192,
    depth: int = 2,
    num_heads: int = 4,
    spatial_depth: int = 2,
    mlp_ratio: float = 4.0,
    ltae_d_k: int = 8,
    max_tokens: int = 4096,
    backend: AttentionBackend = "auto",
) -> TemporalEncoder:
    """Build a temporal encoder of input and output width ``dim`` by name.

    Args:
        kind: ``"ltae"``, ``"transformer"``, ``"factorised"`` or ``"joint"`` (see the module table).
        dim: token width ``D`` in and out.
        depth: transformer blocks over time (``transformer``, ``factorised``) or space-time (``joint``);
            unused by ``ltae`` (one attention layer by design).
        num_heads: attention heads (for ``ltae``: master queries).
        spatial_depth: blocks of the per-date spatial stage (``factorised`` only).
        mlp_ratio: MLP hidden width of the transformer blocks as a multiple of ``dim``.
        ltae_d_k: key width per head of the L-TAE.
        max_tokens: largest ``T * N`` the ``joint`` encoder accepts.
        backend: attention backend of the transformer blocks.

    Returns:
        The encoder, an ``nn.Module``.

    """
    if kind == "ltae":
        return LTAE(in_dim=dim, d_model=dim, num_heads=num_heads, d_k=ltae_d_k, mlp_dims=(dim,))
    if kind == "transformer":
        return TemporalTransformer(dim, depth, num_heads, mlp_ratio=mlp_ratio, backend=backend)
    if kind == "factorised":
        return FactorisedSpaceTimeEncoder(
            SpatialBlocks(dim, spatial_depth, num_heads, mlp_ratio=mlp_ratio, backend=backend),
            TemporalTransformer(dim, depth, num_heads, mlp_ratio=mlp_ratio, backend=backend),
        )
    if kind == "joint":
        return JointSpaceTimeEncoder(
            dim, depth, num_heads, mlp_ratio=mlp_ratio, max_tokens=max_tokens, backend=backend
        )
    raise ModelConfigError(
        f"unknown temporal encoder kind {kind!r}; expected 'ltae', 'transformer', 'factorised' or 'joint'"
    )
