"""Kill a real fit with SIGKILL at a known step, resume it from its last checkpoint: the same next losses.

The kill comes from a callback inside the child (:class:`helpers.KillAt`) at the start of the step after
the checkpoint, so it lands at a known point without sleeps or polling. Resumption is exact from an
epoch-end checkpoint and from a mid-epoch one (the training loader's position travels with the checkpoint).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import demo_cli_args, train_losses
from spectravlm.cli.train import lightning_cli

TESTS = Path(__file__).resolve().parents[1]


def _run_in(path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(path)
    lightning_cli(args)


def _killed_run(path: Path, args: list[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "spectravlm.cli", *args],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("kill_step", "extra"),
    [
        (2, []),  # 2 steps per epoch: killed right after the epoch-end checkpoint of epoch 0
        (3, ["--data.batch_size=2", "--trainer.callbacks+=ModelCheckpoint",
             "--trainer.callbacks.dirpath=runs/pretrain_demo/checkpoints",
             "--trainer.callbacks.every_n_train_steps=1", "--trainer.callbacks.save_last=true"]),
        # 4 steps per epoch, a checkpoint after every step: killed in the middle of epoch 0
    ],
    ids=["epoch-end", "mid-epoch"],
)  # fmt: skip
def test_sigkill_then_resume_repeats_the_uninterrupted_losses(
    demo_store, tmp_path, monkeypatch, kill_step, extra
):
    args = demo_cli_args(
        demo_store, 2, *extra
    )  # augmentation on, seeded: every step's draws are reproducible
    killed = tmp_path / "killed"
    _killed_run(
        killed, [*args, "--trainer.callbacks+=helpers.KillAt", f"--trainer.callbacks.step={kill_step}"]
    )
    last = killed / "runs" / "pretrain_demo" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == kill_step

    _run_in(killed, monkeypatch, [*args, "--ckpt_path", "last"])  # resume in another process (this one)
    resumed = train_losses(killed / "runs" / "pretrain_demo" / "csv")
    _run_in(tmp_path / "whole", monkeypatch, args)  # the same run without interruption
    whole = train_losses(tmp_path / "whole" / "runs" / "pretrain_demo" / "csv")

    assert sorted(resumed) == [s for s in sorted(whole) if s >= kill_step] and resumed
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
