"""``spectravlm ask`` and :func:`spectravlm.cli.ask.ask` on the demo store with a saved tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spectravlm.cli import main
from spectravlm.cli.ask import ask, read_scene
from spectravlm.errors import DataConfigError
from spectravlm.numeric import scale_values
from spectravlm.vlm import LLMConfig, SpectraVLM
from vlm.tiny import make_vlm

BBOX = "500000,6899680,500320,6900000"  # demo grid: 10 m pixels from (500000, 6900000): rows 0-31, cols 0-31


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory, llm_dirs: dict[str, Path]) -> Path:
    """A tiny model rigged to answer with numbers: every step emits ' <|num|>' worth 152.3.

    GPT-2's final norm is set to output one constant vector ``e`` (weight 0, bias ``e``), the number
    token's output row to a multiple of ``e``, and the number head to the constant 152.3. The LLM is
    trained (``freeze=False``) so that these weights are saved with the model.
    """
    model = make_vlm(llm_dirs["gpt2"], llm=LLMConfig(name_or_path=str(llm_dirs["gpt2"]), freeze=False))
    ln_f = model.base_llm.transformer.ln_f
    assert model.number_head is not None
    with torch.no_grad():
        e = torch.randn(32)
        ln_f.weight.zero_()
        ln_f.bias.copy_(e)
        row = model.tokenizer.num_token_ids[1] - model.config.base_vocab_size
        model.vocab.output.weight[row] = (
            100.0 * e / e.norm() ** 2 + model.base_llm.get_output_embeddings().weight.abs().max()
        )
        model.number_head.mlp[2].weight.zero_()
        model.number_head.mlp[2].bias.fill_(float(scale_values(torch.tensor(152.3))))
    folder = tmp_path_factory.mktemp("ask") / "model"
    model.save_pretrained(folder)
    return folder


def test_ask_json_has_text_numbers_window_and_dates(
    saved_model: Path, demo_store_64: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ask", str(demo_store_64), "What is the mean biomass?", "--model", str(saved_model)]
    argv += ["--bbox", BBOX, "--dates", "2021-10-01/2022-03-31", "--max-new-tokens", "3", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["window"] == {
        "row": 0,
        "col": 0,
        "size": 32,
        "bounds": [500000.0, 6899680.0, 500320.0, 6900000.0],
    }
    assert doc["numbers"] == [pytest.approx(152.3)] * 3
    assert doc["text"] == "152.3 152.3 152.3"
    assert set(doc["groups"]) <= {"s2", "s1"} and "s1" in doc["groups"]
    for days in doc["dates"].values():
        assert days and all("2021-10-01" <= d <= "2022-03-31" for d in days)
    assert main(argv[:-1]) == 0
    assert capsys.readouterr().out.strip() == "152.3 152.3 152.3"


def test_python_ask_equals_the_cli(saved_model: Path, demo_store_64: Path) -> None:
    model = SpectraVLM.from_pretrained(saved_model)
    answer = ask(
        model, demo_store_64, "<image> Biomass?", bbox=(500000, 6899680, 500320, 6900000), max_new_tokens=2
    )
    assert answer.numbers == [pytest.approx(152.3)] * 2 and answer.window.size == 32
    assert sum(len(v) for v in answer.dates.values()) >= 12  # every observed date of S1 and S2


def test_window_from_a_lon_lat_box_and_a_rectangle(demo_store_64: Path) -> None:
    from rasterio.warp import transform_bounds

    lonlat = transform_bounds("EPSG:32635", "EPSG:4326", 500100, 6899700, 500300, 6899900)
    scene, window = read_scene(demo_store_64, bbox=lonlat, bbox_crs="EPSG:4326")
    assert (window.row, window.col) == (9, 9) and 20 <= window.size <= 24  # the box, reprojected and squared
    assert scene["s2"].values.shape[-2:] == (window.size, window.size)
    _, wide = read_scene(demo_store_64, bbox=(500500, 6899900, 500640, 6899950))  # 14 x 5 px at the east edge
    assert (wide.size, wide.col, wide.row) == (14, 50, 5)


def test_bad_requests_say_what_is_wrong(
    saved_model: Path, demo_store_64: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["ask", str(demo_store_64), "Biomass?", "--model", str(saved_model)]
    for extra, message in [
        (["--bbox", "1,2,3"], "is not 'minx,miny,maxx,maxy'"),
        (["--bbox", "0,0,10,10"], "lies outside the store's grid"),
        (["--dates", "2021-06-01"], "is not 'START/END'"),
        (["--dates", "2030-01-01/2030-02-01"], "has no observed date between 2030-01-01 and 2030-02-01"),
    ]:
        assert main(base + extra) == 1
        assert message in capsys.readouterr().err
    with pytest.raises(DataConfigError, match="has no sensor group the model takes"):
        read_scene(demo_store_64, sensors=("sentinel2_l1c",))
