"""Number experts: units, scene statistics against the instruction generator, a trained dense head, saving."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.instructions import QADataModule
from spectravlm.data.qa import generate_qa
from spectravlm.errors import ModelConfigError, UnknownUnitError
from spectravlm.stack import SensorStack
from spectravlm.vlm import ExpertConfig, HeadExpert, LinearDenseRegressor, StatisticExpert, canonical_units
from spectravlm.vlm.experts import (
    build_expert,
    check_units,
    default_experts,
    load_predictor,
    same_units,
    save_predictor,
)


def test_units_are_facts() -> None:
    assert same_units("t/ha", "Mg/ha") and same_units("Mg ha-1", "t ha-1") and same_units("%", "percent")
    assert not same_units("t/ha", "%") and not same_units("dB", "count")
    check_units("agb_mean", "Mg/ha", "agb_mean", "t/ha")
    with pytest.raises(
        UnknownUnitError, match="expert 'agb' states values in '%', but agb_mean questions ask for 't/ha'"
    ):
        check_units("agb", "%", "agb_mean", "t/ha")
    for spelling in (
        "mg/ha",
        "kg",
        "tons",
    ):  # milligrams are not megagrams; unknown spellings are not guessed
        with pytest.raises(UnknownUnitError, match="are not known"):
            canonical_units(spelling)
    with pytest.raises(UnknownUnitError, match="cloud_share questions ask for '%'"):
        ExpertConfig("clouds", "statistic", "cloud_share", "t/ha", statistic="cloud_share")
    for bad, message in [
        (dict(name="lm"), "not 'lm'"),
        (dict(kind="oracle"), "kind must be"),
        (dict(statistic="median"), "is not known"),
        (dict(statistic="backscatter_mean", units="dB"), "needs band"),
    ]:
        args = dict(name="x", kind="statistic", quantity="q", units="%", statistic="cloud_share") | bad
        with pytest.raises(ModelConfigError, match=message):
            ExpertConfig(**args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def qa_scenes(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> QADataModule:
    out = tmp_path_factory.mktemp("experts") / "qa.jsonl"
    generate_qa(
        [demo_store], out, window_size=32, per_window=12, block_size=64, split_fractions=(0.5, 0.25, 0.25)
    )
    dm = QADataModule(str(out), targets=["agb"])
    dm.setup("fit")
    return dm


def _expert_for(record) -> StatisticExpert:  # type: ignore[no-untyped-def]
    by_name = {e.name: e for e in default_experts()}
    q = record.question
    name = {
        "cloud_share": "cloud_share",
        "ndvi_change": "ndvi_change",
        "valid_dates": "optical_dates" if "Sentinel-2" in q else "sar_dates",
        "backscatter_level": "vv_mean" if " VV " in q else "vh_mean",
        "backscatter_change": "vv_change" if " VV " in q else "vh_change",
    }[record.type]
    expert = build_expert(by_name[name])
    assert isinstance(expert, StatisticExpert)
    return expert


def test_scene_statistics_equal_the_generators_answers(qa_scenes: QADataModule) -> None:
    seen = set()
    for split in ("train", "val"):
        ds = qa_scenes.splits[split]
        for k, record in enumerate(ds.records):
            if record.type not in (
                "cloud_share",
                "ndvi_change",
                "valid_dates",
                "backscatter_level",
                "backscatter_change",
            ):
                continue
            scene, region = ds.scene(k)
            out = _expert_for(record)(scene, region)
            assert bool(out.available[0]), record.id
            assert float(out.values[0]) == pytest.approx(record.answer["value"], rel=1e-4, abs=2e-4), (
                record.id
            )
            seen.add(record.type)
    assert seen == {"cloud_share", "ndvi_change", "valid_dates", "backscatter_level", "backscatter_change"}


def test_statistic_unavailable_without_its_sensor(qa_scenes: QADataModule) -> None:
    scene, region = qa_scenes.splits["train"].scene(0)
    s1_only = SensorStack(series={"s1": scene.series["s1"]})
    out = build_expert(default_experts()[0])(s1_only, region)  # cloud_share reads the optical group
    assert not bool(out.available[0]) and float(out.values[0]) == 0.0


@pytest.fixture(scope="module")
def fitted(demo_store: Path) -> tuple[LinearDenseRegressor, CubeDataModule]:
    dm = CubeDataModule(
        [str(demo_store)], groups=["s2", "s1"], targets=["agb"], window_size=32, block_size=64,
        split_fractions=(0.5, 0.25, 0.25), batch_size=4, num_workers=0, augment=False,
    )  # fmt: skip
    dm.setup("fit")
    torch.manual_seed(0)
    model = LinearDenseRegressor(
        {"dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8, "descriptor_dim": 32}
    )
    assert not bool(model.fitted)
    model.fit(dm.train_dataloader(), target="agb")
    return model, dm


def test_a_dense_head_fit_on_training_windows_beats_the_mean(
    fitted: tuple[LinearDenseRegressor, CubeDataModule],
) -> None:
    model, dm = fitted
    assert bool(model.fitted)
    train_mean = float(torch.cat([b.targets["agb"].flatten() for b in dm.train_dataloader()]).mean())
    errors, baseline = [], []
    with torch.no_grad():
        for split in ("val", "test"):
            for batch in dm._loader(split, shuffle=False):
                pred = model(batch)
                truth = batch.targets["agb"]
                errors.append((pred.mean((1, 2)) - truth.mean((1, 2))) ** 2)
                baseline.append((train_mean - truth.mean((1, 2))) ** 2)
    rmse, base = float(torch.cat(errors).mean().sqrt()), float(torch.cat(baseline).mean().sqrt())
    assert rmse < 0.6 * base, (rmse, base)  # held-out window means, t/ha


def test_head_expert_reduces_over_the_region(fitted: tuple[LinearDenseRegressor, CubeDataModule]) -> None:
    model, dm = fitted
    batch = next(iter(dm.val_dataloader()))
    region = torch.zeros(batch.batch_size, 32, 32, dtype=torch.bool)
    region[:, 8:24, 0:16] = True
    mean = HeadExpert(ExpertConfig("agb_mean", "head", "agb", "t/ha", reduce="mean"), model)
    peak = HeadExpert(ExpertConfig("agb_max", "head", "agb", "Mg/ha", reduce="max"), model)
    with torch.no_grad():
        maps = model(batch)
        got, top = mean(batch, region), peak(batch, region)
    assert torch.allclose(got.values, maps[:, 8:24, 0:16].mean((1, 2)), atol=1e-4)
    assert torch.allclose(top.values, maps[:, 8:24, 0:16].amax((1, 2)))
    assert (
        bool(got.available.all())
        and not mean.training
        and not any(p.requires_grad for p in mean.parameters())
    )
    assert mean.config.predictor is not None and mean.config.predictor["class_path"].endswith(
        "LinearDenseRegressor"
    )


class _Scalar(nn.Module):
    init_args: ClassVar[dict[str, object]] = {}

    def forward(self, stack: SensorStack) -> torch.Tensor:
        return stack["s1"].values.float().mean((1, 2, 3, 4))[:, None]


def test_scalar_and_dense_predictors_need_the_right_reduction(
    fitted: tuple[LinearDenseRegressor, CubeDataModule],
) -> None:
    model, dm = fitted
    batch = next(iter(dm.val_dataloader()))
    region = torch.ones(batch.batch_size, 32, 32, dtype=torch.bool)
    out = HeadExpert(ExpertConfig("s", "head", "backscatter", "dB", reduce="value"), _Scalar())(batch, region)
    assert torch.allclose(out.values, batch["s1"].values.float().mean((1, 2, 3, 4)))
    with pytest.raises(ModelConfigError, match="set reduce='value'"):
        HeadExpert(ExpertConfig("s", "head", "backscatter", "dB"), _Scalar())(batch, region)
    with pytest.raises(ModelConfigError, match="set reduce='mean' or 'max'"):
        HeadExpert(ExpertConfig("d", "head", "agb", "t/ha", reduce="value"), model)(batch, region)
    with pytest.raises(ModelConfigError, match="has no predictor"):
        build_expert(ExpertConfig("d", "head", "agb", "t/ha"))


def test_predictor_saves_and_loads_identically(
    fitted: tuple[LinearDenseRegressor, CubeDataModule], tmp_path: Path
) -> None:
    model, dm = fitted
    batch = next(iter(dm.test_dataloader()))
    save_predictor(model, tmp_path / "agb")
    back = load_predictor(tmp_path / "agb")
    with torch.no_grad():
        assert torch.equal(model(batch), back(batch))
    assert bool(back.fitted)
    with pytest.raises(ModelConfigError, match="is not a predictor folder"):
        load_predictor(tmp_path)


def test_fit_refuses_scenes_without_the_target(fitted: tuple[LinearDenseRegressor, CubeDataModule]) -> None:
    model, dm = fitted
    batch = next(iter(dm.val_dataloader()))
    with pytest.raises(ModelConfigError, match="have no target 'biomass'"):
        LinearDenseRegressor(model.init_args["encoder"]).fit([batch], target="biomass")  # type: ignore[arg-type]
    nan = SensorStack(series=batch.series, targets={"agb": torch.full_like(batch.targets["agb"], np.nan)})
    with pytest.raises(ModelConfigError, match="no finite 'agb' target pixel"):
        LinearDenseRegressor(model.init_args["encoder"]).fit([nan], target="agb")  # type: ignore[arg-type]
