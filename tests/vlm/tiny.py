"""Tiny parts of the VLM tests: LLM configs of three families, a tiny Q-Former, a tiny SpectraVLM.

The LLMs are built from configs (Llama-, Qwen2- and GPT-2-style; a few thousand parameters) for the
tokenizers of :mod:`numeric.tiny_tokenizers`; ``tests/vlm/conftest.py`` saves them to a temporary folder,
from which the models load them back through ``AutoModelForCausalLM.from_pretrained(folder)``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from numeric.tiny_tokenizers import build_gpt2_like, build_llama3_like, build_spm_digits
from spectravlm.data.dataset import CubeDataset
from spectravlm.encoders.spectral import spectral_encoder_test
from spectravlm.stack import SensorStack
from spectravlm.vlm import LLMConfig, NumericConfig, QFormerBridgeConfig, SpectraVLM, SpectraVLMConfig

FAMILIES = ("llama", "qwen2", "gpt2")


def tiny_llm_config(family: str, tokenizer: PreTrainedTokenizerFast) -> Any:
    """A 2-layer, 32-wide causal LM config of ``family`` for ``tokenizer``'s vocabulary."""
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if family == "llama":
        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id, **ids,
        )  # fmt: skip
    if family == "qwen2":  # vocabulary padded beyond the tokenizer's, as real Qwen2 checkpoints are
        return Qwen2Config(
            vocab_size=len(tokenizer) + 24, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **ids,
        )  # fmt: skip
    if family == "gpt2":
        return GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=512, **ids)
    raise ValueError(family)


TOKENIZERS = {"llama": build_spm_digits, "qwen2": build_gpt2_like, "gpt2": build_llama3_like}


def read_scenes(store: Path, indices: list[int], window_size: int = 32) -> SensorStack:
    """Windows of the demo store through the real loader (S2 + S1, raw values, a plain batch)."""
    ds = CubeDataset([store], groups=["s2", "s1"], window_size=window_size, pool_slots=0)
    return ds.read_batch(indices)


def tiny_bridge(**overrides: Any) -> QFormerBridgeConfig:
    args: dict[str, Any] = dict(
        num_query_tokens=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, cross_attention_frequency=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return QFormerBridgeConfig(**(args | overrides))


def make_vlm(
    llm_dir: Path,
    numeric: str = "xval",
    bridge: QFormerBridgeConfig | None = None,
    seed: int = 0,
    quiet: bool = True,
    **config: Any,
) -> SpectraVLM:
    """A tiny SpectraVLM: test encoder (D=32), tiny Q-Former, the LLM loaded from ``llm_dir``.

    ``quiet`` hides the pad-token warning of the GPT-2 family's tokenizer (its own test checks it).
    """
    torch.manual_seed(seed)
    encoder = spectral_encoder_test(patch_size=8)
    llm = config.pop("llm", None) or LLMConfig(name_or_path=str(llm_dir))
    cfg = SpectraVLMConfig(
        encoder=encoder.config,
        llm=llm,
        bridge=bridge or tiny_bridge(),
        numeric=NumericConfig(mode=numeric),  # type: ignore[arg-type]
        **config,
    )
    with warnings.catch_warnings():
        if quiet:
            warnings.filterwarnings("ignore", message="the LLM's tokenizer has no pad token")
        return SpectraVLM(cfg, encoder=encoder)
