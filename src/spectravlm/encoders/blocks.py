"""Transformer blocks with token masks: attention backends, MLP and the pre-norm block.

Axis legend:

    B  batch      N  tokens (queries)      M  tokens (keys/values)
    H  heads      E  head width            D  model width (H * E)

Every block takes tokens ``[B,N,D]`` and an optional boolean token mask ``[B,N]`` (True = valid
token). Masked tokens are removed from the keys of every query, so nothing written in them reaches a
valid token. Their own outputs are still computed (they attend to the valid tokens) but carry no
meaning; callers keep the mask beside the tokens and ignore them.

Two attention backends compute the same thing:

* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention` with a boolean key mask
  (flash/efficient/math kernels chosen by PyTorch);
* ``"xformers"``: ``xformers.ops.memory_efficient_attention`` with an additive bias, used by
  ``"auto"`` when xformers is installed and the tensors are on CUDA.

Why our own attention rather than ``timm.models.vision_transformer.Attention``: timm's module only
calls SDPA; the xformers path and the guard for samples whose every token is masked (SDPA returns NaN
for a query row with no admissible key) need to sit inside the attention call. The MLP, DropPath and
LayerScale are timm's.

References:
    * Vaswani et al., "Attention Is All You Need", https://arxiv.org/abs/1706.03762
    * Dosovitskiy et al., "An Image is Worth 16x16 Words" (ViT), https://arxiv.org/abs/2010.11929
    * Rabe & Staats, "Self-attention Does Not Need O(n^2) Memory", https://arxiv.org/abs/2112.05682
      (the algorithm behind xformers' memory-efficient attention)

"""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, LayerScale, Mlp
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError

AttentionBackend = Literal["auto", "sdpa", "xformers"]

__all__ = [
    "Attention",
    "AttentionBackend",
    "Block",
    "Mlp",
    "masked_attention",
    "resolve_backend",
    "xformers_available",
]


def xformers_available() -> bool:
    """Return whether the ``xformers`` package can be imported."""
    return importlib.util.find_spec("xformers") is not None


def resolve_backend(backend: AttentionBackend, device: torch.device) -> Literal["sdpa", "xformers"]:
    """Return the backend that runs for tensors on ``device``.

    ``"auto"`` picks xformers on CUDA when installed, else SDPA. Asking for ``"xformers"`` explicitly
    without the package, or off CUDA, is an error rather than a silent fall-back.
    """
    if backend == "sdpa":
        return "sdpa"
    if backend == "auto":
        return "xformers" if device.type == "cuda" and xformers_available() else "sdpa"
    if backend == "xformers":
        if not xformers_available():
            raise ModelConfigError("attention backend 'xformers' requested but xformers is not installed")
        if device.type != "cuda":
            raise ModelConfigError(f"attention backend 'xformers' needs CUDA tensors, got device {device}")
        return "xformers"
    raise ModelConfigError(f"unknown attention backend {backend!r}; expected 'auto', 'sdpa' or 'xformers'")


def _admissible_keys(key_mask: Tensor) -> Tensor:
    """Key mask ``[B,M]`` with fully masked samples opened up, so that no query row is empty.

    A sample with no valid token at all would give NaN (softmax over nothing). Its outputs are
    meaningless either way; letting its tokens attend to each other keeps them finite and cannot
    leak into any other sample.
    """
    empty = ~key_mask.any(dim=-1, keepdim=True)  # (B, 1)
    return key_mask | empty


def masked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    backend: AttentionBackend = "auto",
) -> Tensor:
    """Scaled dot-product attention with an optional key-padding mask.

    Args:
        q: ``[B,H,N,E]`` queries.
        k: ``[B,H,M,E]`` keys.
        v: ``[B,H,M,E]`` values.
        key_mask: ``[B,M]`` bool, True = the key may be attended to; ``None`` = all keys valid.
        dropout_p: attention dropout probability (pass 0 at eval time).
        backend: ``"auto"``, ``"sdpa"`` or ``"xformers"`` (see :func:`resolve_backend`).

    Returns:
        ``[B,H,N,E]`` attended values.

    """
    which = resolve_backend(backend, q.device)
    if key_mask is not None:
        if key_mask.dtype != torch.bool or tuple(key_mask.shape) != (k.shape[0], k.shape[2]):
            raise ModelConfigError(
                f"key mask must be bool [B,M]=({k.shape[0]},{k.shape[2]}), "
                f"got {key_mask.dtype} {tuple(key_mask.shape)}"
            )
        key_mask = _admissible_keys(key_mask)
    if which == "xformers":
        return _xformers_attention(q, k, v, key_mask, dropout_p)
    attn_mask = None if key_mask is None else rearrange(key_mask, "b m -> b 1 1 m")
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


def _xformers_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, dropout_p: float) -> Tensor:
    """Run xformers' memory-efficient attention; same semantics as the SDPA path."""
    import xformers.ops as xops

    b, h, n, _ = q.shape
    m = k.shape[2]
    bias = None
    if key_mask is not None:
        # xformers wants a bias tensor whose last dimension is stored with 8-element alignment:
        # allocate a padded buffer and take a view of the first M columns.
        m_pad = (m + 7) // 8 * 8
        storage = q.new_zeros(b, h, n, m_pad)
        bias = storage[..., :m]
        bias.masked_fill_(~rearrange(key_mask, "b m -> b 1 1 m"), float("-inf"))
    out = xops.memory_efficient_attention(
        rearrange(q, "b h n e -> b n h e"),
        rearrange(k, "b h m e -> b m h e"),
        rearrange(v, "b h m e -> b m h e"),
        attn_bias=bias,
        p=dropout_p,
    )
    return rearrange(out, "b n h e -> b h n e")


class Attention(nn.Module):
    """Multi-head self-attention over tokens ``[B,N,D]`` with a token mask ``[B,N]``.

    Args:
        dim: model width ``D``.
        num_heads: number of heads ``H`` (``D`` must be divisible by it).
        qkv_bias: bias in the query/key/value projection.
        attn_drop: attention dropout probability (training only).
        proj_drop: dropout after the output projection.
        backend: attention backend (``"auto"``, ``"sdpa"``, ``"xformers"``).

    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ModelConfigError(f"width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.backend: AttentionBackend = backend
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend over ``x`` ``[B,N,D]``; ``mask`` ``[B,N]`` True = valid token."""
        qkv = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.num_heads)
        out = masked_attention(
            qkv[0],
            qkv[1],
            qkv[2],
            key_mask=mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            backend=self.backend,
        )
        return self.proj_drop(self.proj(rearrange(out, "b h n e -> b n (h e)")))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x), mask)`` then ``x + mlp(norm(x))``.

    Args:
        dim: model width ``D``.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of ``D``.
        qkv_bias: bias in the query/key/value projection.
        proj_drop: dropout after the attention projection and inside the MLP.
        attn_drop: attention dropout.
        drop_path: stochastic depth probability of this block's residual branches.
        init_values: LayerScale initial value (``None`` = no LayerScale).
        backend: attention backend.

    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop, backend)
        self.ls1: nn.Module = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.ls2: nn.Module = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Tokens ``[B,N,D]`` and optional mask ``[B,N]`` (True = valid) -> tokens ``[B,N,D]``."""
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), mask)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
