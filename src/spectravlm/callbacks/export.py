"""Export the pretrained encoder for fine-tuning when training ends."""

from __future__ import annotations

from pathlib import Path

import lightning as L


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

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Export (rank zero writes; every rank agrees on the path)."""
        log_dir = trainer.log_dir  # on every rank: with several ranks this is a broadcast
        target = Path(self.dirpath) if self.dirpath else Path(log_dir or ".") / "encoder"
        if trainer.is_global_zero:
            self.path = pl_module.export_encoder(target)  # type: ignore[operator]
            print(f"spectravlm: encoder exported to {self.path}")
