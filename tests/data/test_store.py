import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from spectravlm.data.ingest import ingest_arrays
from spectravlm.data.store import CubeStore, Grid, SensorCube, StoreTransaction
from spectravlm.errors import (
    IngestError,
    StoreCorruptError,
    StoreError,
    StoreExistsError,
    StoreVersionError,
    UnknownBandError,
    UnknownSensorError,
)

GRID = Grid(
    height=40,
    width=30,
    transform=Affine(10, 0, 400000, 0, -10, 5000000),
    crs_wkt=CRS.from_epsg(32633).to_wkt(),
)


def _cube(t=3, seed=0, start="2021-06-01", bands=("B02", "B03", "B04"), **kw) -> SensorCube:
    rng = np.random.default_rng(seed)
    times = np.datetime64(start) + np.arange(t) * np.timedelta64(5, "D")
    defaults = dict(
        sensor="sentinel2_l2a",
        bands=bands,
        data=rng.integers(1, 10000, (t, len(bands), GRID.height, GRID.width), dtype=np.uint16),
        times=times.astype("datetime64[s]"),
        grid=GRID,
        nodata=0,
        cloud=rng.integers(0, 101, (t, GRID.height, GRID.width), dtype=np.uint8),
        scale_factor=1e-4,
        units="reflectance",
    )
    return SensorCube(**(defaults | kw))


def test_xarray_round_trip(tmp_path):
    cube = _cube()
    cube.data[0, 1, 5, 7] = 0  # a nodata pixel
    ingest_arrays(tmp_path / "s.zarr", "s2", cube)
    ds = xr.open_zarr(tmp_path / "s.zarr", group="s2")
    assert ds["data"].dims == ("time", "band", "y", "x")
    assert list(ds["band"].values) == ["B02", "B03", "B04"]
    np.testing.assert_array_equal(ds["time"].values, cube.times.astype("datetime64[ns]"))
    y, x = GRID.coords()
    np.testing.assert_allclose(ds["y"].values, y)
    np.testing.assert_allclose(ds["x"].values, x)
    assert ds["x"].values[0] == 400005 and ds["y"].values[0] == 4999995
    # CF decoding: scale_factor applied and nodata masked.
    decoded = ds["data"].values
    assert np.isnan(decoded[0, 1, 5, 7])
    np.testing.assert_allclose(decoded[1], cube.data[1] * 1e-4, rtol=1e-6)
    np.testing.assert_array_equal(ds["cloud"].values, cube.cloud)
    assert "32633" in ds["spatial_ref"].attrs["crs_wkt"]
    raw = xr.open_zarr(tmp_path / "s.zarr", group="s2", mask_and_scale=False)
    np.testing.assert_array_equal(raw["data"].values, cube.data)


def test_times_sorted_on_ingest(tmp_path):
    cube = _cube(t=3)
    cube.times = cube.times[[2, 0, 1]]
    data = cube.data.copy()
    ingest_arrays(tmp_path / "s.zarr", "s2", cube)
    g = CubeStore.open(tmp_path / "s.zarr")["s2"]
    assert (np.diff(g.times.astype("int64")) > 0).all()
    np.testing.assert_array_equal(g.data[0], data[1])  # earliest date was given second


def test_append_dates_and_groups(tmp_path):
    path = tmp_path / "s.zarr"
    first, later = _cube(t=2, seed=1), _cube(t=2, seed=2, start="2021-07-01")
    ingest_arrays(path, "s2", first)
    ingest_arrays(path, "s2", later, append=True)
    s1 = SensorCube(
        "s1",
        ("VV", "VH"),
        np.full((1, 2, 40, 30), -12.5, np.float32),
        np.array(["2021-06-03"], "datetime64[s]"),
        GRID,
        nodata=-9999.0,
        units="dB",
    )
    ingest_arrays(path, "s1", s1, append=True)
    store = CubeStore.open(path)
    assert store["s2"].data.shape == (4, 3, 40, 30)
    np.testing.assert_array_equal(store["s2"].data[2:], later.data)
    np.testing.assert_array_equal(store["s2"].cloud[:2], first.cloud)
    assert set(store.groups) == {"s2", "s1"}
    with pytest.raises(StoreError, match="already in the store"):
        ingest_arrays(path, "s2", later, append=True)
    with pytest.raises(StoreError, match="cannot append bands"):
        ingest_arrays(path, "s2", _cube(t=1, start="2022-01-01", bands=("B02", "B03", "B08")), append=True)


def test_existing_store_not_overwritten(tmp_path):
    path = tmp_path / "s.zarr"
    ingest_arrays(path, "s2", _cube(seed=1))
    with pytest.raises(StoreExistsError, match="overwrite"):
        ingest_arrays(path, "s2", _cube(seed=2))
    np.testing.assert_array_equal(CubeStore.open(path)["s2"].data[:], _cube(seed=1).data)
    ingest_arrays(path, "s2", _cube(seed=2), overwrite=True)
    np.testing.assert_array_equal(CubeStore.open(path)["s2"].data[:], _cube(seed=2).data)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary directory is left behind"


def test_failed_write_leaves_previous_store(tmp_path):
    path = tmp_path / "s.zarr"
    ingest_arrays(path, "s2", _cube(seed=1))
    with (
        pytest.raises(RuntimeError, match="boom"),
        StoreTransaction(path, mode="create", overwrite=True) as tx,
    ):
        tx.write_sensor("s2", _cube(seed=2))
        raise RuntimeError("boom")
    np.testing.assert_array_equal(CubeStore.open(path)["s2"].data[:], _cube(seed=1).data)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(data=np.zeros((3, 2, 40, 30), np.uint16)), IngestError, "has 2 bands, expected 3"),
        (dict(data=np.zeros((3, 3, 40, 30), np.complex64)), IngestError, "dtype complex64"),
        (dict(data=np.zeros((3, 3, 41, 30), np.uint16)), IngestError, "41x30"),
        (dict(times=np.array(["2021-01-01"] * 3, "datetime64[s]")), IngestError, "duplicate"),
        (dict(cloud=np.full((3, 40, 30), 200, np.uint8)), IngestError, "above 100"),
        (dict(sensor="landsat9"), UnknownSensorError, "known sensors"),
        (dict(bands=("B02", "B03", "B99")), UnknownBandError, "B99"),
        (dict(sensor="s1", bands=("VV", "VH", "HH")), IngestError, "SAR backscatter must be float"),
    ],
)
def test_bad_cubes(tmp_path, change, error, match):
    with pytest.raises(error, match=match):
        ingest_arrays(tmp_path / "s.zarr", "s2", _cube(**change))
    assert not (tmp_path / "s.zarr").exists()


def test_grid_mismatch_between_groups(tmp_path):
    path = tmp_path / "s.zarr"
    ingest_arrays(path, "s2", _cube())
    other = Grid(40, 30, Affine(10, 0, 400100, 0, -10, 5000000), GRID.crs_wkt)
    s1 = SensorCube(
        "s1",
        ("VV",),
        np.zeros((1, 1, 40, 30), np.float32),
        np.array(["2021-06-03"], "datetime64[s]"),
        other,
        units="dB",
    )
    with pytest.raises(StoreError, match="differs from the grid"):
        ingest_arrays(path, "s1", s1, append=True)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no such directory"):
        CubeStore.open(tmp_path / "missing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a cube store"):
        CubeStore.open(tmp_path / "empty")


def test_newer_format_version_refused(tmp_path):
    path = tmp_path / "s.zarr"
    ingest_arrays(path, "s2", _cube())
    meta_file = path / "zarr.json"
    doc = json.loads(meta_file.read_text())
    doc["attributes"]["spectravlm"]["format_version"] = 99
    meta_file.write_text(json.dumps(doc))
    with pytest.raises(StoreVersionError, match="version 99"):
        CubeStore.open(path)


def test_corrupt_chunk_named(tmp_path):
    path = tmp_path / "s.zarr"
    ingest_arrays(path, "s2", _cube())
    chunk = next((path / "s2" / "data").glob("c.*"))
    chunk.write_bytes(b"\x02\x01garbage" * 10)
    group = CubeStore.open(path)["s2"]
    with pytest.raises(StoreCorruptError, match=r"s2/data"):
        group.read((slice(None), slice(None), slice(None), slice(None)))


def test_summary_mentions_groups(tmp_path):
    path = tmp_path / "s.zarr"
    ingest_arrays(path, "s2", _cube(), title="unit test")
    text = CubeStore.open(path).summary()
    assert "s2: sentinel2_l2a 3 dates" in text and "UTM zone 33N" in text and "unit test" in text
    assert isinstance(Path(path), Path)


def test_info_shows_units_scale_nodata_dates_stats_and_chunks(tmp_path, capsys):
    from spectravlm.cli import main
    from spectravlm.data.stats import compute_stats

    path = tmp_path / "s.zarr"
    ingest_arrays(path, "s2", _cube(t=3, add_offset=-0.1))
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s2: sentinel2_l2a 3 dates (2021-06-01T00:00:00 .. 2021-06-11T00:00:00)" in out
    assert "physical = raw * 0.0001 + -0.1 in reflectance; nodata 0" in out
    assert "chunks (1, 3, 40, 30) (time, band, y, x): 3 chunks of data" in out
    assert "stats: none (run `spectravlm data stats" in out and "cloud probability (invalid at >= 50)" in out
    compute_stats(path)
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stats: 3 bands" in out and "from spectravlm data stats (a pass over the stored chunks), 20" in out


def test_verify_reads_every_chunk_and_names_corrupt_ones(tmp_path, capsys):
    from spectravlm.cli import main
    from spectravlm.data.validate import verify_store

    path = tmp_path / "s.zarr"
    grid = Grid(600, 300, GRID.transform, GRID.crs_wkt)  # 3 x 2 spatial chunks per date
    data = np.random.default_rng(0).integers(1, 10000, (2, 3, 600, 300), dtype=np.uint16)
    ingest_arrays(path, "s2", _cube(t=2, data=data, grid=grid, cloud=None))
    report = verify_store(path)
    assert report.ok and report.chunks > 12  # 12 data chunks, plus coordinates
    assert main(["data", "verify", str(path)]) == 0
    assert ": OK" in capsys.readouterr().out
    (path / "s2" / "data" / "c.1.0.2.1").write_bytes(b"\x02\x01garbage" * 10)  # overwritten
    chunk = path / "s2" / "data" / "c.0.0.1.0"
    chunk.write_bytes(chunk.read_bytes()[:50])  # truncated
    report = verify_store(path)
    assert [(p.array, p.chunk) for p in report.problems] == [
        ("s2/data", (0, 0, 1, 0)),
        ("s2/data", (1, 0, 2, 1)),
    ]
    assert main(["data", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        "CORRUPT s2/data chunk 0.0.1.0" in out
        and "CORRUPT s2/data chunk 1.0.2.1" in out
        and "2 corrupt" in out
    )
    (path / "zarr.json").write_text("{not json")
    assert main(["data", "verify", str(path)]) == 1
    assert "(store metadata)" in capsys.readouterr().out


@pytest.mark.parametrize("source", ["biomassters", "synthetic"])
def test_direct_chunk_writes_equal_zarr_byte_for_byte(source, biomassters_dir, tmp_path, monkeypatch):
    """ChunkFiles writes the chunk files zarr writes: same names, same bytes (edge chunks padded, chunks of
    fill values absent), on the real chip and on a grid with partial edge chunks, NaN fill and layers."""
    from spectravlm.data import store as store_module
    from spectravlm.data.ingest import ingest_biomassters
    from spectravlm.data.store import Layer

    def write(path):
        if source == "biomassters":
            ingest_biomassters(biomassters_dir, path, progress=False, stats=False)
            return
        rng = np.random.default_rng(0)
        grid = Grid(300, 520, GRID.transform, GRID.crs_wkt)  # 2 x 3 spatial chunks, partial at the edges
        sar = rng.normal(-12, 3, (3, 2, 300, 520)).astype(np.float32)
        sar[1] = np.nan  # a date of fill values only: no chunk files
        ndvi = rng.random((3, 300, 520)).astype(np.float32)
        cube = SensorCube("s1", ("VV", "VH"), sar, np.array(["2021-01-01", "2021-01-13", "2021-01-25"],
                          "datetime64[s]"), grid, nodata=np.nan, units="dB",
                          layers={"ndvi": Layer(ndvi, "1")})  # fmt: skip
        ingest_arrays(path, "s1", cube)

    write(tmp_path / "direct.zarr")
    monkeypatch.setattr(store_module.ChunkFiles, "of", classmethod(lambda cls, array: None))
    write(tmp_path / "zarr.zarr")

    def chunks(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("c.*"))}

    direct, reference = chunks(tmp_path / "direct.zarr"), chunks(tmp_path / "zarr.zarr")
    assert len(reference) > 20 and direct.keys() == reference.keys()
    assert all(direct[k] == reference[k] for k in reference)
    if source == "synthetic":
        assert not any(k.startswith("s1/data/c.1.") for k in reference)  # the all-NaN date
