import numpy as np
import pytest
from affine import Affine

from spectravlm.data.ingest import ingest_arrays
from spectravlm.data.stats import compute_stats
from spectravlm.data.store import CubeStore, Grid, SensorCube


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
