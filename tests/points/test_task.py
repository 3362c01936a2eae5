"""PointsTask: the loss at points only, inverse-variance weights, metrics at held-out points, the map."""

from __future__ import annotations

import shutil

import lightning as L
import numpy as np
import pytest
import torch

from spectravlm.data.bands import store_bands
from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.points import PointsDataModule, attach_points, draw_points, read_gedi_l4a
from spectravlm.data.store import CubeStore
from spectravlm.errors import ModelConfigError
from spectravlm.io import OutputExistsError
from spectravlm.tasks.points import PointMetrics, PointsTask, inverse_variance_weights, point_loss
from spectravlm.tasks.points_map import predict_map


def _trainer(epochs: int, **kw) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_weights_are_inverse_variance_with_mean_one():
    se = torch.tensor([1.0, 2.0, float("nan"), 4.0, 1.0])
    mask = torch.tensor([True, True, True, False, True])
    w = inverse_variance_weights(se, mask)
    assert float(w[mask].mean()) == pytest.approx(1.0)
    assert float(w[3]) == 0.0  # not a point
    assert float(w[0] / w[1]) == pytest.approx(4.0)  # 1/1 : 1/4
    assert float(w[2]) == pytest.approx(float((w[0] + w[1] + w[4]) / 3))  # unknown se: the mean weight
    none_known = inverse_variance_weights(torch.full((3,), float("nan")), torch.ones(3, dtype=torch.bool))
    assert torch.equal(none_known, torch.ones(3))


def test_loss_counts_only_the_points():
    pred = torch.zeros(2, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), float("nan"))
    target[0, 1, 2], target[1, 3, 3] = 2.0, -1.0
    mask = torch.isfinite(target)
    loss = point_loss(pred, target, mask)
    assert float(loss) == pytest.approx((4.0 + 1.0) / 2)
    loss.backward()
    assert pred.grad is not None
    assert int((pred.grad != 0).sum()) == 2 and float(pred.grad[0, 1, 2]) == pytest.approx(-2.0)
    weight = torch.where(mask, torch.tensor(3.0), torch.tensor(0.0))
    weight[1, 3, 3] = 1.0
    assert float(point_loss(pred, target, mask, weight)) == pytest.approx((3 * 4.0 + 1.0) / 4)
    assert float(point_loss(pred, target, torch.zeros_like(mask))) == 0.0  # no point: exactly 0


def test_metrics_match_numpy():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 300, 50)
    p = y + rng.normal(5, 20, 50)
    m = PointMetrics(train_mean=120.0)
    mask = np.ones(50, dtype=bool)
    mask[::7] = False
    for part in (slice(0, 20), slice(20, 50)):  # two batches
        m.update(torch.tensor(p[part]), torch.tensor(y[part]), torch.tensor(mask[part]))
    v = {k: float(x) for k, x in m.compute().items()}
    yy, pp = y[mask], p[mask]
    assert v["n"] == mask.sum()
    assert v["rmse"] == pytest.approx(np.sqrt(np.mean((pp - yy) ** 2)))
    assert v["bias"] == pytest.approx(np.mean(pp - yy))
    assert v["mae"] == pytest.approx(np.mean(np.abs(pp - yy)))
    assert v["r2"] == pytest.approx(1 - np.sum((pp - yy) ** 2) / np.sum((yy - yy.mean()) ** 2))
    assert v["baseline_rmse"] == pytest.approx(np.sqrt(np.mean((120.0 - yy) ** 2)))


@pytest.fixture(scope="module")
def points_store(demo_store, tmp_path_factory):
    """A copy of the demo store with 1500 points of its AGB (GEDI-like errors, 20-38 t/ha) as agb_points."""
    path = tmp_path_factory.mktemp("points") / "demo.zarr"
    shutil.copytree(demo_store, path)
    table = draw_points(path, "agb", n=1500, noise_abs=20.0, noise_rel=0.05, seed=1)
    attach_points(path, table, name="agb_points")
    return path


def _dm(store, **kw) -> PointsDataModule:
    args = dict(
        stores=[str(store)],
        groups=["s2", "s1"],
        targets=["agb_points"],
        window_size=32,
        block_size=64,
        split_fractions=(0.5, 0.25, 0.25),
        batch_size=4,
        num_workers=0,
        augment=False,
    )
    return PointsDataModule(**(args | kw))


def _task(store, **kw) -> PointsTask:
    args = dict(encoder="test", patch_size=8, window_size=32, head_dim=64, lr=3e-3, seed=0)
    return PointsTask(bands=store_bands([str(store)], ["s2", "s1"]), **(args | kw))


def test_sparse_fine_tune_beats_the_mean_at_held_out_points_and_maps(points_store, tmp_path, capsys):
    torch.manual_seed(0)
    dm, task = _dm(points_store, samples_per_epoch=32), _task(points_store)
    trainer = _trainer(8)
    trainer.fit(task, dm)
    # the standardisation comes from the training points only
    train_values = dm.split_values("train")
    assert task.hparams["target_mean"] == pytest.approx(float(train_values.mean()))
    assert task.hparams["target_units"] == "t/ha" and task.hparams["target"] == "agb_points"
    test_values = dm.split_values("test")
    (result,) = trainer.test(task, dm, verbose=False)
    print(capsys.readouterr().out)
    # every held-out point is scored once, none of the training points is
    assert result["test/n"] == len(test_values)
    rmse, baseline = result["test/rmse"], result["test/baseline_rmse"]
    assert baseline == pytest.approx(np.sqrt(np.mean((train_values.mean() - test_values) ** 2)), rel=1e-4)
    # measured: RMSE 94 t/ha at the 380 test points vs 185 t/ha for predicting the training mean (8 epochs of
    # 32 windows drawn by their points, test encoder)
    assert rmse < 0.7 * baseline, (rmse, baseline)
    # the wall-to-wall map: every pixel, the store's georeference, a new file only
    import rasterio

    out = tmp_path / "agb.tif"
    full, report = predict_map(task, points_store, out)
    cube = CubeStore.open(points_store)
    assert full.shape == (cube.grid.height, cube.grid.width) and report.valid == full.size
    with rasterio.open(out) as src:
        assert src.crs.to_wkt() == rasterio.crs.CRS.from_wkt(cube.grid.crs_wkt).to_wkt()
        assert tuple(src.transform) == tuple(cube.grid.transform)
        assert src.tags()["units"] == "t/ha"
        np.testing.assert_array_equal(src.read(1), full)
    truth = np.asarray(cube.targets["agb"][:])
    assert np.corrcoef(full.ravel(), truth.ravel())[0, 1] > 0.6
    with pytest.raises(OutputExistsError, match="never written over"):
        predict_map(task, points_store, out)


def test_real_gedi_points_train_with_their_errors(gedi_granule, make_store, tmp_path):
    """The REAL GEDI L4A shots (agbd, agbd_se) as the sparse target of a synthetic store over their track."""
    from pyproj import Transformer

    to_utm = Transformer.from_crs(4326, 32639, always_xy=True)
    xs, ys = to_utm.transform([51.40, 51.49, 51.40, 51.49], [36.06, 36.06, 36.10, 36.10])
    store = tmp_path / "over_gedi.zarr"
    make_store(store, (min(xs), min(ys), max(xs), max(ys)), 32639, 20.0, ["2020-01-20", "2020-03-02"])
    table = read_gedi_l4a(gedi_granule)
    attach_points(store, table, name="agbd")
    dm = PointsDataModule(
        [str(store)],
        groups=["s2"],
        targets=["agbd"],
        window_size=32,
        block_size=64,
        split_fractions=(0.6, 0.2, 0.2),
        batch_size=4,
        num_workers=0,
        augment=False,
    )
    task = PointsTask(
        bands=store_bands([str(store)], ["s2"]), window_size=32, encoder="test", patch_size=8, head_dim=32
    )
    trainer = _trainer(1, limit_train_batches=3)
    trainer.fit(task, dm)
    layer = np.asarray(CubeStore.open(store).targets["agbd"][:])
    assert np.isfinite(layer).sum() > 50  # ~170 shots in the grid, some sharing a pixel
    train = dm.split_values("train")
    assert task.hparams["target_units"] == "t/ha"
    assert task.hparams["target_mean"] == pytest.approx(float(train.mean()), rel=1e-6)
    assert task.hparams["target_std"] == pytest.approx(float(train.std()), rel=1e-6)
    assert np.isfinite(trainer.callback_metrics["train/loss"].item())
    assert trainer.callback_metrics["val/n"].item() == len(dm.split_values("val"))
    # the batch carries the points' real standard errors, and they set the weights
    batch = next(iter(dm.train_dataloader()))
    y, se = batch.targets["agbd"], batch.targets["agbd_se"]
    assert torch.equal(torch.isfinite(y), torch.isfinite(se))
    w = inverse_variance_weights(se, torch.isfinite(y))
    if int(torch.isfinite(y).sum()) > 1:
        i, j = torch.nonzero(torch.isfinite(y).flatten())[:2, 0]
        ratio = float(w.flatten()[i] / w.flatten()[j])
        assert ratio == pytest.approx(float((se.flatten()[j] / se.flatten()[i]) ** 2), rel=1e-4)


def test_wrong_data_and_untrained_map_are_clear_errors(points_store, tmp_path):
    with pytest.raises(ModelConfigError, match="not a multiple of patch_size"):
        _task(points_store, window_size=30)
    task = _task(points_store)
    trainer = _trainer(1, limit_train_batches=1, limit_val_batches=1)
    cube_dm = CubeDataModule(
        [str(points_store)], groups=["s2", "s1"], targets=["agb"], window_size=32, block_size=64, batch_size=4
    )
    with pytest.raises(ModelConfigError, match=r"use spectravlm\.data\.points\.PointsDataModule"):
        trainer.fit(task, cube_dm)
    with pytest.raises(ModelConfigError, match="no target statistics"):
        predict_map(_task(points_store), points_store, tmp_path / "m.tif")
    assert not (tmp_path / "m.tif").exists()


def test_demo_config_builds_the_task_and_points_data(points_store):
    from pathlib import Path

    from spectravlm.cli.train import lightning_cli

    config = Path(__file__).resolve().parents[2] / "configs" / "agb_points_demo.yaml"
    cli = lightning_cli(
        [
            "--config",
            str(config),
            f"--data.init_args.stores=[{points_store}]",
            "--data.init_args.num_workers=0",
        ],
        run=False,
    )
    assert isinstance(cli.model, PointsTask) and isinstance(cli.datamodule, PointsDataModule)
    assert cli.model.hparams["bands"]["s1"] == ["VV", "VH"] and cli.model.hparams["window_size"] == 64
