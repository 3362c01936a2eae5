"""SpectraVLM forward and backward with Llama-, Qwen2- and GPT-2-style tiny LLMs loaded by reference."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from spectravlm.encoders.spectral import spectral_encoder_test
from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorStack
from spectravlm.vlm import LLMConfig, LoraSettings, SpectraVLM, SpectraVLMConfig
from vlm.tiny import FAMILIES, make_vlm, read_scenes, tiny_bridge

PROMPTS = ["<image> What is the mean biomass?", "Describe <image> in a few words."]
TARGETS = ["It is 152.3 t/ha.", "Forest, 87.6 t/ha, cover 85%."]


def _grad_parts(model: SpectraVLM) -> set[str]:
    return {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_shapes_and_text_logits_are_the_llms(
    family: str, llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    model = make_vlm(llm_dirs[family])
    inputs = model.inputs(PROMPTS)
    out = model(scenes, **inputs.model_kwargs())
    b, length = inputs.input_ids.shape
    vocab = len(model.tokenizer)
    assert out.logits.shape == (b, length, vocab) and out.logits.dtype == torch.float32
    assert out.hidden_states.shape == (b, length, 32)
    assert out.number_values is not None and out.number_values.shape == (b, length)
    assert out.scenes is not None and out.scenes.embeds.shape == (2, 4, 32)
    assert inputs.scenes_per_prompt == [1, 1]
    # Text-only prompts: the logits of the LLM's own tokens are the LLM's own logits, unchanged.
    text = model.inputs(["The mean biomass is", "Cover"])
    ours = model(None, **text.model_kwargs()).logits
    llm = AutoModelForCausalLM.from_pretrained(llm_dirs[family]).eval()
    positions = (text.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = llm(
            input_ids=text.input_ids, attention_mask=text.attention_mask, position_ids=positions
        ).logits
    base = model.config.base_vocab_size
    keep = text.attention_mask.bool()
    torch.testing.assert_close(ours[..., :base][keep], theirs[..., :base][keep], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_backward_reaches_only_the_unfrozen_parts(
    family: str, llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    """Frozen encoder and LLM by default: gradients in the bridge, the added rows and the number head."""
    model = make_vlm(llm_dirs[family]).train()
    out = model(scenes, **model.inputs(PROMPTS, TARGETS).model_kwargs())
    assert out.loss is not None and out.number_loss is not None and out.number_loss > 0
    out.loss.backward()
    with_grad = _grad_parts(model)
    assert {n.split(".")[0] for n in with_grad} == {"bridge", "vocab", "number_head"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable - {"bridge.instruction_projection", "bridge.instruction_positions"}
    assert not any(n.startswith(("encoder.", "llm.")) for n in trainable)
    assert "bridge.query_tokens" in with_grad and "vocab.input.weight" in with_grad
    assert model.encoder.training is False and model.llm.training is False  # frozen parts stay in eval


def test_unfrozen_encoder_and_llm_get_gradients(llm_dirs: dict[str, Path], scenes: SensorStack) -> None:
    llm = LLMConfig(name_or_path=str(llm_dirs["llama"]), freeze=False)
    model = make_vlm(llm_dirs["llama"], llm=llm, freeze_encoder=False).train()
    model(scenes, **model.inputs(PROMPTS, TARGETS).model_kwargs()).loss.backward()
    parts = {n.split(".")[0] for n in _grad_parts(model)}
    assert parts == {"encoder", "bridge", "vocab", "number_head", "llm"}
    assert model.encoder.training and model.llm.training


@pytest.mark.parametrize(
    ("family", "targets"),
    [("llama", {"q_proj", "v_proj"}), ("qwen2", {"q_proj", "v_proj"}), ("gpt2", {"c_attn"})],
)
def test_lora_on_the_llm_only_with_family_defaults(
    family: str, targets: set[str], llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    plain = make_vlm(llm_dirs[family])
    lora = LLMConfig(name_or_path=str(llm_dirs[family]), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    model = make_vlm(llm_dirs[family], llm=lora)
    assert model.config.llm.lora is not None and set(model.config.llm.lora.target_modules or ()) == targets
    inputs = model.inputs(PROMPTS, TARGETS)
    # LoRA starts as the identity (B = 0): the same outputs as without it
    torch.testing.assert_close(
        model(scenes, **inputs.model_kwargs()).logits, plain(scenes, **inputs.model_kwargs()).logits
    )
    model.train()
    model(scenes, **inputs.model_kwargs()).loss.backward()
    llm_grads = {n for n in _grad_parts(model) if n.startswith("llm.")}
    assert llm_grads and all("lora_" in n for n in llm_grads)
    assert {
        n.split(".")[-4] for n in llm_grads
    } == targets  # ...q_proj.lora_B.default.weight (A: 0 while B = 0)
    assert not any("lora" in n for n, _ in model.bridge.named_parameters())  # never on the Q-Former
    assert not any(n.startswith("encoder.") for n in _grad_parts(model))


def test_lora_target_that_matches_nothing_is_named(llm_dirs: dict[str, Path]) -> None:
    lora = LoraSettings(target_modules=("q_proj", "qkv"))
    with pytest.raises(
        ModelConfigError,
        match=r"LoRA target modules \['qkv'\] match no module.*: down_proj, .*q_proj, .*v_proj",
    ):
        make_vlm(llm_dirs["llama"], llm=LLMConfig(name_or_path=str(llm_dirs["llama"]), lora=lora))
    with pytest.raises(ModelConfigError, match="set one of them"):
        LLMConfig(name_or_path="x", freeze=False, lora=LoraSettings())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(
    llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    results = []
    for checkpointing in (False, True):
        llm = LLMConfig(name_or_path=str(llm_dirs["qwen2"]), lora=LoraSettings(r=4, dropout=0.0))
        model = make_vlm(
            llm_dirs["qwen2"], llm=llm, gradient_checkpointing=checkpointing, freeze_encoder=False
        )
        model.train()
        out = model(scenes, **model.inputs(PROMPTS, TARGETS).model_kwargs())
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), grads))
    assert model.base_llm.is_activation_checkpointing
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_logits_kept_only_where_needed(llm_dirs: dict[str, Path], scenes: SensorStack) -> None:
    model = make_vlm(llm_dirs["gpt2"])
    inputs = model.inputs(PROMPTS, TARGETS)
    out = model(scenes, **inputs.model_kwargs())
    assert inputs.labels is not None
    labelled = int((inputs.labels[:, 1:] != -100).sum())
    assert out.logits.shape == (labelled, len(model.tokenizer))
    plain = {k: v for k, v in inputs.model_kwargs().items() if k != "labels"}
    full = model(scenes, **plain).logits
    last = model(scenes, **plain, logits_to_keep=1).logits
    assert last.shape == (2, 1, len(model.tokenizer))
    torch.testing.assert_close(last[:, 0], full[:, -1])
    keep = torch.zeros_like(inputs.labels, dtype=torch.bool)
    keep[:, :-1] = inputs.labels[:, 1:] != -100
    torch.testing.assert_close(out.logits, full[keep])


def test_number_loss_reads_answer_numbers_not_prompt_numbers(
    llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    model = make_vlm(llm_dirs["llama"])
    with_prompt_number = model.inputs(["<image> Is it 300 t/ha?", "<image> And 12.5 dB?"], ["No.", "Yes."])
    out = model(scenes, **with_prompt_number.model_kwargs())
    assert out.number_loss is not None and out.number_loss.item() == 0.0  # no number in the answers
    answers = model.inputs(["<image> Is it 300 t/ha?", "<image> And 12.5 dB?"], ["No, 152.3.", "Yes."])
    out = model(scenes, **answers.model_kwargs())
    assert out.number_loss is not None and out.number_loss.item() > 0.0
    assert out.loss is not None
    torch.testing.assert_close(out.loss, out.lm_loss + out.number_loss)


def test_several_scenes_per_prompt_fill_placeholders_in_order(
    llm_dirs: dict[str, Path], demo_store_64: Path
) -> None:
    model = make_vlm(llm_dirs["llama"])
    three = read_scenes(demo_store_64, [0, 1, 2])
    inputs = model.inputs(["Compare <image> with <image>.", "And <image>?"])
    assert inputs.scenes_per_prompt == [2, 1]
    embeds, scene = model.embed_inputs(
        three, inputs.input_ids, inputs.attention_mask, inputs.numbers, inputs.number_mask
    )
    assert scene is not None and scene.rows.tolist() == [0, 0, 1]
    images = embeds[inputs.image_mask]
    torch.testing.assert_close(images, scene.embeds.reshape(-1, 32))
    # a list of stacks of other window sizes works too, scenes in order
    big = read_scenes(demo_store_64, [0], window_size=64)
    _, mixed = model.embed_inputs(
        [read_scenes(demo_store_64, [0, 1]), big],
        inputs.input_ids, inputs.attention_mask, inputs.numbers, inputs.number_mask,
    )  # fmt: skip
    assert mixed is not None and [o.tokens.shape[1] for o in mixed.encoder] == [352, 4 * 352]
    torch.testing.assert_close(mixed.embeds[:2], scene.embeds[:2])


def test_prompts_and_scenes_that_do_not_pair_up(llm_dirs: dict[str, Path], scenes: SensorStack) -> None:
    model = make_vlm(llm_dirs["llama"])
    one = SensorStack(
        series={
            g: replace(s, values=s.values[:1], times=s.times[:1], valid=s.valid[:1])
            for g, s in scenes.series.items()
        }
    )
    with pytest.raises(
        ModelConfigError, match=r"prompt\(s\) \[1\] have no '<image>' placeholder, but 2 scene"
    ):
        model.generate(scenes, ["<image> What?", "What?"])
    with pytest.raises(
        ModelConfigError, match=r"hold 3 '<image>' placeholders \(\[2, 1\] per prompt\) for 2 scene"
    ):
        model.generate(scenes, ["<image> and <image>?", "<image>?"])
    with pytest.raises(ModelConfigError, match="placeholders but no scene was given"):
        model.generate(None, ["<image> What?"])
    with pytest.raises(ModelConfigError, match="for 1 scene"):
        model.generate(one, ["<image> and <image>?"])


def test_scene_the_encoder_does_not_take_and_empty_scene(
    llm_dirs: dict[str, Path], scenes: SensorStack
) -> None:
    torch.manual_seed(0)
    encoder = spectral_encoder_test(patch_size=8, sensors=("sentinel2_l2a",))
    config = SpectraVLMConfig(
        encoder=encoder.config, llm=LLMConfig(name_or_path=str(llm_dirs["llama"])), bridge=tiny_bridge()
    )
    model = SpectraVLM(config, encoder=encoder)
    with pytest.raises(
        ModelConfigError, match="scene group 's1' is sentinel1_grd, which this model's encoder does not take"
    ):
        model.embed_scenes(scenes)
    s2_only = SensorStack(series={"s2": scenes["s2"]})
    empty = SensorStack(series={"s2": replace(scenes["s2"], valid=torch.zeros_like(scenes["s2"].valid))})
    assert model.embed_scenes(s2_only).embeds.shape == (2, 4, 32)
    with pytest.raises(ModelConfigError, match=r"scene\(s\) \[0, 1\] have no valid token"):
        model.embed_scenes(empty)


def test_tokenizer_without_pad_token_pads_with_eos_and_says_so(llm_dirs: dict[str, Path]) -> None:
    with pytest.warns(UserWarning, match="no pad token; padding with its eos token '<\\|end_of_text\\|>'"):
        model = make_vlm(llm_dirs["gpt2"], quiet=False)  # this family's tokenizer (Llama-3-like) has no pad
    assert model.processor.pad_token_id == model.processor.eos_token_id
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(llm_dirs["gpt2"]).pad_token is None  # the user's is left alone


def test_tokenizer_that_does_not_fit_the_llm(llm_dirs: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    with pytest.raises(ModelConfigError, match=r"has 400 tokens but the LLM .* embeds only 177"):
        make_vlm(
            llm_dirs["llama"],
            llm=LLMConfig(name_or_path=str(llm_dirs["llama"]), tokenizer=str(llm_dirs["qwen2"])),
        )
    assert len(AutoTokenizer.from_pretrained(llm_dirs["qwen2"])) == 400


def test_bf16_llm_with_a_float32_bridge(llm_dirs: dict[str, Path], scenes: SensorStack) -> None:
    llm = LLMConfig(name_or_path=str(llm_dirs["llama"]), dtype="bfloat16")
    model = make_vlm(llm_dirs["llama"], llm=llm)
    assert next(model.base_llm.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.bridge.parameters())
    out = model(scenes, **model.inputs(PROMPTS, TARGETS).model_kwargs())
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()
    assert out.hidden_states.dtype == torch.bfloat16
    assert out.number_values is not None and out.number_values.dtype == torch.float32
    assert out.loss is not None and torch.isfinite(out.loss)


def test_trainable_parts_learn(llm_dirs: dict[str, Path], scenes: SensorStack) -> None:
    """A few steps on one batch with a frozen LLM lower the loss (bridge, added rows, number head learn)."""
    model = make_vlm(llm_dirs["qwen2"]).train()
    inputs = model.inputs(PROMPTS, TARGETS)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        out = model(scenes, **inputs.model_kwargs())
        out.loss.backward()
        opt.step()
        losses.append((out.lm_loss.item(), out.number_loss.item()))
    # measured: LM loss 6.00 -> 5.46 (a frozen random LLM steered through 4 image tokens),
    # number loss 22.6 -> 0.12
    assert losses[-1][0] < 0.95 * losses[0][0] and losses[-1][1] < 0.05 * losses[0][1]
