"""Record which windows each rank trained on, to check sharding across ranks and workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L


class SeenWindows(L.Callback):
    """Write, per rank and training epoch, the dataset indices of the windows in its batches.

    Files: ``<dirpath>/seen-rank<R>-epoch<E>.json`` holding ``{"rank", "epoch", "windows"}`` (padding
    samples, index ``-1``, left out). In one epoch the ranks' lists should be disjoint and together cover
    the training split.

    Args:
        dirpath: output directory (created).

    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self._seen: list[int] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start a new list."""
        self._seen = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Note the batch's window indices."""
        index = getattr(batch, "index", None)
        if index is not None:
            self._seen.extend(int(i) for i in index.tolist() if i >= 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write this rank's list."""
        self.dirpath.mkdir(parents=True, exist_ok=True)
        doc = {"rank": trainer.global_rank, "epoch": trainer.current_epoch, "windows": self._seen}
        path = self.dirpath / f"seen-rank{trainer.global_rank}-epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(doc))
