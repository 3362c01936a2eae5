"""``PretrainTask``: masked multi-sensor pretraining of the sensor-native encoder, as a LightningModule.

The model is :class:`~spectravlm.pretraining.mae.MaskedAutoencoder` (MAE over spatial, spectral and
temporal tokens, optional S1<->S2 contrastive loss) around a :class:`~spectravlm.encoders.spectral.
SpectralEncoder` with either attention pattern (``attention: joint`` or ``factorised``); this class adds
the training loop pieces of :class:`~spectravlm.tasks.base.BaseTask`, logging and the encoder export.

From the command line (``bands`` and ``window_size`` come from the data section)::

    spectravlm data demo data/demo.zarr --overwrite
    spectravlm fit --config configs/pretrain_demo.yaml

From Python::

    dm = CubeDataModule(stores=["data/demo.zarr"], groups=["s2", "s1"], window_size=64)
    task = PretrainTask(bands=store_bands(dm.stores, dm.groups), window_size=64, encoder="tiny")
    L.Trainer(max_epochs=5, plugins=[AtomicCheckpointIO()]).fit(task, datamodule=dm)
    task.export_encoder("encoder/")  # load_encoder("encoder/") for fine-tuning

Normalisation: the encoder normalises the stores' physical values itself with its own statistics, which a
pretraining fit takes from the stores (``spectravlm data stats``) when it starts, and which travel with the
exported encoder and every checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from spectravlm.encoders.spectral import (
    AttentionPattern,
    EncoderSize,
    SpectralEncoder,
    TokenizerKind,
    task_encoder,
)
from spectravlm.errors import ModelConfigError
from spectravlm.heads.contrastive import padded_all_gather
from spectravlm.pretraining.mae import MAEOutput, build_mae
from spectravlm.pretraining.masking import MaskStrategy, check_mask
from spectravlm.stack import SensorStack, clone_stack
from spectravlm.tasks.base import BaseTask, normalise_bands

if TYPE_CHECKING:
    from spectravlm.data.datamodule import CubeDataModule


class PretrainTask(BaseTask):
    """Masked-autoencoder pretraining of a :class:`SpectralEncoder` on S1/S2 cube stores.

    Args:
        bands: per sensor stream (data module group), its bands in batch order (from the data).
        window_size: window edge in pixels the data module reads (from the data); must be a multiple of
            ``patch_size``.
        encoder: named encoder size: ``test`` (unit tests), ``tiny``, ``small``, ``base``.
        patch_size: patch edge in pixels, shared by the encoder's tokenizer and the decoder.
        tokenizer: ``wavelength`` (DOFA-style, one token per patch), ``cube`` or ``band_group``.
        attention: ``joint`` space-time attention, or ``factorised`` (space per date, then each location).
        temporal_depth: with ``factorised``, the blocks of the per-location stage (out of the size's depth).
        drop_path_rate: stochastic depth of the encoder.
        gradient_checkpointing: recompute encoder activations in the backward pass (less memory).
        init_encoder: a pretrained encoder (folder or task checkpoint) to continue from; its architecture
            must match the settings above.
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
        weight_decay: AdamW weight decay (not on biases, norms, embeddings, learned tokens).
        betas: AdamW betas.
        warmup: share of the optimiser steps with a linear warm-up.
        min_lr_ratio: final learning rate / ``lr``.
        refit_statistics: set the encoder's normalisation statistics from the stores when the fit starts
            (default: only for a new encoder, not for ``init_encoder``).
        seed: seed of the per-batch randomness (masks, augmentation, drop-path).

    """

    architecture_keys: ClassVar[tuple[str, ...]] = (
        "bands",
        "encoder",
        "patch_size",
        "tokenizer",
        "attention",
        "temporal_depth",
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
        attention: AttentionPattern = "joint",
        temporal_depth: int = 2,
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
        refit_statistics: bool | None = None,
        seed: int = 0,
    ) -> None:
        self.bands = normalise_bands(bands)
        bands = {g: list(b) for g, b in self.bands.items()}  # plain lists in the saved hyperparameters
        betas = (float(betas[0]), float(betas[1]))
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
        self.val_example: tuple[SensorStack, MAEOutput] | None = None
        super().__init__()

    def configure_models(self) -> None:
        """The encoder (new, or ``init_encoder``) and the MAE decoder around it."""
        hp: Any = self.hparams
        encoder = task_encoder(
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
        self.model = build_mae(
            encoder,
            self.bands,
            hp.decoder_dim,
            hp.decoder_depth,
            hp.decoder_heads,
            hp.mask_ratio,
            hp.mask_strategy,
            hp.contrastive_weight,
            hp.contrastive_dim,
            hp.temperature,
        )

    @property
    def encoder(self) -> SpectralEncoder:
        """The encoder being pretrained."""
        return self.model.encoder

    def check_data(self, dm: CubeDataModule) -> None:
        """The base checks, and streams of both kinds for the contrastive loss."""
        super().check_data(dm)
        groups = next(iter(dm.datasets.values())).groups
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

            def all_gather(t: Tensor) -> Tensor:
                gathered = self.all_gather(t, sync_grads=True)  # (R, B, ...)
                assert isinstance(gathered, Tensor)
                return gathered

            def gather(t: Tensor) -> tuple[Tensor, int]:  # ranks may hold batches of different sizes
                return padded_all_gather(all_gather, t)

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
            self.val_example = (clone_stack(batch), out)  # the loader reuses the batch's memory later

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

    def export_facts(self) -> dict[str, Any]:
        """Pretraining facts written beside the exported encoder (bands, window, masking)."""
        facts = super().export_facts()
        facts |= {k: self.hparams[k] for k in ("mask_ratio", "mask_strategy", "contrastive_weight")}
        return facts
