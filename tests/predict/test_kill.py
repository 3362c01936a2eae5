"""A prediction killed half-way leaves no partial output: no map folder, no predictions group in the store."""

from __future__ import annotations

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
import xarray as xr

from spectravlm.data.demo import write_demo_store
from spectravlm.data.store import CubeStore

RUNNER = textwrap.dedent(
    """
    import sys, time
    import lightning as L
    import torch
    from spectravlm.data.bands import store_bands
    from spectravlm.data.datamodule import CubeDataModule
    from spectravlm.predict import MapWriter
    from spectravlm.tasks import RegressionTask

    torch.set_num_threads(1)
    store, maps, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    L.seed_everything(0)
    dm = CubeDataModule(stores=[store], groups=["s2", "s1"], window_size=32, block_size=64, batch_size=4,
                        num_workers=0, predict_windows="extent", predict_overlap=8, predict_tile_size=256)
    task = RegressionTask(bands=store_bands([store], ["s2", "s1"]), window_size=32, encoder="test",
                          patch_size=8, head_dim=32, head_depth=1, transform_mean=100.0, transform_std=50.0,
                          train_mean=100.0)

    class Slow(L.Callback):
        def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            print(f"batch {batch_idx}", flush=True)
            time.sleep(delay)

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False,
                        callbacks=[Slow(), MapWriter(maps, store_group=True)])
    trainer.predict(task, datamodule=dm)
    print("done", flush=True)
    """
)


def _chunks_written(parent: Path, store_name: str) -> bool:
    return any(parent.glob(f".{store_name}.tmp-*/predictions/agb/c.*"))


@pytest.mark.slow
def test_kill_during_predict_leaves_no_partial_output(tmp_path):
    store = tmp_path / "kill.zarr"
    write_demo_store(store, size=300, seed=4)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    maps = tmp_path / "maps"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, str(runner), str(store), str(maps), "0.05"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not _chunks_written(tmp_path, store.name):  # the first tile is on disk: the run is well under way
        assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    out = proc.stdout.read() if proc.stdout else ""
    assert "done" not in out and "batch" in out
    # nothing partial where a user looks: no map folder, the store without a predictions group
    assert not maps.exists()
    assert "predictions" not in CubeStore.open(store).root
    assert list(tmp_path.glob(".maps.tmp-*")) and list(tmp_path.glob(".kill.zarr.tmp-*"))  # hidden, stale
    # the next run completes and removes what the killed one left
    done = subprocess.run(
        [sys.executable, str(runner), str(store), str(maps), "0"], cwd=tmp_path, capture_output=True,
        text=True,
        env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(tmp_path.glob(".maps.tmp-*")) and not list(tmp_path.glob(".kill.zarr.tmp-*"))
    with rasterio.open(maps / "kill.tif") as src:
        tif = src.read(1)
    assert np.isfinite(tif).all()
    np.testing.assert_array_equal(xr.open_zarr(store, group="predictions")["agb"].values, tif)
