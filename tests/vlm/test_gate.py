"""The number gate: weights over the sources, the mixed value, its losses, generation with sources, saving."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spectravlm.errors import ModelConfigError
from spectravlm.numeric import NumberHeadOutput, scale_values
from spectravlm.stack import SensorStack
from spectravlm.vlm import ExpertConfig, GateConfig, LinearDenseRegressor, LLMConfig, NumberGate, SpectraVLM
from spectravlm.vlm.experts import default_experts
from vlm.tiny import emit_numbers, make_vlm


def test_weights_are_a_softmax_over_the_available_sources() -> None:
    gate = NumberGate(8, ["a", "b", "c"])
    hidden = torch.randn(2, 5, 8)
    head = NumberHeadOutput(scaled=torch.zeros(2, 5), values=torch.full((2, 5), 3.0))
    values = torch.tensor([[10.0, 20.0, 30.0], [1.0, 2.0, 0.0]])
    available = torch.tensor([[True, True, True], [True, False, False]])
    out = gate(hidden, head, values, available)
    assert out.sources == ("lm", "a", "b", "c")
    assert torch.allclose(out.weights.sum(-1), torch.ones(2, 5))
    assert torch.allclose(out.weights[0], torch.full((5, 4), 0.25))  # zero-initialised: equal weights
    assert torch.equal(out.weights[1, :, 2:], torch.zeros(5, 2))  # unavailable sources weigh nothing
    assert torch.allclose(out.values[0], torch.full((5,), (3 + 10 + 20 + 30) / 4))
    assert torch.allclose(out.values[1], torch.full((5,), 2.0))
    assert torch.allclose(out.scaled, scale_values(out.values))
    with torch.no_grad():
        gate.net.bias.copy_(torch.tensor([0.0, 0.0, 9.0, 0.0]))  # type: ignore[union-attr]
    assert gate(hidden, head, values, available).winners()[0].eq(2).all()


def test_balance_and_route_losses() -> None:
    even = torch.full((6, 3), 1 / 3)
    assert float(NumberGate.balance_loss(even)) == pytest.approx(1.0)  # Switch: 1 when used evenly
    skewed = torch.tensor([[0.9, 0.05, 0.05]] * 6)
    assert float(NumberGate.balance_loss(skewed)) == pytest.approx(3 * 0.9)
    weights = torch.tensor([[0.5, 0.5, 0.0]])
    sources = torch.tensor([[1.0, 3.0, 100.0]])  # the unavailable third source does not count
    assert float(NumberGate.route_loss(weights, sources, torch.tensor([2.0]))) == pytest.approx(1.0)
    assert float(NumberGate.balance_loss(torch.zeros(0, 3))) == 0.0


@pytest.fixture(scope="module")
def gated(llm_dirs: dict[str, Path]) -> SpectraVLM:
    """A GPT-2-family tiny model rigged to state numbers at every step, with the scene-statistic experts."""
    model = make_vlm(
        llm_dirs["gpt2"],
        llm=LLMConfig(name_or_path=str(llm_dirs["gpt2"]), freeze=False),
        gate=GateConfig(experts=tuple(default_experts())),
    )
    emit_numbers(model, 152.3)
    return model


def test_generation_reports_value_weights_and_winner(gated: SpectraVLM, scenes: SensorStack) -> None:
    region = torch.zeros(2, 32, 32, dtype=torch.bool)
    region[:, :16, :16] = True
    names = gated.gate.sources  # type: ignore[union-attr]
    expected = {name: [e(scenes, region) for e in gated.experts if e.name == name] for name in names[1:]}
    for winner in ("lm", "sar_dates", "vv_mean", "cloud_share"):
        with torch.no_grad():
            gated.gate.net.bias.zero_()  # type: ignore[union-attr]
            gated.gate.net.bias[names.index(winner)] = 30.0  # type: ignore[union-attr]
        out = gated.generate(
            scenes, ["<image> Biomass?", "<image> Clouds?"], max_new_tokens=2, regions=region
        )
        for row in range(2):
            assert len(out.sources[row]) == len(out.numbers[row]) == 2
            first = out.sources[row][0]
            assert first.source == winner and first.weights[winner] > 0.999
            assert abs(sum(first.weights.values()) - 1) < 1e-5
            truth = 152.3 if winner == "lm" else float(expected[winner][0].values[row])
            assert out.numbers[row][0] == pytest.approx(truth, rel=1e-4)
            assert first.units == ("" if winner == "lm" else gated.experts_by_name[winner].units)
    # text-only prompts: no scene, so the LLM's own number head alone
    out = gated.generate(None, ["Biomass?"], max_new_tokens=1)
    assert out.sources[0][0].source == "lm" and out.numbers[0][0] == pytest.approx(152.3, rel=1e-4)
    assert out.sources[0][0].weights["sar_dates"] == 0.0


def test_number_loss_is_on_the_mixed_value_and_trains_the_gate(
    gated: SpectraVLM, scenes: SensorStack
) -> None:
    with torch.no_grad():
        gated.gate.net.bias.zero_()  # type: ignore[union-attr]
    inputs = gated.inputs(["<image> How many dates?", "<image> Biomass?"], targets=["12 dates", "120.5 t/ha"])
    out = gated(scenes, **inputs.model_kwargs())
    assert out.gate is not None and out.number_loss is not None and out.route_loss is not None
    targets = inputs.labels[:, 1:].ne(-100) & inputs.number_mask[:, 1:]  # type: ignore[index]
    mixed = out.gate.scaled[:, :-1][targets]
    wanted = scale_values(inputs.numbers[:, 1:][targets])
    assert float(out.number_loss) == pytest.approx(float(((mixed - wanted) ** 2).mean()), rel=1e-5)
    gated.zero_grad()
    out.loss.backward()  # type: ignore[union-attr]
    assert gated.gate.net.weight.grad is not None and float(gated.gate.net.weight.grad.abs().sum()) > 0  # type: ignore[union-attr]


def test_gated_model_saves_and_loads_with_identical_answers(
    llm_dirs: dict[str, Path], scenes: SensorStack, tmp_path: Path
) -> None:
    regressor = LinearDenseRegressor(
        {"dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8, "descriptor_dim": 32}
    ).fit(
        [SensorStack(series=scenes.series, targets={"agb": scenes["s2"].values[:, 0, 6].float() / 50})], "agb"
    )
    head = ExpertConfig("agb_mean", "head", "agb", "t/ha", reduce="mean", source="test")
    model = make_vlm(
        llm_dirs["gpt2"],
        llm=LLMConfig(name_or_path=str(llm_dirs["gpt2"]), freeze=False),
        gate=GateConfig(experts=(head, *default_experts())),
        experts={"agb_mean": regressor},
    )
    emit_numbers(model, 99.0)
    with torch.no_grad():
        model.gate.net.weight.normal_(0, 3.0)  # type: ignore[union-attr]
    prompts = ["<image> Mean biomass?", "<image> How cloudy?"]
    region = torch.ones(2, 32, 32, dtype=torch.bool)
    region[1, 16:] = False
    before = model.generate(scenes, prompts, max_new_tokens=3, regions=region)
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "experts" / "agb_mean.safetensors").is_file()
    loaded = SpectraVLM.from_pretrained(tmp_path / "model")
    after = loaded.generate(scenes, prompts, max_new_tokens=3, regions=region)
    assert after.texts == before.texts and after.numbers == before.numbers
    assert [[s.source for s in row] for row in after.sources] == [
        [s.source for s in row] for row in before.sources
    ]
    assert after.sources[0][0].weights == before.sources[0][0].weights


def test_gate_configs_that_cannot_work(llm_dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelConfigError, match=r"only numeric\.mode 'xval' has"):
        make_vlm(llm_dirs["llama"], numeric="digits", gate=GateConfig(experts=tuple(default_experts())))
    twice = default_experts()[:1] * 2
    with pytest.raises(ModelConfigError, match="must be unique"):
        GateConfig(experts=tuple(twice))
    head = ExpertConfig("agb_mean", "head", "agb", "t/ha")
    with pytest.raises(ModelConfigError, match="has no predictor"):
        make_vlm(llm_dirs["llama"], gate=GateConfig(experts=(head,)))
    with pytest.raises(ModelConfigError, match="not experts of the gate"):
        make_vlm(llm_dirs["llama"], gate=GateConfig(experts=()), experts={"agb": torch.nn.Linear(1, 1)})
    with pytest.raises(ModelConfigError, match="do not fit the scenes"):
        model = make_vlm(llm_dirs["llama"], gate=GateConfig(experts=tuple(default_experts())))
        model.embed_scenes(_one_scene(), regions=torch.ones(1, 8, 8, dtype=torch.bool))


def _one_scene() -> SensorStack:
    from spectravlm.stack import SensorSeries

    series = SensorSeries(
        sensor="sentinel1_grd", bands=("VV", "VH"), values=-torch.rand(1, 2, 2, 32, 32) * 20,
        times=torch.tensor([[18000, 18012]]), valid=torch.ones(1, 2, 32, 32, dtype=torch.bool), units="dB",
    )  # fmt: skip
    return SensorStack(series={"s1": series})
