"""Shared fixtures: the real sample data in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import demo_bands, demo_batch, demo_store  # noqa: F401 (shared fixtures)

SHARED_DATA = Path(
    os.environ.get("SPECTRAVLM_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
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
def shared_data() -> Path:
    """Root of the real sample data."""
    return _shared("")


@pytest.fixture(scope="session")
def biomassters_dir() -> Path:
    """The real BioMassters chip 0060c0a5 (12 months of S1 and S2, AGB target)."""
    return _shared("biomassters/0060c0a5")


@pytest.fixture(scope="session")
def eolearn_dir() -> Path:
    """Real Sentinel-2 L1C scenes near Ljubljana (13 bands, 5 dates) from eo-learn."""
    return _shared("eo-learn")


@pytest.fixture(scope="session")
def bigearthnet_dir() -> Path:
    """Real BigEarthNet v1.0 S1/S2 example archives (tar.bz2)."""
    return _shared("bigearthnet")


@pytest.fixture(scope="session")
def s1_grd_dir() -> Path:
    """A real Sentinel-1 IW GRD scene (VV+VH, GCP-georeferenced, downsampled)."""
    return _shared("rio-tiler-pds-s1/S1A_IW_GRDH_1SDV_20180716T004042_20180716T004107_022812_02792A_FD5B")


@pytest.fixture(scope="session")
def bigearthnet_patches(bigearthnet_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BigEarthNet v1.0 S1/S2 example archives, extracted once (``BigEarthNet-S*-Example/<patch>/``)."""
    import tarfile

    root = tmp_path_factory.mktemp("bigearthnet-patches")
    for name in ("BigEarthNet-S1-Example.tar.bz2", "BigEarthNet-S2-Example.tar.bz2"):
        with tarfile.open(bigearthnet_dir / name) as tar:
            tar.extractall(root, filter="data")
    return root
