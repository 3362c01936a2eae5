"""Spectral-group tokens: SpectralGPT-style 3D cubes and SatMAE-style band groups.

Axis legend: ``G`` groups, ``S`` channel slots per group, ``D`` width, ``p`` patch size,
``K`` channels known to the tokenizer, ``E`` descriptor width.

One token per (date, spectral group, patch). Two ways to form the groups, both from the catalogue
(:mod:`spectravlm.tokenizers.channels`):

* ``grouping="cube"``: runs of ``cube_bands`` channels adjacent in wavelength, i.e. the
  ``p x p x g`` spatial-spectral cubes of SpectralGPT (Hong et al., https://arxiv.org/abs/2311.07113),
  whose Conv3d with kernel ``(g, p, p)`` and stride ``(g, p, p)`` is exactly one kernel per channel
  slot of a group, which is what this module holds;
* ``grouping="band_group"``: groups by native resolution and spectral region as in SatMAE
  (Cong et al., https://arxiv.org/abs/2207.08051), which embeds each group with its own projection.

Why not a plain ``nn.Conv3d``: a Conv3d ties kernels to band *positions*, so a subset or another order
of bands would meet the wrong kernels. Here every catalogue channel has its own ``p x p -> D`` kernel
(a bank indexed by spectral key); a group's token sums the kernels of the channels present, an absent
channel contributes nothing (= zero-filling it). The spectral position of a group enters as an
embedding of its catalogue members' descriptors (DOFA wavelength encoding for optical channels,
polarisation embeddings for SAR), never of band order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError
from spectravlm.tokenizers.base import PatchTokenizer, Remainder
from spectravlm.tokenizers.channels import Channel, band_groups, cube_groups, lookup_channels

Grouping = Literal["cube", "band_group"]


class GroupedTokenizer(PatchTokenizer):
    """Tokens per spectral group and patch, with a kernel per catalogue channel.

    Args:
        dim: token width ``D``.
        patch_size: patch side ``p``.
        sensors: catalogue names of accepted sensors.
        grouping: ``"cube"`` (adjacent-wavelength runs) or ``"band_group"`` (SatMAE groups).
        cube_bands: channels per cube group (``g``; SpectralGPT uses 3). Ignored for band groups.
        min_valid_fraction: smallest valid-pixel fraction of a valid token.
        remainder: ``"pad"``, ``"crop"`` or ``"error"`` for sizes not divisible by ``p``.
        descriptor_dim: width of the channel descriptors.

    """

    def __init__(
        self,
        dim: int,
        patch_size: int,
        sensors: Sequence[str],
        grouping: Grouping = "cube",
        cube_bands: int = 3,
        min_valid_fraction: float = 0.5,
        remainder: Remainder = "pad",
        descriptor_dim: int = 128,
    ) -> None:
        super().__init__(dim, patch_size, sensors, min_valid_fraction, remainder, descriptor_dim)
        if grouping == "cube":
            self.table = cube_groups(self.universe, cube_bands)
        elif grouping == "band_group":
            self.table = band_groups(self.universe)
        else:
            raise ModelConfigError(f"grouping must be 'cube' or 'band_group', got {grouping!r}")
        self.grouping: Grouping = grouping
        slots = max(len(g) for g in self.table)
        bound = 1.0 / math.sqrt(slots * patch_size * patch_size)  # nn.Conv2d's default init range
        self.bank = nn.Parameter(torch.empty(len(self.universe), patch_size * patch_size, dim))  # (K, p*p, D)
        nn.init.uniform_(self.bank, -bound, bound)
        self.group_proj = nn.Linear(descriptor_dim, dim)

    def slot_groups(self, channels: tuple[Channel, ...]) -> tuple[tuple[str, ...], ...]:
        """Catalogue groups with at least one channel present, in catalogue order."""
        keys = {c.key for c in channels}
        return tuple(g for g in self.table if keys.intersection(g))

    def kernels(self, groups: tuple[tuple[str, ...], ...], present: Tensor) -> tuple[Tensor, Tensor | None]:
        """Bank kernels of each slot's channel, zero in empty slots: ``[G,S*p*p,D]``, no bias."""
        index = torch.tensor([[self.key_index.get(k, 0) for k in g] for g in groups], device=self.bank.device)
        weight = self.bank[index] * rearrange(present, "g s -> g s 1 1").to(self.bank.dtype)
        return rearrange(weight, "g s pq d -> g (s pq) d"), None

    def group_embedding(self, groups: tuple[tuple[str, ...], ...]) -> Tensor:
        """``[G,D]``: projection of the mean descriptor of each group's catalogue channels."""
        members = [lookup_channels(self.universe, g) for g in groups]
        desc = self.descriptor([c for m in members for c in m])
        sizes = torch.tensor([len(m) for m in members], device=desc.device)
        owner = torch.repeat_interleave(torch.arange(len(members), device=desc.device), sizes)
        mean = torch.zeros(len(members), desc.shape[1], device=desc.device).index_add(0, owner, desc)
        return self.group_proj(mean / sizes.unsqueeze(1))
