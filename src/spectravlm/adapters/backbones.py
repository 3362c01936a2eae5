"""RGB backbones behind the pseudo-RGB adapters: a timm ViT and a transformers CLIP vision tower.

Axis legend: ``N`` images, ``L`` patch tokens, ``D`` backbone width.

Both take pseudo-RGB images ``[N,3,H,W]`` in [0, 1], normalise them with the backbone's own
statistics (timm ``pretrained_cfg`` mean/std; CLIP's image-processor mean/std) and return the patch
tokens ``[N,L,D]`` (prefix/class tokens dropped) with the patch grid. Both can be frozen.

Weights come from local files only in this library's tests (no hub access), through the real
loading paths: ``timm.create_model(..., pretrained=True, pretrained_cfg_overlay={"file": path})``
and ``CLIPVisionModel.from_pretrained(directory)``. Any hub name works the same way where the hub is
reachable.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from spectravlm.errors import ModelConfigError

# transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD (CLIPImageProcessor defaults)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _freeze(module: nn.Module, frozen: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(not frozen)


class TimmRGBBackbone(nn.Module):
    """A timm ViT as an RGB backbone.

    Args:
        model_name: timm model name (``vit_small_patch16_224``; ``test_vit`` in tests).
        img_size: input size the position embedding is built for (other sizes are interpolated).
        checkpoint_path: local weights file (``.safetensors``/``.pth``) loaded through timm's
            pretrained path; ``None`` = random initialisation.
        frozen: freeze the backbone's parameters.

    """

    mean: Tensor
    std: Tensor
    model: Any  # timm VisionTransformer (timm's attributes are dynamic)

    def __init__(
        self,
        model_name: str = "vit_small_patch16_224",
        img_size: int = 224,
        checkpoint_path: str | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        self.model = timm.create_model(
            model_name,
            pretrained=checkpoint_path is not None,
            pretrained_cfg_overlay=None if checkpoint_path is None else {"file": checkpoint_path},
            img_size=img_size,
            num_classes=0,
            dynamic_img_size=True,
        )
        cfg = self.model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.frozen = frozen
        _freeze(self.model, frozen)

    @property
    def width(self) -> int:
        """Token width ``D``."""
        return int(self.model.embed_dim)

    @property
    def patch_size(self) -> int:
        """Patch side in pixels."""
        return int(self.model.patch_embed.patch_size[0])

    def forward(self, rgb: Tensor) -> Tensor:
        """``[N,3,H,W]`` in [0, 1] -> patch tokens ``[N,L,D]``."""
        tokens = self.model.forward_features((rgb - self.mean) / self.std)
        return tokens[:, self.model.num_prefix_tokens :]


class CLIPVisionBackbone(nn.Module):
    """The vision tower of a transformers CLIP model as an RGB backbone.

    Args:
        name_or_path: directory (or hub name) for ``CLIPVisionModel.from_pretrained``; ``None``
            builds a randomly initialised tower from ``config``.
        config: a ``CLIPVisionConfig`` as a dict (used when ``name_or_path`` is ``None``).
        frozen: freeze the tower's parameters.

    """

    mean: Tensor
    std: Tensor
    model: Any  # transformers CLIPVisionModel

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        if name_or_path is not None:
            self.model = CLIPVisionModel.from_pretrained(name_or_path)
        elif config is not None:
            self.model = CLIPVisionModel(CLIPVisionConfig.from_dict(config))
        else:
            raise ModelConfigError("CLIPVisionBackbone needs name_or_path or a config dict")
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.frozen = frozen
        _freeze(self.model, frozen)

    @property
    def config_dict(self) -> dict[str, Any]:
        """The tower's configuration as a JSON-ready dict (to rebuild it without the hub)."""
        return dict(self.model.config.to_dict())

    @property
    def width(self) -> int:
        """Token width ``D``."""
        return int(self.model.config.hidden_size)

    @property
    def patch_size(self) -> int:
        """Patch side in pixels."""
        return int(self.model.config.patch_size)

    def forward(self, rgb: Tensor) -> Tensor:
        """``[N,3,H,W]`` in [0, 1] -> patch tokens ``[N,L,D]`` (class token dropped)."""
        size = self.model.config.image_size
        out = self.model(
            pixel_values=(rgb - self.mean) / self.std,
            interpolate_pos_encoding=tuple(rgb.shape[-2:]) != (size, size),
        )
        return out.last_hidden_state[:, 1:]
