"""What every encoder task gets from BaseTask: one encoder from pretraining to fine-tuning, parameter groups,
freezing, statistics from the stores, export, CLI arguments by declaration."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from helpers import ProbeTask, demo_datamodule
from spectravlm.cli import main
from spectravlm.cli.train import lightning_cli
from spectravlm.data.bands import store_bands
from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import write_demo_store
from spectravlm.encoders.spectral import SpectralEncoder, load_encoder
from spectravlm.errors import ModelConfigError
from spectravlm.io import OutputExistsError
from spectravlm.tasks import PretrainTask


def _trainer(tmp_path: Path, steps: int = 4, **kw) -> L.Trainer:  # type: ignore[no-untyped-def]
    args = dict(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )
    return L.Trainer(**(args | kw))


@pytest.fixture(scope="module")
def pretrained(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, PretrainTask]:
    """A short pretraining run: its checkpoint and its exported folder."""
    root = tmp_path_factory.mktemp("pretrained")
    dm = demo_datamodule(demo_store)
    task = PretrainTask(
        bands=store_bands(dm.stores, dm.groups), window_size=32, encoder="test", patch_size=8, decoder_dim=32
    )
    trainer = _trainer(root, steps=3)
    trainer.fit(task, datamodule=dm)
    ckpt = root / "pre.ckpt"
    trainer.save_checkpoint(ckpt)
    folder = task.export_encoder(root / "encoder")
    return ckpt, folder, task


def test_pretraining_takes_its_statistics_from_the_store(pretrained, demo_store):
    _, folder, task = pretrained
    assert task.encoder.config.stats_source["sentinel2_l2a"] == f"store:{demo_store}"
    facts = json.loads((folder / "training.json").read_text())
    assert facts["task"] == "PretrainTask" and facts["global_step"] == 3 and facts["mask_ratio"] == 0.75


@pytest.mark.parametrize("source", ["checkpoint", "folder"])
def test_fine_tuning_loads_the_pretrained_encoder_unchanged(
    pretrained, demo_store, demo_batch, source, tmp_path
):
    ckpt, folder, pre = pretrained
    path = ckpt if source == "checkpoint" else folder
    task = ProbeTask(bands=store_bands([str(demo_store)], ["s2", "s1"]), init_encoder=str(path))
    pre.encoder.eval()
    task.encoder.eval()
    with torch.no_grad():
        a, b = pre.encoder.forward_features(demo_batch), task.encoder.forward_features(demo_batch)
    torch.testing.assert_close(b.tokens, a.tokens, rtol=0, atol=0)
    assert task.encoder.config.stats_source == pre.encoder.config.stats_source
    # a fit keeps the pretrained statistics (no refit by default); the encoder trains on
    dm = demo_datamodule(demo_store, targets=["agb"])
    _trainer(tmp_path, steps=2).fit(task, datamodule=dm)
    assert torch.equal(
        task.encoder.statistics.table("sentinel2_l2a"), pre.encoder.statistics.table("sentinel2_l2a")
    )
    with pytest.raises(ModelConfigError, match="does not fit encoder='tiny'"):
        ProbeTask(bands={"s2": ["B02"]}, encoder="tiny", init_encoder=str(path))


def test_export_works_for_a_task_that_is_not_pretraining(demo_store, tmp_path, capsys):
    dm = demo_datamodule(demo_store, targets=["agb"])
    task = ProbeTask(bands=store_bands(dm.stores, dm.groups))
    trainer = _trainer(tmp_path, steps=2)
    trainer.fit(task, datamodule=dm)
    ckpt = tmp_path / "probe.ckpt"
    trainer.save_checkpoint(ckpt)
    assert main(["export", str(ckpt), str(tmp_path / "enc")]) == 0
    assert "(step 2)" in capsys.readouterr().out
    facts = json.loads((tmp_path / "enc" / "training.json").read_text())
    assert facts["task"] == "ProbeTask" and facts["global_step"] == 2
    exported = SpectralEncoder.from_pretrained(tmp_path / "enc")
    for (k, a), b in zip(exported.state_dict().items(), task.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert main(["export", str(ckpt), str(tmp_path / "enc")]) == 1  # not overwritten without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(ckpt), str(tmp_path / "enc"), "--overwrite"]) == 0


def test_parameter_groups_decay_weight_matrices_only(demo_store):
    task = PretrainTask(
        bands=store_bands([str(demo_store)], ["s2", "s1"]), window_size=32, encoder="test", patch_size=8
    )
    names = {id(p): n for n, p in task.named_parameters()}
    decayed = [names[id(p)] for g in task.parameter_groups() if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed and all(names[id(p)] for g in task.parameter_groups() for p in g["params"])
    # DOFA's fc_weight/fc_bias generators are Linear layers: their weight matrices decay like any other
    forbidden = ("norm", "embed", "mask_token", "weight_tokens", "bias_token", "query", "descriptor")
    assert not [n for n in decayed if n.endswith(".bias") or any(f in n for f in forbidden)], decayed
    n_grouped = sum(len(g["params"]) for g in task.parameter_groups())
    assert n_grouped == sum(1 for p in task.parameters() if p.requires_grad)  # every parameter, once


def test_encoder_learning_rate_multiplier_freezing_and_layer_decay(demo_store):
    bands = store_bands([str(demo_store)], ["s2", "s1"])
    task = ProbeTask(bands=bands, lr=1e-3, encoder_lr_mult=0.1)
    enc_ids = {id(p) for p in task.encoder.parameters()}
    for g in task.parameter_groups():
        on_encoder = {id(p) in enc_ids for p in g["params"]}
        assert len(on_encoder) == 1
        assert g["lr"] == pytest.approx(1e-4 if on_encoder.pop() else 1e-3)
    frozen = ProbeTask(bands=bands, encoder_trainable="none")
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    assert all(
        id(p) not in {id(q) for q in frozen.encoder.parameters()}
        for g in frozen.parameter_groups()
        for p in g["params"]
    )
    frozen.train()
    assert not frozen.encoder.training and frozen.head.training  # frozen encoder stays in eval mode
    last = ProbeTask(bands=bands, encoder_trainable=1)
    trainable = {n for n, p in last.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.1.", "norm.")) for n in trainable)
    decayed = ProbeTask(bands=bands, layer_decay=0.5)
    lrs = sorted({round(g["lr"], 12) for g in decayed.parameter_groups()})
    assert len(lrs) >= 3 and lrs[-1] == pytest.approx(1e-3)  # deeper layers learn faster
    with pytest.raises(ModelConfigError, match="encoder_trainable=5 blocks"):
        ProbeTask(bands=bands, encoder_trainable=5)


def test_cli_gives_a_task_only_the_data_facts_it_declares(demo_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "probe.yaml"
    config.write_text(
        "trainer: {accelerator: cpu, max_steps: 1, logger: false, enable_checkpointing: false}\n"
        "model:\n  class_path: helpers.ProbeTask\n"
        f"data:\n  stores: [{demo_store}]\n  groups: [s2]\n  targets: [agb]\n  window_size: 32\n"
        "  num_workers: 0\n  seed: 5\n"
    )
    cli = lightning_cli(["--config", str(config)], run=False)
    assert cli.model.hparams.bands == {"s2": list(store_bands([str(demo_store)], ["s2"])["s2"])}
    assert cli.model.hparams.seed == 5 and "window_size" not in cli.model.hparams  # not declared: not given


def test_default_data_module_and_default_encoder_fit(tmp_path):
    """Every class at its defaults: a 512 px store, the data module's defaults and PretrainTask's (ViT-S)."""
    store = tmp_path / "demo.zarr"
    write_demo_store(store, size=512)
    dm = CubeDataModule([str(store)], num_workers=0)  # S2, 128 px windows, block size chosen from the store
    task = PretrainTask(bands=store_bands(dm.stores, dm.groups), window_size=dm.window_size)
    trainer = _trainer(tmp_path, steps=1, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=dm)
    counts = [len(dm.datasets[s].windows) for s in ("train", "val", "test")]
    assert dm.block_size == 128 and counts == [13, 2, 1]
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert task.encoder.config.stats_source["sentinel2_l2a"] == f"store:{store}"


def test_nothing_is_overwritten_on_export(pretrained, tmp_path):
    _, folder, task = pretrained
    with pytest.raises(OutputExistsError):
        task.export_encoder(folder)
    assert load_encoder(folder).config == task.encoder.config
