import numpy as np
import pytest
from affine import Affine

from spectravlm.data.ingest import ingest_arrays
from spectravlm.data.stats import (
    FLOAT_BINS,
    PERCENTILES,
    StatsAccumulator,
    compute_stats,
    dn_hint,
    normalisation_stats,
)
from spectravlm.data.store import CubeStore, Grid, SensorCube
from spectravlm.errors import DataConfigError


def test_stats_match_numpy_over_valid_pixels(tmp_path):
    rng = np.random.default_rng(3)
    grid = Grid(300, 280, Affine(10, 0, 0, 0, -10, 0))  # more than one spatial chunk
    data = rng.integers(1, 5000, (4, 2, 300, 280), dtype=np.uint16)
    data[0, :, :10] = 0  # nodata rows
    cloud = rng.integers(0, 101, (4, 300, 280), dtype=np.uint8)
    ingest_arrays(
        tmp_path / "s.zarr",
        "s2",
        SensorCube(
            "s2",
            ("B04", "B08"),
            data,
            np.array(["2021-01-01", "2021-02-01", "2021-03-01", "2021-04-01"], "datetime64[s]"),
            grid,
            nodata=0,
            cloud=cloud,
        ),
    )
    sar = rng.normal(-12, 4, (3, 1, 300, 280)).astype(np.float32)
    sar[1, 0, 5, 5] = np.nan
    ingest_arrays(
        tmp_path / "s.zarr",
        "s1",
        SensorCube(
            "s1",
            ("VV",),
            sar,
            np.array(["2021-01-02", "2021-02-02", "2021-03-02"], "datetime64[s]"),
            grid,
            nodata=-9999.0,
            units="dB",
        ),
        append=True,
    )
    stats = compute_stats(tmp_path / "s.zarr", cloud_threshold=40)

    valid = (data != 0).all(1) & (cloud < 40)
    for b, name in enumerate(("B04", "B08")):
        v = data[:, b][valid].astype(np.float64)
        s = stats["s2"][name]
        assert s["count"] == v.size
        assert s["mean"] == pytest.approx(v.mean(), rel=1e-9)
        assert s["std"] == pytest.approx(v.std(), rel=1e-6)
        for p in (2, 50, 98):
            assert s[f"p{p:02d}"] == pytest.approx(np.percentile(v, p, method="inverted_cdf"), abs=1)
    v = sar[np.isfinite(sar)].astype(np.float64)
    s = stats["s1"]["VV"]
    assert s["count"] == v.size
    assert s["mean"] == pytest.approx(v.mean(), rel=1e-6)
    rng_width = v.max() - v.min()
    assert s["p50"] == pytest.approx(np.median(v), abs=rng_width / 20000 * 2)
    # written into the store metadata
    stored = CubeStore.open(tmp_path / "s.zarr")["s2"].stats
    assert stored["B08"]["mean"] == pytest.approx(stats["s2"]["B08"]["mean"])


def _grid(h=40, w=30):
    return Grid(h, w, Affine(10, 0, 0, 0, -10, 0))


def _times(n):
    return np.datetime64("2021-01-01", "s") + np.arange(n) * np.timedelta64(86400 * 10, "s")


def test_accumulator_float_range_growth_matches_numpy():
    # chunks whose range grows in both directions: the histogram doubles and merges bins exactly
    rng = np.random.default_rng(0)
    parts = [rng.normal(0, 1, 5000), rng.normal(50, 5, 5000), rng.normal(-300, 1, 100), rng.normal(2, 0.1, 9)]
    acc = StatsAccumulator(("VV",), "float32")
    for p in parts:
        acc.add(p[None].astype(np.float32))
    v = np.concatenate([p.astype(np.float32).astype(np.float64) for p in parts])
    s = acc.result()["VV"]
    assert s["count"] == v.size
    assert s["mean"] == pytest.approx(v.mean(), rel=1e-12)
    assert s["std"] == pytest.approx(v.std(), rel=1e-12)
    assert (s["min"], s["max"]) == (v.min(), v.max())
    span = v.max() - v.min()
    for p in PERCENTILES:
        assert s[f"p{p:02d}"] == pytest.approx(
            np.percentile(v, p, method="inverted_cdf"), abs=span / FLOAT_BINS * 2
        )


def test_accumulator_int16_negative_values_exact():
    v = np.array([[-5, -5, 0, 7, 300]], dtype=np.int16)
    s = StatsAccumulator(("B02",), "int16")
    s.add(v)
    r = s.result()["B02"]
    assert (r["min"], r["max"], r["p50"]) == (-5, 300, 0)
    assert r["mean"] == pytest.approx(v.mean())


def test_normalisation_stats_per_unit(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "s.zarr"
    s2 = rng.integers(1, 10000, (2, 2, 40, 30), dtype=np.uint16)
    ingest_arrays(
        path,
        "s2",
        SensorCube(
            "s2",
            ("B04", "B08"),
            s2,
            _times(2),
            _grid(),
            nodata=0,
            scale_factor=1e-4,
            add_offset=-0.1,
            units="reflectance",
        ),
    )
    db = rng.normal(-12, 3, (2, 1, 40, 30)).astype(np.float32)
    ingest_arrays(
        path,
        "s1_db",
        SensorCube("s1", ("VV",), db, _times(2), _grid(), nodata=-9999.0, units="dB"),
        append=True,
    )
    lin = (10 ** (rng.normal(-15, 3, (2, 2, 40, 30)) / 10)).astype(np.float32)
    lin[0, 0, :3] = 0.0  # zero power: valid, but has no dB value
    lin[1, :, 5:7] = -9999.0  # nodata
    ingest_arrays(
        path,
        "s1_lin",
        SensorCube("s1", ("VV", "VH"), lin, _times(2), _grid(), nodata=-9999.0, units="linear power"),
        append=True,
    )
    ingest_arrays(
        path,
        "s1_dn",
        SensorCube(
            "s1",
            ("VV",),
            lin[:, :1] * 1e4,
            _times(2),
            _grid(),
            nodata=-9999.0,
            units="DN^2 (uncalibrated linear intensity)",
        ),
        append=True,
    )
    store = CubeStore.open(path)
    assert store["s1_lin"].units == "linear"  # stored canonical
    assert normalisation_stats(store["s2"]) is None  # no stats yet
    compute_stats(path)
    store = CubeStore.open(path)

    n, mean, std = normalisation_stats(store["s2"])["B08"]
    v = s2[:, 1][(s2 != 0).all(1)].astype(np.float64)
    assert n == v.size
    assert mean == pytest.approx(v.mean() * 1e-4 - 0.1)
    assert std == pytest.approx(v.std() * 1e-4)

    n, mean, std = normalisation_stats(store["s1_db"])["VV"]
    assert (n, mean) == (db.size, pytest.approx(db.astype(np.float64).mean()))

    out = normalisation_stats(store["s1_lin"])
    valid = (lin != -9999.0).all(1) & (lin > 0).all(1)
    for b, band in enumerate(("VV", "VH")):
        ref = 10 * np.log10(lin[:, b][valid].astype(np.float64))
        assert out[band][0] == ref.size
        assert out[band][1] == pytest.approx(ref.mean(), rel=1e-9)
        assert out[band][2] == pytest.approx(ref.std(), rel=1e-9)
    assert store["s1_lin"].stats_db["VV"]["p50"] == pytest.approx(
        np.median(10 * np.log10(lin[:, 0][valid])), abs=0.01
    )

    # uncalibrated DN have no encoder domain: no statistics, and the hint names the flags that calibrate
    assert normalisation_stats(store["s1_dn"]) is None
    assert "--calibration-constant K --db" in dn_hint(store["s1_dn"])
    # a band without valid pixels, or units that do not fit the sensor: no statistics / an error
    g = store["s2"]
    g.stats = {**g.stats, "B04": {"count": 0}}
    assert normalisation_stats(g) is None
    g.units = "dB"
    with pytest.raises(DataConfigError, match="optical sensor sentinel2_l2a stored in 'dB'"):
        normalisation_stats(g)
