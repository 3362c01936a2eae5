"""Whole-scene prediction: overlapping windows over every pixel, blended tile by tile, written atomically.

* :mod:`~spectravlm.predict.tiling`: the plan (output tiles aligned to chunks, the windows covering each);
* :mod:`~spectravlm.predict.loader`: the windows of the plan for ``CubeDataModule.predict_dataloader``
  (``predict_windows: extent``), each rank its own tiles;
* :mod:`~spectravlm.predict.blend`: cosine-ramp blending in float32 accumulators, one tile at a time;
* :mod:`~spectravlm.predict.output`: ``predictions`` groups in the stores and Cloud-Optimized GeoTIFFs;
* :mod:`~spectravlm.predict.writer`: :class:`MapWriter`, the Lightning callback of ``spectravlm predict``.

Names are imported on first use (PEP 562), so importing the package does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "MapAssembler": "blend",
    "MapOutputs": "output",
    "MapWriter": "writer",
    "PredictionPlan": "tiling",
    "TileSampler": "loader",
    "extent_dataloader": "loader",
    "plan_prediction": "tiling",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'spectravlm.predict' has no attribute {name!r}")
    return getattr(importlib.import_module(f"spectravlm.predict.{_WHERE[name]}"), name)
