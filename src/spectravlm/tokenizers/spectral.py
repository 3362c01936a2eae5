"""Spectral identity of channels: descriptor vectors from wavelength (optical) or polarisation (SAR).

A descriptor is a vector ``[E]`` per channel that the tokenizers condition on. Optical channels use
DOFA's wavelength encoding, reused from TorchGeo: the 1-D sine/cosine embedding of the centre
wavelength in nm (``torchgeo.models.dofa.position_embedding``) followed by DOFA's residual MLP
(``torchgeo.models.dofa.FCResLayer``). SAR channels get a learned embedding per polarisation (and
per polarisation ratio) instead: DOFA feeds SAR through placeholder wavelengths, which gives the
network a spectral position that has no physical meaning.

References:
    * Xiong et al., "Neural Plasticity-Inspired Multimodal Foundation Model for Earth Observation"
      (DOFA), https://arxiv.org/abs/2403.15356

"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchgeo.models.dofa import FCResLayer, position_embedding

from spectravlm.errors import ModelConfigError
from spectravlm.tokenizers.channels import SAR_ORDER, Channel


def sincos_embedding(dim: int, pos: Tensor) -> Tensor:
    """TorchGeo's 1-D sine/cosine embedding ``[M] -> [M,D]``, always computed in float32.

    Positions here are large numbers (wavelengths of 443-2190 nm, hundreds of days, patch indices):
    under CUDA autocast the ``einsum`` inside would run in bf16, whose 8 significant bits space 2190 nm
    8 nm apart and day 300 two days apart, and the sines of those products are then noise. Autocast is
    therefore switched off here, whatever region the caller is in.
    """
    with torch.autocast(device_type=pos.device.type, enabled=False):
        return position_embedding(dim, pos.float())


class ChannelDescriptor(nn.Module):
    """Descriptor vectors for channels: wavelength encoding (optical), polarisation embedding (SAR).

    Args:
        dim: descriptor width ``E`` (even; DOFA uses 128).

    """

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        if dim % 2:
            raise ModelConfigError(f"descriptor width must be even (sine/cosine pairs), got {dim}")
        self.dim = dim
        self.wavelength_mlp = FCResLayer(dim)
        self.polarisation = nn.Embedding(len(SAR_ORDER), dim)
        nn.init.normal_(self.polarisation.weight, std=0.02)
        for m in self.wavelength_mlp.modules():  # DOFA's initialisation of this layer
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0.01)

    def forward(self, channels: Sequence[Channel]) -> Tensor:
        """Descriptors ``[C,E]`` of ``channels`` in the order given."""
        device = self.polarisation.weight.device
        out = torch.empty(len(channels), self.dim, device=device)
        optical = [i for i, c in enumerate(channels) if c.kind == "optical"]
        sar = [i for i, c in enumerate(channels) if c.kind == "sar"]
        if optical:
            wl = torch.tensor(
                [channels[i].wavelength_nm for i in optical], device=device, dtype=torch.float32
            )
            with torch.autocast(device_type=device.type, enabled=False):  # descriptors stay float32
                out[optical] = self.wavelength_mlp(sincos_embedding(self.dim, wl))
        if sar:
            pols = [channels[i].polarisation for i in sar]
            unknown = [p for p in pols if p not in SAR_ORDER]
            if unknown:
                raise ModelConfigError(
                    f"unknown SAR polarisation(s) {unknown}; known: {', '.join(SAR_ORDER)}"
                )
            idx = torch.tensor([SAR_ORDER.index(str(p)) for p in pols], device=device)
            out[sar] = self.polarisation(idx)
        return out
