import pytest
import torch

from spectravlm.errors import DataConfigError
from spectravlm.stack import SensorSeries, SensorStack, collate_stacks


def _sample(t: int, seed: int) -> SensorStack:
    g = torch.Generator().manual_seed(seed)
    s2 = SensorSeries(
        sensor="s2",
        bands=("B2", "B3", "B4"),
        values=torch.rand(1, t, 3, 8, 8, generator=g),
        times=torch.arange(t).unsqueeze(0) * 30 + 19000,
        valid=torch.ones(1, t, 8, 8, dtype=torch.bool),
        units="reflectance",
        all_valid=True,
        finite=True,
    )
    return SensorStack(series={"s2": s2}, targets={"agb": torch.rand(1, 8, 8, generator=g)})


def test_collate_pads_time_and_masks_padding():
    batch = collate_stacks([_sample(3, 0), _sample(5, 1)])
    s2 = batch["s2"]
    assert s2.values.shape == (2, 5, 3, 8, 8)
    assert s2.bands == ("B02", "B03", "B04")
    assert s2.sensor == "sentinel2_l2a"  # short names are stored canonical
    assert s2.date_valid.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert (s2.values[0, 3:] == 0).all() and (s2.times[0, 3:] == 0).all()
    assert batch.targets["agb"].shape == (2, 8, 8)
    assert s2.all_valid is False and s2.finite  # padded dates are invalid
    assert collate_stacks([_sample(3, 0), _sample(3, 1)])["s2"].all_valid is True


def test_units_are_facts():
    from spectravlm.errors import UnknownUnitError

    s = _sample(2, 0)["s2"]
    assert SensorSeries(s.sensor, s.bands, s.values, s.times, s.valid, units="linear power").units == "linear"
    assert (
        SensorSeries(s.sensor, s.bands, s.values, s.times, s.valid, units="DN^2 (uncalibrated)").units == "DN"
    )
    with pytest.raises(UnknownUnitError, match="known units: reflectance, dB, linear, DN"):
        SensorSeries(s.sensor, s.bands, s.values, s.times, s.valid, units="raw")
    with pytest.raises(TypeError):  # no default unit: it must be stated
        SensorSeries(s.sensor, s.bands, s.values, s.times, s.valid)  # type: ignore[call-arg]
    with pytest.raises(DataConfigError, match="scale"):
        SensorSeries(s.sensor, s.bands, s.values, s.times, s.valid, units="reflectance", scale=0.0)
    other = SensorSeries(s.sensor, s.bands, s.values, s.times, s.valid, units="reflectance", scale=1e-4)
    with pytest.raises(DataConfigError, match="one batch holds one encoding"):
        collate_stacks([SensorStack({"s2": s}), SensorStack({"s2": other})])
    assert "SensorSeries(sentinel2_l2a, B=1 T=2 8x8 px" in repr(s) and "tensor(" not in repr(
        SensorStack({"s2": s})
    )


def test_shape_checks():
    with pytest.raises(DataConfigError, match="channels"):
        SensorSeries(
            "s2",
            ("B02",),
            torch.zeros(1, 1, 2, 4, 4),
            torch.zeros(1, 1),
            torch.ones(1, 1, 4, 4),
            "reflectance",
        )
    with pytest.raises(DataConfigError, match="share"):
        SensorStack(series={"s2": _sample(2, 0)["s2"]}, targets={"agb": torch.zeros(1, 5, 5)})
    with pytest.raises(DataConfigError, match="not in this batch"):
        _sample(2, 0)["s1"]
