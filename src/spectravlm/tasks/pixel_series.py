"""Regression from pixel time series and covariates: ``PixelSeriesTask``.

Axis legend: ``B`` batch, ``T`` dates, ``k`` neighbourhood edge, ``L`` Mixer tokens, ``D`` encoder width,
``S`` static covariates, ``T'`` covariate dates, ``K`` per-date covariates.

**PixelSeriesTask**: pixel time series (:class:`~spectravlm.data.points.pixels.PixelSeriesDataModule`) ->
:class:`PixelSeriesModel`: each pixel of each date is tokenized by the encoder's own patch tokenizer as a
homogeneous patch (:class:`~spectravlm.tokenizers.pixel.PixelTokenizer`); the encoder's blocks attend over
the dates and sensors of each pixel (with its date embedding; ``attention: factorised`` runs space per date,
then time per pixel); the per-pixel embedding comes from the encoder's location pooling (``temporal:
encoder``) or from a temporal encoder of :mod:`spectravlm.encoders.temporal` over the per-date tokens of
every sensor group (``ltae``, ``transformer``, through :class:`~spectravlm.encoders.temporal.fusion.
SensorFusion`); static and per-date covariates become tokens of their own
(:class:`~spectravlm.tokenizers.pixel.CovariateTokenizer`, normalised with the training split's statistics,
which are kept in the model's buffers and hyperparameters); the scalar Mixer head mixes pixel and covariate
tokens and regresses the target.

The target is learned standardised (:class:`~spectravlm.tasks.points.TargetScaler`, statistics from the
training split, saved with the model); the loss is the squared error over the labelled samples (optionally
weighted by ``1 / se^2``), and the metrics (:class:`~spectravlm.tasks.points.PointMetrics`) are RMSE, MAE,
bias, R² and the predict-the-training-mean RMSE beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from spectravlm.encoders.embeddings import date_embedding
from spectravlm.encoders.outputs import EncoderOutput, LocationTokens, masked_token_mean
from spectravlm.encoders.spectral import (
    AttentionPattern,
    EncoderSize,
    SpectralEncoder,
    TokenizerKind,
    task_encoder,
)
from spectravlm.encoders.temporal import temporal_encoder
from spectravlm.encoders.temporal.fusion import SensorFusion
from spectravlm.encoders.temporal.types import DatedTokens
from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorStack
from spectravlm.tasks.base import BaseTask
from spectravlm.tasks.points import (
    PointMetrics,
    ScalarMixerHead,
    TargetScaler,
    inverse_variance_weights,
    metrics_summary,
    point_loss,
)
from spectravlm.tokenizers.pixel import CovariateTokenizer, PixelTokenizer

if TYPE_CHECKING:
    from spectravlm.data.points.pixels import PixelBatch, PixelSeriesDataModule

TemporalKind = Literal["encoder", "ltae", "transformer"]


# ---- the pixel-series model ------------------------------------------------------------------------------


class PixelSeriesModel(nn.Module):
    """Pixel time series (and covariates) -> ``[B,k]`` raw head outputs (see the module docstring).

    Args:
        encoder: the sensor-native encoder (its patch tokenizer's kernels tokenize the pixels).
        groups: the sensor groups of the data, in order.
        neighbourhood: ``k``, the pixels per side of a sample.
        static: static covariate names.
        dynamic: per-date covariate names.
        dynamic_steps: covariate dates reserved in the Mixer (the most any sample has).
        outputs: head channels.
        temporal: ``encoder`` (the encoder's location pooling), ``ltae`` or ``transformer``.
        temporal_layers: blocks of the ``transformer`` temporal encoder.
        head_dim: Mixer width.
        head_depth: Mixer blocks.
        head_drop_path: stochastic depth of the Mixer blocks.

    """

    def __init__(
        self,
        encoder: SpectralEncoder,
        groups: Sequence[str],
        neighbourhood: int,
        static: Sequence[str],
        dynamic: Sequence[str],
        dynamic_steps: int,
        outputs: int = 1,
        temporal: TemporalKind = "encoder",
        temporal_layers: int = 2,
        head_dim: int = 128,
        head_depth: int = 2,
        head_drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if temporal not in ("encoder", "ltae", "transformer"):
            raise ModelConfigError(f"temporal must be 'encoder', 'ltae' or 'transformer', got {temporal!r}")
        self.encoder = encoder
        self.pixels = PixelTokenizer(encoder.tokenizer)
        self.covariates = CovariateTokenizer(encoder.dim, static, dynamic)
        self.groups = tuple(groups)
        self.neighbourhood = int(neighbourhood)
        self.dynamic_steps = int(dynamic_steps)
        self.temporal: SensorFusion | None = None
        if temporal != "encoder":
            kind: Any = temporal
            self.temporal = SensorFusion(
                temporal_encoder(
                    kind, dim=encoder.dim, depth=temporal_layers, num_heads=encoder.config.num_heads
                ),
                sensors=self.groups,
            )
        self.n_tokens = self.neighbourhood**2 + len(static) + self.dynamic_steps * len(dynamic)
        self.head = ScalarMixerHead(
            encoder.dim, (1, self.n_tokens), outputs, head_dim, head_depth, head_drop_path
        )

    def encode(self, stack: SensorStack) -> EncoderOutput:
        """The encoder over the pixel tokens of every group and date (no patching)."""
        enc = self.encoder
        tokens = {g: self.pixels(enc.prepare(stack[g], g)) for g in self.groups}
        seq = enc.assemble(tokens, all_valid=False)
        pool = enc.location_pool

        def pool_locations(t: Tensor, times: Tensor, valid: Tensor) -> Tensor:
            assert pool is not None
            return pool(t, times, valid).locations

        return EncoderOutput(
            enc.encode(seq),
            seq.valid,
            seq.coords,
            seq.spans,
            seq.grids,
            patch_size=1,
            location_pool=pool_locations if pool is not None else None,
        )

    def pixel_tokens(self, stack: SensorStack) -> tuple[Tensor, Tensor]:
        """One embedding per pixel of the neighbourhood: ``[B,k*k,D]`` and its validity ``[B,k*k]``."""
        out = self.encode(stack)
        if self.temporal is None:
            loc = out.locations()
            return loc.tokens, loc.valid
        inputs = {}
        for g in self.groups:
            tokens, mask = out.per_date(g)  # (B, T, G*h*w, D)
            grid = out.grids[g]
            tokens = rearrange(tokens, "b t (g n) d -> b t n g d", g=grid.groups)
            mask = rearrange(mask, "b t (g n) -> b t n g", g=grid.groups)
            inputs[g] = DatedTokens(
                masked_token_mean(tokens, mask), stack[g].times, mask.any(-1), (grid.rows, grid.cols)
            )
        temporal = self.temporal(inputs)
        return temporal.locations, temporal.location_valid

    def forward(self, batch: PixelBatch) -> Tensor:
        """``[B,k]`` raw head outputs (in the transformed target space)."""
        pix, pix_ok = self.pixel_tokens(batch.stack)
        if pix.shape[1] != self.neighbourhood**2:
            raise ModelConfigError(
                f"the model was built for {self.neighbourhood}x{self.neighbourhood} px samples, the batch "
                f"has "
                f"{pix.shape[1]} pixels per sample"
            )
        s_tok, s_ok, d_tok, d_ok = self.covariates(batch.static.to(pix.dtype), batch.dynamic.to(pix.dtype))
        parts, valid = [pix, s_tok], [pix_ok, s_ok]
        if self.covariates.dynamic_names:
            steps = d_tok.shape[1]
            if steps > self.dynamic_steps:
                raise ModelConfigError(
                    f"a sample has {steps} covariate dates; the model reserves {self.dynamic_steps}"
                )
            present = d_ok.any(-1)
            dates = date_embedding(batch.dynamic_times, present, pix.shape[-1]).to(pix.dtype)  # (B, T', D)
            d_tok = (d_tok + dates.unsqueeze(2)) * d_ok.unsqueeze(-1)
            pad = self.dynamic_steps - steps
            d_tok = torch.nn.functional.pad(d_tok, (0, 0, 0, 0, 0, pad))
            d_ok = torch.nn.functional.pad(d_ok, (0, 0, 0, pad))
            parts.append(rearrange(d_tok, "b t k d -> b (t k) d"))
            valid.append(rearrange(d_ok, "b t k -> b (t k)"))
        tokens = torch.cat(parts, dim=1)
        return self.head(LocationTokens(tokens, torch.cat(valid, dim=1), (1, self.n_tokens), 1))


# ---- the pixel-series task --------------------------------------------------------------------------------


DATA_FACTS = ("bands", "neighbourhood", "static", "dynamic", "dynamic_steps", "target", "target_units")
"""Hyperparameters read from the data module when a fit starts (when not given), saved with the model."""


class PixelSeriesTask(BaseTask):
    """Regression of a target from pixel time series and covariates (see the module docstring).

    The data facts (``bands``, ``neighbourhood``, ``static``, ``dynamic``, ``dynamic_steps``, ``target``,
    ``target_units``) are taken from the :class:`~spectravlm.data.points.pixels.PixelSeriesDataModule` when a
    fit starts and saved as hyperparameters; given ones must match the data.

    Args:
        bands: per sensor group, its bands (default: from the data).
        neighbourhood: pixels per side of a sample (default: from the data).
        static: static covariates (default: from the data).
        dynamic: per-date covariates (default: from the data).
        dynamic_steps: covariate dates reserved in the Mixer (default: from the data).
        target: the target's name (default: from the data).
        target_units: its unit (default: from the data).
        encoder: named encoder size (``test``, ``tiny``, ``small``, ``base``); must match ``init_encoder``.
        patch_size: the encoder's patch size (its kernels are summed into pixel kernels).
        tokenizer: ``wavelength``, ``cube`` or ``band_group``.
        attention: ``joint`` or ``factorised``.
        temporal_depth: with ``factorised``, the encoder's blocks over each pixel's dates.
        drop_path_rate: stochastic depth of the encoder.
        gradient_checkpointing: recompute encoder activations in the backward pass.
        init_encoder: a pretrained encoder (checkpoint or exported folder) to start from.
        temporal: ``encoder``, ``ltae`` or ``transformer`` (see the module docstring).
        temporal_layers: blocks of the ``transformer`` temporal encoder.
        head_dim: Mixer width.
        head_depth: Mixer blocks.
        head_drop_path: stochastic depth of the Mixer.
        target_mean: standardisation mean (default: from the training split).
        target_std: standardisation standard deviation (default: from the training split).
        train_mean: the training split's mean target (predict-the-mean baseline; default: ``target_mean``).
        covariate_statistics: ``{"static": {name: [mean, std]}, "dynamic": {...}}`` (default: from the
            training split).
        inverse_variance: weight each sample's loss by ``1 / se^2`` where the store has a standard error.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup: share of steps with a linear warm-up.
        min_lr_ratio: final learning rate / ``lr``.
        encoder_lr_mult: encoder learning-rate multiplier.
        layer_decay: layer-wise learning-rate decay of the encoder (``None``: off).
        encoder_trainable: ``all``, ``none`` or the number of last encoder blocks to train.
        refit_statistics: set the encoder's band statistics from the training split (default: new encoders).
        seed: seed of the per-batch randomness.

    """

    architecture_keys: ClassVar[tuple[str, ...]] = (
        "bands",
        "neighbourhood",
        "static",
        "dynamic",
        "dynamic_steps",
        "encoder",
        "patch_size",
        "tokenizer",
        "attention",
        "temporal_depth",
        "temporal",
        "temporal_layers",
        "head_dim",
        "head_depth",
    )

    def __init__(
        self,
        bands: Mapping[str, Sequence[str]] | None = None,
        neighbourhood: int | None = None,
        static: Sequence[str] | None = None,
        dynamic: Sequence[str] | None = None,
        dynamic_steps: int | None = None,
        target: str | None = None,
        target_units: str | None = None,
        encoder: EncoderSize = "tiny",
        patch_size: int = 16,
        tokenizer: TokenizerKind = "wavelength",
        attention: AttentionPattern = "joint",
        temporal_depth: int = 2,
        drop_path_rate: float = 0.0,
        gradient_checkpointing: bool = False,
        init_encoder: str | None = None,
        temporal: TemporalKind = "encoder",
        temporal_layers: int = 2,
        head_dim: int = 128,
        head_depth: int = 2,
        head_drop_path: float = 0.0,
        target_mean: float | None = None,
        target_std: float | None = None,
        train_mean: float | None = None,
        covariate_statistics: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        inverse_variance: bool = False,
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
        bands = None if bands is None else {str(g): [str(b) for b in v] for g, v in bands.items()}
        static = None if static is None else [str(s) for s in static]
        dynamic = None if dynamic is None else [str(s) for s in dynamic]
        betas = (float(betas[0]), float(betas[1]))
        if temporal not in ("encoder", "ltae", "transformer"):
            raise ModelConfigError(f"temporal must be 'encoder', 'ltae' or 'transformer', got {temporal!r}")
        self.model: PixelSeriesModel | None = None
        super().__init__()

    # ---- model ---------------------------------------------------------------------------------------

    def configure_models(self) -> None:
        """The encoder, the target scaler and metrics; the model too when the data facts are known."""
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
        self.scaler = TargetScaler(hp.target_mean, hp.target_std)
        base = hp.train_mean if hp.train_mean is not None else hp.target_mean
        self.val_metrics = PointMetrics(0.0 if base is None else base)
        self.test_metrics = PointMetrics(0.0 if base is None else base)
        if all(hp.get(k) is not None for k in DATA_FACTS[:5]):
            self._build()

    def _build(self) -> None:
        hp: Any = self.hparams
        self.model = PixelSeriesModel(
            self.backbone,
            list(hp.bands),
            hp.neighbourhood,
            hp.static,
            hp.dynamic,
            hp.dynamic_steps,
            1,
            hp.temporal,
            hp.temporal_layers,
            hp.head_dim,
            hp.head_depth,
            hp.head_drop_path,
        )
        stats = hp.get("covariate_statistics")
        if stats is not None:
            self.model.covariates.set_statistics(
                {k: (float(v[0]), float(v[1])) for k, v in stats.get("static", {}).items()},
                {k: (float(v[0]), float(v[1])) for k, v in stats.get("dynamic", {}).items()},
            )

    @property
    def encoder(self) -> SpectralEncoder:
        """The encoder being fine-tuned."""
        return self.backbone

    def forward(self, batch: PixelBatch) -> Tensor:
        """``[B]`` predictions in target units."""
        if self.model is None:
            raise ModelConfigError(
                "the model is not built yet: its data facts (bands, neighbourhood, covariates) come from the "
                "data module when a fit starts, or give them as arguments"
            )
        return self.scaler.inverse(self.model(batch)[:, 0].float())

    # ---- data ------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Data facts, the model, and (fitting) the encoder, covariate and target statistics from the data."""
        from spectravlm.data.points.pixels import PixelSeriesDataModule

        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if not isinstance(dm, PixelSeriesDataModule):
            raise ModelConfigError(
                f"PixelSeriesTask reads pixel time series: use spectravlm.data.points.PixelSeriesDataModule, "
                f"not {type(dm).__name__}"
            )
        dm.setup(stage)
        self.adopt_data_facts(dm)
        if stage != "fit":
            return
        refit = self._opt["refit_statistics"]
        if refit or (refit is None and not self.encoder_loaded):
            from spectravlm.encoders.statistics import store_statistics

            for sensor, (stats, source) in store_statistics(dm.sensor_statistics()).items():
                usable = {b: ms for b, ms in stats.items() if ms[1] > 0}
                if usable and sensor in self.backbone.config.sensors:
                    self.backbone.set_statistics(sensor, usable, source)
        assert self.model is not None
        if self.hparams.get("covariate_statistics") is None:
            cov = dm.covariate_statistics()
            self.model.covariates.set_statistics(cov["static"], cov["dynamic"])
            self.hparams["covariate_statistics"] = {
                k: {n: list(v) for n, v in d.items()} for k, d in cov.items()
            }
        if not self.scaler.fitted:
            assert dm.series is not None and dm.series.target is not None
            mean, std = self.scaler.fit(dm.series.target[dm.splits["train"]])
            self.hparams["target_mean"], self.hparams["target_std"] = mean, std
            self.hparams["train_mean"] = mean
            self.val_metrics.train_mean = self.test_metrics.train_mean = mean

    def adopt_data_facts(self, dm: PixelSeriesDataModule) -> None:
        """Fill the data facts from ``dm`` (build the model); refuse given facts the data contradicts."""
        name, units = dm.target_facts
        facts: dict[str, Any] = {
            "bands": dm.bands,
            "neighbourhood": dm.neighbourhood,
            "static": list(dm.static or []),
            "dynamic": list(dm.dynamic or []),
            "dynamic_steps": dm.dynamic_steps,
            "target": name,
            "target_units": units,
        }
        diffs = []
        for key, value in facts.items():
            mine = self.hparams.get(key)
            if mine is None:
                self.hparams[key] = value
            elif key == "dynamic_steps":
                if value > mine:
                    diffs.append(
                        f"dynamic_steps: the data has samples with {value} covariate dates, the model {mine}"
                    )
            elif _plain(mine) != _plain(value):
                diffs.append(f"{key}: data {value!r}, model {mine!r}")
        if diffs:
            raise ModelConfigError("the pixel-series data does not fit the model: " + "; ".join(diffs))
        if self.model is None:
            self._build()
            assert self.model is not None
            self.model.to(self.device)

    # ---- steps ------------------------------------------------------------------------------------------

    def _step(self, batch: PixelBatch, stage: str) -> Tensor:
        assert self.model is not None
        raw = self.model(batch)
        y = batch.target.float()
        mask = torch.isfinite(y)
        weight = None
        if self.hparams["inverse_variance"]:
            weight = inverse_variance_weights(batch.target_se.float(), mask)
        z = raw[:, 0]
        loss = point_loss(z, self.scaler(y), mask, weight)
        if stage in ("val", "test"):
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            metrics.update(self.scaler.inverse(z.detach().float()), y, mask)
        n = int(mask.sum())
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=max(n, 1), sync_dist=stage != "train")
        return loss

    def training_step(self, batch: PixelBatch, batch_idx: int) -> Tensor:
        """Loss over the batch's labelled samples."""
        return self._step(batch, "train")

    def validation_step(self, batch: PixelBatch, batch_idx: int) -> None:
        """Validation loss and metrics."""
        self._step(batch, "val")

    def test_step(self, batch: PixelBatch, batch_idx: int) -> None:
        """Test loss and metrics."""
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics (``val/rmse``, ``val/baseline_rmse``, ...)."""
        for k, v in self.val_metrics.compute().items():
            self.log(f"val/{k}", v.float())
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        """Log the test metrics and print them beside the predict-the-mean baseline."""
        values = self.test_metrics.compute()
        for k, v in values.items():
            self.log(f"test/{k}", v.float())
        self.test_metrics.reset()
        if float(values["n"]) > 0 and self.global_rank == 0:
            units = self.hparams.get("target_units") or ""
            print(
                metrics_summary(
                    values, self.hparams.get("target") or "target", units, "held-out (test) samples"
                )
            )

    def predict_step(self, batch: PixelBatch, batch_idx: int) -> dict[str, Tensor]:
        """Predictions of every sample with its index in the store."""
        return {"index": batch.index, "prediction": self(batch)}

    def checkpoint_metadata(self) -> dict[str, Any]:
        """The base metadata, the target's name and units and the covariate statistics in use."""
        meta = super().checkpoint_metadata()
        meta["target"] = {"name": self.hparams.get("target"), "units": self.hparams.get("target_units")}
        if self.model is not None:
            meta["covariates"] = self.model.covariates.statistics()
        return meta


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


__all__ = [
    "PixelSeriesModel",
    "PixelSeriesTask",
]
