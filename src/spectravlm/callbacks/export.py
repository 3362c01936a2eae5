"""Export the trained encoder for fine-tuning when training ends (any task with an encoder)."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class ExportEncoder(L.Callback):
    """Write the task's encoder with ``save_pretrained`` (and ``training.json``) at the end of ``fit``.

    The full state dict is gathered through the strategy on every rank (a collective under FSDP, where each
    rank holds shards), then rank zero rebuilds the encoder from its config and these weights and writes it.
    Load the result with :func:`spectravlm.encoders.spectral.load_encoder`.

    Args:
        dirpath: where to write (default ``<log_dir>/encoder``); an existing folder is not replaced.

    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.path: Path | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Gather the weights on every rank; rank zero writes."""
        if getattr(pl_module, "encoder", None) is None:
            return
        log_dir = trainer.log_dir  # on every rank: with several ranks this is a broadcast
        target = Path(self.dirpath) if self.dirpath else Path(log_dir or ".") / "encoder"
        state = trainer.strategy.lightning_module_state_dict()  # every rank takes part
        if trainer.is_global_zero:
            self.path = pl_module.export_encoder(target, state_dict=state)  # type: ignore[operator]
            print(f"spectravlm: encoder exported to {self.path}")
        trainer.strategy.barrier("export_encoder")
