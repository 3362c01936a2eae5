"""What every spectravlm task shares: hooks, parameter groups, per-batch seeds, checks, statistics, metadata.

The shared part covers model hooks, the optimiser and its parameter groups, seeded randomness per batch,
data checks, the encoder's normalisation statistics and checkpoint metadata.

A task is a thin :class:`lightning.LightningModule` over plain ``nn.Module`` s built from explicit, typed
hyperparameters (no module is ever a hyperparameter, so every checkpoint loads from its
``hyper_parameters`` alone). As in TorchGeo, :class:`BaseTask` saves the hyperparameters and calls
:meth:`~BaseTask.configure_models`, :meth:`~BaseTask.configure_losses` and
:meth:`~BaseTask.configure_metrics`; subclasses read ``self.hparams`` there. What it adds:

* **Optimiser**: AdamW with timm's parameter groups (``param_groups_weight_decay``, or
  ``param_groups_layer_decay`` with ``layer_decay``): no weight decay on biases, norms and what the modules'
  ``no_weight_decay()`` name (embeddings, learned tokens); the encoder's groups at ``lr *
  encoder_lr_mult``; a linear warm-up and a cosine decay over the run, stepped every optimiser step.
* **Encoder training**: ``encoder_trainable`` = ``"all"`` (full fine-tuning), ``"none"`` (frozen, kept in
  eval mode) or ``k`` (the last ``k`` transformer blocks, the final norm and the location pooling train).
* **Normalisation statistics**: the encoder owns them (:mod:`spectravlm.encoders.statistics`). When a fit
  starts with a new encoder (or ``refit_statistics=True``), they are set from the data module's stores
  (``spectravlm data stats``); an encoder loaded from pretraining keeps its own by default.
* **Exact resumption**: before each training batch reaches the device (and so before the data module's
  on-device augmentation), torch's global generators are reseeded from ``(seed, batch number, rank)``, and
  each batch can get its own generator seeded the same way (:meth:`BaseTask.mask_generator`). Every random
  draw of a step is then a function of the step, so a resumed run repeats the uninterrupted run's losses.
* **Data checks** before any step: the streams and bands the data delivers, the window size, a crop size
  that is a multiple of the patch size.
* **Checkpoint metadata**: ``checkpoint["spectravlm"]`` records the task, the encoder's class, config
  (with where its statistics came from) and the prefix of its weights, its sensors' catalogue facts, the
  streams' bands and the window size, so ``SpectralEncoder.from_checkpoint`` and ``spectravlm export``
  work for every task with an encoder.
* **Compatibility**: loading a checkpoint whose architecture hyperparameters differ from this task's raises
  a :class:`ModelConfigError` that names the differences, before any weight is touched.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from spectravlm.errors import ModelConfigError

if TYPE_CHECKING:
    from spectravlm.data.datamodule import CubeDataModule
    from spectravlm.encoders.spectral import SpectralEncoder

# BaseTask overrides ``on_before_batch_transfer`` on purpose (to reseed before the data module's
# on-device augmentation, see the module docstring); the data module does not define that hook, so
# Lightning's warning about the module's hook being used instead of the data module's says nothing.
warnings.filterwarnings("ignore", message=r"You have overridden `on_before_batch_transfer`")

EncoderTrainable = Literal["all", "none"] | int


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
            "with the CLI they come from data.groups and the stores"
        )
    out = {}
    for g, b in bands.items():
        if isinstance(b, str) or not b:
            raise ModelConfigError(f"bands of stream {g!r} must be a non-empty list of band names, got {b!r}")
        out[str(g)] = tuple(str(x) for x in b)
    return out


def no_weight_decay_names(root: nn.Module) -> set[str]:
    """Full names of the parameters that the modules under ``root`` exempt from weight decay."""
    out: set[str] = set()
    for prefix, module in root.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            out |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return out


class BaseTask(L.LightningModule):
    """Base of the spectravlm tasks (see the module docstring).

    Subclasses take the optimiser settings below as their own constructor arguments (so that they appear
    in configs and checkpoints), call ``super().__init__()`` and build their modules in
    :meth:`configure_models` from ``self.hparams``. Tasks with an encoder expose it as :attr:`encoder`.

    Args:
        ignore: constructor arguments not to save as hyperparameters.

    Optimiser hyperparameters read from ``self.hparams`` (with these defaults when a task lacks them):
    ``lr`` (1e-4), ``weight_decay`` (0.05), ``betas`` ((0.9, 0.95)), ``warmup`` (share of steps, 0.05),
    ``min_lr_ratio`` (0.0), ``encoder_lr_mult`` (1.0), ``layer_decay`` (None), ``encoder_trainable``
    ("all"), ``refit_statistics`` (None: refit for a new encoder only), ``seed`` (0).

    """

    #: hyperparameters that define the architecture: a checkpoint must agree on them to be loaded.
    architecture_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ignore: Sequence[str] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(ignore or []))
        hp = self._opt
        if (
            hp["lr"] <= 0
            or hp["weight_decay"] < 0
            or not 0 <= hp["warmup"] < 1
            or not 0 <= hp["min_lr_ratio"] <= 1
        ):
            raise ModelConfigError(
                f"optimiser settings out of range: lr={hp['lr']} (> 0), weight_decay={hp['weight_decay']} "
                f"(>= 0), warmup={hp['warmup']} (in [0, 1)), min_lr_ratio={hp['min_lr_ratio']} (in [0, 1])"
            )
        if hp["encoder_lr_mult"] < 0 or (hp["layer_decay"] is not None and not 0 < hp["layer_decay"] <= 1):
            raise ModelConfigError(
                f"encoder_lr_mult={hp['encoder_lr_mult']} must be >= 0 and layer_decay={hp['layer_decay']} "
                "in (0, 1] (or null)"
            )
        trainable = hp["encoder_trainable"]
        if not (trainable in ("all", "none") or (isinstance(trainable, int) and trainable >= 0)):
            raise ModelConfigError(
                "encoder_trainable must be 'all', 'none' or a number of last blocks to train, "
                f"got {trainable!r}"
            )
        self.encoder_loaded = False  # True when configure_models loaded a pretrained encoder
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        if self.encoder is not None:
            self._apply_trainable(self.encoder, trainable)

    # ---- hooks -------------------------------------------------------------------------------------

    def configure_models(self) -> None:
        """Build the task's modules from ``self.hparams`` (subclasses)."""

    def configure_losses(self) -> None:
        """Build the task's loss functions from ``self.hparams`` (subclasses, optional)."""

    def configure_metrics(self) -> None:
        """Build the task's metrics from ``self.hparams`` (subclasses, optional)."""

    @property
    def encoder(self) -> SpectralEncoder | None:
        """The task's sensor-native encoder, or ``None`` for a task without one."""
        return None

    @property
    def _opt(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "lr": 1e-4,
            "weight_decay": 0.05,
            "betas": (0.9, 0.95),
            "warmup": 0.05,
            "min_lr_ratio": 0.0,
            "encoder_lr_mult": 1.0,
            "layer_decay": None,
            "encoder_trainable": "all",
            "refit_statistics": None,
            "seed": 0,
        }
        return {k: self.hparams.get(k, v) for k, v in defaults.items()}

    @property
    def seed(self) -> int:
        """Seed of the per-batch randomness."""
        return int(self._opt["seed"])

    # ---- encoder training --------------------------------------------------------------------------

    def encoder_prefix(self) -> str:
        """Prefix of the encoder's weights in this task's ``state_dict`` (e.g. ``model.encoder.``)."""
        enc = self.encoder
        for name, module in self.named_modules():
            if module is enc:
                return f"{name}." if name else ""
        raise ModelConfigError(f"{type(self).__name__}.encoder is not a submodule of the task")

    def _apply_trainable(self, encoder: SpectralEncoder, trainable: EncoderTrainable) -> None:
        if trainable == "all":
            return
        encoder.requires_grad_(False)
        if trainable == "none" or trainable == 0:
            return
        blocks = [*encoder.blocks, *encoder.temporal_blocks]
        if int(trainable) > len(blocks):
            raise ModelConfigError(
                f"encoder_trainable={trainable} blocks, but the encoder has {len(blocks)} transformer blocks"
            )
        for blk in blocks[len(blocks) - int(trainable) :]:
            blk.requires_grad_(True)
        encoder.norm.requires_grad_(True)
        if encoder.location_pool is not None:
            encoder.location_pool.requires_grad_(True)

    def train(self, mode: bool = True) -> BaseTask:
        """Set training mode; a frozen encoder (``encoder_trainable="none"``) stays in eval mode."""
        super().train(mode)
        if self.encoder is not None and self._opt["encoder_trainable"] in ("none", 0):
            self.encoder.eval()
        return self

    # ---- optimiser ---------------------------------------------------------------------------------

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups (see the module docstring), each with its ``lr``."""
        hp = self._opt
        lr, wd = float(hp["lr"]), float(hp["weight_decay"])
        skip = no_weight_decay_names(self)
        enc = self.encoder
        enc_ids = {id(p) for p in enc.parameters()} if enc is not None else set()
        groups: list[dict[str, Any]] = []
        if enc is not None and any(p.requires_grad for p in enc.parameters()):
            prefix = self.encoder_prefix()
            enc_skip = [n[len(prefix) :] for n in skip if n.startswith(prefix)]
            if hp["layer_decay"] is not None:
                enc_groups = param_groups_layer_decay(
                    enc, wd, no_weight_decay_list=enc_skip, layer_decay=float(hp["layer_decay"])
                )
            else:
                enc_groups = param_groups_weight_decay(enc, wd, no_weight_decay_list=enc_skip)
            for g in enc_groups:
                g["lr"] = lr * float(g.pop("lr_scale", 1.0)) * float(hp["encoder_lr_mult"])
                groups.append(g)
        for g in param_groups_weight_decay(self, wd, no_weight_decay_list=sorted(skip)):
            params = [p for p in g["params"] if id(p) not in enc_ids]
            if params:
                groups.append({**g, "params": params, "lr": lr})
        return [g for g in groups if g["params"]]

    def configure_optimizers(self) -> Any:
        """AdamW over :meth:`parameter_groups` with linear warm-up and cosine decay per step."""
        hp = self._opt
        betas = (float(hp["betas"][0]), float(hp["betas"][1]))
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=float(hp["lr"]), betas=betas)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = int(float(hp["warmup"]) * total)
        floor = float(hp["min_lr_ratio"])

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

    # ---- data --------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Check the data module against the model, and set the encoder's statistics, before any step."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:  # plain dataloaders: nothing to check against (and no store to read)
            return
        from spectravlm.data.datamodule import CubeDataModule

        if not isinstance(dm, CubeDataModule):
            return
        if not dm.datasets:
            dm.setup(stage)
        self.check_data(dm)
        refit = self._opt["refit_statistics"]
        if (
            stage == "fit"
            and self.encoder is not None
            and (refit or (refit is None and not self.encoder_loaded))
        ):
            self.adopt_store_statistics(dm)

    def check_data(self, dm: CubeDataModule) -> None:
        """Raise :class:`ModelConfigError` when the data does not fit the model (subclasses add checks)."""
        bands = self.hparams.get("bands")
        groups = next(iter(dm.datasets.values())).groups
        if bands is not None:
            have = {g: info.bands for g, info in groups.items()}
            want = {g: tuple(b) for g, b in bands.items()}
            if have != want:
                raise ModelConfigError(
                    f"the data delivers streams/bands {have}, but the model was built for {want}"
                )
        window = self.hparams.get("window_size")
        if window is not None and dm.window_size != window:
            raise ModelConfigError(f"data window_size {dm.window_size} differs from the model's {window}")
        enc = self.encoder
        crop = dm.augmenter.crop_size if dm.augmenter is not None else None
        if enc is not None and crop is not None and crop % enc.config.patch_size:
            raise ModelConfigError(
                f"data crop_size {crop} is not a multiple of the encoder's patch_size {enc.config.patch_size}"
            )

    def adopt_store_statistics(self, dm: CubeDataModule) -> dict[str, str]:
        """Set the encoder's normalisation statistics from the data module's stores.

        Sensors whose stores have no statistics (``spectravlm data stats`` not run) keep the encoder's.

        Returns:
            Per sensor, the source now in use (printed in the run summary).

        """
        from spectravlm.encoders.statistics import store_statistics

        enc = self.encoder
        assert enc is not None
        pooled = store_statistics(dm.sensor_statistics())
        for sensor, (stats, source) in pooled.items():
            usable = {b: ms for b, ms in stats.items() if ms[1] > 0}
            if usable and sensor in enc.config.sensors:
                enc.set_statistics(sensor, usable, source)
        return dict(enc.config.stats_source)

    # ---- checkpoints -------------------------------------------------------------------------------

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Return what :meth:`on_save_checkpoint` records under ``checkpoint["spectravlm"]``."""
        from spectravlm import __version__
        from spectravlm.encoders.pretrained import sensor_metadata

        meta: dict[str, Any] = {"spectravlm_version": __version__, "task": type(self).__name__}
        enc = self.encoder
        if enc is not None:
            meta["encoder"] = {
                "model_type": type(enc).__name__,
                "config": asdict(enc.config),
                "prefix": self.encoder_prefix(),
                "sensors": sensor_metadata(tuple(enc.config.sensors), enc),
            }
        bands = self.hparams.get("bands")
        if bands is not None:
            meta["bands"] = {g: list(b) for g, b in bands.items()}
        if self.hparams.get("window_size") is not None:
            meta["window_size"] = self.hparams["window_size"]
        return meta

    def export_facts(self) -> dict[str, Any]:
        """Facts written as ``training.json`` beside an exported encoder (subclasses add theirs)."""
        facts: dict[str, Any] = {"task": type(self).__name__}
        if self.hparams.get("bands") is not None:
            facts["bands"] = {g: list(b) for g, b in self.hparams["bands"].items()}
        if self.hparams.get("window_size") is not None:
            facts["window_size"] = self.hparams["window_size"]
        facts["global_step"] = int(self.global_step)
        return facts

    def export_encoder(
        self, path: str | Path, overwrite: bool = False, state_dict: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the encoder with ``save_pretrained`` plus ``training.json`` (:meth:`export_facts`).

        Load it for fine-tuning with :func:`spectravlm.encoders.spectral.load_encoder`. An existing folder is
        replaced only with ``overwrite``.

        Args:
            path: the folder to write.
            overwrite: replace an existing folder.
            state_dict: the task's full state dict when the module's own tensors are shards (FSDP): the
                encoder is rebuilt from its config and these weights, then written.

        """
        enc = self.encoder
        if enc is None:
            raise ModelConfigError(f"{type(self).__name__} has no encoder to export")
        if state_dict is not None:
            prefix = self.encoder_prefix()
            full = type(enc)(copy.deepcopy(enc.config))
            full.load_state_dict({k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)})
            enc = full
        return enc.save_pretrained(
            path,
            overwrite=overwrite,
            extra_files={"training.json": json.dumps(self.export_facts(), indent=2)},
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add :meth:`checkpoint_metadata` to the checkpoint."""
        checkpoint["spectravlm"] = self.checkpoint_metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose architecture differs from this task's; restore the statistics' source."""
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
        enc_meta = (checkpoint.get("spectravlm") or {}).get("encoder") or {}
        source = (enc_meta.get("config") or {}).get("stats_source")
        if self.encoder is not None and isinstance(source, dict):
            self.encoder.config.stats_source.update(source)


def _plain(value: Any) -> Any:
    """Hyperparameters as plain comparable values (tuples as lists, mappings as dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
