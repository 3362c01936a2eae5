"""Fixtures of the data tests: the real BigEarthNet patches, extracted once per session."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ben(bigearthnet_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The six BigEarthNet S1/S2 pairs, extracted once: dirs and json metadata."""
    root = tmp_path_factory.mktemp("bigearthnet")
    for name in ("BigEarthNet-S1-Example.tar.bz2", "BigEarthNet-S2-Example.tar.bz2"):
        with tarfile.open(bigearthnet_dir / name) as tar:
            tar.extractall(root, filter="data")
    pairs = []
    for s1_dir in sorted((root / "BigEarthNet-S1-Example").iterdir()):
        s1_meta = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())
        s2_dir = root / "BigEarthNet-S2-Example" / s1_meta["corresponding_s2_patch"]
        s2_meta = json.loads(next(s2_dir.glob("*_labels_metadata.json")).read_text())
        pairs.append({"s1": s1_dir, "s2": s2_dir, "s1_meta": s1_meta, "s2_meta": s2_meta})
    assert len(pairs) == 6
    return pairs
