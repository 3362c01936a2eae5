"""A tiny causal LLM and its tokenizer, built and pretrained locally on a text corpus (CPU demos, tests).

Hub LLMs cannot be downloaded everywhere (and a 0.5 B model trains slowly on a CPU). :func:`build_tiny_llm`
makes a stand-in from scratch: a byte-level BPE tokenizer trained on the corpus (``tokenizers``), a small
Llama-family ``AutoModelForCausalLM`` from its config, pretrained as a language model on the corpus with
``transformers.Trainer``, both saved with ``save_pretrained`` into one folder (built aside, then swapped in).
``spectravlm data tiny-llm OUT --qa QA.jsonl`` builds one from the text of an instruction file's training
records, so that it knows the language of the questions and answers (not the scenes: that is what the VLM
learns); a config then names the folder as ``llm``, as it would name a hub model.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from spectravlm.errors import ModelConfigError
from spectravlm.io import AtomicDirectory

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: Sequence[str], vocab_size: int = 1000) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``.

    EOS doubles as BOS; a pad token of its own, so that the language-model collator, which masks padding out
    of the labels, keeps EOS as a label.
    """
    from transformers import PreTrainedTokenizerFast

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD, model_max_length=512
    )


class _Texts(torch.utils.data.Dataset[dict[str, list[int]]]):
    def __init__(self, ids: list[list[int]]) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.ids[i]}


def build_tiny_llm(
    folder: str | os.PathLike[str],
    texts: Sequence[str],
    vocab_size: int = 1000,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, float]:
    """Build, pretrain and save a tiny Llama-family LLM and its tokenizer into ``folder``.

    Args:
        folder: Where ``save_pretrained`` writes the model and the tokenizer.
        texts: The corpus (each text is one training sequence, EOS appended).
        vocab_size: BPE vocabulary size.
        hidden_size: Model width (the MLP is 4x wider).
        num_layers: Transformer layers.
        num_heads: Attention heads.
        steps: Optimiser steps of the language-model pretraining (0: random weights).
        batch_size: Texts per step.
        lr: Peak learning rate (cosine schedule).
        seed: Seed of the weights and the data order.
        overwrite: Replace an existing ``folder``.

    Returns:
        ``{"parameters", "first_loss", "last_loss"}`` of the pretraining.

    Raises:
        ModelConfigError: An empty corpus.

    """
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForLanguageModeling,
        LlamaConfig,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ModelConfigError("the tiny LLM needs a non-empty text corpus")
    with AtomicDirectory(folder, overwrite=overwrite, what="LLM folder") as tmp:
        tok = train_tokenizer(texts, vocab_size)
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
            max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        ids = [[*tok(t)["input_ids"][:255], tok.eos_token_id] for t in texts]
        losses: list[float] = []
        if steps > 0:
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                args = TrainingArguments(
                    output_dir=scratch, per_device_train_batch_size=batch_size, max_steps=steps,
                    learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20),
                    weight_decay=0.01, logging_steps=max(1, steps // 10), save_strategy="no", report_to=[],
                    use_cpu=not torch.cuda.is_available(), seed=seed, data_seed=seed, disable_tqdm=True,
                    dataloader_num_workers=0,
                )  # fmt: skip
                trainer = Trainer(
                    model=model, args=args, train_dataset=_Texts(ids),
                    data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                )  # fmt: skip
                trainer.remove_callback(PrinterCallback)  # losses are returned, not printed
                trainer.train()
                losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
            hf_logging.set_verbosity(verbosity)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    n = sum(p.numel() for p in model.parameters())
    return {
        "parameters": float(n),
        "first_loss": losses[0] if losses else math.nan,
        "last_loss": losses[-1] if losses else math.nan,
    }


__all__ = ["build_tiny_llm", "train_tokenizer"]
