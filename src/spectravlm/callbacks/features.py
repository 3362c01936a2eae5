"""``spectravlm predict`` with a pretraining task: the encoder features of every window, saved to a file.

:class:`FeatureWriter` collects what ``PretrainTask.predict_step`` returns for every batch (pooled encoder
features, the window's index and its top-left pixel in its store) and writes, when the predict epoch ends,
one NumPy ``.npz`` per rank::

    <dirpath>/features-rank<r>.npz    features [N,D] float32, index [N] int64, origin [N,2] int64 (row, col)

(``dirpath`` defaults to ``<log_dir>/predictions``; ``numpy.load`` reads it). Padding samples (index -1) are
left out. The file is written atomically and an existing one is not replaced unless ``overwrite``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from spectravlm.io import OutputExistsError, atomic_write_bytes


class FeatureWriter(BasePredictionWriter):
    """Write the predicted encoder features of every window (see the module docstring).

    Args:
        dirpath: output folder (default ``<log_dir>/predictions``).
        overwrite: replace files of an earlier prediction.

    """

    def __init__(self, dirpath: str | None = None, overwrite: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.dirpath = dirpath
        self.overwrite = overwrite
        self.written: list[Path] = []

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Concatenate the batches' features and write this rank's file."""
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        outputs = [o for o in outputs if isinstance(o, dict) and "features" in o]
        if not outputs:
            return
        target = Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or ".") / "predictions"
        path = target / f"features-rank{trainer.global_rank}.npz"
        if path.exists() and not self.overwrite:
            raise OutputExistsError(f"{path} already exists; pass overwrite (--overwrite) to replace it")
        arrays = {k: torch.cat([o[k].detach().cpu() for o in outputs]) for k in outputs[0]}
        arrays["features"] = arrays["features"].float()
        n = len(arrays["features"])
        keep = arrays["index"] >= 0 if "index" in arrays else torch.ones(n, dtype=torch.bool)
        buffer = io.BytesIO()
        np.savez(buffer, **{k: v[keep].numpy() for k, v in arrays.items()})  # type: ignore[arg-type]
        atomic_write_bytes(buffer.getvalue(), path)
        self.written.append(path)
        print(f"spectravlm: wrote the features of {int(keep.sum())} windows to {path}", flush=True)
