"""The processor: placeholders, left padding, numbers as values, answer labels; configs round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from spectravlm.encoders.spectral import SpectralEncoderConfig
from spectravlm.errors import ModelConfigError
from spectravlm.vlm import (
    LLMConfig,
    LoraSettings,
    NumericConfig,
    QFormerBridgeConfig,
    SpectraVLMConfig,
    SpectraVLMProcessor,
)
from spectravlm.vlm.processor import added_tokens, prepare_tokenizer


@pytest.fixture(scope="module")
def processor(llm_dirs: dict[str, Path]) -> SpectraVLMProcessor:
    """The Llama-family tokenizer: SentencePiece-like with a template that adds BOS and EOS."""
    wrapped = prepare_tokenizer(AutoTokenizer.from_pretrained(llm_dirs["llama"]), NumericConfig(), "<image>")
    return SpectraVLMProcessor(wrapped, num_query_tokens=3)


def test_placeholders_expand_and_prompts_pad_left(processor: SpectraVLMProcessor) -> None:
    inputs = processor(
        ["<image> Biomass 152.3 t/ha?", "Compare <image> and <image>, please, over 12 months."]
    )
    assert inputs.scenes_per_prompt == [1, 2]
    assert inputs.image_mask.sum(1).tolist() == [3, 6]
    pads = (inputs.attention_mask == 0).sum(1).tolist()
    assert pads[0] > 0 and pads[1] == 0
    assert inputs.attention_mask[0, : pads[0]].sum() == 0 and inputs.attention_mask[0, pads[0] :].all()
    assert (inputs.input_ids[0, : pads[0]] == processor.pad_token_id).all()
    assert inputs.numbers[inputs.number_mask].tolist() == [pytest.approx(152.3), 12.0]
    tokenizer = processor.tokenizer.tokenizer
    assert inputs.input_ids[1, 0] == tokenizer.bos_token_id  # the template's BOS is kept...
    assert inputs.input_ids[1, -1] != tokenizer.eos_token_id  # ...its EOS dropped: the model continues
    assert inputs.labels is None


def test_targets_give_labels_on_the_answer_and_eos(processor: SpectraVLMProcessor) -> None:
    inputs = processor(["<image> Biomass?", "<image> Cover?"], targets=["152.3 t/ha", "85%"])
    assert inputs.labels is not None
    eos = processor.tokenizer.eos_token_id
    for row in range(2):
        labelled = inputs.labels[row][inputs.labels[row] != -100]
        answer = inputs.input_ids[row, -len(labelled) :]
        assert labelled.tolist() == answer.tolist() and labelled[-1] == eos
        text = processor.decode(answer, inputs.numbers[row, -len(labelled) :])
        assert text == ["152.3 t/ha", "85%"][row]
    with pytest.raises(ModelConfigError, match="2 targets for 1 prompts"):
        processor(["<image>"], targets=["a", "b"])


def test_too_long_and_malformed_prompts(processor: SpectraVLMProcessor) -> None:
    with pytest.raises(ModelConfigError, match="tokens long with its 100 scene"):
        processor("<image>" * 100)
    with pytest.raises(ModelConfigError, match="expected at least one prompt"):
        processor([])


def test_added_tokens_are_the_last_ids(llm_dirs: dict[str, Path]) -> None:
    raw = AutoTokenizer.from_pretrained(llm_dirs["qwen2"])
    for mode, count in (("xval", 3), ("digits", 16), ("none", 1)):
        wrapped = prepare_tokenizer(raw, NumericConfig(mode=mode), "<image>")  # type: ignore[arg-type]
        base, tokens = added_tokens(wrapped, "<image>")
        assert base == len(raw) and len(tokens) == count and tokens[-1] == "<image>"
    assert "<image>" not in raw.get_vocab()  # the user's tokenizer is not modified


def test_config_round_trips_through_json() -> None:
    config = SpectraVLMConfig(
        encoder=SpectralEncoderConfig(dim=32, depth=2, num_heads=2, patch_size=8, descriptor_dim=32),
        llm=LLMConfig(
            name_or_path="some/llm",
            dtype="bfloat16",
            lora=LoraSettings(r=8, target_modules=("q_proj", "o_proj")),
        ),
        bridge=QFormerBridgeConfig(num_query_tokens=16, instruction_aware=True),
        numeric=NumericConfig(mode="digits"),
    )
    assert config.bridge.encoder_width == 32  # derived from the encoder
    doc = json.loads(config.to_json())
    again = SpectraVLMConfig.from_dict(doc)
    assert again == config
    with pytest.raises(ModelConfigError, match=r"unknown SpectraVLMConfig fields \['colour'\]"):
        SpectraVLMConfig.from_dict(doc | {"colour": 1})
    with pytest.raises(ModelConfigError, match=r"unknown bridge fields \['queries'\]"):
        SpectraVLMConfig.from_dict(doc | {"bridge": {"queries": 3}})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: QFormerBridgeConfig(hidden_size=30, num_attention_heads=4), "divisible"),
        (lambda: QFormerBridgeConfig(num_query_tokens=0), "num_query_tokens"),
        (lambda: QFormerBridgeConfig(cross_attention_frequency=13), "cross_attention_frequency"),
        (lambda: LLMConfig(name_or_path="x", dtype="int8"), "llm.dtype"),  # type: ignore[arg-type]
        (lambda: LoraSettings(target_modules="q_proj"), "a list of module names"),  # type: ignore[arg-type]
        (lambda: NumericConfig(mode="words"), "numeric.mode"),  # type: ignore[arg-type]
    ],
)
def test_bad_configs_say_what_is_wrong(make: object, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        make()  # type: ignore[operator]
