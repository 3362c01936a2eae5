"""Pixel time-series tables in memory: samples x dates x bands, with location, target and covariates.

Axis legend: ``N`` samples, ``T`` dates of one sensor group (per sample, padded), ``C`` bands, ``k`` the
neighbourhood edge in pixels (1: a single pixel), ``T'`` dates of the per-date covariates.

A :class:`PixelSeries` is what the three ways in produce and what the points store
(:mod:`~spectravlm.data.points.pointstore`) holds:

* numpy arrays: build :class:`SeriesGroup` and :class:`PixelSeries` directly;
* Parquet (long format, one row per sample and date): :func:`read_series_parquet` with
  :class:`SeriesColumns`;
* pixels of cube stores at points: :func:`spectravlm.data.points.sample.sample_cubes`.

Each sensor group has its own dates, per sample (S1 and S2 are acquired on different days; a table may have
an irregular, incomplete series per sample): ``times [N,T]`` padded with NaT, ``valid [N,T,k,k]`` False on
padding, missing values, nodata and clouds. Values keep their stored encoding with the unit, scale and offset
that make them physical (``values * scale + offset`` in ``units``), as in a cube store. Band names, sensors
and
units are checked against the catalogue; covariates and the target need their units.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spectravlm.data.points.table import canonical_target_units
from spectravlm.errors import IngestError, UnknownBandError, UnknownSensorError, UnknownUnitError
from spectravlm.sensors import canonical_unit, get_sensor


@dataclass
class SeriesGroup:
    """The series of one sensor group at every sample.

    Attributes:
        sensor: catalogue sensor name (any known spelling; stored canonical).
        bands: band names (any catalogue spelling; stored canonical).
        values: ``[N,T,C,k,k]`` stored values (``[N,T,C]`` is taken as ``k = 1``).
        times: ``[N,T]`` acquisition times (``datetime64``; NaT where padded).
        valid: ``[N,T,k,k]`` bool (``[N,T]`` for ``k = 1``); default: a date is present and every band finite.
        units: physical unit of ``values * scale + offset`` (``reflectance``, ``dB``, ``linear``).
        scale: see ``units``.
        offset: see ``units``.
        orbit: SAR orbit direction when known.
        nodata: stored value meaning "no observation" (invalid wherever a band equals it), or ``None``.

    """

    sensor: str
    bands: Sequence[str]
    values: np.ndarray
    times: np.ndarray
    valid: np.ndarray | None = None
    units: str = ""
    scale: float = 1.0
    offset: float = 0.0
    orbit: str | None = None
    nodata: float | None = None

    def __post_init__(self) -> None:
        try:
            sensor = get_sensor(self.sensor)
            self.sensor = sensor.name
            self.bands = sensor.canonical_names(self.bands)
        except (UnknownSensorError, UnknownBandError) as err:
            raise IngestError(str(err)) from None
        try:
            self.units = canonical_unit(self.units)
        except UnknownUnitError as err:
            raise IngestError(f"{self.sensor}: {err}") from None
        values = np.asarray(self.values)
        if values.ndim == 3:
            values = values[..., None, None]
        if values.ndim != 5 or values.shape[-1] != values.shape[-2]:
            raise IngestError(
                f"{self.sensor}: values must be [N,T,C] or [N,T,C,k,k], got shape "
                f"{np.asarray(self.values).shape}"
            )
        n, t, c, k, _ = values.shape
        if c != len(self.bands):
            raise IngestError(f"{self.sensor}: values have {c} bands, the band list {len(self.bands)}")
        times = np.asarray(self.times).astype("datetime64[s]")
        if times.shape != (n, t):
            raise IngestError(f"{self.sensor}: times must be [N,T]=({n},{t}), got {times.shape}")
        ok = np.ones((n, t, k, k), dtype=bool) if self.valid is None else np.asarray(self.valid, dtype=bool)
        if ok.ndim == 2:
            ok = ok[..., None, None]
        if ok.shape != (n, t, k, k):
            raise IngestError(f"{self.sensor}: valid must be [N,T,k,k]=({n},{t},{k},{k}), got {ok.shape}")
        ok = ok & ~np.isnat(times)[..., None, None]
        if np.issubdtype(values.dtype, np.floating):
            ok &= np.isfinite(values).all(axis=2)
        if self.nodata is not None:
            ok &= (values != self.nodata).all(axis=2)
        self.values, self.times, self.valid = values, times, ok
        self.scale, self.offset = float(self.scale), float(self.offset)

    @property
    def neighbourhood(self) -> int:
        """``k``, the neighbourhood edge in pixels."""
        return int(self.values.shape[-1])

    def take(self, index: np.ndarray) -> SeriesGroup:
        """The samples ``index``."""
        assert self.valid is not None
        return SeriesGroup(
            self.sensor, self.bands, self.values[index], self.times[index], self.valid[index], self.units,
            self.scale, self.offset, self.orbit, self.nodata,
        )  # fmt: skip


@dataclass
class Covariate:
    """A covariate: static ``[N]`` (elevation, slope) or per date ``[N,T']`` (temperature, precipitation).

    Attributes:
        values: the values (NaN where missing).
        units: their unit (``m``, ``degree``, ``degC``, ``mm``); required.
        long_name: a description.

    """

    values: np.ndarray
    units: str
    long_name: str = ""

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if not str(self.units).strip():
            raise IngestError(
                f"covariate {self.long_name or '(unnamed)'}: its unit is not given (m, degree, degC, mm, "
                "1, ...)"
            )


@dataclass
class PixelSeries:
    """Pixel time series at ``N`` samples (see the module docstring).

    Attributes:
        groups: per sensor group name, its :class:`SeriesGroup`.
        x: ``[N]`` sample location, first coordinate (longitude, easting, or pixel column + 0.5).
        y: ``[N]`` second coordinate.
        crs_wkt: CRS of ``x``/``y`` (``None``: pixel coordinates of a store without a CRS, or unknown).
        ids: ``[N]`` sample identifiers (strings).
        target: ``[N]`` target values (NaN where none), or ``None`` for unlabelled samples.
        target_name: the target's name (``agb``).
        target_units: its unit (``t/ha``).
        target_se: ``[N]`` standard errors of the target (NaN: unknown), or ``None``.
        static: static covariates ``{name: Covariate [N]}``.
        dynamic: per-date covariates ``{name: Covariate [N,T']}`` on ``dynamic_times``.
        dynamic_times: ``[N,T']`` dates of the per-date covariates (NaT where padded), or ``None``.
        source: provenance.

    """

    groups: dict[str, SeriesGroup]
    x: np.ndarray
    y: np.ndarray
    crs_wkt: str | None = None
    ids: np.ndarray | None = None
    target: np.ndarray | None = None
    target_name: str = "target"
    target_units: str = ""
    target_se: np.ndarray | None = None
    static: dict[str, Covariate] = field(default_factory=dict)
    dynamic: dict[str, Covariate] = field(default_factory=dict)
    dynamic_times: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not self.groups:
            raise IngestError("a pixel series needs at least one sensor group")
        n = self.n_samples
        for g, s in self.groups.items():
            if s.values.shape[0] != n:
                raise IngestError(f"group {g!r} has {s.values.shape[0]} samples, group {self._first} has {n}")
        ks = {s.neighbourhood for s in self.groups.values()}
        if len(ks) > 1:
            raise IngestError(f"sensor groups have different neighbourhoods {sorted(ks)}")
        self.x = np.asarray(self.x, dtype=np.float64)
        self.y = np.asarray(self.y, dtype=np.float64)
        if self.x.shape != (n,) or self.y.shape != (n,):
            raise IngestError(f"x and y must be [N]=({n},), got {self.x.shape} and {self.y.shape}")
        self.ids = np.array(
            [str(i) for i in (range(n) if self.ids is None else np.asarray(self.ids).tolist())]
        )
        if self.ids.shape != (n,):
            raise IngestError(f"ids must be [N]=({n},), got {self.ids.shape}")
        if self.target is not None:
            self.target = np.asarray(self.target, dtype=np.float32)
            self.target_units = canonical_target_units(self.target_units, f"target {self.target_name!r}")
            if self.target.shape != (n,):
                raise IngestError(f"target must be [N]=({n},), got {self.target.shape}")
        if self.target_se is not None:
            self.target_se = np.asarray(self.target_se, dtype=np.float32)
        for name, cov in self.static.items():
            if cov.values.shape != (n,):
                raise IngestError(f"static covariate {name!r} must be [N]=({n},), got {cov.values.shape}")
        if self.dynamic:
            if self.dynamic_times is None:
                raise IngestError(
                    f"per-date covariates {list(self.dynamic)} need their dates (dynamic_times)"
                )
            self.dynamic_times = np.asarray(self.dynamic_times).astype("datetime64[s]")
            for name, cov in self.dynamic.items():
                if cov.values.shape != self.dynamic_times.shape or cov.values.shape[0] != n:
                    raise IngestError(
                        f"per-date covariate {name!r} must be [N,T']={self.dynamic_times.shape}, got "
                        f"{cov.values.shape}"
                    )

    @property
    def _first(self) -> str:
        return next(iter(self.groups))

    @property
    def n_samples(self) -> int:
        """``N``."""
        return int(next(iter(self.groups.values())).values.shape[0])

    @property
    def neighbourhood(self) -> int:
        """``k``: the neighbourhood edge in pixels (1: single pixels)."""
        return next(iter(self.groups.values())).neighbourhood

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        groups = ", ".join(
            f"{g}: {s.sensor} T={s.values.shape[1]} C={len(s.bands)}" for g, s in self.groups.items()
        )
        target = "" if self.target is None else f", target {self.target_name} [{self.target_units}]"
        return (
            f"PixelSeries(N={self.n_samples}, {self.neighbourhood}x{self.neighbourhood} px, "
            f"{groups}{target}, "
            f"static {list(self.static)}, per-date {list(self.dynamic)})"
        )

    def take(self, index: np.ndarray) -> PixelSeries:
        """The samples ``index`` (a split)."""
        index = np.asarray(index)
        return PixelSeries(
            groups={g: s.take(index) for g, s in self.groups.items()},
            x=self.x[index],
            y=self.y[index],
            crs_wkt=self.crs_wkt,
            ids=None if self.ids is None else self.ids[index],
            target=None if self.target is None else self.target[index],
            target_name=self.target_name,
            target_units=self.target_units,
            target_se=None if self.target_se is None else self.target_se[index],
            static={k: Covariate(v.values[index], v.units, v.long_name) for k, v in self.static.items()},
            dynamic={k: Covariate(v.values[index], v.units, v.long_name) for k, v in self.dynamic.items()},
            dynamic_times=None if self.dynamic_times is None else self.dynamic_times[index],
            source=self.source,
        )


# --------------------------------------------------------------------------------------------------
# Parquet (long format)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesColumns:
    """What the columns of a long-format pixel time-series table mean (one row per sample and date).

    Band columns are named ``<group>_<band>`` (``s2_B02``, ``s1_VV``); each group's sensor and units are given
    here. Columns of a sample that do not change with the date (location, target, static covariates) must hold
    one value per sample.

    Attributes:
        sensors: ``{group: catalogue sensor}`` (``{"s2": "sentinel2_l2a", "s1": "sentinel1_grd"}``).
        units: ``{group: unit}`` of the band values (``reflectance``, ``dB``, ``linear``).
        sample: the sample-id column.
        date: the date column.
        date_format: ``strptime`` format of ``date`` (``None``: ISO 8601).
        x: first-coordinate column (with ``crs``), or ``None`` for longitude/latitude columns by name.
        y: second-coordinate column.
        crs: CRS of ``x``/``y``; ``"pixel"`` for a store's pixel coordinates.
        target: the target column, or ``None``.
        target_units: its unit (required with ``target``).
        target_se: its standard-error column, or ``None``.
        static: ``{column: unit}`` of static covariates.
        dynamic: ``{column: unit}`` of per-date covariates.
        scale: ``{group: scale}`` where the stored values are not physical (default 1).
        offset: ``{group: offset}`` (default 0).

    """

    sensors: Mapping[str, str]
    units: Mapping[str, str]
    sample: str = "sample"
    date: str = "date"
    date_format: str | None = None
    x: str | None = None
    y: str | None = None
    crs: str | None = None
    target: str | None = None
    target_units: str = ""
    target_se: str | None = None
    static: Mapping[str, str] = field(default_factory=dict)
    dynamic: Mapping[str, str] = field(default_factory=dict)
    scale: Mapping[str, float] = field(default_factory=dict)
    offset: Mapping[str, float] = field(default_factory=dict)


def _positions(sample_codes: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Position of each row within its sample (rows sorted by sample then date) and the longest sample."""
    counts = np.bincount(sample_codes, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(sample_codes)) - starts[sample_codes]
    return pos, int(counts.max()) if len(counts) else 0


def read_series_parquet(path: str | os.PathLike[str], columns: SeriesColumns) -> PixelSeries:
    """Read a long-format pixel time-series table (Parquet or CSV) into a :class:`PixelSeries`.

    Rows are grouped by sample and sorted by date; a group's dates at a sample are the rows where any of
    its bands has a value (so S1 and S2 rows of other days may alternate), padded to the longest series.

    Raises:
        IngestError: a missing column, a band not in the sensor's catalogue, dates that do not parse, a
            per-sample column that changes within a sample, a missing unit (naming the file and column).

    """
    import pandas as pd

    from spectravlm.data.points.readers import PointColumns, _dates, _numbers, _table_xy

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as err:  # pyarrow/pandas raise their own types on unreadable files
        raise IngestError(f"{path}: cannot read it as a table: {err}") from err
    for col in (columns.sample, columns.date):
        if col not in frame.columns:
            raise IngestError(
                f"{path}: no column {col!r}; the table's columns: {', '.join(map(str, frame.columns))}"
            )
    frame = frame.assign(_date=_dates(frame, columns.date, columns.date_format, path))
    if frame["_date"].isna().any():
        raise IngestError(f"{path}: column {columns.date!r} has empty dates; every row needs its date")
    frame = frame.sort_values([columns.sample, "_date"], kind="stable").reset_index(drop=True)
    codes, ids = pd.factorize(frame[columns.sample], sort=False)
    n = len(ids)

    groups: dict[str, SeriesGroup] = {}
    for g, sensor_name in columns.sensors.items():
        prefix = f"{g}_"
        band_cols = [c for c in frame.columns if str(c).startswith(prefix)]
        if not band_cols:
            raise IngestError(
                f"{path}: no band columns for group {g!r} (expected columns named {prefix}<band>)"
            )
        try:
            sensor = get_sensor(sensor_name)
        except UnknownSensorError as err:
            raise IngestError(f"{path}: group {g!r}: {err}") from None
        bands = []
        for c in band_cols:
            try:
                bands.append(sensor.canonical_name(str(c)[len(prefix) :]))
            except UnknownBandError as err:
                raise IngestError(f"{path}: column {c!r}: {err}") from None
        if g not in columns.units:
            raise IngestError(f"{path}: the units of group {g!r} are not given (reflectance, dB, linear)")
        vals = np.stack([_numbers(frame, c, path, f"{g} band values") for c in band_cols], axis=1)
        present = np.isfinite(vals).any(axis=1)
        sub_codes = codes[present]
        pos, t = _positions(sub_codes, n)
        values = np.full((n, max(t, 1), len(bands)), np.nan, dtype=np.float32)
        times = np.full((n, max(t, 1)), "NaT", dtype="datetime64[s]")
        values[sub_codes, pos] = vals[present]
        times[sub_codes, pos] = frame["_date"].to_numpy()[present]
        groups[g] = SeriesGroup(
            sensor=sensor.name,
            bands=bands,
            values=values,
            times=times,
            units=columns.units[g],
            scale=columns.scale.get(g, 1.0),
            offset=columns.offset.get(g, 0.0),
        )

    def per_sample(col: str, what: str) -> np.ndarray:
        v = _numbers(frame, col, path, what)
        seen = pd.Series(v).groupby(codes).nunique(dropna=True)
        if (seen > 1).any():
            bad = ids[int(seen.index[seen > 1][0])]
            raise IngestError(
                f"{path}: column {col!r} ({what}) changes within sample {bad!r}; it must hold one value "
                "per sample"
            )
        return pd.Series(v).groupby(codes).first().to_numpy(dtype=np.float64)

    coords = PointColumns(value=columns.sample, units="1", x=columns.x, y=columns.y, crs=columns.crs)
    xs, ys, crs_wkt = _table_xy(frame, path, coords)
    x = pd.Series(xs).groupby(codes).first().to_numpy()
    y = pd.Series(ys).groupby(codes).first().to_numpy()
    target = per_sample(columns.target, "target") if columns.target else None
    target_se = per_sample(columns.target_se, "target standard errors") if columns.target_se else None
    static = {
        name: Covariate(per_sample(name, f"static covariate in {units}"), units, name)
        for name, units in columns.static.items()
    }
    dynamic: dict[str, Covariate] = {}
    dynamic_times = None
    if columns.dynamic:
        vals = np.stack([_numbers(frame, c, path, "per-date covariate") for c in columns.dynamic], axis=1)
        present = np.isfinite(vals).any(axis=1)
        pos, t = _positions(codes[present], n)
        dyn = np.full((n, max(t, 1), len(columns.dynamic)), np.nan, dtype=np.float32)
        dynamic_times = np.full((n, max(t, 1)), "NaT", dtype="datetime64[s]")
        dyn[codes[present], pos] = vals[present]
        dynamic_times[codes[present], pos] = frame["_date"].to_numpy()[present]
        dynamic = {
            name: Covariate(dyn[..., i], units, name)
            for i, (name, units) in enumerate(columns.dynamic.items())
        }
    return PixelSeries(
        groups=groups,
        x=x,
        y=y,
        crs_wkt=crs_wkt,
        ids=np.asarray(ids).astype(str),
        target=target,
        target_name=columns.target or "target",
        target_units=columns.target_units if columns.target else "",
        target_se=target_se,
        static=static,
        dynamic=dynamic,
        dynamic_times=dynamic_times,
        source=f"table {path}",
    )


__all__ = ["Covariate", "PixelSeries", "SeriesColumns", "SeriesGroup", "read_series_parquet"]
