"""What every regression task optimises and measures, whatever its network: ``RegressionObjective``.

A plain module shared by :class:`~spectravlm.tasks.regression.RegressionTask` (encoder + Mixer head) and the
same-harness baselines (:mod:`spectravlm.tasks.baselines`), so that both learn the same targets with the same
loss and report the same metrics:

* targets of a batch as the network predicts them: per pixel ``[B,H,W]``, or per window ``[B]`` (the mean
  of its finite target pixels);
* the target transform (:mod:`~spectravlm.heads.targets`), its training-split statistics and the
  predict-the-training-mean baseline;
* the loss over valid targets and the decoding into target units (:mod:`~spectravlm.heads.uncertainty`);
* validation and test metrics (:mod:`~spectravlm.heads.metrics`), and what the figures of a validation epoch
  need (the first batch with its predictions; a sample of predicted/observed pairs).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError
from spectravlm.heads.metrics import RegressionMetrics
from spectravlm.heads.targets import TargetTransform, TargetTransformKind, fit_statistics, needs_statistics
from spectravlm.heads.uncertainty import Likelihood, RegressionOutput, Uncertainty
from spectravlm.stack import SensorStack, clone_stack

FIGURE_PAIRS = 200_000
"""Predicted/observed pairs kept per validation epoch for the scatter figure."""


class RegressionObjective(nn.Module):
    """Targets, transform, loss, decoding and metrics of a regression task (see the module docstring).

    Args:
        target: the target layer (``agb``).
        per_window: predict one value per window (its mean target) instead of one per pixel.
        uncertainty: ``none``, ``gaussian`` or ``quantile``.
        quantiles: levels predicted with ``quantile``.
        interval: level of the predicted central interval.
        transform: the target transform kind.
        transform_mean: standardisation mean (``None``: not known yet).
        transform_std: standardisation standard deviation (``None``: not known yet).
        train_mean: the training split's mean target (``None``: not known yet).

    """

    def __init__(
        self,
        target: str = "agb",
        per_window: bool = False,
        uncertainty: Uncertainty = "none",
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
        interval: float = 0.9,
        transform: TargetTransformKind = "standardise",
        transform_mean: float | None = None,
        transform_std: float | None = None,
        train_mean: float | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        self.per_window = per_window
        self.likelihood = Likelihood(uncertainty, tuple(quantiles), interval)
        self.transform = TargetTransform(
            transform,
            0.0 if transform_mean is None else transform_mean,
            1.0 if transform_std is None else transform_std,
        )
        self.known: dict[str, float | None] = {
            "transform_mean": transform_mean,
            "transform_std": transform_std,
            "train_mean": train_mean,
        }
        level = interval if self.likelihood.has_uncertainty else None
        self.metrics = nn.ModuleDict({s: RegressionMetrics(level, train_mean) for s in ("val", "test")})
        self.val_example: tuple[SensorStack, RegressionOutput] | None = None
        self.val_pairs: list[tuple[Tensor, Tensor]] = []

    @property
    def channels(self) -> int:
        """Network output channels."""
        return self.likelihood.channels

    # ---- statistics ------------------------------------------------------------------------------------

    def missing_statistics(self) -> bool:
        """Whether the training split's statistics still have to be computed."""
        need = ["train_mean"] + (
            ["transform_mean", "transform_std"] if needs_statistics(self.transform.kind) else []
        )
        return any(self.known[k] is None for k in need)

    def set_statistics(self, values: np.ndarray) -> dict[str, float]:
        """Compute what is missing from training-split target values; return the new values by name."""
        new: dict[str, float] = {}
        if needs_statistics(self.transform.kind) and (
            self.known["transform_mean"] is None or self.known["transform_std"] is None
        ):
            new["transform_mean"], new["transform_std"] = fit_statistics(values, self.transform.kind)
        if self.known["train_mean"] is None:
            new["train_mean"] = float(np.mean(values[np.isfinite(values)]))
        self.load_statistics(new)
        return new

    def load_statistics(self, values: Mapping[str, float | None]) -> None:
        """Adopt known statistics (from arguments, a fit or a checkpoint)."""
        for k, v in values.items():
            if v is not None and k in self.known:
                self.known[k] = float(v)
        if self.known["transform_mean"] is not None and self.known["transform_std"] is not None:
            self.transform.set_statistics(self.known["transform_mean"], self.known["transform_std"])
        for m in self.stage_metrics():
            m.baseline = self.known["train_mean"]

    # ---- a step ----------------------------------------------------------------------------------------

    def targets(self, batch: SensorStack) -> Tensor:
        """The batch's targets as predicted: ``[B,H,W]``, or ``[B]`` window means (NaN: no value)."""
        if self.target not in batch.targets:
            raise ModelConfigError(
                f"the batch has no target {self.target!r} (targets: {list(batch.targets) or 'none'}); "
                "add it to data.targets"
            )
        y = batch.targets[self.target].float()
        if self.per_window:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the mean of an all-NaN window is NaN, as wanted
                y = torch.nanmean(y.flatten(1), dim=1)
        return y

    def decode(self, raw: Tensor) -> RegressionOutput:
        """Network outputs ``[B,k,...]`` -> predictions in target units."""
        return self.likelihood.decode(raw, self.transform)

    def step(self, raw: Tensor, batch: SensorStack, stage: str, batch_idx: int = 0) -> Tensor:
        """Loss over the valid targets; outside training also the metrics (and the figures for ``val``)."""
        y = self.targets(batch)
        mask = torch.isfinite(y)
        loss = self.likelihood.loss(raw, self.transform(y), mask)
        if stage in self.metrics:
            out = self.decode(raw.detach())
            self.stage_metrics(stage)[0].update(out, y, mask)
            if stage == "val":
                self._keep_for_figures(batch, batch_idx, out, y, mask)
        return loss

    def stage_metrics(self, stage: str | None = None) -> list[RegressionMetrics]:
        """The metrics of ``stage`` (``val``, ``test``), or of every stage."""
        names = list(self.metrics) if stage is None else [stage]
        return [m for name in names if isinstance(m := self.metrics[name], RegressionMetrics)]

    def compute(self, stage: str) -> dict[str, float]:
        """The metrics of ``stage`` since the last call (then reset); empty without a valid target."""
        (metrics,) = self.stage_metrics(stage)
        values = metrics.compute()
        metrics.reset()
        return {k: float(v) for k, v in values.items()}

    def _keep_for_figures(
        self, batch: SensorStack, batch_idx: int, out: RegressionOutput, y: Tensor, mask: Tensor
    ) -> None:
        if batch_idx == 0:
            self.val_pairs = []
            cpu = RegressionOutput(
                out.mean.detach().cpu(),
                *(None if t is None else t.detach().cpu() for t in (out.std, out.lower, out.upper)),
            )
            self.val_example = (clone_stack(batch).to("cpu"), cpu)  # the loader reuses the batch's memory
        if sum(len(o) for o, _ in self.val_pairs) >= FIGURE_PAIRS:
            return
        obs, pred = y[mask], out.mean[mask]
        step = max(1, obs.numel() // 8192)
        self.val_pairs.append((obs[::step].detach().cpu(), pred[::step].detach().cpu()))


__all__ = ["FIGURE_PAIRS", "RegressionObjective"]
