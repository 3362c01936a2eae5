"""Training on sparse point targets: ``PointsTask`` (a dense per-pixel map learned from points).

Axis legend: ``B`` windows, ``H``/``W`` pixels, ``L = h*w`` patch locations, ``D`` encoder width, ``E`` head
width, ``p`` patch size, ``F`` per-pixel skip features, ``k`` output channels.

The model is the sensor-native encoder and a dense MLP-Mixer head (:class:`DenseMixerHead`) that turns the
encoder's per-location tokens into one value per pixel. The target is a sparse layer written by
:func:`~spectravlm.data.points.attach.attach_points` (NaN except where a point fell) and read by
:class:`~spectravlm.data.points.windows.PointsDataModule`:

* **Loss only at the points**: the squared error in the standardised target space (mean and standard
  deviation of the *training* points, saved with the model) over the pixels that hold a point; padding,
  nodata and pixels without a point count for nothing, and a batch without any point gives exactly 0.
* **Inverse-variance weights** (``inverse_variance=True``, the default): each point weighs ``1 / se^2``
  (its ``<name>_se`` layer), normalised to a mean of 1 over the batch's points
  (:func:`inverse_variance_weights`); points without a standard error take the mean weight of those with one.
* **Metrics at held-out points**: RMSE, MAE, bias, R² and the RMSE of predicting the training mean, over the
  validation (and test) points only (:class:`PointMetrics`), whose windows come from other spatial blocks than
  the training windows (the data module's split), so no point's pixel is in two splits.

:class:`DenseMixerHead` and :class:`ScalarMixerHead` are the heads of this module and of
:mod:`spectravlm.tasks.pixel_series`: timm's :class:`~timm.models.mlp_mixer.MixerBlock` over the location
tokens, then (dense) a learned pixel shuffle ``Linear(E, p*p*c)`` to input resolution, fused with each
pixel's own input summaries by a per-pixel MLP (the *pixel skip*: per band, the mean and spread of the
normalised values over the valid dates, and the share of valid dates), or (scalar) a mean over the valid
locations and ``Linear(E, k)``. They follow the Mixer heads of the regression task (issue 12) and will give
way to them when that lands.

The wall-to-wall map is written by :func:`spectravlm.tasks.points_map.predict_map`
(``spectravlm data points map``).

Reference: Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision", https://arxiv.org/abs/2105.01601
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from einops import rearrange
from timm.layers import Mlp
from timm.models.mlp_mixer import MixerBlock
from torch import Tensor, nn
from torchmetrics import Metric

from spectravlm.encoders.outputs import LocationTokens, masked_token_mean
from spectravlm.encoders.spectral import (
    AttentionPattern,
    EncoderSize,
    SpectralEncoder,
    TokenizerKind,
    task_encoder,
)
from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorStack
from spectravlm.tasks.base import BaseTask, normalise_bands

if TYPE_CHECKING:
    from spectravlm.data.points.windows import PointsDataModule


# ---- losses at points ----------------------------------------------------------------------------------


def inverse_variance_weights(se: Tensor, mask: Tensor) -> Tensor:
    """Loss weights ``1 / se^2`` of the points in ``mask``, normalised to a mean of 1 over them (0 elsewhere).

    The target transform is linear (standardisation), so relative inverse-variance weights are the same in
    target units and in the transformed space. Points without a usable standard error (NaN or <= 0) take the
    mean weight of those with one; when none has one every point weighs 1.

    Args:
        se: ``[...]`` standard errors in target units.
        mask: ``[...]`` bool, the points that count.

    """
    known = mask & torch.isfinite(se) & (se > 0)
    raw = torch.where(known, 1.0 / torch.where(known, se, torch.ones_like(se)).clamp_min(1e-6) ** 2, 0.0)
    n_known = known.sum()
    fill = raw.sum() / n_known.clamp_min(1) if bool(n_known > 0) else torch.ones((), device=se.device)
    w = torch.where(known, raw, fill.expand_as(raw)) * mask
    return w / (w.sum() / mask.sum().clamp_min(1)).clamp_min(1e-12)


def point_loss(pred: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
    """Weighted mean squared error over the positions in ``mask`` (exactly 0 when there is none).

    Args:
        pred: ``[...]`` predictions (transformed space).
        target: ``[...]`` targets, same space (NaN outside ``mask`` is fine).
        mask: ``[...]`` bool, the points.
        weight: ``[...]`` non-negative weights (``None``: all 1).

    """
    diff = torch.where(mask, pred.float() - torch.where(mask, target.float(), 0.0), 0.0)
    w = mask.float() if weight is None else torch.where(mask, weight.float(), 0.0)
    return (diff**2 * w).sum() / w.sum().clamp_min(1e-12)


class TargetScaler(nn.Module):
    """Standardisation of the target, ``z = (y - mean) / std``, with the training split's statistics.

    Args:
        mean: the mean (``None``: set later with :meth:`fit`).
        std: the standard deviation.

    """

    def __init__(self, mean: float | None = None, std: float | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float("nan") if mean is None else float(mean)))
        self.register_buffer("std", torch.tensor(float("nan") if std is None else float(std)))

    @property
    def fitted(self) -> bool:
        """Whether the statistics are set."""
        return bool(torch.isfinite(self.get_buffer("mean")) and torch.isfinite(self.get_buffer("std")))

    def fit(self, values: np.ndarray) -> tuple[float, float]:
        """Set the statistics from target ``values`` (finite ones); return ``(mean, std)``.

        Raises:
            ModelConfigError: fewer than two finite values.

        """
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size < 2:
            raise ModelConfigError(f"the training split holds {v.size} target values; at least 2 are needed")
        mean, std = float(v.mean()), float(max(v.std(), 1e-6))
        self.get_buffer("mean").fill_(mean)
        self.get_buffer("std").fill_(std)
        return mean, std

    def forward(self, y: Tensor) -> Tensor:
        """Target units -> standardised."""
        return (y - self.get_buffer("mean")) / self.get_buffer("std")

    def inverse(self, z: Tensor) -> Tensor:
        """Standardised -> target units."""
        return z * self.get_buffer("std") + self.get_buffer("mean")


class PointMetrics(Metric):
    """RMSE, MAE, bias, R² and the predict-the-training-mean RMSE over the points seen (sums, DDP-reduced).

    Args:
        train_mean: the training split's mean target (the baseline's constant prediction).

    """

    full_state_update = False
    n: Tensor
    err: Tensor
    abs_err: Tensor
    sq_err: Tensor
    y: Tensor
    y2: Tensor
    base_sq: Tensor

    def __init__(self, train_mean: float = 0.0) -> None:
        super().__init__()
        self.train_mean = float(train_mean)
        for name in ("n", "err", "abs_err", "sq_err", "y", "y2", "base_sq"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor) -> None:
        """Add the points in ``mask`` (``pred`` and ``target`` in target units, any matching shape)."""
        p = pred.detach().double()[mask]
        y = target.detach().double()[mask]
        e = p - y
        self.n += y.numel()
        self.err += e.sum()
        self.abs_err += e.abs().sum()
        self.sq_err += (e**2).sum()
        self.y += y.sum()
        self.y2 += (y**2).sum()
        self.base_sq += ((self.train_mean - y) ** 2).sum()

    def compute(self) -> dict[str, Tensor]:
        """``rmse``, ``mae``, ``bias`` (mean of prediction - target), ``r2``, ``baseline_rmse``, ``n``."""
        n = self.n.clamp_min(1)
        sst = self.y2 - self.y**2 / n
        return {
            "rmse": (self.sq_err / n).sqrt(),
            "mae": self.abs_err / n,
            "bias": self.err / n,
            "r2": 1 - self.sq_err / sst.clamp_min(1e-12),
            "baseline_rmse": (self.base_sq / n).sqrt(),
            "n": self.n,
        }


def metrics_summary(values: Mapping[str, Any], target: str, units: str, where: str) -> str:
    """One line per metric, the model's RMSE beside predicting the training mean."""
    u = f" {units}" if units else ""
    v = {k: float(x) for k, x in values.items()}
    return (
        f"{target} at {int(v['n'])} {where}: RMSE {v['rmse']:.2f}{u} (predict-the-training-mean "
        f"{v['baseline_rmse']:.2f}{u}), MAE {v['mae']:.2f}{u}, bias {v['bias']:+.2f}{u}, R² {v['r2']:.3f}"
    )


# ---- heads ------------------------------------------------------------------------------------------------


class MixerStack(nn.Module):
    """Project ``[B,L,D]`` location tokens to width ``E``, then ``depth`` Mixer blocks and a final norm.

    Locations without a valid token enter as a learned "missing" embedding. The token mixing has one weight
    per location, so the grid ``(h, w)`` is fixed when the head is built.

    Args:
        in_dim: encoder width ``D``.
        grid: patch grid ``(h, w)``.
        dim: head width ``E``.
        depth: Mixer blocks.
        drop_path: stochastic depth of the blocks.

    """

    def __init__(
        self, in_dim: int, grid: tuple[int, int], dim: int, depth: int = 2, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        if grid[0] < 1 or grid[1] < 1 or depth < 0 or dim < 1:
            raise ModelConfigError(
                f"Mixer head needs a positive grid and width, depth >= 0; got {grid}, {dim}, {depth}"
            )
        self.grid = (int(grid[0]), int(grid[1]))
        self.proj = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.missing = nn.Parameter(torch.zeros(dim))
        self.blocks = nn.Sequential(
            *[
                MixerBlock(dim, self.grid[0] * self.grid[1], (0.5, 4.0), drop_path=drop_path)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.missing, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """The missing-location embedding takes no weight decay."""
        return {"missing"}

    def forward(self, locations: LocationTokens) -> Tensor:
        """``[B,L,D]`` tokens -> ``[B,L,E]``."""
        if tuple(locations.grid) != self.grid:
            raise ModelConfigError(
                f"the Mixer head was built for a {self.grid[0]}x{self.grid[1]} patch grid, the encoder gave "
                f"{locations.grid[0]}x{locations.grid[1]} (window size / patch size changed)"
            )
        x = self.proj(locations.tokens)
        x = torch.where(locations.valid.unsqueeze(-1), x, self.missing.to(x.dtype))
        return self.norm(self.blocks(x))


def pixel_skip_features(bands: Mapping[str, Sequence[str]]) -> int:
    """``F`` of :func:`pixel_summaries`: per group ``2 * C + 1``."""
    return sum(2 * len(b) + 1 for b in bands.values())


def pixel_summaries(encoder: SpectralEncoder, batch: SensorStack, groups: Sequence[str]) -> Tensor:
    """``[B,F,H,W]`` per group: each band's mean and spread over the pixel's valid dates, and the valid share.

    The values are the encoder's normalised channels of the group's bands (its statistics, SAR in dB through
    its front-end, whose added ratio channels are left out), 0 where a pixel has no valid date.
    """
    parts = []
    for g in groups:
        image = encoder.prepare(batch[g], g).normalised()
        c = len(batch[g].bands)
        x, ok = image.values[:, :, :c].float(), image.valid  # (B, T, C, H, W), (B, T, H, W)
        w = ok.unsqueeze(2).float()
        seen = w.sum(dim=1)  # (B, 1, H, W)
        mu = (x * w).sum(dim=1) / seen.clamp_min(1.0)
        sd = ((((x - mu.unsqueeze(1)) * w) ** 2).sum(dim=1) / seen.clamp_min(1.0) + 1e-6).sqrt() * (seen > 0)
        parts += [mu, sd, ok.float().mean(dim=1, keepdim=True)]
    return torch.cat(parts, dim=1)


class DenseMixerHead(nn.Module):
    """Per-pixel regression: Mixer over locations, a learned ``Linear(E, p*p*c)`` pixel shuffle, pixel skip.

    Args:
        in_dim: encoder width ``D``.
        grid: patch grid ``(h, w)`` of a window.
        patch_size: pixels per patch side ``p``.
        outputs: channels ``k`` per pixel.
        dim: head width ``E``.
        depth: Mixer blocks.
        drop_path: stochastic depth.
        pixel_features: ``F`` skip features per pixel (0: no skip; the shuffle gives the outputs).
        pixel_dim: with the skip, features ``c`` per pixel from the shuffle.

    """

    def __init__(
        self,
        in_dim: int,
        grid: tuple[int, int],
        patch_size: int,
        outputs: int = 1,
        dim: int = 128,
        depth: int = 2,
        drop_path: float = 0.0,
        pixel_features: int = 0,
        pixel_dim: int = 16,
    ) -> None:
        super().__init__()
        self.patch_size, self.outputs, self.pixel_features = (
            int(patch_size),
            int(outputs),
            int(pixel_features),
        )
        self.mixer = MixerStack(in_dim, grid, dim, depth, drop_path)
        per_pixel = pixel_dim if self.pixel_features else self.outputs
        self.to_pixels = nn.Linear(dim, self.patch_size**2 * per_pixel)
        nn.init.trunc_normal_(self.to_pixels.weight, std=0.02)
        nn.init.zeros_(self.to_pixels.bias)
        self.fuse = (
            Mlp(pixel_dim + self.pixel_features, 2 * (pixel_dim + self.pixel_features), self.outputs)
            if (self.pixel_features)
            else None
        )

    def forward(self, locations: LocationTokens, pixels: Tensor | None = None) -> Tensor:
        """Location tokens (and ``[B,F,H,W]`` skip features) -> ``[B,k,H,W]``."""
        if locations.patch_size != self.patch_size:
            raise ModelConfigError(
                f"the head upsamples {self.patch_size} px patches, got {locations.patch_size} px"
            )
        x = self.to_pixels(self.mixer(locations))  # (B, L, p*p*c)
        (h, w), p = self.mixer.grid, self.patch_size
        x = rearrange(x, "b (h w) (p q c) -> b (h p) (w q) c", h=h, w=w, p=p, q=p)
        if self.fuse is not None:
            if pixels is None or pixels.shape[1] != self.pixel_features:
                have = None if pixels is None else pixels.shape[1]
                raise ModelConfigError(
                    f"the pixel skip takes {self.pixel_features} features per pixel, got {have}"
                )
            x = self.fuse(torch.cat([x, rearrange(pixels, "b f hh ww -> b hh ww f").to(x.dtype)], dim=-1))
        return rearrange(x, "b hh ww k -> b k hh ww")


class ScalarMixerHead(nn.Module):
    """Per-sample regression: Mixer over locations, mean over the valid ones, ``Linear(E, k)``.

    Args:
        in_dim: encoder width ``D``.
        grid: token grid ``(h, w)``.
        outputs: values ``k`` per sample.
        dim: head width ``E``.
        depth: Mixer blocks.
        drop_path: stochastic depth.

    """

    def __init__(
        self,
        in_dim: int,
        grid: tuple[int, int],
        outputs: int = 1,
        dim: int = 128,
        depth: int = 2,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.mixer = MixerStack(in_dim, grid, dim, depth, drop_path)
        self.out = nn.Linear(dim, int(outputs))
        nn.init.trunc_normal_(self.out.weight, std=0.02)
        nn.init.zeros_(self.out.bias)

    def forward(self, locations: LocationTokens) -> Tensor:
        """Location tokens -> ``[B,k]``."""
        return self.out(masked_token_mean(self.mixer(locations), locations.valid))


# ---- the task ----------------------------------------------------------------------------------------


class PointsTask(BaseTask):
    """A per-pixel regression map learned from sparse points (see the module docstring).

    ``bands``, ``window_size`` and ``seed`` come from the data section of a config. The target's name, units
    and training statistics are read from the :class:`~spectravlm.data.points.windows.PointsDataModule` when a
    fit starts, and saved as hyperparameters.

    Args:
        bands: per sensor group, its bands.
        window_size: window edge in pixels (a multiple of ``patch_size``).
        target: the sparse target layer (default: the data module's).
        target_units: its unit (default: the layer's).
        encoder: named encoder size (``test``, ``tiny``, ``small``, ``base``).
        patch_size: the encoder's patch size.
        tokenizer: ``wavelength``, ``cube`` or ``band_group``.
        attention: ``joint`` or ``factorised``.
        temporal_depth: with ``factorised``, the encoder's blocks over each location's dates.
        drop_path_rate: stochastic depth of the encoder.
        gradient_checkpointing: recompute encoder activations in the backward pass.
        init_encoder: a pretrained encoder (checkpoint or exported folder) to start from.
        head_dim: Mixer width.
        head_depth: Mixer blocks.
        head_drop_path: stochastic depth of the Mixer.
        pixel_skip: fuse each pixel's own input summaries into its prediction.
        inverse_variance: weight each point by ``1 / se^2`` where the layer has a standard error.
        target_mean: standardisation mean (default: the training points').
        target_std: standardisation standard deviation (default: the training points').
        train_mean: the training points' mean (the predict-the-mean baseline; default: ``target_mean``).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup: share of steps with a linear warm-up.
        min_lr_ratio: final learning rate / ``lr``.
        encoder_lr_mult: encoder learning-rate multiplier.
        layer_decay: layer-wise learning-rate decay of the encoder (``None``: off).
        encoder_trainable: ``all``, ``none`` or the number of last encoder blocks to train.
        refit_statistics: set the encoder's band statistics from the stores (default: new encoders).
        seed: seed of the per-batch randomness.

    """

    architecture_keys: ClassVar[tuple[str, ...]] = (
        "bands",
        "window_size",
        "encoder",
        "patch_size",
        "tokenizer",
        "attention",
        "temporal_depth",
        "head_dim",
        "head_depth",
        "pixel_skip",
    )

    def __init__(
        self,
        bands: Mapping[str, Sequence[str]] | None = None,
        window_size: int = 64,
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
        head_dim: int = 128,
        head_depth: int = 2,
        head_drop_path: float = 0.0,
        pixel_skip: bool = True,
        inverse_variance: bool = True,
        target_mean: float | None = None,
        target_std: float | None = None,
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
        bands = {g: list(b) for g, b in normalise_bands(bands).items()}
        if window_size % patch_size:
            raise ModelConfigError(f"window_size {window_size} is not a multiple of patch_size {patch_size}")
        betas = (float(betas[0]), float(betas[1]))
        super().__init__()

    def configure_models(self) -> None:
        """The encoder, the dense Mixer head and the target scaler from the hyperparameters."""
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
        side = hp.window_size // hp.patch_size
        self.groups = tuple(hp.bands)
        self.head = DenseMixerHead(
            self.backbone.dim,
            (side, side),
            hp.patch_size,
            1,
            hp.head_dim,
            hp.head_depth,
            hp.head_drop_path,
            pixel_skip_features(hp.bands) if hp.pixel_skip else 0,
        )
        self.scaler = TargetScaler(hp.target_mean, hp.target_std)

    def configure_metrics(self) -> None:
        """Validation and test metrics at the held-out points."""
        hp: Any = self.hparams
        base = hp.train_mean if hp.train_mean is not None else hp.target_mean
        self.val_metrics = PointMetrics(0.0 if base is None else base)
        self.test_metrics = PointMetrics(0.0 if base is None else base)

    @property
    def encoder(self) -> SpectralEncoder:
        """The encoder being fine-tuned."""
        return self.backbone

    @property
    def target_name(self) -> str:
        """The sparse layer the task learns."""
        return str(self.hparams.get("target") or "agb_points")

    def raw(self, batch: SensorStack) -> Tensor:
        """``[B,H,W]`` predictions in the standardised space."""
        out = self.backbone.forward_features(SensorStack({g: batch[g] for g in self.groups}))
        pixels = pixel_summaries(self.backbone, batch, self.groups) if self.hparams["pixel_skip"] else None
        return self.head(out.locations(), pixels)[:, 0]

    def forward(self, batch: SensorStack) -> Tensor:
        """``[B,H,W]`` predictions in target units."""
        if not self.scaler.fitted:
            raise ModelConfigError(
                "the target statistics are not set: they come from the training points when a fit starts, or "
                "give target_mean and target_std"
            )
        return self.scaler.inverse(self.raw(batch).float())

    # ---- data ------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Base checks and statistics; the target's name, units and training statistics from the points."""
        super().setup(stage)
        from spectravlm.data.points.windows import PointsDataModule

        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if not isinstance(dm, PointsDataModule):
            raise ModelConfigError(
                f"PointsTask learns a sparse point layer: use spectravlm.data.points.PointsDataModule, not "
                f"{type(dm).__name__}"
            )
        self.adopt_target(dm, fit=stage == "fit")

    def adopt_target(self, dm: PointsDataModule, fit: bool = True) -> None:
        """The target's name and units from ``dm``; with ``fit``, the statistics of its training points."""
        name, units = dm.point_target, dm.target_units()
        for key, value in (("target", name), ("target_units", units)):
            mine = self.hparams.get(key)
            if mine is None:
                self.hparams[key] = value
            elif mine != value:
                raise ModelConfigError(f"the data's {key} is {value!r}, the model's {mine!r}")
        if fit and not self.scaler.fitted:
            values = dm.split_values("train")
            mean, std = self.scaler.fit(values)
            self.hparams["target_mean"], self.hparams["target_std"] = mean, std
            self.hparams["train_mean"] = mean
            self.val_metrics.train_mean = self.test_metrics.train_mean = mean

    # ---- steps ------------------------------------------------------------------------------------------

    def _step(self, batch: SensorStack, stage: str) -> Tensor:
        name = self.target_name
        if name not in batch.targets:
            raise ModelConfigError(
                f"the batch has no target {name!r}; targets: {', '.join(batch.targets) or '(none)'}"
            )
        y = batch.targets[name].float()
        mask = torch.isfinite(y)
        weight = None
        se = batch.targets.get(f"{name}_se")
        if self.hparams["inverse_variance"] and se is not None:
            weight = inverse_variance_weights(se.float(), mask)
        z = self.raw(batch)
        loss = point_loss(z, self.scaler(y), mask, weight)
        if stage != "train":
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            metrics.update(self.scaler.inverse(z.detach().float()), y, mask)
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=True,
            batch_size=max(int(mask.sum()), 1),
            sync_dist=stage != "train",
        )
        return loss

    def training_step(self, batch: SensorStack, batch_idx: int) -> Tensor:
        """Loss over the batch's training points."""
        return self._step(batch, "train")

    def validation_step(self, batch: SensorStack, batch_idx: int) -> None:
        """Validation loss and metrics at the held-out points."""
        self._step(batch, "val")

    def test_step(self, batch: SensorStack, batch_idx: int) -> None:
        """Test loss and metrics."""
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        """Log ``val/rmse``, ``val/r2``, ``val/bias``, ``val/baseline_rmse``..."""
        values = self.val_metrics.compute()
        for k, v in values.items():
            self.log(f"val/{k}", v.float())
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        """Log the test metrics and print them beside the predict-the-mean baseline."""
        values = self.test_metrics.compute()
        for k, v in values.items():
            self.log(f"test/{k}", v.float())
        self.test_metrics.reset()
        if self.global_rank == 0 and float(values["n"]) > 0:
            units = str(self.hparams.get("target_units") or "")
            print(metrics_summary(values, self.target_name, units, "held-out (test) points"))

    def predict_step(self, batch: SensorStack, batch_idx: int) -> dict[str, Tensor]:
        """Per-pixel predictions of each window, with the window's origin (row, col) in its store."""
        out = {"prediction": self(batch)}
        if batch.origin is not None:
            out["origin"] = batch.origin
        return out

    def checkpoint_metadata(self) -> dict[str, Any]:
        """The base metadata and the target's name, units and statistics."""
        meta = super().checkpoint_metadata()
        meta["target"] = {
            "name": self.hparams.get("target"),
            "units": self.hparams.get("target_units"),
            "mean": self.hparams.get("target_mean"),
            "std": self.hparams.get("target_std"),
        }
        return meta


__all__ = [
    "DenseMixerHead",
    "MixerStack",
    "PointMetrics",
    "PointsTask",
    "ScalarMixerHead",
    "TargetScaler",
    "inverse_variance_weights",
    "metrics_summary",
    "pixel_skip_features",
    "pixel_summaries",
    "point_loss",
]
