"""Per-band statistics over the valid pixels of a sensor group, in one streaming pass.

:class:`StatsAccumulator` takes the raw values of one chunk (or any slab) at a time and keeps, per band,
the count, the mean and the sum of squared deviations (combined chunk by chunk with Chan et al.'s
parallel update, in float64), the exact minimum and maximum, and a histogram from which the percentiles
come:

* integer data of at most 16 bits (uint8/uint16/int16: S2 digital numbers) get one bin per integer
  value, so the percentiles are exact;
* float data (SAR dB, linear power) get :data:`FLOAT_BINS` bins over a range that grows as values
  arrive: when a value falls outside the current range, the range doubles and pairs of bins merge
  (exactly), so one pass suffices and a percentile is within ``(max - min) / FLOAT_BINS`` of the exact
  value.

The same accumulator serves ``spectravlm data stats`` (one pass over an existing store's chunks) and the
ingests (fed the arrays already in memory while they are written, so no second pass reads the store).

A pixel is valid when no band holds the nodata value, every band is finite, its cloud probability (when
the group has a cloud layer) is below ``cloud_threshold``, and its quality mask (when the group has a
``mask`` layer, e.g. derived from Sentinel-2 SCL classes) is 0. Results go into the group attribute
``stats`` in **raw** stored units. Groups whose units are SAR linear power also get ``stats_db``: the same
statistics of ``10 * log10(physical)`` over valid pixels with a positive physical value, because the
encoder normalises SAR in dB. :func:`normalisation_stats` turns either into ``(count, mean, std)`` in the
encoder's domain (reflectance for optical bands, dB for SAR).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm

from spectravlm.data.store import CubeStore, SensorGroup, StoreTransaction, canonical_units
from spectravlm.errors import DataConfigError, StoreError

PERCENTILES = (1, 2, 50, 98, 99)
FLOAT_BINS = 1 << 16
"""Histogram bins for float data (an even number: growing the range merges pairs of bins)."""

STATS_KEYS = ("count", "mean", "std", "min", "max", *(f"p{p:02d}" for p in PERCENTILES))


def valid_pixels(
    raw: np.ndarray,
    nodata: float | None,
    cloud: np.ndarray | None,
    cloud_threshold: float,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Validity of each pixel of ``raw`` ``(C, H, W)``: ``(H, W)`` bool (the rule of the module doc).

    Args:
        raw: raw values of one date, bands first.
        nodata: the group's raw nodata value, or ``None``.
        cloud: ``(H, W)`` cloud probability 0..100, or ``None``.
        cloud_threshold: probability at or above which a pixel is cloudy.
        mask: ``(H, W)`` quality mask, nonzero = invalid (the group's ``mask`` layer), or ``None``.

    """
    valid = np.ones(raw.shape[1:], dtype=bool)
    if nodata is not None:
        valid &= (raw != nodata).all(0)
    if np.issubdtype(raw.dtype, np.floating):
        valid &= np.isfinite(raw).all(0)
    if cloud is not None:
        valid &= cloud < cloud_threshold
    if mask is not None:
        valid &= mask == 0
    return valid


class _FloatHistogram:
    """A histogram of ``n`` bins over ``[lo, lo + n * width)`` whose range doubles to take new values."""

    def __init__(self, n_bins: int) -> None:
        self.n = n_bins
        self.lo = 0.0
        self.width = 0.0
        self.counts = np.zeros(n_bins, dtype=np.int64)

    def add(self, values: np.ndarray, vmin: float, vmax: float) -> None:
        if self.width == 0.0:
            span = vmax - vmin
            # a range a little wider than the first values, so that their maximum falls inside
            self.width = max(span, abs(vmin) * 1e-6, 1e-12) * (1 + 1e-6) / self.n
            self.lo = vmin
        while vmin < self.lo:
            self._double(up=False)
        while vmax >= self.lo + self.n * self.width:
            self._double(up=True)
        values -= self.lo  # in place: the caller hands over a scratch copy
        values /= self.width
        idx = values.astype(np.intp)  # >= 0: lo <= every value
        counts = np.bincount(idx, minlength=self.n + 1)
        counts[self.n - 1] += counts[self.n :].sum()  # a value rounded onto the upper edge: the last bin
        self.counts += counts[: self.n]

    def _double(self, up: bool) -> None:
        merged = self.counts[0::2] + self.counts[1::2]
        half = self.n // 2
        self.counts = np.zeros(self.n, dtype=np.int64)
        if up:  # the old range becomes the lower half
            self.counts[:half] = merged
        else:  # the old range becomes the upper half
            self.counts[half:] = merged
            self.lo -= self.n * self.width
        self.width *= 2

    def value(self, idx: int) -> float:
        return self.lo + (idx + 0.5) * self.width


class StatsAccumulator:
    """Streaming per-band statistics of raw values (see the module docstring).

    Args:
        bands: band names, in the order of the values' first axis.
        dtype: the raw dtype (integer types of <= 16 bits get exact histograms).

    Example:
        >>> acc = StatsAccumulator(("B04",), np.dtype("uint16"))
        >>> acc.add(np.array([[1, 2, 3, 4]], dtype="uint16"))
        >>> b04 = acc.result()["B04"]
        >>> b04["mean"]
        2.5

    """

    def __init__(self, bands: Sequence[str], dtype: np.dtype[Any] | str) -> None:
        self.bands = tuple(bands)
        self.dtype = np.dtype(dtype)
        c = len(self.bands)
        self.is_int = np.issubdtype(self.dtype, np.integer) and self.dtype.itemsize <= 2
        self.count = np.zeros(c, dtype=np.int64)
        self.mean = np.zeros(c)
        self.m2 = np.zeros(c)
        self.vmin = np.full(c, np.inf)
        self.vmax = np.full(c, -np.inf)
        if self.is_int:
            info = np.iinfo(self.dtype)
            self._int_offset = int(info.min)
            self._int_hist = np.zeros((c, int(info.max) - int(info.min) + 1), dtype=np.int64)
        else:
            self._float_hist = [_FloatHistogram(FLOAT_BINS) for _ in range(c)]

    def add(self, values: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add values ``(C, ...)`` of valid pixels, or all of ``values`` where ``valid`` ``(...)`` is True."""
        if values.shape[0] != len(self.bands):
            raise ValueError(f"values have {values.shape[0]} bands, the accumulator {len(self.bands)}")
        flat = values.reshape(len(self.bands), -1)  # a copy only for strided (T, C, ...) blocks
        if valid is not None and not valid.all():
            flat = flat[:, valid.reshape(-1)]  # measured faster than selecting band by band
        n = flat.shape[1]
        if n == 0:
            return
        for b in range(len(self.bands)):
            sel = flat[b]
            if self.is_int:  # moments and extremes come from the exact histogram at the end
                idx = sel.astype(np.intp)  # faster than letting bincount convert uint16
                if self._int_offset:
                    idx -= self._int_offset
                self._int_hist[b] += np.bincount(idx, minlength=self._int_hist.shape[1])
                continue
            lo, hi = float(sel.min()), float(sel.max())
            v64 = sel.astype(np.float64)
            mean = float(v64.sum()) / n
            v64 -= mean
            m2 = float(np.einsum("i,i->", v64, v64))  # not BLAS: its thread pool stalls under load
            total = int(self.count[b]) + n
            delta = mean - self.mean[b]
            self.mean[b] += delta * (n / total)
            self.m2[b] += m2 + delta * delta * (self.count[b] * n / total)
            self.vmin[b] = min(self.vmin[b], lo)
            self.vmax[b] = max(self.vmax[b], hi)
            v64 += mean  # back to the values, for the histogram (in place: no further copy)
            self._float_hist[b].add(v64, lo, hi)
        self.count += n

    def result(self) -> dict[str, dict[str, float]]:
        """Per band: ``count, mean, std, min, max, p01, p02, p50, p98, p99`` (``{"count": 0}`` when empty)."""
        out: dict[str, dict[str, float]] = {}
        for b, name in enumerate(self.bands):
            n = int(self.count[b])
            if n == 0:
                out[name] = {"count": 0}
                continue
            if self.is_int:
                hist = self._int_hist[b]
                values = np.arange(hist.size, dtype=np.float64) + self._int_offset
                mean = float((hist * values).sum() / n)
                var = float((hist * (values - mean) ** 2).sum() / n)
                nonzero = np.flatnonzero(hist)
                vmin, vmax = float(values[nonzero[0]]), float(values[nonzero[-1]])
            else:
                hist = self._float_hist[b].counts
                mean, var = float(self.mean[b]), float(self.m2[b] / n)
                vmin, vmax = float(self.vmin[b]), float(self.vmax[b])
            entry: dict[str, float] = {
                "count": n,
                "mean": mean,
                "std": float(np.sqrt(max(var, 0.0))),
                "min": vmin,
                "max": vmax,
            }
            cdf = np.cumsum(hist) / n
            for p in PERCENTILES:
                idx = int(np.searchsorted(cdf, p / 100.0))
                if self.is_int:
                    value = float(idx + self._int_offset)
                else:  # the bin centre, kept inside the exact range
                    value = min(max(self._float_hist[b].value(idx), vmin), vmax)
                entry[f"p{p:02d}"] = value
            out[name] = entry
        return out


def db_values(raw: np.ndarray, scale_factor: float, add_offset: float) -> tuple[np.ndarray, np.ndarray]:
    """``10 * log10(raw * scale + offset)`` of linear-power values and where that is defined (> 0)."""
    physical = raw.astype(np.float64) * scale_factor + add_offset
    positive = physical > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(np.where(positive, physical, 1.0))
    return db, positive


class GroupStats:
    """Everything the stats pass records for one sensor group, fed one date slab at a time.

    Args:
        bands: band names.
        dtype: raw dtype.
        units: the group's units (any spelling :func:`~spectravlm.data.store.canonical_units` knows).
        kind: ``optical`` or ``sar``.
        nodata: raw nodata value, or ``None``.
        cloud_threshold: cloud probability at or above which a pixel is invalid.
        scale_factor: physical = raw * scale_factor + add_offset (used for ``stats_db``).
        add_offset: see ``scale_factor``.

    """

    def __init__(
        self,
        bands: Sequence[str],
        dtype: np.dtype[Any] | str,
        units: str,
        kind: str,
        nodata: float | None,
        cloud_threshold: float = 50.0,
        scale_factor: float = 1.0,
        add_offset: float = 0.0,
    ) -> None:
        self.nodata = nodata
        self.cloud_threshold = cloud_threshold
        self.scale_factor = scale_factor
        self.add_offset = add_offset
        self.raw = StatsAccumulator(bands, dtype)
        linear_sar = kind == "sar" and units != "" and canonical_units(units) == "linear"
        self.db = StatsAccumulator(bands, "float64") if linear_sar else None

    def add(self, raw: np.ndarray, cloud: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
        """Add raw values ``(C, ...)``: a date ``(C, H, W)``, a window, or dates ``(C, T, H, W)``.

        ``cloud`` and ``mask`` are the matching ``(...)`` layers.
        """
        valid = valid_pixels(raw, self.nodata, cloud, self.cloud_threshold, mask)
        self.raw.add(raw, valid)
        if self.db is not None:
            db, positive = db_values(raw, self.scale_factor, self.add_offset)
            self.db.add(db, valid & positive.all(0))

    def attrs(self, source: str) -> dict[str, Any]:
        """The group attributes: ``stats`` (and ``stats_db``), the rule, the threshold and the source."""
        rule = (
            "valid pixels only: no band equal to nodata, all finite, cloud probability < "
            f"{self.cloud_threshold}, quality mask 0; raw stored units"
        )
        out: dict[str, Any] = {
            "stats": self.raw.result(),
            "stats_rule": rule,
            "cloud_threshold": self.cloud_threshold,
            "stats_source": source,
        }
        if self.db is not None:
            out["stats_db"] = self.db.result()
            out["stats_db_rule"] = (
                "10*log10(raw * scale_factor + add_offset) over the valid pixels whose linear power is > 0"
            )
        return out


def stats_source(how: str) -> str:
    """A provenance line for ``stats_source``: what computed the statistics and when (UTC)."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    return f"{how}, {now}"


def _tiles(group: SensorGroup) -> Iterator[tuple[int, slice, slice]]:
    t, _, h, w = group.data.shape
    _, _, cy, cx = group.data.chunks
    for ti in range(t):
        for y0 in range(0, h, cy):
            for x0 in range(0, w, cx):
                yield ti, slice(y0, min(y0 + cy, h)), slice(x0, min(x0 + cx, w))


def add_stored_dates(acc: GroupStats, group: zarr.Group, t_stop: int) -> None:
    """Feed ``acc`` the stored dates ``0 .. t_stop - 1`` of a sensor group being appended to, tile by tile."""
    data = group["data"]
    cloud = group["cloud"] if "cloud" in group else None
    mask = group["mask"] if "mask" in group else None
    assert isinstance(data, zarr.Array)
    _, _, h, w = data.shape
    _, _, cy, cx = data.chunks
    for ti in range(t_stop):
        for y0 in range(0, h, cy):
            for x0 in range(0, w, cx):
                ys, xs = slice(y0, min(y0 + cy, h)), slice(x0, min(x0 + cx, w))
                acc.add(
                    np.asarray(data[ti, :, ys, xs]),
                    None if cloud is None else np.asarray(cloud[ti, ys, xs]),  # type: ignore[index]
                    None if mask is None else np.asarray(mask[ti, ys, xs]),  # type: ignore[index]
                )


def group_stats(group: SensorGroup, cloud_threshold: float = 50.0, progress: bool = False) -> dict[str, Any]:
    """Statistics of one sensor group, one pass over its chunks: the attrs of :meth:`GroupStats.attrs`."""
    acc = GroupStats(
        group.bands,
        group.data.dtype,
        group.units,
        group.sensor.kind,
        group.nodata,
        cloud_threshold,
        group.scale_factor,
        group.add_offset,
    )
    tiles = list(_tiles(group))
    for ti, ys, xs in tqdm(tiles, desc=f"stats {group.name}", disable=not progress):
        acc.add(
            group.read((ti, slice(None), ys, xs)),
            group.read_cloud((ti, ys, xs)),
            group.read_mask((ti, ys, xs)),
        )
    return acc.attrs(stats_source("spectravlm data stats (a pass over the stored chunks)"))


def compute_stats(
    path: str | os.PathLike[str], cloud_threshold: float = 50.0, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Compute statistics for every sensor group of the store at ``path`` and store them in its metadata.

    Returns:
        per group, per band: count, mean, std, min, max, p01, p02, p50, p98, p99 (raw stored units).

    """
    store = CubeStore.open(path)
    attrs = {name: group_stats(g, cloud_threshold, progress) for name, g in store.groups.items()}
    with StoreTransaction(path, mode="append") as tx:
        for name, a in attrs.items():
            tx.set_group_attrs(name, a)
    return {name: a["stats"] for name, a in attrs.items()}


def normalisation_stats(group: SensorGroup) -> dict[str, tuple[int, float, float]] | None:
    """Per band ``(count, mean, std)`` in the encoder's domain, from the group's stored statistics.

    * optical groups (``reflectance``): the raw statistics mapped through ``scale_factor`` and
      ``add_offset`` (mean * scale + offset, std * |scale|);
    * SAR groups stored in ``dB``: the same mapping;
    * SAR groups stored in ``linear`` power: the dB statistics (``stats_db``), because the encoder
      normalises SAR in dB.

    Returns:
        The statistics, or ``None`` when the group has none usable: no statistics (``spectravlm data
        stats`` not run, or dropped by an append), a band without valid pixels, a linear-power group whose
        statistics predate ``stats_db``, or uncalibrated ``DN`` values (which have no encoder domain; the
        flags that store calibrated values instead are in :func:`dn_hint`).

    Raises:
        DataConfigError: units that are unknown, or that do not fit the sensor (optical values in dB).

    """
    if not group.stats:
        return None
    where = f"{group.store.path}/{group.name}"
    try:
        unit = canonical_units(group.units)
    except StoreError as err:
        raise DataConfigError(f"{where}: {err}") from None
    if unit == "DN":
        return None
    kind = group.sensor.kind
    expected = ("reflectance",) if kind == "optical" else ("dB", "linear")
    if unit not in expected:
        raise DataConfigError(
            f"{where}: {kind} sensor {group.sensor.name} stored in {unit!r}; expected {' or '.join(expected)}"
        )
    if unit == "linear":
        source, scale, offset = group.stats_db, 1.0, 0.0
    else:
        source, scale, offset = group.stats, group.scale_factor, group.add_offset
    out: dict[str, tuple[int, float, float]] = {}
    for band in group.bands:
        entry = source.get(band)
        if not entry or not entry.get("count"):
            return None
        out[band] = (int(entry["count"]), entry["mean"] * scale + offset, entry["std"] * abs(scale))
    return out


def dn_hint(group: SensorGroup) -> str:
    """What to do about a group stored in uncalibrated DN: the flags that store calibrated values.

    For the message of whatever refuses DN (the encoder, a loader that needs physical values).
    """
    if group.sensor.kind == "sar":
        return (
            "re-ingest with calibration: `spectravlm data ingest s1-grd SCENE STORE --db` (the SAFE "
            "product's annotation/calibration/calibration-*.xml is read) or `--calibration-constant K --db` "
            "(sigma0 = DN^2 / K^2)"
        )
    return (
        "re-ingest with `--units reflectance --scale-factor 1e-4` (S2 digital numbers are reflectance x 1e4)"
    )
