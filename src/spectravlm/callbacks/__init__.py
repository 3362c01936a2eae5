"""Training plumbing for Lightning: atomic checkpoint IO, reconstruction figures, encoder export.

Names are imported on first use (PEP 562), so importing the package does not import Lightning. The atomic
file and folder writes themselves are in :mod:`spectravlm.io`.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AtomicCheckpointIO": "checkpoint_io",
    "ExportEncoder": "export",
    "FeatureWriter": "features",
    "ReconstructionFigure": "reconstruction",
    "RunSummary": "summary",
    "SeenWindows": "windows",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'spectravlm.callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(f"spectravlm.callbacks.{_WHERE[name]}"), name)
