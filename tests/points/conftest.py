"""Fixtures of the points tests: the real GEDI L4A granule, synthetic stores laid over a given area."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS

from spectravlm.data.store import Grid, SensorCube, StoreTransaction

GEDI_ZIP = "GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.zip"
SHARED_DATA = Path(
    os.environ.get("SPECTRAVLM_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")
)


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(
            f"real sample data {path} is absent (it lives in ../shared/data beside the project; "
            "set SPECTRAVLM_SHARED_DATA to point elsewhere)"
        )
    return path


@pytest.fixture(scope="session")
def gedi_granule() -> Path:
    """The real GEDI L4A V002 granule subset (461 shots in 8 beams, 2020-02-05), a zip of one .h5."""
    return _shared("gedi-l4a") / GEDI_ZIP


@pytest.fixture(scope="session")
def gedi_h5(gedi_granule: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The granule's .h5, extracted once (to read it with h5py directly)."""
    import zipfile

    out = tmp_path_factory.mktemp("gedi")
    with zipfile.ZipFile(gedi_granule) as zf:
        (member,) = [m for m in zf.namelist() if m.endswith(".h5")]
        zf.extract(member, out)
    return out / member


def synthetic_store(
    path: Path,
    bounds: tuple[float, float, float, float],
    epsg: int,
    pixel: float,
    dates: list[str],
    seed: int = 0,
) -> Grid:
    """A small SYNTHETIC S2 store (4 bands) covering ``bounds`` (W, S, E, N in EPSG ``epsg``), north-up."""
    w, s, e, n = bounds
    width, height = int(np.ceil((e - w) / pixel)), int(np.ceil((n - s) / pixel))
    grid = Grid(height, width, Affine(pixel, 0.0, w, 0.0, -pixel, n), CRS.from_epsg(epsg).to_wkt())
    rng = np.random.default_rng(seed)
    data = rng.integers(100, 4000, size=(len(dates), 4, height, width), dtype=np.uint16)
    cube = SensorCube(
        sensor="sentinel2_l2a",
        bands=("B02", "B03", "B04", "B08"),
        data=data,
        times=np.array(dates, dtype="datetime64[s]"),
        grid=grid,
        nodata=0,
        scale_factor=1e-4,
        units="reflectance",
        source="SYNTHETIC test store",
    )
    with StoreTransaction(path, title="SYNTHETIC test store", synthetic=True) as tx:
        tx.write_sensor("s2", cube)
    return grid


@pytest.fixture(scope="session")
def make_store():
    """:func:`synthetic_store`, as a fixture (test modules cannot import this conftest)."""
    return synthetic_store
