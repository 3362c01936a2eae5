"""Learned pseudo-RGB adapter: a 1x1 map from C bands to 3 channels, initialised to a fixed composite.

Axis legend: ``N`` images, ``C`` bands, ``H``/``W`` pixels.

The adapter starts as exactly the fixed composite (:mod:`spectravlm.adapters.composites`): bands the
composite does not use get zero weights, so at initialisation it *is* the composite, and training
can then learn to use them. The output is clamped to [0, 1] like the composite (gradients pass
where the value is inside the range).
"""

from __future__ import annotations

from torch import Tensor, nn

from spectravlm.adapters.composites import Composite, affine_channels, get_composite
from spectravlm.sensors import get_sensor


class PseudoRGBAdapter(nn.Module):
    """1x1 band-to-RGB map initialised to a composite.

    Args:
        composite: the composite to start from (name or :class:`Composite`).
        bands: input bands in the order of the input channels; must include the composite's bands
            (default: exactly the composite's bands).
        sensor: catalogue sensor the bands belong to (for canonical band names).
        clamp: clamp the output to [0, 1] as the composite does.

    """

    def __init__(
        self,
        composite: str | Composite = "s2_true_colour",
        bands: tuple[str, ...] | None = None,
        sensor: str = "sentinel2_l2a",
        clamp: bool = True,
    ) -> None:
        super().__init__()
        self.composite = get_composite(composite)
        self.bands = get_sensor(sensor).canonical_names(bands or self.composite.bands)
        weight, bias = self.composite.weights(self.bands)
        self.weight = nn.Parameter(weight)  # (3, C)
        self.bias = nn.Parameter(bias)  # (3,)
        self.clamp = clamp

    def forward(self, x: Tensor) -> Tensor:
        """``[N,C,H,W]`` bands (in the composite's unit) -> ``[N,3,H,W]`` pseudo-RGB."""
        rgb = affine_channels(x, self.weight, self.bias)
        return rgb.clamp(0.0, 1.0) if self.clamp else rgb
