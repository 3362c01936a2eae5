"""The first hour of a new user: honest exits, one-line errors, a run that says what it does."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from helpers import ProbeTask, demo_cli_args, demo_datamodule
from spectravlm.callbacks.summary import RunSummary
from spectravlm.cli import main
from spectravlm.data.bands import store_bands
from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import write_demo_store
from spectravlm.tasks import PretrainTask


def _one_line_error(capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("spectravlm: error:"), err
    for e in expected:
        assert e in err, (e, err)
    return err


def test_checkpoint_problems_are_one_line_errors(demo_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = demo_cli_args(demo_store, 1)[1:]  # without the subcommand
    # --ckpt_path last with no checkpoint: an error, never random weights scored
    assert main(["validate", *base, "--ckpt_path", "last"]) == 1
    _one_line_error(capsys, "--ckpt_path last: no last checkpoint in", "runs/pretrain_demo/checkpoints")
    assert main(["validate", *base, "--ckpt_path", str(tmp_path / "missing.ckpt")]) == 1
    _one_line_error(capsys, "missing.ckpt: no such checkpoint file")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    assert main(["validate", *base, "--ckpt_path", str(tmp_path / "notes.ckpt")]) == 1
    _one_line_error(capsys, "notes.ckpt", "not a complete checkpoint")
    # a real checkpoint cut short
    dm = demo_datamodule(demo_store, targets=["agb"])
    probe = ProbeTask(bands=store_bands(dm.stores, dm.groups))
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(probe, datamodule=dm)
    good = tmp_path / "probe.ckpt"
    trainer.save_checkpoint(good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["validate", *base, "--ckpt_path", str(cut)]) == 1
    _one_line_error(capsys, "cut.ckpt", "not a complete checkpoint (truncated")
    # a checkpoint of another task
    assert main(["validate", *base, "--ckpt_path", str(good)]) == 1
    _one_line_error(capsys, "probe.ckpt: a ProbeTask checkpoint; this run is a PretrainTask")
    assert main(["export", str(cut), str(tmp_path / "enc")]) == 1
    _one_line_error(capsys, "cut.ckpt")
    assert not (tmp_path / "enc").exists()  # nothing half-written


def test_fit_prints_a_summary_and_checkpoints_are_not_duplicated(demo_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(demo_cli_args(demo_store, 2)) == 0
    out = capsys.readouterr().out
    summary = out[out.index("spectravlm run summary") :]
    for line in ("stores:", "group s2: sentinel2_l2a, 10 bands", "uint16 x 0.0001 +0 -> reflectance",
                 "group s1: sentinel1_grd", "windows of 32 px: train 8, val 4, test 4", "steps per epoch: 2",
                 "device: cpu", "normalisation statistics: sentinel2_l2a: store:", "checkpoints: ",
                 "runs/pretrain_demo/checkpoints", "exported encoder"):  # fmt: skip
        assert line in summary, line
    ckpts = tmp_path / "runs" / "pretrain_demo" / "checkpoints"
    last = ckpts / "last.ckpt"
    files = [p for p in ckpts.iterdir() if not p.is_symlink()]
    # last.ckpt is a link to the checkpoint of the same step, or a file of its own step: never a second copy
    steps = [torch.load(p, map_location="cpu", weights_only=True)["global_step"] for p in files]
    assert len(steps) == len(set(steps)) and last.exists()
    assert (tmp_path / "runs" / "pretrain_demo" / "csv" / "version_0" / "metrics.csv").is_file()


def test_summary_warns_about_a_split_that_blocks_distort(tmp_path):
    store = tmp_path / "s.zarr"
    write_demo_store(store, size=256)
    dm = CubeDataModule([str(store)], groups=["s2"], window_size=64, block_size=128, num_workers=0)
    task = PretrainTask(bands=store_bands(dm.stores, dm.groups), window_size=64, encoder="test", patch_size=8)
    summary = RunSummary()
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[summary], default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    text = "\n".join(summary.warnings)
    assert "the train split holds 50% of the windows, 80% were asked" in text
    assert "block_size 128 px on stores of 256x256 px gives 4 block(s)" in text
    assert "warning: the" in "\n".join(summary.lines)


def test_predict_saves_what_it_computes(demo_store, tmp_path, monkeypatch, capsys):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    fit = demo_cli_args(demo_store, 1, "--trainer.limit_train_batches=1")
    assert main(fit) == 0
    capsys.readouterr()
    assert main(["predict", *fit[1:], "--ckpt_path", "last"]) == 0
    out = capsys.readouterr().out
    assert "wrote the features of 4 windows to" in out
    path = Path(out.split("wrote the features of 4 windows to ")[1].split()[0])
    saved = np.load(path)
    assert saved["features"].shape == (4, 32) and sorted(saved["index"].tolist()) == [0, 1, 2, 3]
    assert saved["origin"].shape == (4, 2) and np.isfinite(saved["features"]).all()
    before = path.read_bytes()
    assert main(["predict", *fit[1:], "--ckpt_path", "last"]) == 0  # a second run: its own version folder
    second = capsys.readouterr().out.split("windows to ")[1].split()[0]
    assert Path(second) != path and path.read_bytes() == before  # the earlier prediction is untouched
