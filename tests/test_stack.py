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


def test_shape_checks():
    with pytest.raises(DataConfigError, match="channels"):
        SensorSeries("s2", ("B02",), torch.zeros(1, 1, 2, 4, 4), torch.zeros(1, 1), torch.ones(1, 1, 4, 4))
    with pytest.raises(DataConfigError, match="share"):
        SensorStack(series={"s2": _sample(2, 0)["s2"]}, targets={"agb": torch.zeros(1, 5, 5)})
    with pytest.raises(DataConfigError, match="not in this batch"):
        _sample(2, 0)["s1"]
