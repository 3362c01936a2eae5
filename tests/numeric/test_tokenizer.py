"""NumericTokenizer around real tokenizers trained here: encoding, the transformers API, bad input, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from spectravlm.errors import NumericInputError
from spectravlm.numeric import NUM_TOKEN, SPACE_NUM_TOKEN, NumericTokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

KINDS = ["gpt2_like", "spm_digits", "llama3_like"]
TEXT = "B8A: mean AGB is 152.3 t/ha over 1,234 plots; VV -12.5 dB on 2021-06-15, range 10-20 m, 1.2e-3."


@pytest.mark.parametrize("kind", KINDS)
def test_xval_one_token_per_number(hf_tokenizers: dict[str, PreTrainedTokenizerFast], kind: str) -> None:
    tok = NumericTokenizer(hf_tokenizers[kind], mode="xval")
    enc = tok(TEXT)
    ids, numbers, mask = enc["input_ids"], enc["numbers"], enc["number_mask"]
    assert len(ids) == len(numbers) == len(mask) == len(enc["attention_mask"])
    assert [i for i in ids if i in tok.num_token_ids] == [ids[p] for p, m in enumerate(mask) if m]
    assert [numbers[p] for p, m in enumerate(mask) if m] == pytest.approx(
        [152.3, 1234.0, -12.5, 10.0, 20.0, 1.2e-3], rel=1e-7
    )
    assert tok.decode(ids, numbers, skip_special_tokens=True) == TEXT.replace("1,234", "1234").replace(
        "1.2e-3", "0.0012"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_digits_mode_spells_numbers(hf_tokenizers: dict[str, PreTrainedTokenizerFast], kind: str) -> None:
    tok = NumericTokenizer(hf_tokenizers[kind], mode="digits")
    enc = tok("VV is -1.2e-3 dB")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    start = tokens.index(SPACE_NUM_TOKEN)
    assert tokens[start + 1 : start + 8] == ["<|-|>", "<|1|>", "<|.|>", "<|2|>", "<|e|>", "<|-|>", "<|3|>"]
    assert not any(enc["number_mask"])
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == "VV is -1.2e-3 dB"
    assert tok.decode(tok(TEXT)["input_ids"], skip_special_tokens=True) == TEXT.replace("1,234", "1234")


@pytest.mark.parametrize("kind", KINDS)
def test_none_mode_is_the_wrapped_tokenizer(
    hf_tokenizers: dict[str, PreTrainedTokenizerFast], kind: str
) -> None:
    inner = hf_tokenizers[kind]
    tok = NumericTokenizer(inner, mode="none")
    assert len(tok) == len(inner) and tok.num_added_tokens == 0
    enc = tok(TEXT)
    assert enc["input_ids"] == inner(TEXT)["input_ids"]
    assert tok.decode(enc["input_ids"]) == inner.decode(enc["input_ids"])


@pytest.mark.parametrize("kind", KINDS)
def test_band_names_and_dates_keep_the_wrapped_tokens(
    hf_tokenizers: dict[str, PreTrainedTokenizerFast], kind: str
) -> None:
    inner = hf_tokenizers[kind]
    text = "bands B8A B02 S2A Sentinel-2 on 2021-06-15 at 10:30"
    for mode in ("xval", "digits"):
        tok = NumericTokenizer(inner, mode=mode)
        assert tok(text)["input_ids"] == inner(text)["input_ids"]


def test_number_token_absorbs_one_space(gpt2_like: PreTrainedTokenizerFast) -> None:
    tok = NumericTokenizer(gpt2_like, mode="xval")
    text = "is 5, (7) and  9 and 3"
    enc = tok(text)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens.count(SPACE_NUM_TOKEN) == 3 and tokens.count(NUM_TOKEN) == 1  # "(7)" has no space before 7
    assert tok.decode(enc["input_ids"], enc["numbers"]) == text


def test_wrapping_leaves_the_tokenizer_alone(gpt2_like: PreTrainedTokenizerFast) -> None:
    before = len(gpt2_like)
    tok = NumericTokenizer(gpt2_like, mode="digits")
    assert len(gpt2_like) == before
    assert len(tok) == before + 2 + 13 == before + tok.num_added_tokens


def test_batch_padding_and_tensors(spm_digits: PreTrainedTokenizerFast) -> None:
    tok = NumericTokenizer(spm_digits, mode="xval")
    texts = ["AGB 152.3 t/ha", "VV is -12.5 dB over 1,234 plots and 7 ha"]
    enc = tok(texts, padding=True, return_tensors="pt")
    assert enc["input_ids"].dtype == torch.int64 and enc["numbers"].dtype == torch.float32
    assert enc["number_mask"].dtype == torch.bool
    assert enc["input_ids"].shape == enc["numbers"].shape == enc["attention_mask"].shape
    lengths = enc["attention_mask"].sum(1)
    assert lengths[0] < lengths[1] == enc["input_ids"].shape[1]
    assert (enc["input_ids"][0, lengths[0] :] == tok.pad_token_id).all()  # right padding
    assert (
        enc["input_ids"][0, 0] == tok.bos_token_id and enc["input_ids"][0, lengths[0] - 1] == tok.eos_token_id
    )
    assert enc["numbers"][enc["number_mask"]].tolist() == pytest.approx([152.3, -12.5, 1234.0, 7.0])
    assert tok.batch_decode(enc["input_ids"], enc["numbers"], skip_special_tokens=True) == [
        "AGB 152.3 t/ha",
        "VV is -12.5 dB over 1234 plots and 7 ha",
    ]

    tok.tokenizer.padding_side = "left"
    left = tok(texts, padding="max_length", max_length=40, return_tensors="np")
    assert isinstance(left["input_ids"], np.ndarray) and left["input_ids"].shape == (2, 40)
    assert left["attention_mask"][:, -1].all() and not left["attention_mask"][:, 0].any()
    assert tok.batch_decode(left["input_ids"], left["numbers"], skip_special_tokens=True)[1].endswith("7 ha")

    multiple = tok(texts, padding=True, pad_to_multiple_of=16, return_tensors="pt")
    assert multiple["input_ids"].shape[1] % 16 == 0


def test_truncation_never_cuts_a_number(spm_digits: PreTrainedTokenizerFast) -> None:
    tok = NumericTokenizer(spm_digits, mode="digits")
    text = "AGB is 152.3 t/ha"
    full = tok(text)["input_ids"]
    start = tok.convert_ids_to_tokens(full).index(SPACE_NUM_TOKEN)
    for limit in range(start + 2, start + 7):  # every cut inside " <|num|> 1 5 2 . 3"
        ids = tok(text, truncation=True, max_length=limit)["input_ids"]
        assert len(ids) <= limit
        assert ids[-1] == tok.eos_token_id  # the template's special tokens survive
        assert tok.decode(ids, skip_special_tokens=True) == "AGB is"
    ids = tok(text, truncation=True, max_length=start + 7)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "AGB is 152.3"

    tok.tokenizer.truncation_side = "left"
    ids = tok("152.3 t/ha", truncation=True, max_length=6)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "t/ha"  # Metaspace drops the leading space
    tok.tokenizer.truncation_side = "right"


def test_xval_truncation_keeps_values_aligned(gpt2_like: PreTrainedTokenizerFast) -> None:
    tok = NumericTokenizer(gpt2_like, mode="xval")
    enc = tok("a 1 b 2 c 3 d 4 e 5", truncation=True, max_length=5)
    assert len(enc["input_ids"]) == 5
    assert [v for v, m in zip(enc["numbers"], enc["number_mask"], strict=True) if m] == [1.0, 2.0]


def test_too_long_text_is_an_error_unless_truncated(gpt2_like: PreTrainedTokenizerFast) -> None:
    tok = NumericTokenizer(gpt2_like, mode="xval")
    long_text = "AGB 152.3 t/ha, " * 100
    with pytest.raises(NumericInputError, match="truncation=True"):
        tok(long_text)
    with pytest.raises(NumericInputError, match="limit of 10"):
        tok("AGB 152.3 t/ha over many plots", max_length=10)
    assert len(tok(long_text, truncation=True)["input_ids"]) <= tok.model_max_length


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AGB is 1e39 t/ha", "beyond float32's range"),
        ("id " + "9" * 50, "50 digits"),
        (f"a literal {NUM_TOKEN} in text", "reserved token"),
    ],
)
def test_bad_text_raises(gpt2_like: PreTrainedTokenizerFast, text: str, message: str) -> None:
    tok = NumericTokenizer(gpt2_like, mode="xval")
    with pytest.raises(NumericInputError, match=message):
        tok(text)


def test_bad_decode_input_raises(gpt2_like: PreTrainedTokenizerFast) -> None:
    tok = NumericTokenizer(gpt2_like, mode="xval")
    enc = tok("AGB is 152.3 t/ha")
    with pytest.raises(NumericInputError, match="numbers="):
        tok.decode(enc["input_ids"])
    with pytest.raises(NumericInputError, match="aligned"):
        tok.decode(enc["input_ids"], enc["numbers"][:-1])
    for bad in (float("nan"), float("inf"), 1e39):
        numbers = [bad if m else 0.0 for m in enc["number_mask"]]
        with pytest.raises(NumericInputError):
            tok.decode(enc["input_ids"], numbers)


def test_bad_arguments_raise(
    gpt2_like: PreTrainedTokenizerFast, llama3_no_pad: PreTrainedTokenizerFast
) -> None:
    with pytest.raises(NumericInputError, match="mode"):
        NumericTokenizer(gpt2_like, mode="words")  # type: ignore[arg-type]
    with pytest.raises(NumericInputError, match="fast"):
        NumericTokenizer("gpt2")  # type: ignore[arg-type]
    tok = NumericTokenizer(gpt2_like)
    with pytest.raises(NumericInputError, match="different lengths"):
        tok(["a 1", "a much longer text with 2 numbers 3"], return_tensors="pt")
    with pytest.raises(NumericInputError, match="max_length"):
        tok(["a 1"], padding="max_length")
    with pytest.raises(NumericInputError, match="pad token"):
        NumericTokenizer(llama3_no_pad)(["a 1", "a much longer 2"], padding=True)


@pytest.fixture
def llama3_no_pad(hf_tokenizers: dict[str, PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    assert hf_tokenizers["llama3_like"].pad_token is None
    return hf_tokenizers["llama3_like"]


@pytest.mark.parametrize("mode", ["xval", "digits", "none"])
def test_save_and_load(spm_digits: PreTrainedTokenizerFast, mode: str, tmp_path: Path) -> None:
    tok = NumericTokenizer(spm_digits, mode=mode, max_digits=20)  # type: ignore[arg-type]
    files = tok.save_pretrained(tmp_path / "tok")
    assert (tmp_path / "tok" / "numeric_tokenizer.json") in files
    loaded = NumericTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.mode == mode and loaded.max_digits == 20 and len(loaded) == len(tok)
    assert loaded.num_token_ids == tok.num_token_ids and loaded.digit_token_ids == tok.digit_token_ids
    enc, enc2 = tok(TEXT), loaded(TEXT)
    assert enc2["input_ids"] == enc["input_ids"] and enc2["numbers"] == enc["numbers"]
    assert loaded.decode(enc2["input_ids"], enc2["numbers"]) == tok.decode(enc["input_ids"], enc["numbers"])


def test_load_needs_the_numeric_config(gpt2_like: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    gpt2_like.save_pretrained(str(tmp_path))
    with pytest.raises(NumericInputError, match=r"numeric_tokenizer\.json"):
        NumericTokenizer.from_pretrained(tmp_path)


def test_metaspace_always_puts_a_space_after_numbers() -> None:
    """The documented limit: T5-style prepend_scheme="always" marks a word start after every added token."""
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    backend.decoder = decoders.Metaspace(prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=60, special_tokens=["<unk>"], unk_token="<unk>", initial_alphabet=list("0123456789%. abcv")
    )
    backend.train_from_iterator(["cover 20% and 35% of 7.5 ha"] * 4, trainer)
    tok = NumericTokenizer(PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>"), mode="xval")
    enc = tok("cover 20% and 35%")
    assert tok.decode(enc["input_ids"], enc["numbers"]) == "cover 20 % and 35 %"
