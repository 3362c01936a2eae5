"""Real tokenizers of three different kinds, trained here with the `tokenizers` library on a small corpus.

Used by the numeric and VLM tests (``from numeric.tiny_tokenizers import BUILDERS``).

- ``gpt2_like``: byte-level BPE (GPT-2): numbers merge into arbitrary multi-digit pieces.
- ``spm_digits``: SentencePiece-style Unigram with the Metaspace pre-tokenizer (``prepend_scheme="first"``,
  as Llama 2 / Mistral) and every digit split on its own, plus a BOS/EOS template.
- ``llama3_like``: byte-level BPE behind the Llama-3 split pattern (digits in runs of 1-3).
"""

from __future__ import annotations

import string

from transformers import PreTrainedTokenizerFast

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CORPUS = [
    "The mean above-ground biomass is 152.3 t/ha over 1,234 plots (2021-06-15).",
    "Band B8A and B02 of S2A show NDVI 0.71; VV backscatter is -12.5 dB, VH -19.2 dB.",
    "Canopy height ranges 10-20 m, cover 85% and AGB 87t/ha on tile 33UUP.",
    "Sentinel-2 L2A scene S2A_MSIL2A_20210615T103031 has 3.2e-3 cloud fraction.",
    "Reflectance of band B11 is 0.2345, B12 is 0.1789 and B04 is 0.0456.",
    "Across 12,345 ha the total stock is 1.5e6 t with uncertainty +/- 8.2 t/ha.",
    "Sentinel-1 IW GRD, orbit 117, incidence 39.4 degrees, ratio VV/VH 6.7 dB.",
    "Lists such as 1,2,3 and ranges 100-250 t/ha appear in reports from 2019 to 2023.",
] * 8

ALPHABET = [*list(string.printable), "°", "±", "−", "é"]

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_gpt2_like() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=256
    )


def build_spm_digits() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(prepend_scheme="first"), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.UnigramTrainer(
        vocab_size=200,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=ALPHABET,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=256,
    )


def build_llama3_like() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", model_max_length=256
    )


BUILDERS = {"gpt2_like": build_gpt2_like, "spm_digits": build_spm_digits, "llama3_like": build_llama3_like}
