"""Target transforms: inverse of forward, training-split statistics, NaN kept, quantiles map exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectravlm.errors import ModelConfigError
from spectravlm.heads.targets import KINDS, TargetTransform, fit_statistics, target_units


@pytest.mark.parametrize("kind", KINDS)
def test_inverse_undoes_forward_and_nan_stays_nan(kind):
    values = np.array([0.0, 3.5, 40.0, 120.0, 380.0, np.nan])
    mean, std = fit_statistics(values, kind)
    t = TargetTransform(kind, mean, std)
    y = torch.tensor(values, dtype=torch.float32)
    z = t(y)
    assert torch.isnan(z[-1]) and torch.isfinite(z[:-1]).all()
    torch.testing.assert_close(t.inverse(z)[:-1], y[:-1], rtol=1e-5, atol=1e-3)
    if kind.endswith("standardise"):  # standardised training values: mean 0, std 1
        assert abs(float(z[:-1].mean())) < 1e-5 and abs(float(z[:-1].std(unbiased=False)) - 1) < 1e-5


def test_statistics_in_the_transformed_domain_and_errors():
    values = np.array([0.0, np.e - 1, np.e**2 - 1])
    mean, std = fit_statistics(values, "log1p_standardise")
    assert mean == pytest.approx(1.0) and std == pytest.approx(np.std([0, 1, 2]))
    assert fit_statistics(values, "standardise")[0] == pytest.approx(values.mean())
    with pytest.raises(ModelConfigError, match="no finite target value"):
        fit_statistics(np.array([np.nan, np.inf]), "standardise")
    with pytest.raises(ModelConfigError, match="constant"):
        fit_statistics(np.array([5.0, 5.0]), "standardise")
    with pytest.raises(ModelConfigError, match="target_transform must be one of"):
        TargetTransform("sqrt")  # type: ignore[arg-type]


def test_log_transform_maps_quantiles_exactly_and_statistics_are_buffers():
    t = TargetTransform("log1p_standardise", 4.0, 1.5)
    z = torch.tensor([-1.645, 0.0, 1.645])
    y = t.inverse(z)
    assert bool((y[1:] > y[:-1]).all())  # monotone: bounds stay bounds
    torch.testing.assert_close(y[1], torch.expm1(torch.tensor(4.0)))
    state = t.state_dict()
    assert float(state["loc"]) == 4.0 and float(state["scale"]) == 1.5
    assert torch.isfinite(t.inverse(torch.tensor([1e6]))).all()  # no overflow to inf


def test_target_units_are_facts():
    assert target_units("agb", "Mg/ha", "s.zarr") == "t/ha" == target_units("agb", "t ha-1", "s.zarr")
    assert target_units("height", "m", "s.zarr") == "m"
    with pytest.raises(ModelConfigError, match=r"s\.zarr/targets/agb: target 'agb' has no units attribute"):
        target_units("agb", "", "s.zarr/targets/agb")
    with pytest.raises(
        ModelConfigError, match=r"unknown units 'tonnes per acre'; known: 1, m, percent, t/ha"
    ):
        target_units("agb", "tonnes per acre", "s.zarr")
    with pytest.raises(ModelConfigError, match="biomass density but its units are 'm'; expected t/ha"):
        target_units("agb", "m", "s.zarr")
