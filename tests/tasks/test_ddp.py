"""Two ranks: a 2-process gloo DDP run through `spectravlm fit` (slow), and a fast in-process variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lightning as L
import pytest
import torch

from helpers import demo_cli_args, demo_datamodule
from spectravlm.callbacks import SeenWindows
from spectravlm.data.bands import store_bands
from spectravlm.tasks import PretrainTask


def test_two_ranks_in_process_train_on_disjoint_windows(demo_store, tmp_path):
    """Fast variant: each rank's data module (rank/world_size given) feeds its own task for one epoch."""
    seen = []
    for rank in (0, 1):
        dm = demo_datamodule(demo_store, rank=rank, world_size=2, batch_size=2)
        task = PretrainTask(
            bands=store_bands(dm.stores, dm.groups),
            window_size=32,
            encoder="test",
            patch_size=8,
            decoder_dim=32,
        )
        L.Trainer(
            accelerator="cpu",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[SeenWindows(str(tmp_path / f"r{rank}"))],
        ).fit(task, datamodule=dm)
        seen.append(json.loads((tmp_path / f"r{rank}" / "seen-rank0-epoch0.json").read_text())["windows"])
    assert len(seen[0]) == len(seen[1]) == 4 and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(8))


@pytest.mark.slow
def test_two_process_gloo_fit_shards_windows_and_gathers_negatives(demo_store, tmp_path):
    seen = tmp_path / "seen"
    args = demo_cli_args(
        demo_store,
        2,
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--model.init_args.contrastive_weight=0.1",  # all_gather of the S1/S2 embeddings across ranks
        "--data.batch_size=2",
        "--trainer.callbacks+=spectravlm.callbacks.SeenWindows",
        f"--trainer.callbacks.dirpath={seen}",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "spectravlm.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for epoch in (0, 1):
        ranks = [
            json.loads((seen / f"seen-rank{r}-epoch{epoch}.json").read_text())["windows"] for r in (0, 1)
        ]
        assert ranks[0] and ranks[1] and not set(ranks[0]) & set(ranks[1])  # disjoint
        assert sorted(ranks[0] + ranks[1]) == list(range(8))  # together: the whole training split, once
    last = torch.load(
        tmp_path / "runs" / "pretrain_demo" / "checkpoints" / "last.ckpt",
        map_location="cpu",
        weights_only=True,
    )
    assert last["global_step"] == 4 and "spectravlm" in last  # 2 epochs x 2 steps (4 windows per rank)
    assert (
        "train/contrastive_loss"
        in (tmp_path / "runs" / "pretrain_demo" / "csv" / "version_0" / "metrics.csv").read_text()
    )
    # the encoder was exported once (weights gathered through the strategy on both ranks, written by rank 0)
    # and equals the checkpoint's
    from spectravlm.encoders.spectral import SpectralEncoder

    exported = SpectralEncoder.from_pretrained(
        tmp_path / "runs" / "pretrain_demo" / "tensorboard" / "version_0" / "encoder"
    )
    from_ckpt = SpectralEncoder.from_checkpoint(
        tmp_path / "runs" / "pretrain_demo" / "checkpoints" / "last.ckpt"
    )
    for (k, a), (_, b) in zip(exported.state_dict().items(), from_ckpt.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_two_process_contrastive_gather_with_uneven_last_batches(demo_store, tmp_path):
    """9 training windows over 2 ranks without padding: rank 0 steps on 5 samples, rank 1 on 4; no hang."""
    args = demo_cli_args(
        demo_store,
        1,
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--model.init_args.contrastive_weight=0.1",
        "--data.block_size=32",
        "--data.split_fractions=[0.5625, 0.25, 0.1875]",  # 16 blocks of one window: 9 train windows
        "--data.pad_to_even=false",
        "--data.batch_size=5",
        "--trainer.limit_val_batches=0",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "spectravlm.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = (tmp_path / "runs" / "pretrain_demo" / "csv" / "version_0" / "metrics.csv").read_text()
    assert "train/contrastive_loss" in metrics
