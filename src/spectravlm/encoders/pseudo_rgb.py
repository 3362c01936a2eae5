"""Pseudo-RGB encoder: S1/S2 bands -> (fixed or learned) 3-channel composite -> RGB-pretrained backbone.

Axis legend: ``B`` batch, ``T`` dates, ``C`` bands, ``L`` patch tokens of one image, ``D`` width.

The second door into the encoder side (see the design notes): an RGB-pretrained timm ViT or CLIP
vision tower, fed with a pseudo-RGB composite of the bands (:mod:`spectravlm.adapters`). With
``learned=True`` the 1x1 adapter starts as the composite and is trained; the backbone is frozen or
trainable. Its outputs have the same typed form as :class:`~spectravlm.encoders.spectral.SpectralEncoder`
(:class:`~spectravlm.encoders.outputs.EncoderOutput`, with its per-date, per-location and pooled views), so
heads take either.

Masking: invalid pixels are set to 0 after the composite, so their content never enters the
backbone; a token is marked invalid when fewer than ``min_valid_fraction`` of its pixels are valid.
The RGB backbones have no key mask, so invalid tokens still take part in their attention (with
blank content); use the mask downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from spectravlm.adapters.backbones import CLIPVisionBackbone, TimmRGBBackbone
from spectravlm.adapters.composites import affine_channels, composite_inputs, get_composite
from spectravlm.adapters.learned import PseudoRGBAdapter
from spectravlm.encoders.outputs import EncoderOutput, masked_token_mean
from spectravlm.encoders.pretrained import PretrainedMixin
from spectravlm.errors import ModelConfigError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack
from spectravlm.tokenizers.tokens import TokenCoords, TokenGrid

BackboneKind = Literal["timm", "clip"]


@dataclass
class PseudoRGBEncoderConfig:
    """Hyperparameters of :class:`PseudoRGBEncoder` (JSON-serialisable; saved with checkpoints)."""

    sensor: str = "sentinel2_l2a"  # catalogue sensor of the input series
    composite: str = "s2_true_colour"  # fixed composite (and adapter initialisation)
    bands: tuple[str, ...] | None = None  # adapter input bands; None = the composite's bands
    learned: bool = True  # trainable 1x1 adapter (True) or the fixed composite (False)
    backbone: BackboneKind = "timm"  # timm ViT or transformers CLIP vision tower
    timm_model: str = "vit_small_patch16_224"  # timm model name (backbone="timm")
    img_size: int = 224  # timm position-embedding size (other sizes are interpolated)
    clip_config: dict[str, Any] | None = None  # CLIPVisionConfig dict (backbone="clip", no path)
    pretrained_path: str | None = None  # local backbone weights: timm file or CLIP directory
    freeze_backbone: bool = True  # freeze the RGB backbone
    resize: int | None = None  # resize the pseudo-RGB image to resize x resize first (None: keep)
    min_valid_fraction: float = 0.5  # valid-pixel share for a valid token

    def __post_init__(self) -> None:
        self.sensor = get_sensor(self.sensor).name
        if self.backbone not in ("timm", "clip"):
            raise ModelConfigError(f"backbone must be 'timm' or 'clip', got {self.backbone!r}")
        if self.bands is not None:
            self.bands = tuple(self.bands)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PseudoRGBEncoderConfig:
        """Rebuild from :func:`dataclasses.asdict` output."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ModelConfigError(f"unknown PseudoRGBEncoderConfig fields: {sorted(unknown)}")
        return cls(**d)


class PseudoRGBEncoder(PretrainedMixin):
    """Composite/adapter + RGB backbone, with the encoder interface of this library.

    Args:
        config: the hyperparameters. After construction ``self.config`` describes the architecture
            only (``pretrained_path`` cleared, ``clip_config`` filled in), which is what
            :meth:`save_pretrained` writes; the weights travel in the safetensors file.

    """

    config_class = PseudoRGBEncoderConfig

    def __init__(self, config: PseudoRGBEncoderConfig | None = None) -> None:
        super().__init__()
        config = config or PseudoRGBEncoderConfig()
        self.composite = get_composite(config.composite)
        sensor = get_sensor(config.sensor)
        if sensor.platform != self.composite.platform:
            raise ModelConfigError(
                f"composite {self.composite.name} is for {self.composite.platform}, not {sensor.name}"
            )
        self.bands = sensor.canonical_names(config.bands or self.composite.bands)
        self.adapter = PseudoRGBAdapter(self.composite, self.bands, sensor.name)
        self.adapter.requires_grad_(config.learned)
        self.backbone: TimmRGBBackbone | CLIPVisionBackbone
        if config.backbone == "timm":
            self.backbone = TimmRGBBackbone(
                config.timm_model, config.img_size, config.pretrained_path, config.freeze_backbone
            )
            self.config = replace(config, pretrained_path=None)
        else:
            self.backbone = CLIPVisionBackbone(
                config.pretrained_path, config.clip_config, config.freeze_backbone
            )
            self.config = replace(config, pretrained_path=None, clip_config=self.backbone.config_dict)

    @property
    def dim(self) -> int:
        """Token width ``D`` (the backbone's)."""
        return self.backbone.width

    def pseudo_rgb(self, series: SensorSeries) -> tuple[Tensor, Tensor]:
        """Pseudo-RGB images ``[(B T),3,H,W]`` in [0, 1] (0 at invalid pixels) and ``valid [(B T),H,W]``."""
        x, valid = composite_inputs(series, self.bands, self.composite.unit)
        if self.config.learned:
            rgb = self.adapter(x)
        else:
            weight, bias = self.composite.weights(self.bands)
            rgb = affine_channels(x, weight.to(x.device), bias.to(x.device)).clamp(0.0, 1.0)
        rgb = rgb * valid.unsqueeze(1)
        if self.config.resize is not None:
            size = (self.config.resize, self.config.resize)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
            valid = F.interpolate(valid.unsqueeze(1).float(), size=size, mode="nearest")[:, 0] > 0.5
        return rgb, valid

    def forward_features(self, inputs: SensorStack | SensorSeries) -> EncoderOutput:
        """Backbone patch tokens of every date: tokens ``[B,T*L,D]``, mask ``[B,T*L]``."""
        group, series = self._series(inputs)
        b, t = series.values.shape[:2]
        rgb, valid = self.pseudo_rgb(series)
        tokens = self.backbone(rgb)  # (BT, L, D)
        p = self.backbone.patch_size
        h, w = rgb.shape[-2] // p, rgb.shape[-1] // p
        if tokens.shape[1] != h * w:
            raise ModelConfigError(f"backbone returned {tokens.shape[1]} tokens for a {h}x{w} patch grid")
        frac = rearrange(valid[:, : h * p, : w * p].float(), "n (h p) (w q) -> n (h w) (p q)", p=p, q=p).mean(
            -1
        )
        mask = (frac >= self.config.min_valid_fraction) & (frac > 0)
        grid = TokenGrid(dates=t, groups=1, rows=h, cols=w)
        coords = _coords(series, grid)
        mask = rearrange(mask, "(b t) l -> b (t l)", b=b)
        return EncoderOutput(
            tokens=rearrange(tokens, "(b t) l d -> b (t l) d", b=b) * mask.unsqueeze(-1).to(tokens.dtype),
            mask=mask,
            coords=coords,
            spans={group: (0, grid.size)},
            grids={group: grid},
            patch_size=p,
        )

    def forward(self, inputs: SensorStack | SensorSeries) -> Tensor:
        """Pooled features ``[B,D]``: mean of the valid tokens."""
        out = self.forward_features(inputs)
        return masked_token_mean(out.tokens, out.mask)

    def _series(self, inputs: SensorStack | SensorSeries) -> tuple[str, SensorSeries]:
        candidates = {inputs.sensor: inputs} if isinstance(inputs, SensorSeries) else inputs.series
        found = {g: s for g, s in candidates.items() if s.sensor == self.config.sensor}
        if len(found) != 1:
            raise ModelConfigError(
                f"pseudo-RGB encoder for {self.config.sensor} needs exactly one such series, "
                f"found {len(found)}"
            )
        return next(iter(found.items()))


def _coords(series: SensorSeries, grid: TokenGrid) -> TokenCoords:
    b = series.values.shape[0]
    device = series.values.device
    t_idx, r_idx, c_idx = torch.meshgrid(
        torch.arange(grid.dates, device=device),
        torch.arange(grid.rows, device=device),
        torch.arange(grid.cols, device=device),
        indexing="ij",
    )

    def flat(idx: Tensor) -> Tensor:
        return repeat(idx.flatten(), "n -> b n", b=b)

    zeros = torch.zeros(b, grid.size, dtype=torch.long, device=device)
    return TokenCoords(
        t=flat(t_idx),
        time=repeat(series.times.to(device), "b t -> b (t l)", l=grid.per_date),
        group=zeros,
        spectral_nm=torch.full((b, grid.size), float("nan"), device=device),
        row=flat(r_idx),
        col=flat(c_idx),
        sensor=zeros,
    )


def pseudo_rgb_timm(
    sensor: str = "sentinel2_l2a",
    composite: str = "s2_true_colour",
    bands: tuple[str, ...] | None = None,
    model_name: str = "vit_small_patch16_224",
    checkpoint_path: str | None = None,
    freeze_backbone: bool = True,
) -> PseudoRGBEncoder:
    """Learned adapter + timm ViT (weights from a local file when ``checkpoint_path`` is given)."""
    return PseudoRGBEncoder(
        PseudoRGBEncoderConfig(
            sensor=sensor,
            composite=composite,
            bands=bands,
            backbone="timm",
            timm_model=model_name,
            pretrained_path=checkpoint_path,
            freeze_backbone=freeze_backbone,
        )
    )


def pseudo_rgb_clip(
    name_or_path: str,
    sensor: str = "sentinel2_l2a",
    composite: str = "s2_true_colour",
    bands: tuple[str, ...] | None = None,
    freeze_backbone: bool = True,
) -> PseudoRGBEncoder:
    """Learned adapter + CLIP vision tower loaded with ``CLIPVisionModel.from_pretrained``."""
    return PseudoRGBEncoder(
        PseudoRGBEncoderConfig(
            sensor=sensor,
            composite=composite,
            bands=bands,
            backbone="clip",
            pretrained_path=name_or_path,
            freeze_backbone=freeze_backbone,
        )
    )


__all__ = [
    "PseudoRGBEncoder",
    "PseudoRGBEncoderConfig",
    "pseudo_rgb_clip",
    "pseudo_rgb_timm",
]
