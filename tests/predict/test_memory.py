"""Peak memory of a whole-store prediction is bounded by the tiles in flight, not by the scene (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spectravlm.data.demo import make_demo_cubes
from spectravlm.data.store import Grid, StoreTransaction

CHILD = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from spectravlm.data.bands import store_bands
    from spectravlm.data.datamodule import CubeDataModule
    from spectravlm.predict import MapWriter
    from spectravlm.tasks import RegressionTask

    def status(key):
        with open("/proc/self/status") as f:
            return int(next(x for x in f if x.startswith(key)).split()[1]) / 1024

    torch.set_num_threads(1)
    store, maps = sys.argv[1], sys.argv[2]
    dm = CubeDataModule(stores=[store], groups=["s2", "s1"], window_size=64, block_size=512, batch_size=16,
                        num_workers=0, empty_windows="mask", predict_windows="extent", predict_overlap=16,
                        predict_tile_size=256)
    task = RegressionTask(bands=store_bands([store], ["s2", "s1"]), window_size=64, encoder="test",
                          patch_size=16, head_dim=32, head_depth=1, transform_mean=100.0, transform_std=50.0,
                          train_mean=100.0)
    before = status("VmRSS:")
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              callbacks=[MapWriter(maps)]).predict(task, datamodule=dm)
    print(json.dumps({"before": before, "peak": status("VmHWM:")}))
    """
)


def _tiled_store(path: Path, size: int) -> None:
    s2, s1, _, grid = make_demo_cubes(size=512, seed=0)
    reps, big = size // 512, Grid(size, size, grid.transform, grid.crs_wkt)
    s2 = replace(s2, data=np.tile(s2.data[5:6], (1, 1, reps, reps)),
                 cloud=np.tile(s2.cloud[5:6], (1, reps, reps)),
                 times=s2.times[5:6], grid=big)  # fmt: skip
    s1 = replace(s1, data=np.tile(s1.data[5:6], (1, 1, reps, reps)), times=s1.times[5:6], grid=big)
    with StoreTransaction(path, mode="create", synthetic=True) as tx:
        tx.write_sensor("s2", s2)
        tx.write_sensor("s1", s1)


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_the_scene(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    peaks = {}
    for size in (1024, 2048):  # 16 and 64 tiles of 256 px
        store = tmp_path / f"s{size}.zarr"
        _tiled_store(store, size)
        proc = subprocess.run(
            [sys.executable, str(child), str(store), str(tmp_path / f"maps{size}")], capture_output=True,
            text=True, timeout=900, env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks[size] = json.loads(proc.stdout.strip().splitlines()[-1])
    grow = {s: p["peak"] - p["before"] for s, p in peaks.items()}
    print(
        f"peak RSS above the start of predict: 1024 px {grow[1024]:.0f} MB, 2048 px (4x) {grow[2048]:.0f} MB"
    )
    # 4x the pixels (a 4x larger map: 16 MB of float32 per layer) must not raise the peak by more than 32 MB
    assert peaks[2048]["peak"] <= peaks[1024]["peak"] + 32
