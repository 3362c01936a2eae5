"""Masking strategies: how many units are hidden, what a unit is, invalid tokens, determinism, bad input."""

from __future__ import annotations

import pytest
import torch

from spectravlm.errors import ModelConfigError
from spectravlm.pretraining.masking import choose_hidden, hide_units


def _layout(b: int = 3, dates: tuple[int, int] = (4, 6), groups: int = 1, patches: int = 5):
    """Two streams (sensor ids 0 and 2): tokens ordered (t g l) per stream, as the tokenizers emit them."""
    date, group, stream, sensor = [], [], [], []
    for s, t_n in enumerate(dates):
        for t in range(t_n):
            for g in range(groups):
                for _ in range(patches):
                    date.append(t)
                    group.append(g)
                    stream.append(s)
                    sensor.append(2 * s)
    n = len(date)
    as_bn = lambda v: torch.tensor(v).view(1, n).expand(b, n).clone()  # noqa: E731
    return as_bn(date), as_bn(group), torch.tensor(stream), as_bn(sensor), n


def test_random_hides_floor_share_of_valid_tokens_only():
    date, group, stream, sensor, n = _layout()
    valid = torch.ones(3, n, dtype=torch.bool)
    valid[1, :20] = False  # sample 1 has 30 valid tokens
    valid[2, :] = False
    valid[2, 7] = True  # sample 2 has one valid token: it stays visible
    hidden = choose_hidden(
        "random", 0.75, valid, date, group, stream, sensor, torch.Generator().manual_seed(0)
    )
    assert not bool((hidden & ~valid).any())
    visible = (valid & ~hidden).sum(1).tolist()
    assert visible == [int(50 * 0.25), int(30 * 0.25), 1]
    again = choose_hidden(
        "random", 0.75, valid, date, group, stream, sensor, torch.Generator().manual_seed(0)
    )
    other = choose_hidden(
        "random", 0.75, valid, date, group, stream, sensor, torch.Generator().manual_seed(1)
    )
    assert torch.equal(hidden, again) and not torch.equal(hidden, other)


def test_dates_hide_whole_dates_of_each_stream():
    date, group, stream, sensor, n = _layout()
    valid = torch.ones(3, n, dtype=torch.bool)
    hidden = choose_hidden("dates", 0.5, valid, date, group, stream, sensor, torch.Generator().manual_seed(3))
    for b in range(3):
        units = {}
        for i in range(n):
            units.setdefault((int(stream[i]), int(date[b, i])), set()).add(bool(hidden[b, i]))
        assert all(len(v) == 1 for v in units.values())  # a date is hidden entirely or not at all
        assert sum(v == {True} for v in units.values()) == 10 - int(10 * 0.5)  # 10 dates in all


def test_bands_hide_whole_spectral_groups():
    date, group, stream, sensor, n = _layout(groups=3)
    valid = torch.ones(3, n, dtype=torch.bool)
    hidden = choose_hidden("bands", 0.5, valid, date, group, stream, sensor, torch.Generator().manual_seed(0))
    for b in range(3):
        per_unit = {}
        for i in range(n):
            per_unit.setdefault((int(stream[i]), int(group[b, i])), set()).add(bool(hidden[b, i]))
        assert all(len(v) == 1 for v in per_unit.values())
        assert sum(v == {True} for v in per_unit.values()) == 6 - 3


def test_sensor_hides_one_whole_sensor_and_a_ratio_of_the_other():
    date, group, stream, sensor, n = _layout(b=16)
    valid = torch.ones(16, n, dtype=torch.bool)
    valid[0, stream == 1] = False  # sample 0 has one sensor only: masked at random, never wholly
    hidden = choose_hidden(
        "sensor", 0.5, valid, date, group, stream, sensor, torch.Generator().manual_seed(0)
    )
    hidden_sensor = []
    for b in range(1, 16):
        whole = [s for s in (0, 1) if bool(hidden[b, stream == s].all())]
        assert len(whole) == 1
        kept = stream != whole[0]
        assert int((~hidden[b, kept]).sum()) == int(int(kept.sum()) * 0.5)
        hidden_sensor.append(whole[0])
    assert set(hidden_sensor) == {0, 1}  # either sensor is hidden, at random
    assert int((valid[0] & ~hidden[0]).sum()) == int(20 * 0.5)


def test_ratio_zero_hides_nothing_and_bad_settings_are_refused():
    date, group, stream, sensor, n = _layout()
    valid = torch.ones(3, n, dtype=torch.bool)
    assert not bool(choose_hidden("random", 0.0, valid, date, group, stream, sensor).any())
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ModelConfigError, match=r"mask_ratio must be in \[0, 1\)"):
            choose_hidden("random", ratio, valid, date, group, stream, sensor)
    with pytest.raises(ModelConfigError, match="mask_strategy must be one of random, bands, dates, sensor"):
        choose_hidden("pixels", 0.5, valid, date, group, stream, sensor)  # type: ignore[arg-type]
    assert not bool(hide_units(torch.full((2, 5), -1), 0.5).any())  # no valid unit at all
