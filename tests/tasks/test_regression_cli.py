"""`spectravlm fit|test|predict` with the AGB configs: linking, the U-Net overlay, the whole main job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import rasterio
import yaml

from spectravlm.cli import main
from spectravlm.cli.train import lightning_cli
from spectravlm.tasks import RegressionTask
from spectravlm.tasks.baselines import UNetRegressionTask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_agb_configs_link_the_data_and_the_overlay_switches_to_the_unet(demo_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(CONFIGS / "agb_demo.yaml"), f"--data.stores=[{demo_store}]"]
    args += ["--model.init_args.init_encoder=null"]
    cli = lightning_cli(args, run=False)
    task, dm = cli.model, cli.datamodule
    assert isinstance(task, RegressionTask) and task.encoder.config.dim == 192 and task.window_size == 64
    assert task.bands["s1"] == ("VV", "VH") and len(task.bands["s2"]) == 10  # every band of the store
    assert dm.targets == ("agb",) and dm.predict_windows == "extent"
    assert "MapWriter" in {type(c).__name__ for c in cli.trainer.callbacks}
    unet = lightning_cli([*args[:3], "--config", str(CONFIGS / "agb_unet_baseline.yaml")], run=False)
    assert isinstance(unet.model, UNetRegressionTask) and unet.model.adapter.channels == 12 * 12


def test_gpu_config_parses(demo_store, capsys):
    with pytest.raises(SystemExit) as exit_:
        lightning_cli(["fit", "--config", str(CONFIGS / "agb_biomassters.yaml"), "--print_config"])
    assert exit_.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (
        cfg["trainer"]["precision"] == "bf16-mixed" and cfg["model"]["init_args"]["attention"] == "factorised"
    )


def test_fit_test_predict_from_the_command_line(demo_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    small = [
        "--config", str(CONFIGS / "agb_demo.yaml"), f"--data.stores=[{demo_store}]", "--data.window_size=32",
        "--data.block_size=64", "--data.split_fractions=[0.5, 0.25, 0.25]", "--data.batch_size=4",
        "--data.num_workers=0", "--data.predict_tile_size=256", "--data.predict_overlap=8",
        "--model.init_args.init_encoder=null", "--model.init_args.encoder=test",
        "--model.init_args.patch_size=8",
        "--model.init_args.head_dim=32", "--model.init_args.encoder_trainable=all",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    assert main(["fit", *small, "--trainer.max_epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "spectravlm: last checkpoint" in out and "figures in" in out
    (csv,) = (tmp_path / "runs" / "agb_demo" / "csv").glob("version_*/metrics.csv")
    train = pd.read_csv(csv).dropna(subset=["train/loss"]).groupby("epoch")["train/loss"].mean()
    assert len(train) == 3 and train.iloc[-1] < train.iloc[0]  # the loss falls
    ckpt = tmp_path / "runs" / "agb_demo" / "checkpoints" / "last.ckpt"
    assert main(["test", *small, f"--ckpt_path={ckpt}"]) == 0
    out = capsys.readouterr().out
    assert (
        "agb on the held-out (test) windows:" in out and "RMSE" in out and "predict-the-training-mean" in out
    )
    assert main(["predict", *small, f"--ckpt_path={ckpt}"]) == 0
    tif = tmp_path / "runs" / "agb_demo" / "maps" / "demo.tif"
    assert f"spectravlm: wrote {tif}" in capsys.readouterr().out
    with rasterio.open(tif) as src:
        assert src.shape == (128, 128) and src.descriptions == ("agb", "agb_std")
    assert main(["predict", *small, f"--ckpt_path={ckpt}"]) == 1  # exists: refused
    assert "already exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert main(["predict", *small, f"--ckpt_path={ckpt}", "--trainer.callbacks.overwrite=true"]) == 0
