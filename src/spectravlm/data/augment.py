"""Geometric augmentation applied identically across sensors, dates, masks and targets of a sample.

:class:`SpatialAugment` draws, per sample, one random crop, one horizontal flip, one vertical flip and
one rotation by ``k * 90`` degrees, and applies the same draw to every series ``[B,T,C,H,W]``, its
validity mask ``[B,T,H,W]`` and every target ``[B,H,W]``. It works on any dtype (raw uint16 in a worker,
normalised float32 on the GPU after transfer) and on any device.

The crop and flip parameters are drawn by kornia's augmentation modules (``RandomCrop``,
``RandomHorizontalFlip``, ``RandomVerticalFlip``: their probability handling and parameter generators,
driven by torch's global RNG, so seeded runs repeat) and flips use kornia's exact ``hflip``/``vflip``.
Rotations are exact ``torch.rot90`` with ``k`` uniform in 0..3, not kornia's ``RandomRotation90``: that one
resamples through an affine warp (float noise ~1e-7, bilinear mixing that spreads NaN target pixels into
their neighbours, zero fill at borders) and rounds a continuous draw, which makes ``k = 0`` and ``k = 3``
half as likely as 1 and 2 (documented in its own docstring).
"""

from __future__ import annotations

from dataclasses import replace

import kornia.augmentation as K
import torch
from kornia.geometry.transform import hflip, vflip
from torch import Tensor

from spectravlm.errors import DataConfigError
from spectravlm.stack import SensorStack

_SIGNED_VIEW = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}


class SpatialAugment:
    """Random crop, flips and 90-degree rotations, shared by all tensors of a sample.

    Args:
        hflip_p: probability of a horizontal flip.
        vflip_p: probability of a vertical flip.
        rotate90: rotate by ``k * 90`` degrees, ``k`` uniform in 0..3 (square windows only).
        crop_size: crop a random ``crop_size`` square out of each window (``None``: no crop).

    """

    def __init__(
        self,
        hflip_p: float = 0.5,
        vflip_p: float = 0.5,
        rotate90: bool = True,
        crop_size: int | None = None,
    ) -> None:
        self.hflip = K.RandomHorizontalFlip(p=hflip_p)
        self.vflip = K.RandomVerticalFlip(p=vflip_p)
        self.rotate90 = rotate90
        self.crop_size = crop_size
        self.crop = None if crop_size is None else K.RandomCrop((crop_size, crop_size), cropping_mode="slice")

    def draw(self, batch: int, height: int, width: int) -> dict[str, Tensor]:
        """Per-sample parameters: crop offsets ``y0, x0``, flips ``h, v`` (bool) and rotations ``k``."""
        shape = torch.Size([batch, 1, height, width])
        params: dict[str, Tensor] = {
            "h": self.hflip.forward_parameters(shape)["batch_prob"] > 0.5,
            "v": self.vflip.forward_parameters(shape)["batch_prob"] > 0.5,
        }
        if self.crop is not None:
            if self.crop_size is not None and (self.crop_size > height or self.crop_size > width):
                raise DataConfigError(
                    f"crop_size {self.crop_size} is larger than the {height}x{width} window"
                )
            src = self.crop.forward_parameters(shape)["src"]  # (B, 4, 2) corners as (x, y)
            params["x0"] = src[:, 0, 0].long()
            params["y0"] = src[:, 0, 1].long()
        square = (height, width) if self.crop_size is None else (self.crop_size, self.crop_size)
        if self.rotate90:
            if square[0] != square[1]:
                raise DataConfigError(f"90-degree rotations need square windows, got {square[0]}x{square[1]}")
            params["k"] = torch.randint(0, 4, (batch,))
        return params

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Apply drawn parameters to ``x`` ``[B, ..., H, W]`` (any dtype)."""
        if x.dtype in _SIGNED_VIEW:  # torch lacks index_put for unsigned ints; moving bits is all we do
            return self.apply(x.view(_SIGNED_VIEW[x.dtype]), params).view(x.dtype)
        if "x0" in params:
            c = self.crop_size
            assert c is not None
            offsets = zip(params["y0"].tolist(), params["x0"].tolist(), strict=True)
            x = torch.stack([x[i, ..., y : y + c, xx : xx + c] for i, (y, xx) in enumerate(offsets)])
        else:
            x = x.clone()
        for key, flip in (("h", hflip), ("v", vflip)):
            sel = params[key].to(x.device)
            if sel.any():
                x[sel] = flip(x[sel])
        if "k" in params:
            ks = params["k"].to(x.device)
            for k in (1, 2, 3):
                sel = ks == k
                if sel.any():
                    x[sel] = torch.rot90(x[sel], k, dims=(-2, -1))
        return x

    def __call__(self, stack: SensorStack) -> SensorStack:
        """Augment every series, mask and target of ``stack`` with one draw per sample."""
        first = next(iter(stack.series.values()), None)
        ref = first.values if first is not None else next(iter(stack.targets.values()))
        params = self.draw(ref.shape[0], ref.shape[-2], ref.shape[-1])
        series = {
            k: replace(s, values=self.apply(s.values, params), valid=self.apply(s.valid, params))
            for k, s in stack.series.items()
        }
        targets = {k: self.apply(v, params) for k, v in stack.targets.items()}
        origin = stack.origin
        if origin is not None and "x0" in params:
            shift = torch.stack([params["y0"], params["x0"]], dim=1).to(origin)
            origin = torch.where(origin >= 0, origin + shift, origin)
        return replace(stack, series=series, targets=targets, origin=origin)
