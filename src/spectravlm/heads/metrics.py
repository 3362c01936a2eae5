"""Regression metrics in target units over valid targets, with the predict-the-mean baseline beside them.

Per epoch (torchmetrics, synchronised across ranks): RMSE, MAE, R² and bias (mean of prediction minus
observation); with an interval, its coverage (share of observations inside the predicted central interval:
close to the nominal level when the uncertainty is calibrated); and the same RMSE, MAE and R² for a model that
predicts the training split's mean everywhere (``baseline_*``), the floor any model must beat. Sums are
accumulated in float64 (a map has millions of pixels).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, R2Score, SumMetric

from spectravlm.heads.uncertainty import RegressionOutput


class RegressionMetrics(nn.Module):
    """RMSE, MAE, R², bias, interval coverage and the predict-the-mean baseline (see the module docstring).

    Args:
        interval: nominal level of the predicted interval, or ``None`` when there is none.
        baseline: the training split's mean target (target units), or ``None`` (no baseline metrics).

    """

    def __init__(self, interval: float | None = None, baseline: float | None = None) -> None:
        super().__init__()
        self.interval = interval
        self.baseline = baseline
        self.rmse = MeanSquaredError(squared=False)
        self.mae = MeanAbsoluteError()
        self.r2 = R2Score()
        self.bias = MeanMetric()
        self.coverage = MeanMetric() if interval is not None else None
        self.baseline_rmse = MeanSquaredError(squared=False)
        self.baseline_mae = MeanAbsoluteError()
        self.baseline_r2 = R2Score()
        self.count = SumMetric()  # positions seen, summed over ranks

    def update(self, out: RegressionOutput, target: Tensor, mask: Tensor) -> None:
        """Add the positions where ``mask`` is True (``out`` fields and ``target`` share one shape)."""
        if not bool(mask.any()):
            return
        y = target[mask].double()
        pred = out.mean[mask].double()
        self.rmse.update(pred, y)
        self.mae.update(pred, y)
        self.r2.update(pred, y)
        self.bias.update(pred - y)
        if self.coverage is not None and out.lower is not None and out.upper is not None:
            inside = (y >= out.lower[mask].double()) & (y <= out.upper[mask].double())
            self.coverage.update(inside.double())
        if self.baseline is not None:
            const = torch.full_like(y, float(self.baseline))
            self.baseline_rmse.update(const, y)
            self.baseline_mae.update(const, y)
            self.baseline_r2.update(const, y)
        self.count.update(float(y.numel()))

    def compute(self) -> dict[str, Tensor]:
        """``{name: value}`` of the positions seen since the last :meth:`reset` (empty when none)."""
        with warnings.catch_warnings():  # torchmetrics warns about computing a metric never updated
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            if float(self.count.compute()) == 0:  # the same answer on every rank (synchronised)
                return {}
        out = {
            "rmse": self.rmse.compute(),
            "mae": self.mae.compute(),
            "r2": self.r2.compute(),
            "bias": self.bias.compute(),
        }
        if self.coverage is not None:
            out["coverage"] = self.coverage.compute()
        if self.baseline is not None:
            out |= {
                "baseline_rmse": self.baseline_rmse.compute(),
                "baseline_mae": self.baseline_mae.compute(),
                "baseline_r2": self.baseline_r2.compute(),
            }
        return {k: v.float() for k, v in out.items()}

    def reset(self) -> None:
        """Forget every position."""
        for m in self.children():
            m.reset()  # type: ignore[operator]


__all__ = ["RegressionMetrics"]
