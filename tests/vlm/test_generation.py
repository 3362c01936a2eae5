"""Generation: batched equals one by one, cache equals a full forward, numbers come back as values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from spectravlm.numeric import scale_values
from spectravlm.numeric.parsing import format_number
from spectravlm.stack import SensorStack
from spectravlm.vlm import NumericTextStreamer, SpectraVLM, VLMGeneration
from vlm.tiny import FAMILIES, make_vlm, read_scenes

PROMPTS = ["<image> What is the mean above-ground biomass of this forest in t/ha?", "<image> Biomass?"]


class Force(LogitsProcessor):
    """Force token ``plan[k]`` at new-token step ``k`` (a stand-in for a trained model's choice)."""

    def __init__(self, prompt_length: int, plan: dict[int, int]) -> None:
        self.prompt_length, self.plan = prompt_length, plan

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        if step in self.plan:
            forced = torch.full_like(scores, float("-inf"))
            forced[:, self.plan[step]] = 0.0
            return forced  # type: ignore[return-value]
        return scores


def _set_head_value(model: SpectraVLM, value: float) -> None:
    """Make the number head read ``value`` from any hidden state."""
    assert model.number_head is not None
    last = model.number_head.mlp[2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(float(scale_values(torch.tensor(value))))


def _teacher_forced(
    model: SpectraVLM, scenes: SensorStack, prompt: str, gen: VLMGeneration, row: int = 0
) -> torch.Tensor:
    """Logits of a full forward over the prompt and the generated tokens (with their values)."""
    inputs = model.inputs([prompt])
    new = gen.sequences[row, gen.prompt_length :]
    keep = new != model.processor.pad_token_id
    ids = torch.cat([inputs.input_ids[0], new[keep]])[None]
    values = torch.cat([inputs.numbers[0], gen.values[row, gen.prompt_length :][keep]])[None]
    mask = torch.cat([inputs.number_mask[0], gen.number_mask[row, gen.prompt_length :][keep]])[None]
    return model(scenes, ids, torch.ones_like(ids), values, mask).logits[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_one_by_one(
    family: str, llm_dirs: dict[str, Path], demo_store_64: Path
) -> None:
    """Left-padded prompts of different lengths give what each prompt gives alone (greedy)."""
    model = make_vlm(llm_dirs[family])
    _set_head_value(model, 87.6)
    both = read_scenes(demo_store_64, [0, 1])
    plan = {1: model.tokenizer.num_token_ids[1]}  # a number in every answer
    batched = model.generate(
        both,
        PROMPTS,
        max_new_tokens=10,
        logits_processor=LogitsProcessorList([Force(model.inputs(PROMPTS).input_ids.shape[1], plan)]),
    )
    assert batched.sequences.shape[1] > batched.prompt_length
    for row, prompt in enumerate(PROMPTS):
        scene = read_scenes(demo_store_64, [row])
        length = model.inputs([prompt]).input_ids.shape[1]
        alone = model.generate(
            scene, [prompt], max_new_tokens=10, logits_processor=LogitsProcessorList([Force(length, plan)])
        )
        new = batched.sequences[row, batched.prompt_length :]
        assert (
            new.tolist()[: alone.sequences.shape[1] - alone.prompt_length]
            == alone.sequences[0, alone.prompt_length :].tolist()
        )
        assert batched.texts[row] == alone.texts[0]
        assert batched.numbers[row] == pytest.approx(alone.numbers[0], rel=1e-5)
        assert len(alone.numbers[0]) >= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_generation_equals_a_full_forward_with_the_values(
    family: str, llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    """Each greedy token is the argmax of a full (uncached) forward; a number enters with its value."""
    model = make_vlm(llm_dirs[family])
    _set_head_value(model, 152.3)
    length = model.inputs(PROMPTS).input_ids.shape[1]
    gen = model.generate(
        scenes,
        PROMPTS,
        max_new_tokens=8,
        logits_processor=LogitsProcessorList([Force(length, {0: model.tokenizer.num_token_ids[1]})]),
    )
    for row, prompt in enumerate(PROMPTS):
        logits = _teacher_forced(model, _row(scenes, row), prompt, gen, row)
        p = model.inputs([prompt]).input_ids.shape[1]
        new = gen.sequences[row, gen.prompt_length :]
        new = new[new != model.processor.pad_token_id]
        predicted = logits[p : p + len(new) - 1].argmax(-1)  # the tokens after the forced first one
        assert predicted.tolist() == new[1:].tolist()
    # the value matters: the same sequence with another value gives other logits after the number
    wrong = gen.values.clone()
    wrong[gen.number_mask] = 5.0
    row = 0
    p = model.inputs([PROMPTS[0]]).input_ids.shape[1]
    changed = VLMGeneration(gen.texts, gen.numbers, gen.sequences, wrong, gen.number_mask, gen.prompt_length)
    a = _teacher_forced(model, _row(scenes, 0), PROMPTS[0], gen, row)[p]
    b = _teacher_forced(model, _row(scenes, 0), PROMPTS[0], changed, row)[p]
    assert (a - b).abs().max() > 1e-4


def _row(scenes: SensorStack, row: int) -> SensorStack:
    from dataclasses import replace

    return SensorStack(
        series={
            g: replace(
                s, values=s.values[row : row + 1], times=s.times[row : row + 1], valid=s.valid[row : row + 1]
            )
            for g, s in scenes.series.items()
        }
    )


def test_numbers_round_trip_through_generate(llm_dirs: dict[str, Path], scenes: SensorStack) -> None:
    """A generated number token comes back as the head's float, written into the text, parsed back equal."""
    model = make_vlm(llm_dirs["llama"])
    _set_head_value(model, 152.3)
    length = model.inputs(PROMPTS).input_ids.shape[1]
    eos = model.processor.eos_token_id
    assert eos is not None
    word = model.tokenizer.tokenizer("AGB", add_special_tokens=False)["input_ids"]
    plan = dict(enumerate([*word, model.tokenizer.num_token_ids[1], eos]))
    gen = model.generate(
        scenes, PROMPTS, max_new_tokens=8, logits_processor=LogitsProcessorList([Force(length, plan)])
    )
    value = float(torch.tensor(152.3).item())
    for text, numbers in zip(gen.texts, gen.numbers, strict=True):
        assert numbers == [pytest.approx(value, rel=1e-6)]
        assert text == f"AGB {format_number(numbers[0])}"
        assert model.tokenizer.numbers_in(text) == numbers  # text and values agree exactly (float32)
    assert gen.sequences.shape[1] == gen.prompt_length + len(plan)  # stopped at EOS
    # numbers in the prompt enter as values and decode back
    inputs = model.inputs(["<image> Last year it was 1234.5 t/ha and -12.5 dB."])
    assert inputs.numbers[inputs.number_mask].tolist() == [1234.5, -12.5]
    assert model.processor.decode(inputs.input_ids[0], inputs.numbers[0]).endswith(
        "Last year it was 1234.5 t/ha and -12.5 dB."
    )


def test_sampling_is_reproducible_and_top_k_1_is_greedy(
    llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    model = make_vlm(llm_dirs["qwen2"])
    greedy = model.generate(scenes, PROMPTS, max_new_tokens=6)
    one = model.generate(
        scenes, PROMPTS, max_new_tokens=6, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(one.sequences, greedy.sequences)
    draws = [
        model.generate(
            scenes,
            PROMPTS,
            max_new_tokens=6,
            do_sample=True,
            temperature=1.5,
            top_p=0.95,
            generator=torch.Generator().manual_seed(7),
        )
        for _ in range(2)
    ]
    assert torch.equal(draws[0].sequences, draws[1].sequences)
    assert not torch.equal(draws[0].sequences, greedy.sequences)


def test_stop_strings_eos_and_max_new_tokens(llm_dirs: dict[str, Path], scenes: SensorStack) -> None:
    model = make_vlm(llm_dirs["llama"])
    full = model.generate(scenes, PROMPTS, max_new_tokens=12)
    assert full.sequences.shape[1] - full.prompt_length == 12
    new = full.sequences[0, full.prompt_length :]
    stop = model.tokenizer.tokenizer.decode(new[2:4])  # as transformers does, the prompt's tail counts too
    stopped = model.generate(scenes, PROMPTS, max_new_tokens=12, stop_strings=[stop])
    assert stopped.texts[0].endswith(stop) and full.texts[0].startswith(stopped.texts[0])
    assert len(stopped.texts[0]) < len(full.texts[0])
    eos = model.processor.eos_token_id
    length = model.inputs(PROMPTS).input_ids.shape[1]
    ended = model.generate(
        scenes, PROMPTS, max_new_tokens=12, logits_processor=LogitsProcessorList([Force(length, {2: eos})])
    )
    assert ended.sequences.shape[1] == ended.prompt_length + 3
    assert ended.texts[0] == model.processor.decode(
        ended.sequences[0, ended.prompt_length : ended.prompt_length + 2]
    )


def test_streamer_prints_numbers_from_their_values(llm_dirs: dict[str, Path], scenes: SensorStack) -> None:
    model = make_vlm(llm_dirs["llama"])
    _set_head_value(model, 87.6)
    printed: list[str] = []

    class Capture(NumericTextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            printed.append(text)

    prompt = PROMPTS[:1]
    length = model.inputs(prompt).input_ids.shape[1]
    plan = {1: model.tokenizer.num_token_ids[1], 3: model.tokenizer.num_token_ids[1]}
    gen = model.generate(
        _row(scenes, 0), prompt, max_new_tokens=6, streamer=Capture(model.tokenizer),
        logits_processor=LogitsProcessorList([Force(length, plan)]),
    )  # fmt: skip
    assert "".join(printed) == gen.texts[0]
    assert "87.6" in gen.texts[0] and gen.numbers[0] == [pytest.approx(87.6)] * 2


def test_digits_mode_generates_digit_tokens_and_parses_numbers(
    llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    model = make_vlm(llm_dirs["qwen2"], numeric="digits")
    assert model.number_head is None and len(model.config.added_tokens) == 16
    digits = model.tokenizer.digit_token_ids
    length = model.inputs(PROMPTS).input_ids.shape[1]
    plan = {
        0: model.tokenizer.num_token_ids[1],
        1: digits["1"],
        2: digits["5"],
        3: digits["."],
        4: digits["2"],
    }
    gen = model.generate(
        scenes, PROMPTS, max_new_tokens=5, logits_processor=LogitsProcessorList([Force(length, plan)])
    )
    assert [t.strip() for t in gen.texts] == ["15.2", "15.2"]
    assert gen.numbers == [[15.2], [15.2]] or gen.numbers == [[pytest.approx(15.2)]] * 2
