"""``RegressionTask``: above-ground biomass (or any dense target) from S1/S2 time series, per pixel or chip.

The model is the sensor-native encoder (:class:`~spectravlm.encoders.spectral.SpectralEncoder`, new or from a
pretraining checkpoint / exported folder: ``init_encoder``) and an MLP-Mixer head on its per-location tokens
(:mod:`spectravlm.heads.mixer`): ``head="dense"`` predicts every pixel of the window at input resolution,
``head="scalar"`` one value per window (the mean of its valid target pixels). This class adds, on the
:class:`~spectravlm.tasks.base.BaseTask` hooks:

* **targets**: learned as ``z = f(y)`` (:mod:`spectravlm.heads.targets`: standardised with the training
  split's statistics, optionally after ``log1p``); the statistics are computed when a fit starts, kept in the
  hyperparameters and the checkpoint, and every output is mapped back to target units;
* **uncertainty** (optional): Gaussian NLL or quantiles (:mod:`spectravlm.heads.uncertainty`), with the
  predicted interval's coverage among the metrics;
* **losses over valid targets only**: NaN/nodata targets and padding samples count for nothing; a batch
  without a valid target contributes exactly 0;
* **metrics per epoch in target units** (:mod:`spectravlm.heads.metrics`): RMSE, MAE, R², bias, coverage, and
  the predict-the-training-mean baseline beside them; ``spectravlm test`` prints them;
* **fine-tuning controls** from the base task: ``encoder_trainable`` (``all``, ``none``, last ``k`` blocks),
  ``encoder_lr_mult``, ``layer_decay``;
* **whole-scene prediction**: :meth:`predict_step` returns per-window maps that
  :class:`spectravlm.predict.MapWriter` blends into GeoTIFFs and Zarr groups; windows without any valid
  observation are not run through the model.

From the command line (``bands``, ``window_size`` and ``seed`` come from the data section)::

    spectravlm fit --config configs/agb_demo.yaml
    spectravlm test --config configs/agb_demo.yaml --ckpt_path runs/agb_demo/checkpoints/last.ckpt
    spectravlm predict --config configs/agb_demo.yaml --ckpt_path runs/agb_demo/checkpoints/last.ckpt

From Python::

    dm = CubeDataModule(stores=["data/demo.zarr"], groups=["s2", "s1"], targets=["agb"], window_size=64)
    task = RegressionTask(bands=store_bands(dm.stores, dm.groups), window_size=64, encoder="tiny",
                          init_encoder="runs/pretrain_demo/checkpoints/last.ckpt")
    L.Trainer(max_epochs=10).fit(task, datamodule=dm)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from spectravlm.encoders.spectral import (
    AttentionPattern,
    EncoderSize,
    SpectralEncoder,
    TokenizerKind,
    task_encoder,
)
from spectravlm.errors import ModelConfigError
from spectravlm.heads.mixer import DenseMixerHead, ScalarMixerHead, pixel_input_features, pixel_inputs
from spectravlm.heads.objective import RegressionObjective
from spectravlm.heads.targets import BIOMASS_TARGETS, TargetTransformKind, target_units
from spectravlm.heads.uncertainty import RegressionOutput, Uncertainty
from spectravlm.stack import SensorStack
from spectravlm.tasks.base import BaseTask, normalise_bands

if TYPE_CHECKING:
    from spectravlm.data.datamodule import CubeDataModule

HeadKind = Literal["dense", "scalar"]
MAX_STATISTICS_WINDOWS = 4096
"""Training windows read (evenly spaced) to compute the target statistics when a fit starts."""


# ---- what the regression tasks share (this one and the baselines) -------------------------------------


def training_targets(dm: CubeDataModule, target: str) -> np.ndarray:
    """The finite values of ``target`` over the training split's windows (up to 4096 evenly spaced windows).

    Raises:
        ModelConfigError: the data module does not load ``target``, or the training split holds no finite
            value of it (naming the target and the stores).

    """
    from spectravlm.data.store import CubeStore

    if not dm.datasets:
        dm.setup("fit")
    ds = dm.datasets["train"]
    stores = ", ".join(p for r in ds.regions for p in r.paths)
    windows = ds.windows
    if len(windows) > MAX_STATISTICS_WINDOWS:
        pick = np.linspace(0, len(windows) - 1, MAX_STATISTICS_WINDOWS).round().astype(int)
        windows = [windows[i] for i in pick]
    arrays: dict[int, Any] = {}
    parts = []
    for w in windows:
        if w.region not in arrays:
            region = ds.regions[w.region]
            arrays[w.region] = CubeStore.open(region.paths[region.targets[target]]).targets[target]
        values = np.asarray(arrays[w.region][w.slices()], dtype=np.float64)
        parts.append(values[np.isfinite(values)])
    values = np.concatenate(parts) if parts else np.zeros(0)
    if values.size == 0:
        raise ModelConfigError(
            f"target {target!r} has no valid (finite) pixel in the training split of {stores}: "
            f"{len(ds.windows)} training windows kept, {ds.n_empty} dropped as empty; check the target layer "
            "or choose other split_fractions / seed"
        )
    return values


def check_target(dm: CubeDataModule, target: str) -> None:
    """Refuse a data module that does not load ``target`` (before any step)."""
    if target not in dm.targets:
        raise ModelConfigError(
            f"the task regresses target {target!r}, but the data module loads targets "
            f"{list(dm.targets) or '(none)'}; add it to data.targets (e.g. targets: [{target}])"
        )


def observed_pixels(batch: SensorStack) -> Tensor:
    """``[B,H,W]`` bool: pixels with a valid observation in some sensor group at some date."""
    masks = [s.valid.any(dim=1) for s in batch.series.values()]
    out = masks[0]
    for m in masks[1:]:
        out = out | m
    return out


def select_samples(batch: SensorStack, index: Tensor) -> SensorStack:
    """The samples ``index`` (``[b]`` int64) of a batch, as a new :class:`SensorStack`."""
    from dataclasses import replace

    series = {
        g: replace(
            s,
            values=s.values[index],
            times=s.times[index],
            valid=s.valid[index],
            all_valid=True if s.all_valid is True else None,
        )
        for g, s in batch.series.items()
    }
    return SensorStack(
        series=series,
        targets={k: v[index] for k, v in batch.targets.items()},
        origin=None if batch.origin is None else batch.origin[index],
        index=None if batch.index is None else batch.index[index],
    )


def predict_maps(
    batch: SensorStack, forward: Callable[[SensorStack], RegressionOutput], target: str
) -> dict[str, Tensor]:
    """Per-window maps of a batch for :class:`spectravlm.predict.MapWriter`, skipping empty windows.

    Windows without a valid observation are not run through ``forward``; they, and every pixel never
    observed, come back as NaN (nodata).

    Returns:
        ``{target: [B,H,W], target + "_std": [B,H,W] (with uncertainty), "index": [B], "origin": [B,2]}``.

    """
    observed = observed_pixels(batch)
    b, h, w = observed.shape
    keep = observed.flatten(1).any(dim=1).nonzero().squeeze(1)
    nan = torch.full((b, h, w), float("nan"), device=observed.device)
    maps: dict[str, Tensor] = {}
    if keep.numel():
        sub = batch if keep.numel() == b else select_samples(batch, keep)
        out = forward(sub)
        for name, value in ((target, out.mean), (f"{target}_std", out.std)):
            if value is None:
                continue
            if value.ndim == 1:  # one value per window: the whole window
                value = value.view(-1, 1, 1).expand(-1, h, w)
            full = nan.clone()
            full[keep] = value.float()
            maps[name] = torch.where(observed, full, nan)
    else:
        maps[target] = nan
    result = dict(maps)
    if batch.index is not None:
        result["index"] = batch.index.clone()
    if batch.origin is not None:
        result["origin"] = batch.origin.clone()
    return result


def regression_setup(task: BaseTask, objective: RegressionObjective, stage: str) -> str:
    """At set-up: the target statistics from the training split where missing (saved in ``task.hparams``).

    Returns:
        The target's units in the stores ('' when unknown or not looked up).

    Raises:
        ModelConfigError: a fit without a ``CubeDataModule`` and without the statistics; a target without
            known units; a target without any valid pixel in the training split.

    """
    from spectravlm.data.datamodule import CubeDataModule

    dm = getattr(task.trainer, "datamodule", None) if task._trainer is not None else None
    if not isinstance(dm, CubeDataModule):
        if objective.missing_statistics() and stage == "fit":
            raise ModelConfigError(
                "the target statistics (transform_mean, transform_std, train_mean) are not set and there is "
                "no "
                "CubeDataModule to compute them from; give them as arguments"
            )
        return ""
    units = _target_units(dm, objective.target)  # a target without a known unit fails before anything
    if objective.missing_statistics() and stage != "predict":
        for key, value in objective.set_statistics(training_targets(dm, objective.target)).items():
            task.hparams[key] = value  # saved with the checkpoints
    return units


def log_metrics(task: BaseTask, objective: RegressionObjective, stage: str) -> dict[str, float]:
    """Log the objective's metrics of ``stage`` (``{stage}/rmse``, ...) and return them."""
    values = objective.compute(stage)
    for k, v in values.items():
        task.log(f"{stage}/{k}", v, sync_dist=True)
    return values


def prediction_layers(target: str, units: str, uncertainty: bool) -> list[tuple[str, str, str]]:
    """``(name, units, description)`` of the maps of :func:`predict_maps`.

    Raises:
        ModelConfigError: the units are unknown (no checkpoint, no store holding the target) and the target
            is not a biomass density (whose unit is t/ha by definition).

    """
    if not units:
        if target.lower() not in BIOMASS_TARGETS:
            raise ModelConfigError(
                f"the units of target {target!r} are unknown: predict with a checkpoint trained on it, or "
                "from stores that hold the target layer with its units"
            )
        units = "t/ha"
    layers = [(target, units, f"predicted {target}")]
    if uncertainty:
        layers.append((f"{target}_std", units, f"predicted {target} uncertainty (sigma-equivalent)"))
    return layers


def load_target_facts(task: BaseTask, objective: RegressionObjective, checkpoint: dict[str, Any]) -> str:
    """Adopt a checkpoint's target statistics (into the objective and ``task.hparams``); return its units."""
    theirs = checkpoint.get("hyper_parameters", {})
    known = {k: theirs.get(k) for k in ("transform_mean", "transform_std", "train_mean")}
    objective.load_statistics(known)
    for k, v in known.items():
        if v is not None:
            task.hparams[k] = v
    return str(((checkpoint.get("spectravlm") or {}).get("target") or {}).get("units") or "")


def recorded_bands(path: str) -> dict[str, list[str]] | None:
    """Bands an encoder checkpoint or exported folder was trained on, when it records them."""
    p = Path(path)
    if p.is_dir():
        facts = p / "training.json"
        if not facts.is_file():
            return None
        bands = json.loads(facts.read_text()).get("bands")
    else:
        from spectravlm.encoders.pretrained import read_checkpoint

        bands = (read_checkpoint(p).get("spectravlm") or {}).get("bands")
    return {str(g): [str(b) for b in v] for g, v in bands.items()} if isinstance(bands, dict) else None


# ---- the task ----------------------------------------------------------------------------------------


class RegressionSteps(BaseTask):
    """The steps, metrics, maps and checkpoint facts every regression task shares.

    A subclass builds ``self.objective`` (a :class:`RegressionObjective`), starts ``self.target_units`` as
    ``""`` and implements :meth:`raw`, the model's raw outputs for a batch.
    """

    objective: RegressionObjective
    target_units: str

    def raw(self, batch: SensorStack) -> Tensor:
        """The model's raw outputs for ``batch`` (before the likelihood)."""
        raise NotImplementedError

    # ---- steps ---------------------------------------------------------------------------------------

    def _step(self, batch: SensorStack, batch_idx: int, stage: str) -> Tensor:
        loss = self.objective.step(self.raw(batch), batch, stage, batch_idx)
        self.log(
            f"{stage}/loss", loss, prog_bar=True, batch_size=batch.batch_size, sync_dist=stage != "train"
        )
        return loss

    def training_step(self, batch: SensorStack, batch_idx: int) -> Tensor:
        """Loss over the batch's valid targets."""
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch: SensorStack, batch_idx: int) -> None:
        """Validation loss and metrics; batch 0 and a sample of pixels are kept for the figures."""
        self._step(batch, batch_idx, "val")

    def test_step(self, batch: SensorStack, batch_idx: int) -> None:
        """Test loss and metrics."""
        self._step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics."""
        log_metrics(self, self.objective, "val")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics and print them beside the predict-the-mean baseline."""
        values = log_metrics(self, self.objective, "test")
        if values and self.global_rank == 0:
            print(
                metrics_summary(values, self.hparams["target"], self.target_units, "held-out (test) windows")
            )

    def predict_step(self, batch: SensorStack, batch_idx: int) -> dict[str, Tensor]:
        """Maps of every window for :class:`spectravlm.predict.MapWriter` (see :func:`predict_maps`)."""
        return predict_maps(batch, self, self.hparams["target"])

    def prediction_layers(self) -> list[tuple[str, str, str]]:
        """``(name, units, description)`` of the maps :meth:`predict_step` returns."""
        return prediction_layers(
            self.hparams["target"], self.target_units, self.objective.likelihood.has_uncertainty
        )

    # ---- checkpoints ---------------------------------------------------------------------------------

    def checkpoint_metadata(self) -> dict[str, Any]:
        """The base metadata and the target's name and units."""
        return super().checkpoint_metadata() | {
            "target": {"name": self.hparams["target"], "units": self.target_units}
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The base checks; the target statistics and units the checkpoint was trained with."""
        super().on_load_checkpoint(checkpoint)
        self.target_units = load_target_facts(self, self.objective, checkpoint) or self.target_units


class RegressionTask(RegressionSteps):
    """Fine-tune (or train from scratch) the sensor-native encoder with a Mixer regression head.

    Args:
        bands: per sensor stream, its bands in batch order (from the data).
        window_size: window edge in pixels (from the data); a multiple of ``patch_size``. It fixes the Mixer's
            token count: windows of another size are refused.
        target: the target layer of the stores to learn (``agb``).
        head: ``dense`` (a value per pixel) or ``scalar`` (one value per window: its mean valid target).
        encoder: named encoder size (``test``, ``tiny``, ``small``, ``base``); must match ``init_encoder``.
        patch_size: patch edge in pixels.
        tokenizer: ``wavelength``, ``cube`` or ``band_group``.
        attention: ``joint`` or ``factorised``.
        temporal_depth: with ``factorised``, the blocks over each location.
        drop_path_rate: stochastic depth of the encoder.
        gradient_checkpointing: recompute encoder activations in the backward pass.
        init_encoder: a pretraining checkpoint (``.ckpt``) or exported encoder folder to start from
            (``None``: a new encoder). It must have been trained on the same bands.
        head_dim: width of the Mixer head.
        head_depth: Mixer blocks.
        head_drop_path: stochastic depth of the Mixer blocks.
        pixel_skip: (dense head) fuse the upsampled features with each pixel's own input (its normalised
            time series, per-band mean and spread over its valid dates) in a per-pixel MLP: a skip
            connection at
            input resolution (see :mod:`spectravlm.heads.mixer`).
        pixel_dates: dates per sensor group whose values enter the pixel skip (padded with zeros or cut).
        uncertainty: ``none``, ``gaussian`` (mean and variance, Gaussian NLL) or ``quantile`` (pinball loss).
        quantiles: levels predicted with ``quantile``; they include 0.5 and the bounds of ``interval``.
        interval: level of the predicted central interval whose coverage is reported.
        target_transform: ``none``, ``standardise``, ``log1p`` or ``log1p_standardise``.
        transform_mean: standardisation mean (in log space for ``log1p_standardise``); computed from the
            training split when a fit starts if ``None``.
        transform_std: standardisation standard deviation, likewise.
        train_mean: the training split's mean target in target units (the predict-the-mean baseline);
            computed when a fit starts if ``None``.
        lr: peak learning rate (the head's; the encoder's is ``lr * encoder_lr_mult``).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup: share of the optimiser steps with a linear warm-up.
        min_lr_ratio: final learning rate / ``lr``.
        encoder_lr_mult: encoder learning-rate multiplier.
        layer_decay: layer-wise learning-rate decay of the encoder blocks (``None``: off).
        encoder_trainable: ``all``, ``none`` (frozen) or the number of last encoder blocks to train.
        refit_statistics: set the encoder's normalisation statistics from the stores when the fit starts
            (default: only for a new encoder).
        seed: seed of the per-batch randomness.

    """

    architecture_keys: ClassVar[tuple[str, ...]] = (
        "bands",
        "window_size",
        "target",
        "head",
        "encoder",
        "patch_size",
        "tokenizer",
        "attention",
        "temporal_depth",
        "head_dim",
        "head_depth",
        "pixel_skip",
        "pixel_dates",
        "uncertainty",
        "quantiles",
        "target_transform",
    )

    def __init__(
        self,
        bands: Mapping[str, Sequence[str]] | None = None,
        window_size: int = 64,
        target: str = "agb",
        head: HeadKind = "dense",
        encoder: EncoderSize = "tiny",
        patch_size: int = 16,
        tokenizer: TokenizerKind = "wavelength",
        attention: AttentionPattern = "joint",
        temporal_depth: int = 2,
        drop_path_rate: float = 0.0,
        gradient_checkpointing: bool = False,
        init_encoder: str | None = None,
        head_dim: int = 256,
        head_depth: int = 2,
        head_drop_path: float = 0.0,
        pixel_skip: bool = True,
        pixel_dates: int = 12,
        uncertainty: Uncertainty = "none",
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
        interval: float = 0.9,
        target_transform: TargetTransformKind = "standardise",
        transform_mean: float | None = None,
        transform_std: float | None = None,
        train_mean: float | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup: float = 0.05,
        min_lr_ratio: float = 0.01,
        encoder_lr_mult: float = 1.0,
        layer_decay: float | None = None,
        encoder_trainable: Literal["all", "none"] | int = "all",
        refit_statistics: bool | None = None,
        seed: int = 0,
    ) -> None:
        self.bands = normalise_bands(bands)
        bands = {g: list(b) for g, b in self.bands.items()}  # plain lists in the saved hyperparameters
        betas = (float(betas[0]), float(betas[1]))
        quantiles = [float(q) for q in quantiles]
        if patch_size < 1 or window_size < patch_size or window_size % patch_size:
            raise ModelConfigError(
                f"window_size {window_size} must be a positive multiple of patch_size {patch_size}: the "
                "Mixer "
                "head mixes a fixed grid of whole patches"
            )
        if head not in ("dense", "scalar"):
            raise ModelConfigError(f"head must be 'dense' or 'scalar', got {head!r}")
        if init_encoder is not None:
            theirs = recorded_bands(init_encoder)
            if theirs is not None and theirs != bands:
                raise ModelConfigError(
                    f"init_encoder {init_encoder} was trained on bands {theirs}, but this task's data "
                    "delivers "
                    f"{bands}; fine-tune on the bands it was pretrained on (data.groups)"
                )
        self.window_size = window_size
        self.target_units = ""
        super().__init__()
        # Lightning 2.6 never calls train() during a fit (it captures and restores each module's mode), so a
        # frozen encoder must be put in eval mode here, once, to stay there while the head trains.
        self.train(self.training)

    # ---- model ---------------------------------------------------------------------------------------

    def configure_models(self) -> None:
        """The encoder (new, or ``init_encoder``) and the Mixer head."""
        hp: Any = self.hparams
        self.backbone = task_encoder(
            hp.encoder,
            hp.patch_size,
            hp.tokenizer,
            hp.attention,
            hp.temporal_depth,
            hp.drop_path_rate,
            hp.gradient_checkpointing,
            hp.init_encoder,
        )
        self.encoder_loaded = hp.init_encoder is not None
        self.objective = RegressionObjective(
            hp.target,
            hp.head == "scalar",
            hp.uncertainty,
            tuple(hp.quantiles),
            hp.interval,
            hp.target_transform,
            hp.transform_mean,
            hp.transform_std,
            hp.train_mean,
        )
        grid = (hp.window_size // hp.patch_size,) * 2
        k = self.objective.channels
        self.head: nn.Module
        if hp.head == "dense":
            features = pixel_input_features(self.bands, hp.pixel_dates) if hp.pixel_skip else 0
            self.head = DenseMixerHead(
                self.backbone.dim,
                grid,
                hp.patch_size,
                k,
                hp.head_dim,
                hp.head_depth,
                hp.head_drop_path,
                features,
            )
        else:
            self.head = ScalarMixerHead(
                self.backbone.dim, grid, k, hp.head_dim, hp.head_depth, hp.head_drop_path
            )

    @property
    def encoder(self) -> SpectralEncoder:
        """The encoder being fine-tuned."""
        return self.backbone

    def raw(self, batch: SensorStack) -> Tensor:
        """Head outputs in the transformed target space: ``[B,k,H,W]`` (dense) or ``[B,k]`` (scalar)."""
        locations = self.backbone.forward_features(batch).locations()
        if self.hparams["head"] == "dense" and self.hparams["pixel_skip"]:
            return self.head(
                locations,
                pixel_inputs(batch, self.backbone.statistics, list(self.bands), self.hparams["pixel_dates"]),
            )
        return self.head(locations)

    def forward(self, batch: SensorStack) -> RegressionOutput:
        """Predictions in target units: ``mean`` (and ``std``, ``lower``, ``upper`` with uncertainty)."""
        return self.objective.decode(self.raw(batch))

    # ---- data ----------------------------------------------------------------------------------------

    def check_data(self, dm: CubeDataModule) -> None:
        """The base checks, the target, and windows whose patch grid the Mixer head was built for."""
        super().check_data(dm)
        if self._trainer is None or not self.trainer.predicting:  # predicting needs no target
            check_target(dm, self.hparams["target"])
        crop = dm.augmenter.crop_size if dm.augmenter is not None else None
        if crop is not None and crop != self.hparams["window_size"]:
            w, p = self.hparams["window_size"], self.hparams["patch_size"]
            raise ModelConfigError(
                f"data crop_size {crop} gives a {crop // p}x{crop // p} patch grid, but the Mixer head "
                f"mixes the {w // p}x{w // p} grid of {w} px windows (patch {p}); drop crop_size or set "
                "window_size to it"
            )

    def setup(self, stage: str) -> None:
        """Base checks and statistics; the target statistics from the training split when they are missing."""
        super().setup(stage)
        self.target_units = regression_setup(self, self.objective, stage) or self.target_units

    def export_facts(self) -> dict[str, Any]:
        """Regression facts written beside an exported encoder."""
        return super().export_facts() | {"target": self.hparams["target"], "head": self.hparams["head"]}


def _target_units(dm: CubeDataModule, target: str) -> str:
    """The canonical units of ``target`` over every store that holds it ('' when none does).

    Raises:
        ModelConfigError: a store's target without units or in unknown units, or stores that disagree.

    """
    from spectravlm.data.store import CubeStore

    found: dict[str, str] = {}
    for region in dm.stores:
        for path in [region] if isinstance(region, str) else region:
            arr = CubeStore.open(path, storage_options=dm.storage_options).targets.get(target)
            if arr is not None:
                found[path] = target_units(
                    target, str(arr.attrs.get("units", "")), f"{path}/targets/{target}"
                )
    if len(set(found.values())) > 1:
        raise ModelConfigError(
            f"target {target!r} is in different units in the stores: "
            + ", ".join(f"{p}: {u}" for p, u in found.items())
        )
    return next(iter(found.values()), "")


def metrics_summary(values: Mapping[str, float], target: str, units: str, where: str) -> str:
    """One block of text: RMSE, MAE, R², bias (and coverage) beside the predict-the-mean baseline."""
    u = f" {units}" if units else ""
    lines = [f"{target} on the {where}:"]
    base = "baseline_rmse" in values
    lines.append(
        f"  RMSE {values['rmse']:.2f}{u}"
        + (f"   (predict-the-training-mean: {values['baseline_rmse']:.2f}{u})" if base else "")
    )
    lines.append(
        f"  MAE  {values['mae']:.2f}{u}"
        + (f"   (predict-the-training-mean: {values['baseline_mae']:.2f}{u})" if base else "")
    )
    lines.append(
        f"  R2   {values['r2']:.3f}"
        + (f"   (predict-the-training-mean: {values['baseline_r2']:.3f})" if base else "")
    )
    lines.append(f"  bias {values['bias']:+.2f}{u}")
    if "coverage" in values:
        lines.append(f"  coverage of the predicted interval {values['coverage']:.3f}")
    return "\n".join(lines)


__all__ = [
    "RegressionSteps",
    "RegressionTask",
    "check_target",
    "load_target_facts",
    "log_metrics",
    "metrics_summary",
    "observed_pixels",
    "predict_maps",
    "prediction_layers",
    "regression_setup",
    "select_samples",
    "training_targets",
]
