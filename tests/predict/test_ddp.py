"""Whole-scene prediction under DDP: two CPU processes (gloo) take disjoint tiles of one output."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from spectravlm.data.demo import write_demo_store

CONFIG = textwrap.dedent(
    """
    seed_everything: 0
    trainer:
      accelerator: cpu
      logger: false
      enable_progress_bar: false
      enable_model_summary: false
      callbacks:
        - class_path: spectravlm.predict.MapWriter
          init_args: {{output_dir: {maps}, store_group: {group}}}
    model:
      class_path: spectravlm.tasks.RegressionTask
      init_args: {{encoder: test, patch_size: 8, head_dim: 32, head_depth: 1, uncertainty: gaussian,
                  transform_mean: 100.0, transform_std: 50.0, train_mean: 100.0}}
    data:
      stores: [{store}]
      groups: [s2, s1]
      window_size: 32
      block_size: 64
      batch_size: 4
      num_workers: 0
      predict_windows: extent
      predict_overlap: 8
      predict_tile_size: 256
    """
)


def _predict(tmp_path: Path, store: Path, maps: Path, group: bool, *extra: str) -> None:
    cfg = tmp_path / f"{maps.name}.yaml"
    cfg.write_text(CONFIG.format(maps=maps, group=str(group).lower(), store=store))
    proc = subprocess.run(
        [sys.executable, "-m", "spectravlm.cli", "predict", "--config", str(cfg), *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_two_process_gloo_predict_writes_one_map_equal_to_one_process(tmp_path):
    store = tmp_path / "ddp.zarr"
    write_demo_store(store, size=300, seed=5)  # four tiles: rank 0 takes 0 and 2, rank 1 takes 1 and 3
    _predict(tmp_path, store, tmp_path / "ddp_maps", True,
             "--trainer.strategy=ddp", "--trainer.devices=2")  # fmt: skip
    _predict(tmp_path, store, tmp_path / "one_maps", False, "--trainer.devices=1")
    with (
        rasterio.open(tmp_path / "ddp_maps" / "ddp.tif") as a,
        rasterio.open(tmp_path / "one_maps" / "ddp.tif") as b,
    ):
        two, one = a.read(), b.read()
    assert np.isfinite(two).all()
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(xr.open_zarr(store, group="predictions")["agb"].values, two[0])
    assert not list(tmp_path.glob(".*tmp-*"))  # every build folder committed or removed
