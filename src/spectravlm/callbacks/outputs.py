"""Say where a run's outputs went: at the end of ``fit``, print the checkpoints, logs and figures."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class PrintOutputs(L.Callback):
    """Print, on rank 0 when a fit ends, the best and last checkpoints, the log folder and the figures."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Print the paths."""
        log_dir = trainer.log_dir  # on every rank: with several ranks this is a broadcast
        if not trainer.is_global_zero:
            return
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint):
                if cb.best_model_path:
                    score = (
                        ""
                        if cb.best_model_score is None
                        else f" ({cb.monitor} {float(cb.best_model_score):.4g})"
                    )
                    print(f"spectravlm: best checkpoint {cb.best_model_path}{score}")
                if cb.last_model_path:
                    print(f"spectravlm: last checkpoint {cb.last_model_path}")
        if log_dir is not None:
            print(f"spectravlm: logs in {log_dir}")
            figures = Path(log_dir) / "figures"
            if figures.is_dir():
                print(f"spectravlm: figures in {figures}")


__all__ = ["PrintOutputs"]
