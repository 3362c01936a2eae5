"""Kill a `spectravlm fit` run with SIGKILL, resume it with ``--ckpt_path last``: the same next losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import demo_cli_args, train_losses
from spectravlm.cli.train import lightning_cli

EPOCHS = 2  # 2 training steps per epoch (8 windows, batches of 4); checkpoints at every epoch end


def _run_in(path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(path)
    lightning_cli(args)


def test_sigkill_then_resume_repeats_the_uninterrupted_losses(demo_store, tmp_path, monkeypatch):
    args = demo_cli_args(demo_store, EPOCHS)  # augmentation on, seeded: every step's draws are reproducible

    # 1. A run that is killed (SIGKILL, no chance to clean up) as soon as its first checkpoint exists.
    killed = tmp_path / "killed"
    killed.mkdir()
    last = killed / "runs" / "pretrain_demo" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spectravlm.cli", *args],
        cwd=killed,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 2 <= step < 2 * EPOCHS  # killed after a checkpoint and before the end

    # 2. Resume it from the last checkpoint, in another process (this one).
    _run_in(killed, monkeypatch, [*args, "--ckpt_path", "last"])
    resumed = train_losses(killed / "runs" / "pretrain_demo" / "csv")

    # 3. The same run without interruption.
    _run_in(tmp_path / "whole", monkeypatch, args)
    whole = train_losses(tmp_path / "whole" / "runs" / "pretrain_demo" / "csv")

    assert sorted(resumed) == [s for s in sorted(whole) if s >= step] and resumed
    for s, loss in resumed.items():
        assert loss == pytest.approx(whole[s], rel=1e-5, abs=1e-6), (s, loss, whole[s])
    assert (tmp_path / "whole" / "runs" / "pretrain_demo" / "tensorboard" / "version_0" / "encoder").is_dir()


def test_validate_test_and_export_commands_use_the_checkpoint(demo_store, tmp_path, monkeypatch, capsys):
    from spectravlm.cli import main
    from spectravlm.encoders.spectral import SpectralEncoder

    fit = demo_cli_args(demo_store, 1, "--trainer.limit_train_batches=1")
    _run_in(tmp_path, monkeypatch, fit)
    last = tmp_path / "runs" / "pretrain_demo" / "checkpoints" / "last.ckpt"
    assert main(["validate", *fit[1:], "--ckpt_path", "last"]) == 0
    assert main(["test", *fit[1:], "--ckpt_path", str(last)]) == 0  # a file path: the config's model is kept
    out = capsys.readouterr().out
    assert "val/loss" in out and "test/loss" in out and "test/baseline_loss" in out
    assert main(["validate", *fit[1:], "--model.init_args.decoder_dim=32", "--ckpt_path", str(last)]) == 1
    assert "decoder_dim: checkpoint 64, this run 32" in capsys.readouterr().err
    assert main(["export", str(last), str(tmp_path / "exported")]) == 0
    encoder = SpectralEncoder.from_pretrained(tmp_path / "exported")
    saved = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(encoder.norm.weight, saved["model.encoder.norm.weight"])
