"""Pseudo-RGB adapters: fixed composites and learned band-to-RGB maps onto RGB backbones."""

from spectravlm.adapters.backbones import CLIPVisionBackbone, TimmRGBBackbone
from spectravlm.adapters.composites import (
    COMPOSITES,
    S1_VV_VH_RATIO,
    S2_TRUE_COLOUR,
    Composite,
    apply_composite,
    get_composite,
)
from spectravlm.adapters.learned import PseudoRGBAdapter

__all__ = [
    "COMPOSITES",
    "S1_VV_VH_RATIO",
    "S2_TRUE_COLOUR",
    "CLIPVisionBackbone",
    "Composite",
    "PseudoRGBAdapter",
    "TimmRGBBackbone",
    "apply_composite",
    "get_composite",
]
