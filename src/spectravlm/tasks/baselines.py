"""Same-harness baselines: TorchGeo's U-Net on the same data module, split, targets, loss and metrics.

``UNetRegressionTask`` runs the network of TorchGeo's ``PixelwiseRegressionTask(model="unet")`` (a
segmentation_models_pytorch U-Net with a ResNet encoder, built by TorchGeo from the same arguments; with
uncertainty its last convolution is widened to the 2 or Q output channels, as TorchGeo builds one) on
:class:`~spectravlm.data.datamodule.CubeDataModule` batches, through a small adapter,
:class:`StackAsChannels`: every sensor group's time series is stacked as channels (``n_times`` dates x bands,
as the BioMassters benchmark's U-Net baseline did with its 12 months x 15 bands), in physical units
normalised by per-band store statistics, invalid pixels and missing dates at 0 (the band mean). Everything
else is the regression harness of :class:`~spectravlm.tasks.regression.RegressionTask`: the target transform
with training-split statistics, the loss over valid targets only (TorchGeo's own MSE over every pixel would
turn a single NaN target into a NaN loss), the metrics with the predict-the-mean baseline, the figures, and
whole-scene prediction with :class:`spectravlm.predict.MapWriter`. So one config trains either::

    spectravlm fit --config configs/agb_demo.yaml                                        # encoder + Mixer
    spectravlm fit --config configs/agb_demo.yaml --config configs/agb_unet_baseline.yaml  # TorchGeo U-Net

TorchGeo: Stewart et al., https://arxiv.org/abs/2111.08872; U-Net: Ronneberger et al.,
https://arxiv.org/abs/1505.04597; BioMassters: Nascetti et al., https://nascetti-a.github.io/BioMasster/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn

from spectravlm.encoders.spectral import ALL_SENSORS
from spectravlm.encoders.statistics import BandStatistics, store_statistics
from spectravlm.errors import ModelConfigError
from spectravlm.heads.objective import RegressionObjective
from spectravlm.heads.targets import TargetTransformKind
from spectravlm.heads.uncertainty import RegressionOutput, Uncertainty
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorStack
from spectravlm.tasks.base import normalise_bands
from spectravlm.tasks.regression import RegressionSteps, check_target, regression_setup

if TYPE_CHECKING:
    from spectravlm.data.datamodule import CubeDataModule

UNET_DIVISOR = 32
"""A ResNet U-Net halves the image five times: windows must be multiples of 32 px."""


class StackAsChannels(nn.Module):
    """``SensorStack`` -> ``[B, sum_g n_times * C_g, H, W]``: each group's dates x bands as channels.

    Values are taken in physical units (``stored * scale + offset``; SAR in dB, linear power converted),
    normalised with per-band statistics (store statistics when set, else the catalogue's), invalid pixels and
    missing or padded dates set to 0. Series shorter than ``n_times`` are padded with zeros, longer ones cut.

    Args:
        bands: per group, its bands in batch order.
        n_times: dates per group.

    """

    def __init__(self, bands: Mapping[str, Sequence[str]], n_times: int = 12) -> None:
        super().__init__()
        if n_times < 1:
            raise ModelConfigError(f"n_times must be >= 1, got {n_times}")
        self.bands = {g: tuple(b) for g, b in bands.items()}
        self.n_times = n_times
        self.statistics = BandStatistics(ALL_SENSORS)

    @property
    def channels(self) -> int:
        """Input channels of the network."""
        return self.n_times * sum(len(b) for b in self.bands.values())

    def forward(self, batch: SensorStack) -> Tensor:
        """The stacked, normalised channels ``[B,(T C),H,W]`` in group order."""
        parts = []
        for g, bands in self.bands.items():
            s = batch[g]
            if s.bands != bands:
                raise ModelConfigError(f"group {g!r} has bands {s.bands}, the network was built for {bands}")
            x = s.values.float() * s.scale + s.offset
            if get_sensor(s.sensor).kind == "sar" and s.units == "linear":
                x = 10.0 * torch.log10(x.clamp_min(1e-10))
            mean, std = self.statistics.lookup(s.sensor, s.bands)
            x = (x - mean.view(1, 1, -1, 1, 1)) / std.view(1, 1, -1, 1, 1)
            ok = s.valid.unsqueeze(2) & torch.isfinite(x)
            x = torch.where(ok, x, x.new_zeros(()))
            t = x.shape[1]
            if t < self.n_times:
                x = torch.cat([x, x.new_zeros((x.shape[0], self.n_times - t, *x.shape[2:]))], dim=1)
            parts.append(rearrange(x[:, : self.n_times], "b t c h w -> b (t c) h w"))
        return torch.cat(parts, dim=1)


class UNetRegressionTask(RegressionSteps):
    """TorchGeo's U-Net (``PixelwiseRegressionTask(model="unet")``) in the spectravlm regression harness.

    Args:
        bands: per sensor stream, its bands in batch order (from the data).
        window_size: window edge in pixels (from the data); a multiple of 32.
        target: the target layer to learn (``agb``).
        n_times: dates per group stacked as channels (padded or cut to this many).
        backbone: the U-Net's encoder (a timm/smp name TorchGeo accepts: ``resnet18``, ``resnet50``...).
        uncertainty: ``none``, ``gaussian`` or ``quantile`` (as :class:`RegressionTask`).
        quantiles: levels predicted with ``quantile``.
        interval: level of the predicted central interval.
        target_transform: ``none``, ``standardise``, ``log1p`` or ``log1p_standardise``.
        transform_mean: standardisation mean (computed from the training split when ``None``).
        transform_std: standardisation standard deviation (likewise).
        train_mean: the training split's mean target (likewise).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup: share of the optimiser steps with a linear warm-up.
        min_lr_ratio: final learning rate / ``lr``.
        seed: seed of the per-batch randomness.

    """

    architecture_keys: ClassVar[tuple[str, ...]] = (
        "bands",
        "window_size",
        "target",
        "n_times",
        "backbone",
        "uncertainty",
        "quantiles",
        "target_transform",
    )

    def __init__(
        self,
        bands: Mapping[str, Sequence[str]] | None = None,
        window_size: int = 64,
        target: str = "agb",
        n_times: int = 12,
        backbone: str = "resnet18",
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
        seed: int = 0,
    ) -> None:
        self.bands = normalise_bands(bands)
        bands = {g: list(b) for g, b in self.bands.items()}
        betas = (float(betas[0]), float(betas[1]))
        quantiles = [float(q) for q in quantiles]
        if window_size % UNET_DIVISOR:
            raise ModelConfigError(
                f"window_size {window_size} must be a multiple of {UNET_DIVISOR} for the U-Net (five "
                "halvings)"
            )
        self.window_size = window_size
        self.target_units = ""
        super().__init__()

    def configure_models(self) -> None:
        """The adapter and the U-Net that TorchGeo's ``PixelwiseRegressionTask`` builds."""
        import warnings

        from torchgeo.trainers import PixelwiseRegressionTask

        hp: Any = self.hparams
        self.objective = RegressionObjective(
            hp.target,
            False,
            hp.uncertainty,
            tuple(hp.quantiles),
            hp.interval,
            hp.target_transform,
            hp.transform_mean,
            hp.transform_std,
            hp.train_mean,
        )
        self.adapter = StackAsChannels(self.bands, hp.n_times)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torchgeo_task = PixelwiseRegressionTask(
                model="unet",
                backbone=hp.backbone,
                weights=None,
                in_channels=self.adapter.channels,
            )
        self.model: nn.Module = torchgeo_task.model  # the network only: loss and metrics are the harness's
        k = self.objective.channels
        if k > 1:  # TorchGeo builds one output channel whatever num_outputs says: widen smp's last conv
            conv = self.model.segmentation_head[0]
            self.model.segmentation_head[0] = nn.Conv2d(
                conv.in_channels, k, conv.kernel_size, padding=conv.padding
            )

    def raw(self, batch: SensorStack) -> Tensor:
        """Network outputs ``[B,k,H,W]`` in the transformed target space."""
        return self.model(self.adapter(batch))

    def forward(self, batch: SensorStack) -> RegressionOutput:
        """Predictions in target units."""
        return self.objective.decode(self.raw(batch))

    def check_data(self, dm: CubeDataModule) -> None:
        """The base checks and the target."""
        super().check_data(dm)
        if self._trainer is None or not self.trainer.predicting:  # predicting needs no target
            check_target(dm, self.hparams["target"])

    def setup(self, stage: str) -> None:
        """Base checks; the adapter's band statistics from the stores, the target statistics, at fit."""
        super().setup(stage)
        from spectravlm.data.datamodule import CubeDataModule

        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and isinstance(dm, CubeDataModule):
            for sensor, (stats, _) in store_statistics(dm.sensor_statistics()).items():
                usable = {b: ms for b, ms in stats.items() if ms[1] > 0}
                if usable:
                    self.adapter.statistics.update(sensor, usable)
        self.target_units = regression_setup(self, self.objective, stage) or self.target_units


__all__ = ["StackAsChannels", "UNetRegressionTask"]
