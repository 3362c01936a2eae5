"""What every spectravlm task shares: optimiser, seeded randomness per batch, checkpoint metadata.

A task is a thin :class:`lightning.LightningModule` over plain ``nn.Module`` s that small factory
functions build from explicit, typed hyperparameters (no module is ever a hyperparameter, so every
checkpoint loads from its ``hyper_parameters`` alone). What :class:`BaseTask` adds:

* **Optimiser**: AdamW without weight decay on biases, norms and embeddings, with a linear warm-up and a
  cosine decay over the run (``trainer.estimated_stepping_batches``), stepped every optimiser step.
* **Exact resumption**: before each training batch reaches the device (and so before the data module's
  on-device augmentation), torch's global generators are reseeded from ``(seed, batch number, rank)``, and
  each batch gets its own mask generator seeded the same way. Every random draw of a step (augmentation,
  masks, drop-path) is then a function of the step, so a run resumed from a checkpoint
  (``ckpt_path="last"``) repeats the uninterrupted run's losses. Validation masks depend on the batch
  index only, so validation losses are comparable across epochs. (Randomness inside DataLoader workers is
  not covered: ``missing_dates="sample"`` draws there.)
* **Checkpoint metadata**: every checkpoint carries ``checkpoint["spectravlm"]`` with the encoder's class,
  config and the catalogue facts of its sensors (bands, wavelengths, polarisations, default statistics),
  the streams' bands and the window size, so a checkpoint says what it expects.
* **Compatibility**: loading a checkpoint whose architecture hyperparameters (bands, encoder size, patch
  size, tokenizer, decoder...) differ from this task's raises a :class:`ModelConfigError` that names the
  differences, before any weight is touched.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from spectravlm.errors import ModelConfigError

# BaseTask overrides ``on_before_batch_transfer`` on purpose (to reseed before the data module's
# on-device augmentation, see the module docstring); the data module does not define that hook, so
# Lightning's warning about the module's hook being used instead of the data module's says nothing.
warnings.filterwarnings("ignore", message=r"You have overridden `on_before_batch_transfer`")


def step_seed(*keys: int) -> int:
    """Return a well-mixed 63-bit seed from integer keys (``numpy.random.SeedSequence``)."""
    return int(
        np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys])
        .generate_state(2, np.uint32)
        .view(np.uint64)[0]
        >> 1
    )


def normalise_bands(bands: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Check and copy a ``{stream: [bands]}`` mapping."""
    if not bands:
        raise ModelConfigError(
            "the task needs the bands of every sensor stream, e.g. {'s2': ['B02', ...], 's1': ['VV', 'VH']}; "
            "with the CLI they come from data.groups and the stores (linked)"
        )
    out = {}
    for g, b in bands.items():
        if isinstance(b, str) or not b:
            raise ModelConfigError(f"bands of stream {g!r} must be a non-empty list of band names, got {b!r}")
        out[str(g)] = tuple(str(x) for x in b)
    return out


class BaseTask(L.LightningModule):
    """Base of the spectravlm tasks (see the module docstring).

    Args:
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms and embeddings).
        betas: AdamW betas.
        warmup: share of the run's optimiser steps spent warming the learning rate up linearly.
        min_lr_ratio: final learning rate as a share of ``lr`` (cosine decay).
        seed: seed of the per-batch randomness.

    """

    #: hyperparameters that define the architecture: a checkpoint must agree on them to be loaded.
    architecture_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup: float = 0.05,
        min_lr_ratio: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0 or not 0 <= warmup < 1 or not 0 <= min_lr_ratio <= 1:
            raise ModelConfigError(
                f"optimiser settings out of range: lr={lr} (> 0), weight_decay={weight_decay} (>= 0), "
                f"warmup={warmup} (in [0, 1)), min_lr_ratio={min_lr_ratio} (in [0, 1])"
            )
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = tuple(betas)
        self.warmup = warmup
        self.min_lr_ratio = min_lr_ratio
        self.seed = seed

    # ---- optimiser ---------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """AdamW (decay on weight matrices only) with linear warm-up and cosine decay per step."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (decay if decays(name, p) else no_decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
            betas=self.betas,  # type: ignore[arg-type]
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = int(self.warmup * total)
        floor = self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, factor), "interval": "step"},
        }

    # ---- randomness --------------------------------------------------------------------------------

    def batch_number(self) -> int:
        """Training batches consumed before the current one, across epochs (restored on resumption)."""
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    def mask_generator(self, stage: str, batch_idx: int) -> torch.Generator:
        """Return a generator on this module's device, seeded by stage, batch and rank."""
        stage_key = {"train": 0, "val": 1, "test": 2, "predict": 3}[stage]
        index = self.batch_number() if stage == "train" else batch_idx
        g = torch.Generator(device=self.device)
        g.manual_seed(step_seed(self.seed, stage_key, index, self.global_rank))
        return g

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Reseed torch's generators for this training batch (before augmentation on the device)."""
        trainer = self._trainer
        if trainer is not None and trainer.training:
            torch.manual_seed(step_seed(self.seed, 0, self.batch_number(), self.global_rank, 1))
        return batch

    # ---- checkpoints -------------------------------------------------------------------------------

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Return what :meth:`on_save_checkpoint` records under ``checkpoint["spectravlm"]``."""
        from spectravlm import __version__

        return {"spectravlm_version": __version__}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add :meth:`checkpoint_metadata` to the checkpoint."""
        checkpoint["spectravlm"] = self.checkpoint_metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose architecture hyperparameters differ from this task's."""
        theirs = checkpoint.get("hyper_parameters", {})
        diffs = []
        for key in self.architecture_keys:
            mine = _plain(self.hparams.get(key))
            other = _plain(theirs.get(key))
            if key in theirs and mine != other:
                diffs.append(f"{key}: checkpoint {other!r}, this run {mine!r}")
        if diffs:
            raise ModelConfigError(
                f"the checkpoint was made by a different {type(self).__name__} architecture; "
                + "; ".join(diffs)
                + ". Use the checkpoint's settings, or start from its encoder with init_encoder"
            )


def _plain(value: Any) -> Any:
    """Hyperparameters as plain comparable values (tuples as lists, mappings as dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether weight decay applies: weight matrices yes; biases, norms, embeddings, mask tokens no."""
    return param.ndim >= 2 and "_embed." not in name and not name.endswith("mask_token")
