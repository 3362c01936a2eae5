"""Date encoding from acquisition times: cyclic day of year plus elapsed time, never sequence index.

Satellite time series are irregular: Sentinel-1 and Sentinel-2 revisit on different days, S2 dates are
lost to clouds, and two sequences of the same length can span a month or three years. A position index
(``0, 1, 2, ...``) throws that away, so every temporal encoder of the library encodes the acquisition
*date* instead, with two kinds of features:

* **season**: the phase of the calendar year, ``doy / days_in_year``, as ``sin``/``cos`` of its first
  ``doy_harmonics`` harmonics (as Presto encodes the month, and as U-TAE's L-TAE feeds the day offset
  instead of the index);
* **elapsed time**: days since a reference date, as ``sin``/``cos`` at geometrically spaced periods
  between ``min_period_days`` and ``max_period_days`` (the transformer sinusoid, with days as positions,
  as in the original L-TAE with ``T = 1000``).

The reference is, by default, the first *valid* date of each sample (``elapsed_origin="sequence"``), so the
encoding depends only on dates that are observed: a masked or padded date cannot move it, and reordering
the dates does not change it. With ``elapsed_origin="epoch"`` the elapsed time is counted from a fixed
day (``epoch_day``), for models that should know the absolute time.

The features are mapped to the model width by one learned linear layer.

Times are ``int64`` whole days since 1970-01-01 (see :mod:`spectravlm.stack`).

References:
    * Garnot & Landrieu, "Lightweight Temporal Self-Attention for Classifying Satellite Image Time
      Series", 2020. https://arxiv.org/abs/2007.00586
    * Garnot & Landrieu, "Panoptic Segmentation of Satellite Image Time Series with Convolutional
      Temporal Attention Networks" (U-TAE: L-TAE with acquisition-day positions), 2021.
      https://arxiv.org/abs/2107.07933
    * Tseng et al., "Lightweight, Pre-trained Transformers for Remote Sensing Timeseries" (Presto), 2023.
      https://arxiv.org/abs/2304.14065

Example:
    >>> import torch
    >>> from spectravlm.encoders.temporal.dates import DateEncoding, days_since_epoch
    >>> times = days_since_epoch(["2020-01-01", "2020-07-01"]).unsqueeze(0)  # [B=1, T=2]
    >>> DateEncoding(dim=16)(times).shape
    torch.Size([1, 2, 16])

"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError

ElapsedOrigin = Literal["sequence", "epoch"]

_EPOCH = dt.date(1970, 1, 1)


def days_since_epoch(dates: Sequence[dt.date | str | np.datetime64]) -> Tensor:
    """Convert dates to the library's time unit: ``int64`` whole days since 1970-01-01.

    Args:
        dates: ``datetime.date``/``datetime.datetime`` objects, ISO strings (``"2020-07-01"``) or
            ``numpy.datetime64`` values (a time of day is dropped).

    Returns:
        ``[len(dates)]`` int64 tensor.

    """
    days = []
    for d in dates:
        if isinstance(d, np.datetime64):
            days.append(int(d.astype("datetime64[D]").astype(np.int64)))
        elif isinstance(d, str):
            days.append((dt.date.fromisoformat(d[:10]) - _EPOCH).days)
        elif isinstance(d, dt.datetime):
            days.append((d.date() - _EPOCH).days)
        elif isinstance(d, dt.date):
            days.append((d - _EPOCH).days)
        else:
            raise ModelConfigError(
                f"cannot read {d!r} as a date; expected datetime.date, ISO string or datetime64"
            )
    return torch.tensor(days, dtype=torch.int64)


def day_of_year(days: Tensor) -> tuple[Tensor, Tensor]:
    """Calendar day of year and year length of dates given as days since 1970-01-01.

    Integer arithmetic of H. Hinnant's ``civil_from_days`` (proleptic Gregorian calendar, exact for any
    int64 day), written with tensor ops so that it runs on the device of ``days``.
    https://howardhinnant.github.io/date_algorithms.html#civil_from_days

    Args:
        days: integer tensor of any shape, days since 1970-01-01.

    Returns:
        ``(doy, year_length)``: 0-based day of year (1 January is 0) and 365 or 366, same shape as ``days``.

    """
    z = days.to(torch.int64) + 719468  # days since 0000-03-01
    era = torch.div(z, 146097, rounding_mode="floor")
    doe = z - era * 146097  # day of the 400-year era, [0, 146096]
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365  # year of era, [0, 399]
    doy_march = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of a year that starts on 1 March
    year = yoe + era * 400  # civil year of March..December; January/February belong to year + 1
    jan_feb = doy_march >= 306
    civil_year = year + jan_feb.to(torch.int64)
    leap = ((civil_year % 4 == 0) & (civil_year % 100 != 0)) | (civil_year % 400 == 0)
    leap_i = leap.to(torch.int64)
    doy = torch.where(jan_feb, doy_march - 306, doy_march + 59 + leap_i)
    return doy, 365 + leap_i


def sequence_reference(times: Tensor, valid: Tensor | None = None) -> Tensor:
    """First valid date of each sample, ``[B]`` int64 (0 for a sample with no valid date).

    Args:
        times: ``[B,T]`` int64 days since 1970-01-01.
        valid: ``[B,T]`` bool, True for observed dates; ``None`` means every date is observed.

    """
    if valid is None:
        return times.amin(dim=1)
    big = torch.iinfo(torch.int64).max
    first = torch.where(valid, times, torch.full_like(times, big)).amin(dim=1)
    return torch.where(valid.any(dim=1), first, torch.zeros_like(first))


class DateEncoding(nn.Module):
    """Encode acquisition dates ``[B,T]`` into ``[B,T,dim]`` vectors (season + elapsed time).

    Args:
        dim: output width (the model width the encoding is added to).
        doy_harmonics: harmonics of the yearly cycle; 1 gives (sin, cos) of the year phase.
        elapsed_frequencies: sinusoid frequencies of the elapsed time (each gives a sin and a cos).
        min_period_days: shortest period of the elapsed-time sinusoids, in days (finest resolution).
        max_period_days: longest period, in days; elapsed times well below it are encoded monotonically.
        elapsed_origin: ``"sequence"``: elapsed days since the first valid date of each sample;
            ``"epoch"``: since ``epoch_day``.
        epoch_day: the fixed origin for ``elapsed_origin="epoch"``, days since 1970-01-01
            (default 16436 = 2015-01-01, before the first Sentinel-2 image).

    """

    def __init__(
        self,
        dim: int,
        doy_harmonics: int = 3,
        elapsed_frequencies: int = 8,
        min_period_days: float = 4.0,
        max_period_days: float = 4000.0,
        elapsed_origin: ElapsedOrigin = "sequence",
        epoch_day: int = 16436,
    ) -> None:
        super().__init__()
        n_features = doy_harmonics + elapsed_frequencies
        if dim < 1 or doy_harmonics < 0 or elapsed_frequencies < 0 or n_features == 0:
            raise ModelConfigError(
                f"DateEncoding needs dim >= 1 and at least one feature; got dim={dim}, "
                f"doy_harmonics={doy_harmonics}, elapsed_frequencies={elapsed_frequencies}"
            )
        if not 0 < min_period_days <= max_period_days:
            raise ModelConfigError(
                f"need 0 < min_period_days <= max_period_days, got {min_period_days}, {max_period_days}"
            )
        if elapsed_origin not in ("sequence", "epoch"):
            raise ModelConfigError(f"elapsed_origin must be 'sequence' or 'epoch', got {elapsed_origin!r}")
        self.elapsed_omega: Tensor
        self.doy_harmonic: Tensor
        self.dim = dim
        self.elapsed_origin: ElapsedOrigin = elapsed_origin
        self.epoch_day = epoch_day
        # angular frequencies (radians/day), geometric between 2π/max_period and 2π/min_period
        if elapsed_frequencies > 1:
            log_max, log_min = math.log10(max_period_days), math.log10(min_period_days)
            periods = torch.logspace(log_max, log_min, elapsed_frequencies, dtype=torch.float64)
        else:
            periods = torch.full((elapsed_frequencies,), max_period_days, dtype=torch.float64)
        self.register_buffer("elapsed_omega", (2 * math.pi / periods).float(), persistent=False)
        self.register_buffer(
            "doy_harmonic", torch.arange(1, doy_harmonics + 1, dtype=torch.float32), persistent=False
        )
        self.num_features = 2 * (doy_harmonics + elapsed_frequencies)
        self.proj = nn.Linear(self.num_features, dim)

    def features(self, times: Tensor, valid: Tensor | None = None, reference: Tensor | None = None) -> Tensor:
        """Return the fixed Fourier features ``[B,T,F]`` before the learned projection.

        Args:
            times: ``[B,T]`` integer days since 1970-01-01.
            valid: ``[B,T]`` bool observed dates (only used to find the reference date).
            reference: ``[B]`` days to count elapsed time from; overrides ``elapsed_origin``. A model
                that encodes several sensors separately passes one shared reference here.

        """
        check_times(times, valid)
        doy, year_length = day_of_year(times)
        phase = (doy.to(torch.float32) / year_length.to(torch.float32)).unsqueeze(-1)  # [B,T,1] in [0,1)
        season = 2 * math.pi * phase * self.doy_harmonic  # [B,T,H]
        if reference is None:
            if self.elapsed_origin == "sequence":
                reference = sequence_reference(times, valid)
            else:
                reference = torch.full_like(times[:, 0], self.epoch_day)
        elapsed = (times - reference.to(times.dtype).unsqueeze(1)).to(torch.float32).unsqueeze(-1)  # [B,T,1]
        angle = elapsed * self.elapsed_omega  # [B,T,E]
        return torch.cat([season.sin(), season.cos(), angle.sin(), angle.cos()], dim=-1)

    def forward(self, times: Tensor, valid: Tensor | None = None, reference: Tensor | None = None) -> Tensor:
        """Encode dates.

        Args:
            times: ``[B,T]`` integer days since 1970-01-01.
            valid: ``[B,T]`` bool observed dates, used only to pick the reference date; encodings of
                unobserved dates are computed too (the caller masks them).
            reference: optional ``[B]`` reference days (see :meth:`features`).

        Returns:
            ``[B,T,dim]`` float tensor.

        """
        feats = self.features(times, valid, reference).to(self.proj.weight.dtype)
        out: Tensor = self.proj(feats)
        return out


def check_times(times: Tensor, valid: Tensor | None = None) -> None:
    """Raise :class:`ModelConfigError` unless ``times`` is ``[B,T]`` integer days and ``valid`` matches it."""
    if times.ndim != 2:
        raise ModelConfigError(f"times must be [B,T] days since 1970-01-01, got shape {tuple(times.shape)}")
    if times.is_floating_point() or times.dtype == torch.bool:
        raise ModelConfigError(
            f"times must be integer days since 1970-01-01 (int64), got dtype {times.dtype}; "
            "use spectravlm.encoders.temporal.dates.days_since_epoch to convert dates"
        )
    if valid is not None and (valid.shape != times.shape or valid.dtype != torch.bool):
        raise ModelConfigError(
            f"date mask must be bool [B,T]={tuple(times.shape)}, got {valid.dtype} {tuple(valid.shape)}"
        )
