"""``PretrainTask``: masked multi-sensor pretraining of the sensor-native encoder, as a LightningModule.

The model is :class:`~spectravlm.pretraining.mae.MaskedAutoencoder` (MAE over spatial, spectral and
temporal tokens, optional S1<->S2 contrastive loss), built by
:func:`~spectravlm.encoders.spectral.build_encoder` and :func:`~spectravlm.pretraining.mae.build_mae` from
the hyperparameters below; this class adds the training loop pieces
(:class:`~spectravlm.tasks.base.BaseTask`),
logging, checkpoint metadata and the encoder export.

From the command line (``bands`` and ``window_size`` are linked from the data section)::

    spectravlm data demo data/demo.zarr --overwrite
    spectravlm fit --config configs/pretrain_demo.yaml

From Python::

    dm = CubeDataModule(stores=["data/demo.zarr"], groups=["s2", "s1"], window_size=64, normalize=False)
    task = PretrainTask(bands=store_bands(dm.stores, dm.groups), window_size=64, encoder="tiny")
    L.Trainer(max_epochs=5, plugins=[AtomicCheckpointIO()]).fit(task, datamodule=dm)
    task.export_encoder("encoder/")  # SpectralEncoder.from_pretrained("encoder/") for fine-tuning

Data normalisation: the encoder normalises raw store values itself (catalogue statistics for optical
bands, the SAR front-end in dB), so the normalisation travels with the exported encoder. Run the data
module with ``normalize=False``; normalised optical input is accepted too, normalised SAR input only with
an encoder built without the SAR ratio channel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from spectravlm.encoders.pretrained import sensor_metadata
from spectravlm.encoders.spectral import EncoderSize, SpectralEncoder, TokenizerKind, build_encoder
from spectravlm.errors import ModelConfigError
from spectravlm.pretraining.mae import MAEOutput, build_mae
from spectravlm.pretraining.masking import MaskStrategy, check_mask
from spectravlm.stack import SensorStack
from spectravlm.tasks.base import BaseTask, normalise_bands

_ENCODER_FIELDS = ("dim", "depth", "num_heads", "patch_size", "tokenizer", "sensors")


class PretrainTask(BaseTask):
    """Masked-autoencoder pretraining of a :class:`SpectralEncoder` on S1/S2 cube stores.

    Args:
        bands: per sensor stream (data module group), its bands in batch order (linked from the data).
        window_size: window edge in pixels the data module reads (linked from the data); must be a
            multiple of ``patch_size``.
        encoder: named encoder size: ``test`` (unit tests), ``tiny``, ``small``, ``base``.
        patch_size: patch edge in pixels, shared by the encoder's tokenizer and the decoder.
        tokenizer: ``wavelength`` (DOFA-style, one token per patch), ``cube`` or ``band_group``.
        drop_path_rate: stochastic depth of the encoder.
        gradient_checkpointing: recompute encoder activations in the backward pass (less memory).
        init_encoder: a :meth:`SpectralEncoder.save_pretrained` directory to start from (same size,
            patch size and tokenizer).
        decoder_dim: decoder width.
        decoder_depth: decoder blocks.
        decoder_heads: decoder attention heads.
        mask_ratio: share of valid tokens hidden from the encoder, in ``[0, 1)``.
        mask_strategy: ``random``, ``bands``, ``dates`` or ``sensor`` (see
            :mod:`spectravlm.pretraining.masking`).
        contrastive_weight: weight of the S1<->S2 InfoNCE loss (0: off).
        contrastive_dim: projection width of the contrastive head.
        temperature: InfoNCE temperature.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup: share of the optimiser steps with a linear warm-up.
        min_lr_ratio: final learning rate / ``lr``.
        seed: seed of the per-batch randomness (masks, augmentation, drop-path).

    """

    architecture_keys: ClassVar[tuple[str, ...]] = (
        "bands",
        "encoder",
        "patch_size",
        "tokenizer",
        "decoder_dim",
        "decoder_depth",
        "decoder_heads",
        "contrastive_dim",
    )

    def __init__(
        self,
        bands: Mapping[str, Sequence[str]] | None = None,
        window_size: int = 128,
        encoder: EncoderSize = "small",
        patch_size: int = 16,
        tokenizer: TokenizerKind = "wavelength",
        drop_path_rate: float = 0.0,
        gradient_checkpointing: bool = False,
        init_encoder: str | None = None,
        decoder_dim: int = 256,
        decoder_depth: int = 2,
        decoder_heads: int = 8,
        mask_ratio: float = 0.75,
        mask_strategy: MaskStrategy = "random",
        contrastive_weight: float = 0.0,
        contrastive_dim: int = 128,
        temperature: float = 0.1,
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup: float = 0.05,
        min_lr_ratio: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup, min_lr_ratio, seed)
        self.bands = normalise_bands(bands)
        bands = {g: list(b) for g, b in self.bands.items()}  # plain lists in the saved hyperparameters
        betas = (float(betas[0]), float(betas[1]))
        self.save_hyperparameters()
        check_mask(mask_ratio, mask_strategy)
        if patch_size < 1 or window_size < patch_size or window_size % patch_size:
            raise ModelConfigError(
                f"window_size {window_size} must be a positive multiple of patch_size {patch_size} "
                "(windows are cut into whole patches)"
            )
        if contrastive_weight < 0:
            raise ModelConfigError(f"contrastive_weight must be >= 0, got {contrastive_weight}")
        if mask_strategy == "sensor" and len(self.bands) < 2:
            raise ModelConfigError(
                "mask_strategy='sensor' hides a whole sensor and needs two or more streams; "
                f"got {list(self.bands)}"
            )
        if mask_strategy == "bands" and tokenizer == "wavelength":
            few = [g for g, b in self.bands.items() if len(b) < 2]
            if few:
                raise ModelConfigError(
                    f"mask_strategy='bands' hides whole bands and needs >= 2 bands per stream; {few} have one"
                )
        if contrastive_weight > 0 and mask_strategy == "sensor":
            raise ModelConfigError(
                "the contrastive loss compares the S1 and S2 embeddings of a window, but "
                "mask_strategy='sensor' hides one of them in every sample; use another strategy or "
                "contrastive_weight: 0"
            )
        self.window_size = window_size
        self.model = build_mae(
            self._encoder(
                encoder, patch_size, tokenizer, drop_path_rate, gradient_checkpointing, init_encoder
            ),
            self.bands,
            decoder_dim,
            decoder_depth,
            decoder_heads,
            mask_ratio,
            mask_strategy,
            contrastive_weight,
            contrastive_dim,
            temperature,
        )
        self.val_example: tuple[SensorStack, MAEOutput] | None = None

    @staticmethod
    def _encoder(
        size: EncoderSize,
        patch_size: int,
        tokenizer: TokenizerKind,
        drop_path_rate: float,
        gradient_checkpointing: bool,
        init_encoder: str | None,
    ) -> SpectralEncoder:
        encoder = build_encoder(size, patch_size, tokenizer, drop_path_rate, gradient_checkpointing)
        if init_encoder is None:
            return encoder
        loaded = SpectralEncoder.load_config(init_encoder)
        diffs = [
            f"{k}: {getattr(loaded, k)!r} in {init_encoder}, {getattr(encoder.config, k)!r} here"
            for k in _ENCODER_FIELDS
            if getattr(loaded, k) != getattr(encoder.config, k)
        ]
        if diffs:
            raise ModelConfigError(
                f"init_encoder {init_encoder} does not fit encoder={size!r}, patch_size={patch_size}, "
                f"tokenizer={tokenizer!r}: " + "; ".join(diffs)
            )
        pretrained = SpectralEncoder.from_pretrained(init_encoder)
        pretrained.config.gradient_checkpointing = gradient_checkpointing
        return pretrained

    @property
    def encoder(self) -> SpectralEncoder:
        """The encoder being pretrained."""
        return self.model.encoder

    # ---- checks before training --------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Check the data module against the model before any step (bands, crop size, SAR units)."""
        from spectravlm.data.datamodule import CubeDataModule

        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not isinstance(dm, CubeDataModule) or not dm.datasets:
            return
        groups = next(iter(dm.datasets.values())).groups
        have = {g: info.bands for g, info in groups.items()}
        if have != self.bands:
            raise ModelConfigError(
                f"the data delivers streams/bands {have}, but the model was built for {self.bands}"
            )
        if dm.window_size != self.window_size:
            raise ModelConfigError(
                f"data window_size {dm.window_size} differs from the model's {self.window_size}"
            )
        crop = dm.augmenter.crop_size if dm.augmenter is not None else None
        if crop is not None and crop % self.encoder.config.patch_size:
            raise ModelConfigError(
                f"data crop_size {crop} is not a multiple of patch_size {self.encoder.config.patch_size}"
            )
        sar = [g for g, info in groups.items() if info.kind == "sar"]
        if dm.normalize and sar and (self.encoder.config.sar_ratio or self.encoder.config.speckle_filter):
            raise ModelConfigError(
                f"the data module normalises SAR streams {sar}, but the encoder's SAR front-end needs dB or "
                "linear values (it adds the VV/VH ratio and normalises itself); set data normalize: false"
            )
        kinds = {info.kind for info in groups.values()}
        if self.model.projection is not None and kinds != {"optical", "sar"}:
            raise ModelConfigError(
                "the contrastive loss pairs optical and SAR streams; the data has "
                f"{sorted(kinds)} streams only"
            )

    # ---- steps -------------------------------------------------------------------------------------

    def forward(self, batch: SensorStack) -> Tensor:
        """Pooled encoder features ``[B,D]`` of every token (no masking)."""
        return self.encoder(batch)

    def _step(self, batch: SensorStack, batch_idx: int, stage: str) -> MAEOutput:
        gather = None
        if stage == "train" and self.trainer.world_size > 1:

            def gather(t: Tensor) -> Tensor:
                gathered = self.all_gather(t, sync_grads=True)  # (R, B, ...)
                assert isinstance(gathered, Tensor)
                return gathered.flatten(0, 1)

        out = self.model(batch, self.mask_generator(stage, batch_idx), gather, self.global_rank)
        n = batch.batch_size
        sync = stage != "train"
        self.log(f"{stage}/loss", out.loss, prog_bar=True, batch_size=n, sync_dist=sync)
        self.log(f"{stage}/reconstruction_loss", out.reconstruction_loss, batch_size=n, sync_dist=sync)
        self.log(f"{stage}/baseline_loss", out.baseline_loss, batch_size=n, sync_dist=sync)
        if out.contrastive_loss is not None:
            self.log(f"{stage}/contrastive_loss", out.contrastive_loss, batch_size=n, sync_dist=sync)
        self.log(f"{stage}/visible_share", out.visible_tokens / max(1, out.total_tokens), batch_size=n)
        return out

    def training_step(self, batch: SensorStack, batch_idx: int) -> Tensor:
        """Masked reconstruction (+ contrastive) loss of one batch."""
        return self._step(batch, batch_idx, "train").loss

    def validation_step(self, batch: SensorStack, batch_idx: int) -> None:
        """Compute the validation loss (masks depend on the batch index only); keep batch 0 for figures."""
        out = self._step(batch, batch_idx, "val")
        if batch_idx == 0:
            self.val_example = (batch, out)

    def test_step(self, batch: SensorStack, batch_idx: int) -> None:
        """Test loss (as validation)."""
        self._step(batch, batch_idx, "test")

    def predict_step(self, batch: SensorStack, batch_idx: int) -> dict[str, Tensor]:
        """Pooled encoder features of every window, with its index and origin in the store."""
        out: dict[str, Tensor] = {"features": self(batch)}
        if batch.index is not None:
            out["index"] = batch.index
        if batch.origin is not None:
            out["origin"] = batch.origin
        return out

    # ---- checkpoints and export --------------------------------------------------------------------

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Return the encoder's class, config and sensor facts, the streams' bands and the window size."""
        meta = super().checkpoint_metadata()
        enc = self.encoder
        meta["encoder"] = {
            "model_type": type(enc).__name__,
            "config": asdict(enc.config),
            "sensors": sensor_metadata(tuple(enc.config.sensors)),
        }
        meta["bands"] = {g: list(b) for g, b in self.bands.items()}
        meta["window_size"] = self.window_size
        return meta

    def export_encoder(self, path: str | Path) -> Path:
        """Write the encoder with :meth:`SpectralEncoder.save_pretrained`, plus ``pretraining.json``.

        ``pretraining.json`` records the bands, window size and masking the encoder was pretrained with.
        Load it for fine-tuning with ``SpectralEncoder.from_pretrained(path)``.
        """
        path = self.encoder.save_pretrained(path)
        facts = {
            k: self.hparams[k] for k in ("window_size", "mask_ratio", "mask_strategy", "contrastive_weight")
        }
        facts["bands"] = {g: list(b) for g, b in self.bands.items()}
        facts["global_step"] = int(self.global_step) if self._trainer is not None else None
        (path / "pretraining.json").write_text(json.dumps(facts, indent=2))
        return path
