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
    experts = config.pop("experts", None)
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
        return SpectraVLM(cfg, encoder=encoder, experts=experts)


def emit_numbers(model: SpectraVLM, value: float = 152.3) -> None:
    """Rig a GPT-2-family tiny model to emit ``' <|num|>'`` at every step, its number head stating ``value``.

    GPT-2's final norm outputs one constant vector ``e`` (weight 0, bias ``e``), the number token's output row
    is a multiple of ``e`` above every other logit, and the number head's last layer is the constant
    ``value``.
    The gate (if any) then reads the same hidden state at every position.
    """
    from spectravlm.numeric import scale_values

    ln_f = model.base_llm.transformer.ln_f
    assert model.number_head is not None
    with torch.no_grad():
        e = torch.randn(32, generator=torch.Generator().manual_seed(1))
        ln_f.weight.zero_()
        ln_f.bias.copy_(e)
        row = model.tokenizer.num_token_ids[1] - model.config.base_vocab_size
        model.vocab.output.weight[row] = (
            100.0 * e / e.norm() ** 2 + model.base_llm.get_output_embeddings().weight.abs().max()
        )
        model.number_head.mlp[2].weight.zero_()
        model.number_head.mlp[2].bias.fill_(float(scale_values(torch.tensor(value))))
