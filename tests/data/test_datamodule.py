"""CubeDataModule: block split, units and statistics, augmentation shared by sensors/dates/targets, fit."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import zarr

from spectravlm.data.augment import SpatialAugment
from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import write_demo_store
from spectravlm.data.store import StoreTransaction
from spectravlm.data.windows import WindowSampler
from spectravlm.errors import DataConfigError
from spectravlm.stack import SensorSeries, SensorStack


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dm") / "demo.zarr"
    write_demo_store(path, size=256, seed=3)
    return path


def _dm(store: Path, **kw) -> CubeDataModule:
    args = dict(
        stores=[store],
        groups=["s2", "s1"],
        targets=["agb"],
        window_size=64,
        block_size=64,
        split_fractions=(0.5, 0.25, 0.25),
        n_times=3,
        batch_size=4,
        num_workers=0,
    )
    return CubeDataModule(**(args | kw))


def test_split_is_disjoint_complete_and_seeded(store):
    dm = _dm(store, seed=1)
    dm.setup("fit")
    windows = {k: set(ds.windows) for k, ds in dm.datasets.items()}
    assert [len(windows[k]) for k in ("train", "val", "test")] == [8, 4, 4]
    owner = np.full((256, 256), -1)
    for k, name in enumerate(("train", "val", "test")):
        for w in windows[name]:
            rows, cols = w.slices()
            assert (owner[rows, cols] == -1).all()
            owner[rows, cols] = k
    assert (owner >= 0).all()  # 64 px windows and blocks: every pixel in exactly one split
    again, other = _dm(store, seed=1), _dm(store, seed=2)
    again.setup("fit")
    other.setup("fit")
    assert {k: set(ds.windows) for k, ds in again.datasets.items()} == windows
    assert {k: set(ds.windows) for k, ds in other.datasets.items()} != windows


def test_batches_carry_stored_values_with_their_units_scale_and_host_facts(store):
    dm = _dm(store, augment=False)
    dm.setup("fit")
    raw = next(iter(dm.val_dataloader()))
    out = dm.transform(raw, train=False)
    s2, s1 = out["s2"], out["s1"]
    assert s2.values.dtype == torch.uint16 and (s2.units, s2.scale, s2.offset) == ("reflectance", 1e-4, 0.0)
    assert s1.values.dtype == torch.float32 and (s1.units, s1.scale, s1.offset) == ("dB", 1.0, 0.0)
    for s in (s2, s1):  # host-side facts are exact
        assert s.finite and s.all_valid == bool(s.valid.all())
    assert s2.all_valid is False  # the demo store has clouds


def test_datamodule_reports_store_statistics_in_the_encoders_domain(store, tmp_path):
    dm = _dm(store, groups={"s2": ["B02", "B12"], "s1": None}, targets=[])
    dm.setup("fit")
    stats = dm.sensor_statistics()
    raw = dict(zarr.open_group(store, mode="r")["s2"].attrs)["stats"]
    ((path, s2),) = stats["sentinel2_l2a"]
    assert path == str(store) and set(s2) == {"B02", "B12"}
    assert s2["B02"][1] == pytest.approx(raw["B02"]["mean"] * 1e-4) and s2["B02"][2] == pytest.approx(
        raw["B02"]["std"] * 1e-4
    )
    ((_, s1),) = stats["sentinel1_grd"]
    s1_raw = dict(zarr.open_group(store, mode="r")["s1"].attrs)["stats"]
    assert s1["VV"][1] == pytest.approx(s1_raw["VV"]["mean"])  # dB stored: unchanged
    # a store without statistics reports none, and is named
    bare = tmp_path / "nostats.zarr"
    root = zarr.open_group(store, mode="r")
    from spectravlm.data.store import CubeStore, SensorCube

    src = CubeStore.open(store)["s2"]
    cube = SensorCube(
        "sentinel2_l2a",
        src.bands,
        root["s2/data"][:],
        src.times,
        src.grid,
        nodata=0,
        cloud=root["s2/cloud"][:],
        scale_factor=1e-4,
        units="reflectance",
    )
    with StoreTransaction(bare) as tx:
        tx.write_sensor("s2", cube)
    dm = _dm(bare, groups=["s2"], targets=[])
    dm.setup("fit")
    assert dm.sensor_statistics() == {} and dm.datasets["train"].groups_without_statistics() == [f"{bare}/s2"]


def _position_stack(b: int = 64, size: int = 16) -> SensorStack:
    """Every tensor holds the pixel's own position id, so any mismatch between tensors shows."""
    pos = (
        torch.arange(size * size, dtype=torch.float32).view(1, size, size).expand(b, size, size).contiguous()
    )
    s2 = (
        pos.view(b, 1, 1, size, size)
        .expand(b, 3, 2, size, size)
        .to(torch.int32)
        .to(torch.uint16)
        .contiguous()
    )
    s1 = (pos.view(b, 1, 1, size, size) * -1.0).expand(b, 4, 2, size, size).contiguous()
    agb = pos.clone()
    agb[:, 0, :4] = float("nan")  # position ids 0..3 have no target value
    valid = (pos > 20).unsqueeze(1).expand(b, 3, size, size).contiguous()
    return SensorStack(
        series={
            "s2": SensorSeries(
                "s2", ("B04", "B08"), s2, torch.zeros(b, 3), valid, units="reflectance", scale=1e-4
            ),
            "s1": SensorSeries(
                "s1",
                ("VV", "VH"),
                s1,
                torch.zeros(b, 4),
                torch.ones(b, 4, size, size, dtype=torch.bool),
                units="dB",
            ),
        },
        targets={"pos": pos, "agb": agb},
        origin=torch.zeros(b, 2, dtype=torch.int64),
    )


def test_augmentation_is_identical_across_sensors_dates_and_target():
    torch.manual_seed(0)
    stack = _position_stack()
    aug = SpatialAugment(crop_size=12)
    out = aug(stack)
    pos = out.targets["pos"]
    assert pos.shape == (64, 12, 12) and out["s2"].values.dtype == torch.uint16
    for t in range(3):
        for c in range(2):
            assert torch.equal(out["s2"].values[:, t, c].float(), pos)
        assert torch.equal(out["s2"].valid[:, t], pos > 20)
    for t in range(4):
        assert torch.equal(-out["s1"].values[:, t, 1], pos)
    agb = out.targets["agb"]
    assert torch.equal(agb.isnan(), pos < 4)  # NaN moved with its pixels, did not spread (no resampling)
    assert torch.equal(agb[~agb.isnan()], pos[~agb.isnan()])
    # each sample's output is its input under one of the 8 exact flip/rotation maps (after its crop)
    maps = [
        lambda x, k=k, f=f: torch.rot90(x.flip(-1) if f else x, k, (-2, -1)) for k in range(4) for f in (0, 1)
    ]
    seen = set()
    for i in range(64):
        y0, x0 = out.origin[i].tolist()
        crop = stack.targets["pos"][i, y0 : y0 + 12, x0 : x0 + 12]
        hits = [m for m, f in enumerate(maps) if torch.equal(f(crop), pos[i])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) == 8  # all eight occur in 64 samples
    params = aug.draw(400, 16, 16)
    assert set(params["y0"].tolist()) == set(range(5)) and set(params["x0"].tolist()) == set(range(5))
    assert set(params["k"].tolist()) == {0, 1, 2, 3}


def test_lightning_fit_augments_on_device_and_keeps_stored_values(store):
    seen: dict[str, list] = {"train": [], "val": []}

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            seen["train"].append(
                (batch["s2"].units, tuple(batch["s2"].values.shape), batch["s2"].values.dtype)
            )
            return (self.w - batch["s2"].values.float().mean()) ** 2

        def validation_step(self, batch, _):
            seen["val"].append((batch["s2"].units, tuple(batch["s2"].values.shape)))
            ref = dm.datasets["val"].read_batch(batch.index.tolist())  # read again, in-process
            assert torch.equal(batch["s2"].values, ref["s2"].values)  # the worker's reused slot was not early
            assert torch.equal(batch.targets["agb"], ref.targets["agb"])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = _dm(store, crop_size=48, num_workers=2)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Probe(), datamodule=dm)
    assert isinstance(trainer.train_dataloader.sampler, WindowSampler)  # Lightning kept our sampler
    assert len(seen["train"]) == 2 and len(seen["val"]) == 1  # 8 train and 4 val windows, batches of 4
    assert all(s == ("reflectance", (4, 3, 10, 48, 48), torch.uint16) for s in seen["train"])
    assert all(s == ("reflectance", (4, 3, 10, 64, 64)) for s in seen["val"])


def test_augmentation_in_workers_and_bad_configs(store):
    dm = _dm(store, crop_size=32, augment_on="worker")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["s2"].values.shape[-2:] == (32, 32) and batch["s2"].values.dtype == torch.uint16
    assert dm.transform(batch, train=True)["s2"].values.shape[-2:] == (32, 32)  # not cropped twice
    with pytest.raises(DataConfigError, match="multiple of window_size"):
        _dm(store, block_size=100)
    empty = _dm(store, split_fractions=(1.0, 0.0, 0.0))
    empty.setup("fit")
    with pytest.raises(DataConfigError, match="the val split has no windows"):
        empty.val_dataloader()


def test_predict_runs_over_the_test_windows(store):
    dm = _dm(store)
    dm.setup()
    test = [b.origin.tolist() for b in dm.test_dataloader()]
    predict = [b.origin.tolist() for b in dm.predict_dataloader()]
    assert predict == test and len(predict) > 0
