"""Export the pretrained encoder for fine-tuning when training ends."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class ExportEncoder(L.Callback):
    """Write the task's encoder with ``save_pretrained`` at the end of ``fit``.

    The task must have ``export_encoder(path)`` (:class:`~spectravlm.tasks.pretrain.PretrainTask` has).
    Load the result with ``SpectralEncoder.from_pretrained(path)``.

    Args:
        dirpath: where to write (default ``<log_dir>/encoder``).

    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.path: Path | None = None

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Export (rank zero only)."""
        target = Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or ".") / "encoder"
        self.path = pl_module.export_encoder(target)  # type: ignore[operator]
        print(f"spectravlm: encoder exported to {self.path}")
