"""Instruction data: the generator's answers against the stores, the split, determinism, the data module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from spectravlm.cli import main
from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import make_demo_cubes
from spectravlm.data.instructions import QADataModule, render, select_dates
from spectravlm.data.qa import PHRASINGS, QUESTION_TYPES, generate_qa, parse_record, read_qa
from spectravlm.data.store import StoreTransaction
from spectravlm.errors import DataConfigError
from spectravlm.io import OutputExistsError


@pytest.fixture(scope="module")
def qa_file(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    generate_qa(
        [demo_store], out, window_size=32, per_window=10, block_size=64, split_fractions=(0.5, 0.25, 0.25)
    )
    return out


def _window(ds: xr.Dataset | xr.DataArray, record_window: dict[str, int]) -> xr.Dataset | xr.DataArray:
    w = record_window
    return ds.isel(y=slice(w["row"], w["row"] + w["size"]), x=slice(w["col"], w["col"] + w["size"]))


def _region(record: object) -> dict[str, slice]:
    r = record.region  # type: ignore[attr-defined]
    return {"y": slice(r["row"], r["row"] + r["height"]), "x": slice(r["col"], r["col"] + r["width"])}


def test_agb_answers_equal_the_store_to_float32(qa_file: Path, demo_store: Path) -> None:
    agb = xr.open_zarr(demo_store, group="targets")["agb"].load()
    records = [r for r in read_qa(qa_file) if r.type.startswith("agb_")]
    kinds = {r.type for r in records}
    assert {"agb_mean", "agb_max", "agb_percentile", "agb_share_above"} <= kinds
    assert any(r.region["height"] < 32 for r in records) and any(r.region["height"] == 32 for r in records)
    for r in records:
        values = agb.isel(**_region(r)).values.astype(np.float64)
        values = values[np.isfinite(values)]
        q = r.question
        if r.type == "agb_mean":
            truth = values.mean()
        elif r.type == "agb_max":
            truth = values.max()
        elif r.type == "agb_percentile":
            p = (
                q.split("th percentile")[0].split()[-1]
                if "th percentile" in q
                else q.split("do ")[1].split("%")[0]
            )
            truth = np.percentile(values, float(p))
        else:
            truth = 100.0 * (values > float(q.split(" t/ha")[0].split()[-1])).mean()
        assert r.answer["value"] == float(np.float32(truth)), (r.id, r.type)
        assert r.answer["units"] == QUESTION_TYPES[r.type].units
        assert r.answer["text"] in r.reply and r.reply.endswith(("t/ha.", "that.", "do."))
        assert abs(float(r.answer["text"]) - truth) <= 0.05 + 1e-9


def test_scene_statistics_answers_equal_the_store(qa_file: Path, demo_store: Path) -> None:
    s2 = xr.open_zarr(demo_store, group="s2")
    s1 = xr.open_zarr(demo_store, group="s1")
    checked = set()
    for r in read_qa(qa_file):
        start, end = (np.datetime64(d, "D") for d in r.dates)
        if r.type == "cloud_share":
            cloud = s2["cloud"].isel(**_region(r)).sel(time=slice(start, end + np.timedelta64(1, "D")))
            dn = s2["data"].isel(**_region(r)).sel(time=cloud.time)
            clear = (cloud < 50) & (dn != 0).all("band")
            assert r.answer["value"] == pytest.approx(100 * (1 - float(clear.mean())), abs=1e-4)
        elif r.type == "backscatter_level":
            band = "VV" if "VV" in r.question else "VH"
            x = s1["data"].isel(**_region(r)).sel(band=band).values
            assert r.answer["value"] == pytest.approx(float(np.nanmean(x)), abs=1e-3)
        elif r.type == "valid_dates" and "Sentinel-1" in r.question:
            assert r.answer["value"] == 12  # the demo's S1 has no gaps
        else:
            continue
        checked.add(r.type)
    assert checked == {"cloud_share", "backscatter_level", "valid_dates"}


def test_split_is_the_regression_split(qa_file: Path, demo_store: Path) -> None:
    dm = CubeDataModule(
        [str(demo_store)], groups=["s2", "s1"], targets=["agb"], window_size=32, block_size=64,
        split_fractions=(0.5, 0.25, 0.25), num_workers=0, seed=0,
    )  # fmt: skip
    dm.setup("fit")
    records = read_qa(qa_file)
    for split in ("train", "val", "test"):
        windows = {(w.row, w.col) for w in dm.datasets[split].windows}
        asked = {(r.window["row"], r.window["col"]) for r in records if r.split == split}
        assert asked == windows and asked


def test_deterministic_for_a_seed_and_phrasings_vary(demo_store: Path, qa_file: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.jsonl"
    generate_qa(
        [demo_store], again, window_size=32, per_window=10, block_size=64, split_fractions=(0.5, 0.25, 0.25)
    )
    assert again.read_bytes() == qa_file.read_bytes()
    other = tmp_path / "other.jsonl"
    generate_qa([demo_store], other, window_size=32, per_window=10, block_size=64, seed=1)
    assert other.read_bytes() != qa_file.read_bytes()
    records = read_qa(qa_file)
    for qtype in ("agb_mean", "backscatter_level", "valid_dates"):
        templates = {q.split("{")[0] for q, _ in PHRASINGS[qtype]}
        used = {t for t in templates for r in records if r.type == qtype and r.question[8:].startswith(t)}
        assert len(used) >= 2, qtype
    assert all(r.conversation[0]["content"].startswith("<image> ") for r in records)


def test_record_shape_errors_name_the_line(tmp_path: Path) -> None:
    good = {
        "id": "a", "store": "s.zarr", "type": "agb_mean", "window": {"row": 0, "col": 0, "size": 32},
        "dates": ["2021-01-01", "2021-12-31"], "groups": ["s2"],
        "conversation": [
            {"role": "user", "content": "<image> AGB?"}, {"role": "assistant", "content": "1 t/ha."}
        ],
    }  # fmt: skip
    assert parse_record(good, "x").region == {"row": 0, "col": 0, "height": 32, "width": 32}
    for change, message in [
        ({"window": {"row": 0}}, "window must be"),
        ({"region": {"row": 20, "col": 0, "height": 20, "width": 5}}, "is not inside window"),
        ({"dates": ["2021-12-31", "2021-01-01"]}, "end before they start"),
        ({"type": "agb_median"}, "is not known"),
        ({"answer": {"units": "%", "value": 3.0}}, "a agb_mean answer is in 't/ha'"),
        ({"conversation": [{"role": "user", "content": "x"}]}, "ending with the assistant"),
        ({"colour": 1}, "unknown record fields"),
    ]:
        with pytest.raises(DataConfigError, match=message):
            parse_record(good | change, "qa.jsonl:3")
    assert parse_record(good | {"answer": {"units": "Mg/ha", "value": 3.0}}, "x").answer["units"] == "Mg/ha"
    file = tmp_path / "bad.jsonl"
    file.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataConfigError, match=r"bad\.jsonl:2: not JSON"):
        read_qa(file)


def test_a_window_outside_the_store_and_a_target_it_lacks(demo_store: Path, tmp_path: Path) -> None:
    record = {
        "id": "a", "store": str(demo_store), "type": "agb_mean", "window": {"row": 120, "col": 0, "size": 32},
        "dates": ["2021-01-01", "2022-12-31"], "groups": ["s2", "s1"],
        "conversation": [
            {"role": "user", "content": "<image> AGB?"}, {"role": "assistant", "content": "1 t/ha."}
        ],
    }  # fmt: skip
    file = tmp_path / "outside.jsonl"
    file.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataConfigError, match=r"window .* lies outside .*128x128 px"):
        QADataModule(str(file)).setup()
    no_target = tmp_path / "no_target.zarr"
    s2, s1, _, _ = make_demo_cubes(size=64)
    with StoreTransaction(no_target, title="no target") as tx:
        tx.write_sensor("s2", s2)
        tx.write_sensor("s1", s1)
    file.write_text(
        json.dumps(record | {"store": str(no_target), "window": {"row": 0, "col": 0, "size": 32}}) + "\n"
    )
    with pytest.raises(
        DataConfigError, match=r"asks about target 'agb', which .* lacks; its targets: \(none\)"
    ):
        QADataModule(str(file)).setup()
    out = tmp_path / "qa.jsonl"
    with pytest.raises(DataConfigError, match="agb_mean questions need the target 'agb'"):
        generate_qa([no_target], out, types=["agb_mean", "cloud_share"])
    assert not out.exists()
    summary = generate_qa([no_target], out, window_size=32, per_window=4)  # default: what it can answer
    assert out.exists() and not any(t.startswith("agb") for t in summary.types)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        generate_qa([no_target], out)
    assert out.read_bytes() == before


def test_cli_writes_and_refuses(demo_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.jsonl"
    assert (
        main(
            ["data", "qa", str(demo_store), str(out), "--per-window", "2", "--types", "agb_mean,valid_dates"]
        )
        == 0
    )
    assert "records" in capsys.readouterr().out
    records = read_qa(out)
    assert {r.type for r in records} == {"agb_mean", "valid_dates"}
    assert all(not Path(r.store).is_absolute() for r in records)  # relative to the JSONL's folder
    assert main(["data", "qa", str(demo_store), str(out), "--types", "agb_mean"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "qa", str(demo_store), str(tmp_path / "x.jsonl"), "--types", "agb_median"]) == 1
    assert "are not known" in capsys.readouterr().err


def test_data_module_scenes_regions_and_dates(qa_file: Path) -> None:
    dm = QADataModule(str(qa_file), batch_size=6, targets=["agb"])
    dm.setup("fit")
    ds = dm.splits["train"]
    for k, record in enumerate(ds.records[:30]):
        scene, region = ds.scene(k)
        start, end = (int(np.datetime64(d, "D").astype(np.int64)) for d in record.dates)
        for series in scene.series.values():
            days = series.times[0]
            real = days[days != 0]
            assert bool(((real >= start) & (real <= end)).all())
            if len(real) == 0:  # a group without a date in range: one empty, masked date
                assert series.values.shape[1] == 1 and not bool(series.valid.any())
        r = record.region
        assert int(region.sum()) == r["height"] * r["width"]
    batch = next(iter(dm.train_dataloader()))
    assert batch.scenes.batch_size == 6 and tuple(batch.regions.shape) == (6, 32, 32)
    assert batch.inputs is None  # no processor yet
    assert "agb" in batch.scenes.targets
    prompt, target = render(batch.records[0], "Q: {question}\nA:")
    assert (
        prompt.startswith("Q: <image> ")
        and prompt.endswith("\nA:")
        and target == " " + batch.records[0].reply
    )


def test_select_dates_keeps_cloudy_dates_and_pads_empty_groups(demo_batch) -> None:  # type: ignore[no-untyped-def]
    stack = demo_batch
    single = type(stack)(series={k: _first(s) for k, s in stack.series.items()})
    days = single["s2"].times[0]
    day = np.datetime64(int(days[3]), "D")
    picked = select_dates(single, day, day)
    assert picked["s2"].times.shape[1] == 1 and int(picked["s2"].times[0, 0]) == int(days[3])
    empty = select_dates(single, np.datetime64("1990-01-01"), np.datetime64("1990-02-01"))
    assert all(not bool(s.valid.any()) and int(s.times[0, 0]) == 0 for s in empty.series.values())


def _first(series):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(series, values=series.values[:1], times=series.times[:1], valid=series.valid[:1])


def test_multi_turn_conversations_train_on_the_last_answer() -> None:
    record = parse_record(
        {
            "id": "m", "store": "s", "type": "custom", "window": {"row": 0, "col": 0, "size": 8},
            "dates": ["2021-01-01", "2021-01-02"], "groups": ["s2"],
            "conversation": [
                {"role": "user", "content": "<image> Is there forest?"},
                {"role": "assistant", "content": "Yes."},
                {"role": "user", "content": "How much biomass?"},
                {"role": "assistant", "content": "120.5 t/ha."},
            ],
        },
        "x",
    )  # fmt: skip
    prompt, target = render(record)
    assert prompt == "Question: <image> Is there forest?\nAnswer: Yes.\nQuestion: How much biomass?\nAnswer:"
    assert target == " 120.5 t/ha."
