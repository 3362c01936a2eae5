"""Training plumbing for Lightning: atomic checkpoint IO, reconstruction figures, encoder export.

Names are imported on first use (PEP 562), so ``spectravlm.callbacks.atomic_save`` can be used without
importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AtomicCheckpointIO": "checkpoint_io",
    "ExportEncoder": "export",
    "ReconstructionFigure": "reconstruction",
    "SeenWindows": "windows",
    "atomic_torch_save": "atomic_save",
    "clean_stale_partials": "atomic_save",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'spectravlm.callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(f"spectravlm.callbacks.{_WHERE[name]}"), name)
