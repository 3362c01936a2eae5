"""RegressionTask on the demo store: fine-tuning from pretraining, checkpoints, freezing, bad input."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from helpers import demo_datamodule
from spectravlm.callbacks import AtomicCheckpointIO
from spectravlm.callbacks.regression import RegressionFigures
from spectravlm.data.bands import store_bands
from spectravlm.data.demo import make_demo_cubes
from spectravlm.data.store import StoreTransaction
from spectravlm.errors import DataConfigError, ModelConfigError
from spectravlm.tasks import PretrainTask, RegressionTask


def _task(bands, window_size: int = 32, **kw) -> RegressionTask:
    args = dict(encoder="test", patch_size=8, head_dim=32, head_depth=1, lr=3e-3, warmup=0.1)
    return RegressionTask(bands=bands, window_size=window_size, **(args | kw))


def _trainer(root: Path, epochs: int, callbacks=(), **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        plugins=[AtomicCheckpointIO()],
        callbacks=list(callbacks),
        **kw,
    )


def _dm(store: Path, **kw):
    return demo_datamodule(store, targets=["agb"], **kw)


@pytest.fixture(scope="module")
def pretrained(demo_store, tmp_path_factory) -> Path:
    """A one-epoch pretraining checkpoint of the test encoder on the demo store."""
    root = tmp_path_factory.mktemp("pretrain")
    dm = demo_datamodule(demo_store)
    task = PretrainTask(
        bands=store_bands(dm.stores, dm.groups), window_size=32, encoder="test", patch_size=8, decoder_dim=32
    )
    ckpt = ModelCheckpoint(dirpath=root, save_last=True)
    _trainer(root, 1, [ckpt], limit_val_batches=0).fit(task, datamodule=dm)
    return root / "last.ckpt"


def test_fine_tune_from_pretraining_beats_the_mean_and_checkpoints_keep_the_statistics(
    demo_store, pretrained, tmp_path
):
    L.seed_everything(0)
    dm = _dm(demo_store)
    task = _task(store_bands(dm.stores, dm.groups), init_encoder=str(pretrained), uncertainty="gaussian")
    assert task.encoder_loaded
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    figures = RegressionFigures()
    trainer = _trainer(tmp_path, 6, [ckpt, figures], check_val_every_n_epoch=6)
    trainer.fit(task, datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(
        f"demo fine-tune, validation: RMSE {m['val/rmse']:.1f} t/ha vs predict-the-mean "
        f"{m['val/baseline_rmse']:.1f}, "
        f"R2 {m['val/r2']:.2f}, coverage {m['val/coverage']:.2f}"
    )
    assert m["val/rmse"] < 0.8 * m["val/baseline_rmse"]  # stated margin: 20% below predicting the mean
    # the training split's statistics were computed once and saved with the hyperparameters
    agb = np.concatenate(
        [
            np.asarray(make_demo_cubes(size=128, seed=0)[2][w.slices()]).ravel()
            for w in dm.datasets["train"].windows
        ]
    )
    assert task.hparams.transform_mean == pytest.approx(float(agb.mean()), rel=1e-4)
    assert task.hparams.train_mean == pytest.approx(float(agb.mean()), rel=1e-4)
    assert float(task.objective.transform.scale) == pytest.approx(float(agb.std()), rel=1e-4)
    loaded = RegressionTask.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert loaded.hparams.transform_std == task.hparams.transform_std and loaded.target_units == "t/ha"
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        a, b = task.eval()(batch), loaded.eval()(batch)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.std, b.std)
    names = sorted(p.name for p in figures.written)
    assert names == ["maps-epoch=005.png", "scatter-epoch=005.png"]
    assert all(p.stat().st_size > 10_000 for p in figures.written)


@pytest.mark.parametrize(
    ("head", "uncertainty"), [("scalar", "none"), ("dense", "quantile"), ("scalar", "gaussian")]
)
def test_heads_and_uncertainties_report_their_metrics(demo_store, tmp_path, head, uncertainty, capsys):
    L.seed_everything(0)
    dm = _dm(demo_store)
    task = _task(store_bands(dm.stores, dm.groups), head=head, uncertainty=uncertainty)
    trainer = _trainer(tmp_path, 1)
    trainer.fit(task, datamodule=dm)
    result = trainer.test(task, datamodule=dm, verbose=False)[0]
    assert {"test/rmse", "test/mae", "test/r2", "test/bias", "test/baseline_rmse"} <= set(result)
    assert ("test/coverage" in result) == (uncertainty != "none")
    out = capsys.readouterr().out
    assert "agb on the held-out (test) windows:" in out and "predict-the-training-mean" in out
    with torch.no_grad():
        pred = task(next(iter(dm.test_dataloader())))
    assert pred.mean.shape == ((4,) if head == "scalar" else (4, 32, 32))


def test_fine_tune_from_an_exported_encoder_folder(demo_store, pretrained, tmp_path):
    from spectravlm.cli.train import export_main

    assert export_main([str(pretrained), str(tmp_path / "encoder")]) == 0
    dm = _dm(demo_store)
    bands = store_bands(dm.stores, dm.groups)
    from_folder = _task(bands, init_encoder=str(tmp_path / "encoder"))
    from_ckpt = _task(bands, init_encoder=str(pretrained))
    fresh = _task(bands)
    a, b, c = (
        {k: v.clone() for k, v in t.encoder.state_dict().items()} for t in (from_folder, from_ckpt, fresh)
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the pretrained weights
    assert not all(torch.equal(a[k], c[k]) for k in a)
    L.seed_everything(0)
    trainer = _trainer(tmp_path, 1, limit_val_batches=0)
    trainer.fit(from_folder, datamodule=dm)
    assert trainer.global_step > 0 and not all(
        torch.equal(a[k], v) for k, v in from_folder.encoder.state_dict().items()
    )  # fine-tuned
    with pytest.raises(ModelConfigError, match=r"was trained on bands .* but this task's data delivers"):
        _task({"s2": list(bands["s2"][:4]), "s1": ["VV", "VH"]}, init_encoder=str(tmp_path / "encoder"))


def test_freezing_partial_unfreezing_and_the_encoder_learning_rate(demo_store, pretrained, tmp_path):
    dm = _dm(demo_store)
    bands = store_bands(dm.stores, dm.groups)
    frozen = _task(bands, init_encoder=str(pretrained), encoder_trainable="none")
    before = {k: v.clone() for k, v in frozen.encoder.state_dict().items()}
    modes = []

    class Mode(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append(pl_module.encoder.training)

    _trainer(tmp_path, 1, [Mode()], limit_val_batches=0).fit(frozen, datamodule=dm)
    assert all(torch.equal(before[k], v) for k, v in frozen.encoder.state_dict().items())
    assert modes and not any(modes)  # kept in eval mode while training (no drop-path)

    last = _task(bands, init_encoder=str(pretrained), encoder_trainable=1, encoder_lr_mult=0.1, lr=1e-3)
    trainable = {n for n, p in last.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.1.", "norm.")) for n in trainable)
    encoder_ids = {id(p) for p in last.encoder.parameters()}
    lrs = [g["lr"] for g in last.parameter_groups() if any(id(p) in encoder_ids for p in g["params"])]
    assert lrs and all(lr == pytest.approx(1e-4) for lr in lrs)  # lr * encoder_lr_mult
    with pytest.raises(ModelConfigError, match="encoder_trainable=5 blocks"):
        _task(bands, encoder_trainable=5)


def _store_without(path: Path, target: np.ndarray | None, units: str = "t/ha") -> Path:
    s2, s1, _, grid = make_demo_cubes(size=128, seed=0)
    with StoreTransaction(path, mode="create", synthetic=True) as tx:
        tx.write_sensor("s2", s2)
        tx.write_sensor("s1", s1)
        if target is not None:
            tx.write_target("agb", target, grid, units=units)
    return path


def test_bad_input_is_refused_before_any_training_step(demo_store, pretrained, tmp_path):
    bands = store_bands([str(demo_store)], ["s2", "s1"])

    def fit(task, dm):
        trainer = _trainer(tmp_path, 1)
        try:
            trainer.fit(task, datamodule=dm)
        finally:
            assert trainer.global_step == 0  # raised before any step

    with pytest.raises(
        ModelConfigError, match=r"regresses target 'agb', but the data module loads targets \(none\)"
    ):
        fit(_task(bands), demo_datamodule(demo_store))
    with pytest.raises(DataConfigError, match="has no target 'agb'; targets: \\(none\\)"):
        fit(_task(bands), _dm(_store_without(tmp_path / "no_target.zarr", None)))
    nan = np.full((128, 128), np.nan, dtype=np.float32)
    empty = _dm(_store_without(tmp_path / "nan_target.zarr", nan), empty_windows="mask")
    with pytest.raises(
        ModelConfigError, match="target 'agb' has no valid \\(finite\\) pixel in the training split"
    ):
        fit(_task(bands), empty)
    agb = make_demo_cubes(size=128, seed=0)[2]
    for units, error in (("", "has no units attribute"), ("kg", "unknown units 'kg'")):
        store = _store_without(tmp_path / f"units{len(units)}.zarr", agb, units=units)
        with pytest.raises(ModelConfigError, match=rf"units{len(units)}\.zarr/targets/agb: .*{error}"):
            fit(_task(bands), _dm(store))
    with pytest.raises(
        ModelConfigError, match=r"crop_size 16 gives a 2x2 patch grid.*4x4 grid of 32 px windows"
    ):
        fit(_task(bands), _dm(demo_store, crop_size=16))
    with pytest.raises(ModelConfigError, match="window_size 36 must be a positive multiple of patch_size 8"):
        _task(bands, window_size=36)
    with pytest.raises(ModelConfigError, match=r"was trained on bands .* but this task's data delivers"):
        _task({"s2": list(bands["s2"][:4]), "s1": ["VV", "VH"]}, init_encoder=str(pretrained))
    with pytest.raises(ModelConfigError, match="does not fit encoder='tiny'"):
        _task(bands, encoder="tiny", init_encoder=str(pretrained))
    task = _task(bands)
    wide = demo_datamodule(demo_store, targets=["agb"], window_size=64, block_size=64)
    with pytest.raises(ModelConfigError, match="window_size 64 differs from the model's 32"):
        fit(task, wide)
