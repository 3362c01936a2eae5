"""save_pretrained / from_pretrained of the whole model: identical outputs, the LLM kept as a reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spectravlm.errors import ModelConfigError
from spectravlm.io import OutputExistsError
from spectravlm.stack import SensorStack
from spectravlm.vlm import LLMConfig, LoraSettings, SpectraVLM
from vlm.tiny import make_vlm

PROMPTS = ["<image> What is the mean biomass?", "Describe <image>."]
TARGETS = ["It is 152.3 t/ha.", "Forest, 87.6 t/ha."]


def _train_steps(model: SpectraVLM, scenes: SensorStack, steps: int = 3) -> None:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = model.inputs(PROMPTS, TARGETS)
    for _ in range(steps):
        opt.zero_grad()
        model(scenes, **inputs.model_kwargs()).loss.backward()
        opt.step()
    model.eval()


def _outputs(model: SpectraVLM, scenes: SensorStack) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    inputs = model.inputs(PROMPTS)
    kwargs = {k: v for k, v in inputs.model_kwargs().items() if k != "labels"}
    out = model(scenes, **kwargs)
    assert out.number_values is not None
    return out.logits, out.number_values, model.generate(scenes, PROMPTS, max_new_tokens=5).texts


@pytest.mark.parametrize("lora", [False, True])
def test_save_load_gives_identical_outputs(
    lora: bool, tmp_path: Path, llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    settings = LoraSettings(r=4, dropout=0.0) if lora else None
    model = make_vlm(
        llm_dirs["llama"],
        llm=LLMConfig(name_or_path=str(llm_dirs["llama"]), lora=settings),
        freeze_encoder=False,
    )
    _train_steps(model, scenes)
    before = _outputs(model, scenes)
    model.save_pretrained(tmp_path / "model")
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == sorted(
        [
            "spectravlm.json",
            "encoder",
            "bridge",
            "heads.safetensors",
            "tokenizer",
            *(["lora"] if lora else []),
        ]
    )
    saved = json.loads((tmp_path / "model" / "spectravlm.json").read_text())["config"]
    assert saved["llm"]["name_or_path"] == str(llm_dirs["llama"]) and saved["llm"]["fingerprint"]
    loaded = SpectraVLM.from_pretrained(tmp_path / "model")
    after = _outputs(loaded, scenes)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)
    assert after[2] == before[2]
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_trained_llm_weights_are_saved(
    tmp_path: Path, llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    model = make_vlm(llm_dirs["gpt2"], llm=LLMConfig(name_or_path=str(llm_dirs["gpt2"]), freeze=False))
    _train_steps(model, scenes)
    before = _outputs(model, scenes)
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "llm" / "config.json").is_file()
    after = _outputs(SpectraVLM.from_pretrained(tmp_path / "model"), scenes)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert after[2] == before[2]


def test_another_llm_under_the_same_reference_is_refused(tmp_path: Path, llm_dirs: dict[str, Path]) -> None:
    model = make_vlm(llm_dirs["qwen2"])
    model.save_pretrained(tmp_path / "model")
    from transformers import AutoModelForCausalLM

    torch.manual_seed(123)
    other = AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(llm_dirs["qwen2"]).config)
    with pytest.raises(ModelConfigError, match="is not the one this model was saved with"):
        SpectraVLM.from_pretrained(tmp_path / "model", llm=other)


def test_saving_never_leaves_a_half_written_folder(
    tmp_path: Path, llm_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_vlm(llm_dirs["llama"])
    target = tmp_path / "model"
    model.save_pretrained(target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        model.save_pretrained(target)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(model.tokenizer, "save_pretrained", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(target, overwrite=True)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no build folder left behind
    monkeypatch.undo()
    model.save_pretrained(target, overwrite=True)


def test_loading_what_is_not_a_saved_model(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="is not a saved SpectraVLM"):
        SpectraVLM.from_pretrained(tmp_path)


def test_build_from_references_loads_the_encoder_llm_and_tokenizer(
    tmp_path: Path, llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    """SpectraVLMConfig.create(encoder folder, LLM folder): the path users take with a hub name."""
    from spectravlm.encoders.spectral import SpectralEncoder, spectral_encoder_test
    from spectravlm.vlm import SpectraVLMConfig
    from vlm.tiny import tiny_bridge

    torch.manual_seed(5)
    encoder = spectral_encoder_test(patch_size=8)
    encoder.save_pretrained(tmp_path / "encoder")
    config = SpectraVLMConfig.create(tmp_path / "encoder", str(llm_dirs["qwen2"]), bridge=tiny_bridge())
    assert config.encoder_path == str(tmp_path / "encoder") and config.encoder.dim == 32
    model = SpectraVLM(config)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encoder.forward_features(scenes).tokens, encoder.eval().forward_features(scenes).tokens
        )
    assert type(model.base_llm).__name__ == "Qwen2ForCausalLM" and model.config.llm.model_type == "qwen2"
    assert model.config.base_vocab_size == 400 and len(model.tokenizer) == 403
    assert model.generate(scenes, PROMPTS, max_new_tokens=2).sequences.shape[0] == 2
    loaded = SpectraVLM.from_pretrained(_saved(model, tmp_path))
    assert isinstance(loaded.encoder, SpectralEncoder)


def _saved(model: SpectraVLM, tmp_path: Path) -> Path:
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"
