"""Training plumbing for Lightning: atomic checkpoint IO, reconstruction figures, encoder export."""

from spectravlm.callbacks.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from spectravlm.callbacks.export import ExportEncoder
from spectravlm.callbacks.reconstruction import ReconstructionFigure
from spectravlm.callbacks.windows import SeenWindows

__all__ = ["AtomicCheckpointIO", "ExportEncoder", "ReconstructionFigure", "SeenWindows", "atomic_torch_save"]
