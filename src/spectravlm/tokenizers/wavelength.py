"""Wavelength-conditioned patch embedding (DOFA style): one set of weights for any band subset.

Axis legend: ``C`` channels, ``D`` width, ``p`` patch size, ``E`` descriptor width.

The patch projection of each channel is *generated* from its descriptor (DOFA's wavelength encoding
for optical channels; a polarisation embedding for SAR channels, see
:mod:`spectravlm.tokenizers.spectral`), so the same parameters embed 10 BioMassters bands, 13 L1C
bands or VV+VH. One token per (date, patch): the spectral information is folded into the token.

What is reused from TorchGeo 0.8.1 (``torchgeo.models.dofa``): ``TransformerWeightGenerator`` (the
hypernetwork that turns channel descriptors into kernels and a bias; its parameters as they are, its
forward evaluated only where its output is used, see :func:`generate_kernels`), ``FCResLayer`` and
``position_embedding`` (inside :class:`~spectravlm.tokenizers.spectral.ChannelDescriptor`), with
DOFA's initialisation and its 0.01 output scaling. What is not: ``DOFAEmbedding`` itself, because

* its convolution uses ``padding=1`` with ``stride=patch_size``: the patch grid is shifted by one
  pixel, the last row/column of the image is dropped and a zero row/column is mixed in, so tokens no
  longer map to whole patches and the pixel validity mask cannot be carried to tokens;
* it takes wavelengths only (SAR needs placeholder wavelengths) and a fixed image size.

The channels are put into catalogue order before their kernels are generated, so a permutation of
the input bands (with their names) gives bit-identical tokens.

Reference:
    Xiong et al., "Neural Plasticity-Inspired Multimodal Foundation Model for Earth Observation",
    https://arxiv.org/abs/2403.15356 (reference code: https://github.com/zhu-xlab/DOFA)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torchgeo.models.dofa import TransformerWeightGenerator

from spectravlm.tokenizers.base import PatchTokenizer, Remainder
from spectravlm.tokenizers.channels import Channel, lookup_channels

DOFA_SCALER = 0.01
"""DOFA multiplies generated weights and bias by this factor (torchgeo ``DOFAEmbedding.scaler``)."""


def generate_kernels(generator: TransformerWeightGenerator, desc: Tensor) -> tuple[Tensor, Tensor]:
    """Run TorchGeo's ``TransformerWeightGenerator`` on descriptors ``[C,E]``, computing only what is used.

    The generator appends its 128 learned weight tokens and a bias token to the ``C`` descriptors,
    runs one post-norm transformer layer, and keeps the outputs of the ``C`` descriptor tokens and
    of the bias token. The 128 weight-token outputs are discarded, so here the layer's queries,
    feed-forward and norms run on the ``C+1`` kept rows only (keys and values still come from all
    ``C+129`` tokens). Same parameters, same result as ``generator(desc)`` (checked in the tests),
    about 10x fewer operations in the layer: the full call cost more than the patch projection itself
    in a training step here. With more than one layer (not DOFA's setting) the module is called as is.

    Returns:
        ``(weights [C, out_dim], bias [embed_dim])`` as ``generator(desc)`` returns them.

    """
    layers = generator.transformer_encoder.layers
    if len(layers) != 1 or generator.transformer_encoder.norm is not None:
        return generator(desc)
    layer = layers[0]
    attn = layer.self_attn
    tokens = torch.cat([generator.weight_tokens, desc, generator.bias_token], dim=0)  # (129+C, E)
    kept = tokens[generator.wt_num :]  # (C+1, E): descriptors and the bias token
    e, heads = tokens.shape[1], attn.num_heads
    w_q, w_kv = attn.in_proj_weight[:e], attn.in_proj_weight[e:]
    b_q, b_kv = attn.in_proj_bias[:e], attn.in_proj_bias[e:]
    q = rearrange(F.linear(kept, w_q, b_q), "n (h f) -> 1 h n f", h=heads)
    k, v = rearrange(F.linear(tokens, w_kv, b_kv), "m (two h f) -> two 1 h m f", two=2, h=heads)
    sa = attn.out_proj(rearrange(F.scaled_dot_product_attention(q, k, v), "1 h n f -> n (h f)"))
    h = layer.norm1(kept + sa)
    out = layer.norm2(h + layer.linear2(layer.activation(layer.linear1(h))))
    weights = generator.fc_weight(out[:-1] + desc)
    bias = generator.fc_bias(out[-1])
    return weights, bias


class WavelengthTokenizer(PatchTokenizer):
    """Patch tokens whose projection is generated from each channel's wavelength or polarisation.

    Args:
        dim: token width ``D``.
        patch_size: patch side ``p``.
        sensors: catalogue names of accepted sensors.
        min_valid_fraction: smallest valid-pixel fraction of a valid token.
        remainder: ``"pad"``, ``"crop"`` or ``"error"`` for sizes not divisible by ``p``.
        descriptor_dim: width ``E`` of the channel descriptors (DOFA: 128).
        generator_heads: attention heads of the weight generator (DOFA: 4).

    """

    kernel_scale = DOFA_SCALER

    def __init__(
        self,
        dim: int,
        patch_size: int,
        sensors: Sequence[str],
        min_valid_fraction: float = 0.5,
        remainder: Remainder = "pad",
        descriptor_dim: int = 128,
        generator_heads: int = 4,
    ) -> None:
        super().__init__(dim, patch_size, sensors, min_valid_fraction, remainder, descriptor_dim)
        self.generator = TransformerWeightGenerator(
            descriptor_dim, patch_size * patch_size * dim, dim, num_heads=generator_heads
        )
        self._kernel_cache: dict[tuple[object, ...], tuple[Tensor, Tensor | None]] = {}
        for m in self.generator.modules():  # DOFAEmbedding._init_weights
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0.01)

    def slot_groups(self, channels: tuple[Channel, ...]) -> tuple[tuple[str, ...], ...]:
        """One group: the input's channels in catalogue order."""
        return (tuple(sorted((c.key for c in channels), key=self.key_index.__getitem__)),)

    def kernels(self, groups: tuple[tuple[str, ...], ...], present: Tensor) -> tuple[Tensor, Tensor | None]:
        """Return generated kernels ``[1,C*p*p,D]`` and bias ``[1,D]`` (before ``kernel_scale``).

        Without autograd (inference) the kernels of a channel set are cached and reused until any
        parameter of the descriptor or generator changes (an optimiser step or a loaded state dict
        bumps the tensors' version counters), so inference pays for the generator once per band set.
        """
        key = (groups[0], self._parameter_versions())
        if not torch.is_grad_enabled() and key in self._kernel_cache:
            return self._kernel_cache[key]
        desc = self.descriptor(lookup_channels(self.universe, groups[0]))
        weight, bias = generate_kernels(self.generator, desc)  # (C, p*p*D), (D,)
        # DOFA_SCALER is applied by the projection (kernel_scale), to its output rather than here
        out = rearrange(weight, "c (pq d) -> 1 (c pq) d", d=self.dim), rearrange(bias, "d -> 1 d")
        if not torch.is_grad_enabled():
            self._kernel_cache = {key: out}  # one band set at a time: bounded memory
        return out

    def _parameter_versions(self) -> tuple[int, ...]:
        params = [*self.descriptor.parameters(), *self.generator.parameters()]
        return tuple(p._version for p in params) + tuple(p.data_ptr() for p in params[:1])
