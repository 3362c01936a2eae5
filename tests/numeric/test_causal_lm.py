"""NumericCausalLM around a tiny GPT-2 built here (transformers model code, saved and loaded for real)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from spectravlm.errors import NumericInputError
from spectravlm.numeric import NumericCausalLM, NumericTokenizer


def tiny_gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


@pytest.fixture
def xval(gpt2_like: PreTrainedTokenizerFast) -> tuple[NumericTokenizer, NumericCausalLM]:
    tok = NumericTokenizer(gpt2_like, mode="xval")
    lm = tiny_gpt2(len(gpt2_like))
    return tok, NumericCausalLM.from_tokenizer(lm, tok)


def test_from_tokenizer_resizes_and_picks_modules(gpt2_like: PreTrainedTokenizerFast) -> None:
    for mode, has_modules in (("xval", True), ("digits", False), ("none", False)):
        tok = NumericTokenizer(gpt2_like, mode=mode)  # type: ignore[arg-type]
        model = NumericCausalLM.from_tokenizer(tiny_gpt2(len(gpt2_like)), tok)
        assert model.lm.get_input_embeddings().num_embeddings == len(tok)
        assert (model.number_head is not None) == has_modules == (model.number_embedding is not None)


def test_unresized_lm_is_refused(gpt2_like: PreTrainedTokenizerFast) -> None:
    tok = NumericTokenizer(gpt2_like, mode="xval")
    with pytest.raises(NumericInputError, match="resize_token_embeddings"):
        NumericCausalLM(tiny_gpt2(len(gpt2_like)), tok.num_token_ids)


def test_forward_losses_and_gradients(xval: tuple[NumericTokenizer, NumericCausalLM]) -> None:
    tok, model = xval
    enc = tok(["mean AGB is 152.3 t/ha", "VV is -12.5 dB over 3 plots"], padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    out = model(enc["input_ids"], enc["attention_mask"], enc["numbers"], enc["number_mask"], labels=labels)
    assert out.logits.shape == (*enc["input_ids"].shape, len(tok))
    assert out.number_values is not None and out.number_values.shape == enc["input_ids"].shape
    assert out.loss is not None and out.lm_loss is not None and out.number_loss is not None
    torch.testing.assert_close(out.loss, out.lm_loss + out.number_loss)
    out.loss.backward()
    assert model.number_head is not None
    assert all(p.grad is not None for p in model.number_head.parameters())
    # the value reaches the LM through the number embedding: changing it changes the logits
    changed = model(enc["input_ids"], enc["attention_mask"], enc["numbers"] * 2, enc["number_mask"])
    assert not torch.allclose(changed.logits, out.logits)


def test_number_tokens_need_values(xval: tuple[NumericTokenizer, NumericCausalLM]) -> None:
    tok, model = xval
    enc = tok(["AGB 152.3"], return_tensors="pt")
    with pytest.raises(NumericInputError, match="numbers="):
        model(enc["input_ids"])


def test_prompt_numbers_left_out_of_the_number_loss(xval: tuple[NumericTokenizer, NumericCausalLM]) -> None:
    tok, model = xval
    enc = tok(["AGB 152.3 and 7"], return_tensors="pt")
    labels = enc["input_ids"].clone()
    labels[:, :-1] = -100  # only the last token, the number 7, is a target
    out = model(enc["input_ids"], enc["attention_mask"], enc["numbers"], enc["number_mask"], labels=labels)
    assert model.number_head is not None and out.number_loss is not None
    head = model.number_head(out.hidden_states)
    want = (head.scaled[0, -2] - torch.log1p(torch.tensor(7.0))) ** 2
    torch.testing.assert_close(out.number_loss, want)


def test_generate_with_cache_matches_full_forward(xval: tuple[NumericTokenizer, NumericCausalLM]) -> None:
    tok, model = xval
    model.eval()
    tok.tokenizer.padding_side = "left"
    prompt = tok(["mean AGB is", "VV is -12.5 dB over"], padding=True, return_tensors="pt")
    gen = model.generate(
        prompt["input_ids"],
        prompt["attention_mask"],
        prompt["numbers"],
        prompt["number_mask"],
        max_new_tokens=6,
    )
    start = prompt["input_ids"].shape[1]
    assert gen.input_ids.shape == (2, start + 6)
    full = model(gen.input_ids, gen.attention_mask, gen.numbers, gen.number_mask)
    assert torch.equal(full.logits[:, start - 1 : -1].argmax(-1), gen.input_ids[:, start:])
    with pytest.raises(NumericInputError, match="left-padded"):
        tok.tokenizer.padding_side = "right"
        right = tok(["mean AGB is", "VV is -12.5 dB over"], padding=True, return_tensors="pt")
        model.generate(right["input_ids"], right["attention_mask"], right["numbers"], right["number_mask"])


def test_generated_number_tokens_get_head_values(gpt2_like: PreTrainedTokenizerFast) -> None:
    """Train a tiny LM to answer "AGB is <x>" for a fixed x; generation must emit the number token and x."""
    tok = NumericTokenizer(gpt2_like, mode="xval")
    model = NumericCausalLM.from_tokenizer(tiny_gpt2(len(gpt2_like)), tok)
    enc = tok(["the AGB is 152.3"] * 4, return_tensors="pt")
    labels = enc["input_ids"].clone()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        opt.zero_grad()
        out = model(
            enc["input_ids"], enc["attention_mask"], enc["numbers"], enc["number_mask"], labels=labels
        )
        assert out.loss is not None
        out.loss.backward()
        opt.step()
    model.eval()
    prompt = tok(["the AGB is"], return_tensors="pt")
    gen = model.generate(prompt["input_ids"], max_new_tokens=1)
    assert gen.input_ids[0, -1].item() in tok.num_token_ids and bool(gen.number_mask[0, -1])
    assert gen.numbers[0, -1].item() == pytest.approx(152.3, rel=0.05)
    text = tok.decode(gen.input_ids[0], gen.numbers[0])
    assert text.startswith("the AGB is ") and tok.numbers_in(text)[0] == pytest.approx(152.3, rel=0.05)


def test_save_and_load_lm_and_tokenizer(
    xval: tuple[NumericTokenizer, NumericCausalLM], tmp_path: Path
) -> None:
    tok, model = xval
    model.eval()
    tok.save_pretrained(tmp_path / "tok")
    model.lm.save_pretrained(tmp_path / "lm")
    torch.save(model.state_dict(), tmp_path / "numeric.pt")
    tok2 = NumericTokenizer.from_pretrained(tmp_path / "tok")
    lm2 = GPT2LMHeadModel.from_pretrained(tmp_path / "lm")
    model2 = NumericCausalLM.from_tokenizer(lm2, tok2)
    model2.load_state_dict(torch.load(tmp_path / "numeric.pt"))
    model2.eval()
    enc = tok2(["AGB 152.3 t/ha"], return_tensors="pt")
    a = model(enc["input_ids"], numbers=enc["numbers"], number_mask=enc["number_mask"])
    b = model2(enc["input_ids"], numbers=enc["numbers"], number_mask=enc["number_mask"])
    torch.testing.assert_close(a.logits, b.logits)
