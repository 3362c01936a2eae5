import numpy as np
import pytest

from spectravlm.cli import main
from spectravlm.data.demo import make_demo_cubes
from spectravlm.data.store import CubeStore


@pytest.fixture(scope="module")
def demo():
    return make_demo_cubes(size=128, seed=0)


def test_deterministic(demo):
    again = make_demo_cubes(size=128, seed=0)
    np.testing.assert_array_equal(demo[0].data, again[0].data)
    np.testing.assert_array_equal(demo[1].data, again[1].data)
    assert not np.array_equal(demo[0].data, make_demo_cubes(size=128, seed=1)[0].data)


def test_physically_plausible(demo):
    s2, s1, agb, _ = demo
    assert s2.data.shape == (10, 10, 128, 128) and s2.data.dtype == np.uint16
    assert len(s1.times) == 12 and len(s2.times) == 10  # two S2 months missing
    assert not np.isin(s1.times, s2.times).any()  # S1 and S2 on different days
    assert 0 < (agb > 0).mean() < 1 and agb.max() < 600
    assert (s2.cloud > 50).any() and (s2.cloud < 10).any()
    # S1 backscatter rises with biomass and saturates: strong rank correlation, flatter at high AGB.
    forest = agb > 0
    vh = s1.data[:, 1].mean(0)[forest]
    a = agb[forest]
    assert np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(vh)))[0, 1] > 0.6
    low, high = np.polyfit(a[a < 100], vh[a < 100], 1)[0], np.polyfit(a[a > 250], vh[a > 250], 1)[0]
    assert low > 2 * high
    # summer NDVI of grassland far above winter: phenology
    nir, red = s2.data[:, 6].astype(float), s2.data[:, 2].astype(float)
    ndvi = (nir - red) / (nir + red)
    clear = s2.cloud < 5
    months = [int(str(t)[5:7]) for t in s2.times]
    july, march = months.index(7), months.index(3)
    assert np.median(ndvi[july][clear[july]]) > np.median(ndvi[march][clear[march]]) + 0.2


def test_cli_demo_writes_store_with_stats(tmp_path, capsys):
    path = tmp_path / "demo.zarr"
    assert main(["data", "demo", str(path), "--size", "128"]) == 0
    store = CubeStore.open(path)
    assert store.synthetic and "SYNTHETIC" in store.title
    assert set(store.groups) == {"s2", "s1"} and "agb" in store.targets
    assert store["s2"].stats["B04"]["count"] > 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert main(["data", "demo", str(path), "--size", "128"]) == 1  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err


def test_the_demo_store_never_replaces_other_data(tmp_path):
    from spectravlm.data.demo import write_demo_store
    from spectravlm.data.store import Grid, SensorCube, StoreTransaction
    from spectravlm.errors import StoreExistsError

    real = tmp_path / "real.zarr"
    with StoreTransaction(real) as tx:
        tx.write_sensor(
            "s2",
            SensorCube("sentinel2_l2a", ("B04",), np.ones((1, 1, 8, 8), np.uint16),
                       np.array(["2020-01-01"], "datetime64[s]"), Grid(8, 8), units="reflectance",
                       scale_factor=1e-4),
        )  # fmt: skip
    before = sorted((p.relative_to(real), p.stat().st_mtime_ns) for p in real.rglob("*"))
    with pytest.raises(StoreExistsError, match="not a synthetic demo store"):
        write_demo_store(real, size=64, overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    with pytest.raises(StoreExistsError):
        write_demo_store(other, size=64, overwrite=True)
    assert sorted((p.relative_to(real), p.stat().st_mtime_ns) for p in real.rglob("*")) == before
    demo = tmp_path / "demo.zarr"
    write_demo_store(demo, size=64)
    write_demo_store(demo, size=64, seed=1, overwrite=True)  # an earlier demo store may be replaced
