"""Streaming per-band statistics over the valid pixels of a cube store.

One pass over the chunks (date by date, tile by tile) accumulates count, sum and sum of squares in
float64 and a histogram per band; percentiles come from the histogram. Integer data (uint8/uint16)
uses one bin per integer value, so its percentiles are exact; float data (SAR dB) uses a first pass for
the range and 20,000 bins, so percentiles are within (max - min) / 20,000 of the exact value.

A pixel is valid when no band holds the nodata value, every band is finite, and (when the group has a
cloud layer) its cloud probability is below ``cloud_threshold``. Results go into the group attribute
``stats`` (in raw stored units) together with the rule used, written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spectravlm.data.store import CubeStore, SensorGroup, StoreTransaction

PERCENTILES = (1, 2, 50, 98, 99)
FLOAT_BINS = 20_000


def _tiles(group: SensorGroup) -> Iterator[tuple[int, slice, slice]]:
    t, _, h, w = group.data.shape
    _, _, cy, cx = group.data.chunks
    for ti in range(t):
        for y0 in range(0, h, cy):
            for x0 in range(0, w, cx):
                yield ti, slice(y0, min(y0 + cy, h)), slice(x0, min(x0 + cx, w))


def valid_pixels(
    raw: np.ndarray, nodata: float | None, cloud: np.ndarray | None, cloud_threshold: float
) -> np.ndarray:
    """Validity of each pixel of ``raw`` ``(C, H, W)``: ``(H, W)`` bool (the rule of the module doc)."""
    valid = np.ones(raw.shape[1:], dtype=bool)
    if nodata is not None:
        valid &= (raw != nodata).all(0)
    if np.issubdtype(raw.dtype, np.floating):
        valid &= np.isfinite(raw).all(0)
    if cloud is not None:
        valid &= cloud < cloud_threshold
    return valid


def group_stats(group: SensorGroup, cloud_threshold: float = 50.0, progress: bool = False) -> dict[str, Any]:
    """Per-band statistics of one sensor group (see the module docstring)."""
    c = len(group.bands)
    is_int = np.issubdtype(group.data.dtype, np.integer) and group.data.dtype.itemsize <= 2
    count = np.zeros(c, dtype=np.int64)
    total = np.zeros(c)
    total_sq = np.zeros(c)
    vmin = np.full(c, np.inf)
    vmax = np.full(c, -np.inf)
    n_bins = int(np.iinfo(group.data.dtype).max) + 1 if is_int else FLOAT_BINS
    hist = np.zeros((c, n_bins), dtype=np.int64)

    def valid_values() -> Iterator[np.ndarray]:
        for ti, ys, xs in _tiles(group):
            raw = group.read((ti, slice(None), ys, xs))
            cloud = group.read_cloud((ti, ys, xs))
            yield raw[:, valid_pixels(raw, group.nodata, cloud, cloud_threshold)]

    n_tiles = sum(1 for _ in _tiles(group))
    for vals in tqdm(valid_values(), total=n_tiles, desc=f"stats {group.name}", disable=not progress):
        if vals.shape[1] == 0:
            continue
        v = vals.astype(np.float64)
        count += vals.shape[1]
        total += v.sum(1)
        total_sq += (v * v).sum(1)
        vmin = np.minimum(vmin, v.min(1))
        vmax = np.maximum(vmax, v.max(1))
        if is_int:
            for b in range(c):
                hist[b] += np.bincount(vals[b], minlength=n_bins)
    if not is_int and count.min() > 0:  # second pass: histogram over the now-known range
        for vals in valid_values():
            for b in range(c):
                h, _ = np.histogram(vals[b], bins=n_bins, range=(vmin[b], vmax[b]))
                hist[b] += h
    out: dict[str, Any] = {}
    for b, name in enumerate(group.bands):
        if count[b] == 0:
            out[name] = {"count": 0}
            continue
        mean = total[b] / count[b]
        std = float(np.sqrt(max(total_sq[b] / count[b] - mean * mean, 0.0)))
        cdf = np.cumsum(hist[b]) / count[b]
        entry = {
            "count": int(count[b]),
            "mean": float(mean),
            "std": std,
            "min": float(vmin[b]),
            "max": float(vmax[b]),
        }
        for p in PERCENTILES:
            idx = int(np.searchsorted(cdf, p / 100.0))
            value = idx if is_int else vmin[b] + (idx + 0.5) * (vmax[b] - vmin[b]) / n_bins
            entry[f"p{p:02d}"] = float(value)
        out[name] = entry
    return out


def compute_stats(
    path: str | os.PathLike[str], cloud_threshold: float = 50.0, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Compute statistics for every sensor group of the store at ``path`` and store them in its metadata.

    Returns:
        per group, per band: count, mean, std, min, max, p01, p02, p50, p98, p99 (raw stored units).

    """
    store = CubeStore.open(path)
    results = {name: group_stats(g, cloud_threshold, progress) for name, g in store.groups.items()}
    rule = (
        f"valid pixels only: no band equal to nodata, all finite, cloud probability < {cloud_threshold}; "
        "raw stored units"
    )
    with StoreTransaction(path, mode="append") as tx:
        for name, stats in results.items():
            tx.set_group_attrs(name, {"stats": stats, "stats_rule": rule, "cloud_threshold": cloud_threshold})
    return results


def normalisation_stats(group: SensorGroup) -> dict[str, tuple[int, float, float]] | None:
    """Per band ``(count, mean, std)`` in the encoder's normalisation domain, from the stored statistics.

    Optical bands and SAR stored in dB: the raw statistics mapped through the group's ``scale_factor`` and
    ``add_offset`` (reflectance; dB). SAR stored as linear power: the dB statistics the stats pass records
    for such groups (``stats_db``). ``None`` when the group has no (usable) statistics.
    """
    from spectravlm.sensors import canonical_unit

    units = canonical_unit(group.units)
    if group.sensor.kind == "sar" and units == "linear":
        raw = dict(group.zgroup.attrs).get("stats_db") or {}
        scale, offset = 1.0, 0.0
    elif units == "DN":
        return None
    else:
        raw, scale, offset = group.stats, group.scale_factor, group.add_offset
    out = {}
    for band in group.bands:
        s = raw.get(band)
        if not s or not s.get("count"):
            return None
        out[band] = (int(s["count"]), float(s["mean"]) * scale + offset, float(s["std"]) * abs(scale))
    return out
