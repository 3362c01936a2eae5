"""SIGKILL an ingest mid-write: the target is the previous store (byte for byte) or absent, never half of one.

The ingest runs in a subprocess on the real eo-learn scenes written as one GeoTIFF per date. In the
deterministic tests the subprocess stops after its first date is written into the hidden temporary
store (``SensorWriter.write`` is wrapped to signal and sleep), so the kill is known to land mid-transaction;
the slow sweep kills an unmodified ingest after a range of delays.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_bounds

from spectravlm.data.ingest import ingest_geotiff
from spectravlm.data.store import CubeStore

L1C = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")

_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from spectravlm.data.ingest import ingest_geotiff
    from spectravlm.data.store import SensorWriter

    marker, store, mode, hold = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "hold"
    files = sys.argv[5:]
    if hold:
        real = SensorWriter.write

        def write_then_hold(self, t, *args, **kwargs):
            real(self, t, *args, **kwargs)
            tmp = Path(str(self.group.store_path.store.root))
            marker.write_text(str(tmp))  # one window of a date is in the temporary store now
            time.sleep(120)  # the parent kills us here

        SensorWriter.write = write_then_hold
    ingest_geotiff(files, store, "s2", "sentinel2_l1c", units="reflectance", append=mode == "append",
                   overwrite=mode == "overwrite", progress=False)
    """
)


@pytest.fixture(scope="module")
def tifs(eolearn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The five real eo-learn L1C scenes as 13-band GeoTIFFs named by date, in time order."""
    out = tmp_path_factory.mktemp("kill_tifs")
    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")
    stamps = json.loads((eolearn_dir / "timestamps.json").read_text())
    transform = from_bounds(465181.05, 5079244.89, 466180.53, 5080254.63, 100, 101)
    files = []
    for frame, idx in enumerate((2, 1, 4, 3, 0)):
        path = out / f"lj_{stamps[idx][:10]}.tif"
        with rasterio.open(path, "w", driver="GTiff", height=101, width=100, count=13, dtype="float32",
                           crs="EPSG:32633", transform=transform) as dst:  # fmt: skip
            dst.write(np.moveaxis(scenes[frame], -1, 0))
            dst.descriptions = L1C
        files.append(path)
    return sorted(files)


def _snapshot(store: Path) -> dict[str, str]:
    """Every file of a store and the hash of its bytes."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def _stale(store: Path) -> list[Path]:
    return sorted(store.parent.glob(f".{store.name}.tmp-*"))


def _kill_mid_write(store: Path, mode: str, files: list[Path], marker: Path) -> Path:
    """Run the ingest, SIGKILL it once a date is in its temporary store; return that temporary dir."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-c", _SCRIPT, str(marker), str(store), mode, "hold", *map(str, files)]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ingest ended before the kill: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the ingest never wrote a date")
        time.sleep(0.02)
    tmp = Path(marker.read_text())
    assert tmp.is_dir() and (tmp / "s2" / "data" / "zarr.json").exists()  # mid-write: a partial store
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert proc.stderr is not None
    proc.stderr.close()
    return tmp


def test_kill_during_create_leaves_no_store(tifs: list[Path], tmp_path: Path) -> None:
    store = tmp_path / "lj.zarr"
    tmp = _kill_mid_write(store, "create", tifs, tmp_path / "marker")
    assert not store.exists()  # no store rather than a half-written one
    assert _stale(store) == [tmp]  # the killed run's temporary directory is left behind, hidden
    ingest_geotiff(tifs, store, "s2", "sentinel2_l1c", units="reflectance", progress=False)
    assert _stale(store) == []  # ... and the next ingest on the same path removes it
    g = CubeStore.open(store)["s2"]
    assert g.data.shape == (5, 13, 101, 100)
    with rasterio.open(tifs[-1]) as src:
        np.testing.assert_array_equal(g.read((4,)), src.read())


@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_kill_during_append_or_overwrite_keeps_previous(tifs: list[Path], tmp_path: Path, mode: str) -> None:
    store = tmp_path / "lj.zarr"
    ingest_geotiff(tifs[:3], store, "s2", "sentinel2_l1c", units="reflectance", progress=False)
    before = _snapshot(store)
    new = tifs[3:] if mode == "append" else tifs
    tmp = _kill_mid_write(store, mode, new, tmp_path / "marker")
    assert _snapshot(store) == before  # the previous store, byte for byte
    assert CubeStore.open(store)["s2"].data.shape[0] == 3
    assert _stale(store) == [tmp]
    ingest_geotiff(new, store, "s2", "sentinel2_l1c", units="reflectance", append=mode == "append",
                   overwrite=mode == "overwrite", progress=False)  # fmt: skip
    assert _stale(store) == []
    g = CubeStore.open(store)["s2"]
    assert g.data.shape[0] == 5
    with rasterio.open(tifs[3]) as src:
        np.testing.assert_array_equal(g.read((3,)), src.read())


@pytest.mark.slow
def test_kill_sweep_unmodified_ingest(tifs: list[Path], tmp_path: Path) -> None:
    """Kill a plain append after growing delays until one completes: each outcome is old or complete."""
    store = tmp_path / "lj.zarr"
    ingest_geotiff(tifs[:2], store, "s2", "sentinel2_l1c", units="reflectance", progress=False)
    before = _snapshot(store)
    outcomes = []
    for delay in np.arange(0.2, 15.0, 0.3):
        args = [sys.executable, "-c", _SCRIPT, str(tmp_path / "m"), str(store), "append", "run"]
        proc = subprocess.Popen([*args, *map(str, tifs[2:])], stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if _snapshot(store) == before:
            outcomes.append("previous")
            continue
        g = CubeStore.open(store)["s2"]  # changed: then it is the whole new store
        assert g.data.shape[0] == 5 and len(g.times) == 5
        with rasterio.open(tifs[4]) as src:
            np.testing.assert_array_equal(g.read((4,)), src.read())
        outcomes.append("complete")
        break
    assert outcomes.count("previous") >= 3 and outcomes[-1] == "complete", outcomes
    # the next transaction on the path clears whatever the killed runs left behind
    ingest_geotiff(tifs, store, "s2", "s2_l1c", units="reflectance", overwrite=True, progress=False)
    assert _stale(store) == []


_FOLDER_SCRIPT = textwrap.dedent(
    """
    import sys
    from spectravlm.data.ingest.biomassters import ingest_biomassters_folder

    ingest_biomassters_folder(sys.argv[1], sys.argv[2], agbm_dir=sys.argv[3], workers=1, progress=False)
    """
)


def test_folder_ingest_resumes_after_a_kill(biomassters_dir: Path, tmp_path: Path) -> None:
    """SIGKILL a whole-folder BioMassters ingest once some chips are stored; a rerun skips exactly those."""
    from spectravlm.data.ingest.biomassters import ingest_biomassters_folder

    features, agbm = tmp_path / "features", tmp_path / "agbm"
    features.mkdir()
    agbm.mkdir()
    ids = [f"k{k:07d}" for k in range(8)]
    for chip in ids:
        for f in biomassters_dir.iterdir():
            name = f.name.replace("0060c0a5", chip)
            ((agbm if "agbm" in name else features) / name).symlink_to(f)
    out = tmp_path / "stores"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-c", _FOLDER_SCRIPT, str(features), str(out), str(agbm)]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.zarr"))) < 2:
        if proc.poll() is not None:
            raise AssertionError(f"the ingest ended before the kill: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no chip was stored in time")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert proc.stderr is not None
    proc.stderr.close()
    done = sorted(p.name[:-5] for p in out.glob("*.zarr"))
    assert 2 <= len(done) < len(ids), done  # killed mid-folder
    for chip in done:  # whatever is at a final path is a complete store
        assert CubeStore.open(out / f"{chip}.zarr")["s2"].data.shape == (12, 10, 256, 256)
    report = ingest_biomassters_folder(features, out, agbm_dir=agbm, workers=1, progress=False)
    assert report.skipped == done and sorted(report.written) == sorted(set(ids) - set(done))
    assert not report.failed and not list(out.glob(".*tmp-*"))  # the killed chip's build folder is gone
    ref = CubeStore.open(out / f"{ids[0]}.zarr")
    for chip in ids:
        np.testing.assert_array_equal(
            CubeStore.open(out / f"{chip}.zarr")["s1_asc"].data[:], ref["s1_asc"].data[:]
        )
