import datetime as dt

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spectravlm.encoders.temporal.dates import DateEncoding, day_of_year, days_since_epoch, sequence_reference
from spectravlm.errors import ModelConfigError

EPOCH = dt.date(1970, 1, 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-719_000, max_value=2_900_000), min_size=1, max_size=50))
def test_day_of_year_matches_the_calendar(days):
    doy, length = day_of_year(torch.tensor(days))
    for d, got, n in zip(days, doy.tolist(), length.tolist(), strict=True):
        date = EPOCH + dt.timedelta(days=d)
        assert got == date.timetuple().tm_yday - 1
        assert n == (366 if (date.year % 4 == 0 and date.year % 100 != 0) or date.year % 400 == 0 else 365)


def test_day_of_year_edges():
    days = days_since_epoch(
        ["2020-01-01", "2020-02-29", "2020-03-01", "2020-12-31", "2021-12-31", "1969-12-31"]
    )
    doy, length = day_of_year(days)
    assert doy.tolist() == [0, 59, 60, 365, 364, 364]
    assert length.tolist() == [366, 366, 366, 366, 365, 365]


def test_days_since_epoch_accepts_dates_strings_and_datetime64():
    got = days_since_epoch(
        [
            dt.date(2020, 7, 1),
            "2020-07-01T10:00",
            np.datetime64("2020-07-01T23:59"),
            dt.datetime(2020, 7, 1, 5),
        ]
    )
    assert got.tolist() == [18444] * 4
    with pytest.raises(ModelConfigError, match="as a date"):
        days_since_epoch([3.5])  # type: ignore[list-item]


def test_sequence_reference_ignores_invalid_dates():
    times = torch.tensor([[19000, 18000, 19100], [5, 6, 7]])
    valid = torch.tensor([[True, False, True], [False, False, False]])
    assert sequence_reference(times, valid).tolist() == [19000, 0]
    assert sequence_reference(times).tolist() == [18000, 5]


def test_encoding_uses_dates_not_positions():
    enc = DateEncoding(dim=8)
    a = torch.tensor([[18000, 18030, 18100]])
    b = torch.tensor([[18000, 18200, 18900]])  # same length and order, different dates
    assert not torch.allclose(enc(a), enc(b))
    # the same calendar day one year apart: same season features, different elapsed features
    f = enc.features(torch.tensor([[18262, 18262 + 366]]))  # 2020-01-01, 2021-01-01
    n_season = 2 * 3
    torch.testing.assert_close(f[0, 0, :n_season], f[0, 1, :n_season])
    assert not torch.allclose(f[0, 0, n_season:], f[0, 1, n_season:])


def test_sequence_origin_is_shift_invariant_in_elapsed_time():
    enc = DateEncoding(dim=8, doy_harmonics=0)
    times = torch.tensor([[18000, 18050, 18300]])
    torch.testing.assert_close(enc(times), enc(times + 365 * 3))
    epoch = DateEncoding(dim=8, doy_harmonics=0, elapsed_origin="epoch")
    assert not torch.allclose(epoch(times), epoch(times + 365 * 3))


def test_masked_date_does_not_move_the_reference():
    enc = DateEncoding(dim=8)
    times = torch.tensor([[18000, 18050, 18300]])
    valid = torch.tensor([[False, True, True]])
    moved = times.clone()
    moved[0, 0] = 10
    torch.testing.assert_close(enc(times, valid)[:, 1:], enc(moved, valid)[:, 1:], rtol=0, atol=0)


def test_bad_times_are_rejected():
    enc = DateEncoding(dim=4)
    with pytest.raises(ModelConfigError, match="integer days"):
        enc(torch.zeros(1, 3))
    with pytest.raises(ModelConfigError, match=r"\[B,T\]"):
        enc(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ModelConfigError, match="date mask"):
        enc(torch.zeros(1, 3, dtype=torch.int64), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ModelConfigError, match="min_period_days"):
        DateEncoding(dim=4, min_period_days=10, max_period_days=5)
