"""Losses over valid targets only (NaN never reaches the loss or a gradient), decoding, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import seeded
from spectravlm.errors import ModelConfigError
from spectravlm.heads.metrics import RegressionMetrics
from spectravlm.heads.targets import TargetTransform
from spectravlm.heads.uncertainty import Likelihood, RegressionOutput, normal_quantile


@pytest.mark.parametrize("kind", ["none", "gaussian", "quantile"])
def test_nan_targets_and_padding_samples_do_not_change_the_loss(kind):
    lik = Likelihood(kind)
    raw = torch.randn(3, lik.channels, 8, 8, generator=seeded()).requires_grad_()
    z = torch.randn(3, 8, 8, generator=seeded(1))
    loss = lik.loss(raw, z, torch.isfinite(z))
    # a padding sample (all NaN) appended and NaN pixels where the mask already says "no target"
    padded_raw = torch.cat([raw, torch.randn(1, lik.channels, 8, 8)])
    padded_z = torch.cat([z, torch.full((1, 8, 8), float("nan"))])
    torch.testing.assert_close(lik.loss(padded_raw, padded_z, torch.isfinite(padded_z)), loss)
    # NaN targets: the loss is the mean over the others, and every gradient is finite
    holes = z.clone()
    holes[:, :4] = float("nan")
    mask = torch.isfinite(holes)
    partial = lik.loss(raw, holes, mask)
    torch.testing.assert_close(
        partial, lik.loss(raw[:, :, 4:], z[:, 4:], torch.ones(3, 4, 8, dtype=torch.bool))
    )
    (grad,) = torch.autograd.grad(partial, raw)
    assert torch.isfinite(grad).all() and float(grad[:, :, :4].abs().max()) == 0.0


@pytest.mark.parametrize("kind", ["none", "gaussian", "quantile"])
def test_a_batch_without_a_valid_target_gives_exactly_zero(kind):
    lik = Likelihood(kind)
    raw = torch.randn(2, lik.channels, 4, 4).requires_grad_()
    z = torch.full((2, 4, 4), float("nan"))
    loss = lik.loss(raw, z, torch.isfinite(z))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert raw.grad is not None and float(raw.grad.abs().max()) == 0.0


def test_losses_equal_their_definitions():
    raw = torch.tensor([[[0.5]], [[-0.3]]]).view(1, 2, 1, 1)
    z = torch.tensor([[[1.0]]])
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    var = torch.nn.functional.softplus(torch.tensor(-0.3)) + 1e-6
    nll = 0.5 * (torch.log(var) + (1.0 - 0.5) ** 2 / var)
    torch.testing.assert_close(Likelihood("gaussian").loss(raw, z, mask), nll)
    q = Likelihood("quantile", (0.1, 0.5, 0.9), interval=0.8)
    raw_q = torch.tensor([0.0, 2.0, 3.0]).view(1, 3, 1, 1)  # target 1: under, over, over
    want = (0.1 * 1.0 + 0.5 * 1.0 + 0.1 * 2.0) / 3
    torch.testing.assert_close(q.loss(raw_q, z, mask), torch.tensor(want))


def test_decoding_in_target_units_and_interval_levels():
    t = TargetTransform("standardise", 100.0, 20.0)
    raw = torch.tensor([0.5, 0.0]).view(1, 2)  # mean 0.5 sd, raw variance 0 -> var softplus(0)
    out = Likelihood("gaussian").decode(raw, t)
    sd = float((torch.nn.functional.softplus(torch.tensor(0.0)) + 1e-6).sqrt())
    assert float(out.mean) == pytest.approx(110.0)
    assert float(out.std) == pytest.approx(20 * sd, rel=1e-5)
    assert float(out.upper - out.mean) == pytest.approx(normal_quantile(0.95) * 20 * sd, rel=1e-5)
    assert normal_quantile(0.95) == pytest.approx(1.6449, abs=1e-4)
    crossed = torch.tensor([1.0, -1.0, 0.0]).view(1, 3)  # quantiles out of order are sorted
    out = Likelihood("quantile").decode(crossed, TargetTransform("none"))
    assert (float(out.lower), float(out.mean), float(out.upper)) == (-1.0, 0.0, 1.0)
    with pytest.raises(ModelConfigError, match=r"lack 0.05, 0.95"):
        Likelihood("quantile", (0.1, 0.5, 0.9))
    with pytest.raises(ModelConfigError, match="increasing"):
        Likelihood("quantile", (0.5, 0.05, 0.95))


def test_metrics_in_target_units_with_baseline_and_coverage():
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.uniform(0, 300, 1000), dtype=torch.float32)
    pred = y + torch.tensor(rng.normal(5, 10, 1000), dtype=torch.float32)
    out = RegressionOutput(pred, torch.full_like(pred, 10.0), pred - 16.45, pred + 16.45)
    m = RegressionMetrics(interval=0.9, baseline=150.0)
    assert m.compute() == {}  # nothing seen
    mask = torch.ones(1000, dtype=torch.bool)
    mask[:100] = False
    y_nan = y.clone()
    y_nan[:100] = float("nan")
    m.update(out, y_nan, mask)
    got = m.compute()
    err = (pred - y)[100:].double()
    assert got["rmse"] == pytest.approx(float(err.pow(2).mean().sqrt()), rel=1e-5)
    assert got["mae"] == pytest.approx(float(err.abs().mean()), rel=1e-5)
    assert got["bias"] == pytest.approx(float(err.mean()), rel=1e-4)
    ss = float(((y[100:] - y[100:].mean()) ** 2).sum())
    assert got["r2"] == pytest.approx(1 - float((err**2).sum()) / ss, rel=1e-4)
    assert got["baseline_rmse"] == pytest.approx(float((y[100:] - 150).pow(2).mean().sqrt()), rel=1e-5)
    inside = ((y >= out.lower) & (y <= out.upper))[100:].double().mean()
    assert got["coverage"] == pytest.approx(float(inside))


@pytest.mark.parametrize("kind", ["gaussian", "quantile"])
def test_a_fitted_head_gives_calibrated_90_percent_intervals(kind):
    """Heteroscedastic data (noise grows with x): the NLL / pinball fit covers about 90% of new targets."""
    torch.manual_seed(0)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, 1) * 4 - 2
        return x, (3 * x + (0.3 + 0.7 * (x + 2)) * torch.randn(n, 1)).squeeze(1)

    lik = Likelihood(kind)
    net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.GELU(), torch.nn.Linear(32, lik.channels))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = sample(4000)
    for _ in range(400):
        opt.zero_grad()
        lik.loss(net(x), y, torch.ones_like(y, dtype=torch.bool)).backward()
        opt.step()
    x, y = sample(20000)
    with torch.no_grad():
        out = lik.decode(net(x), TargetTransform("none"))
    inside = ((y >= out.lower) & (y <= out.upper)).float()
    narrow, wide = x.squeeze(1) < -1, x.squeeze(1) > 1
    print(f"{kind}: coverage {inside.mean():.3f}, mean width {(out.upper - out.lower).mean():.2f}")
    assert abs(float(inside.mean()) - 0.9) < 0.03
    assert float((out.upper - out.lower)[wide].mean()) > 2 * float((out.upper - out.lower)[narrow].mean())
