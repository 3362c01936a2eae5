"""LoRA adapters on the LLM only, through peft (the ``vlm`` extra: ``pip install 'spectravlm[vlm]'``).

``get_peft_model`` is applied to the LLM submodule, never to the encoder or the bridge (a peft
wrapper around the whole VLM would also match the Q-Former's ``query``/``value`` layers). Default
target modules per family are peft's own table (``q_proj``/``v_proj`` for Llama, Qwen2, Mistral,
Gemma; ``c_attn`` for GPT-2). Each target name must match some module of the LLM (peft only checks
that the list as a whole matches something).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from spectravlm.errors import ModelConfigError
from spectravlm.vlm.config import LoraSettings


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:  # pragma: no cover - peft is in the dev and vlm extras
        raise ModelConfigError("LoRA needs peft: pip install 'spectravlm[vlm]'") from err
    return peft


def default_lora_targets(model_type: str) -> tuple[str, ...]:
    """Peft's default LoRA target modules for an LLM family (``config.model_type``).

    Raises:
        ModelConfigError: A family peft has no default for.

    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table

    if model_type not in table:
        raise ModelConfigError(
            f"there is no default LoRA target for LLM family {model_type!r}; set llm.lora.target_modules "
            "to some of its linear layer names"
        )
    return tuple(table[model_type])


def adaptable_modules(model: nn.Module) -> list[str]:
    """Short names of the LLM's layers LoRA can adapt (linear and GPT-2-style ``Conv1D`` layers)."""
    from transformers.pytorch_utils import Conv1D

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and name
    }
    return sorted(names)


def check_lora_targets(model: nn.Module, targets: tuple[str, ...]) -> None:
    """Every target must name some module of ``model`` (exactly, or as the last part of its path).

    Raises:
        ModelConfigError: Naming the targets that match nothing and the names that would.

    """
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ModelConfigError(
            f"LoRA target modules {missing} match no module of the LLM ({type(model).__name__}); "
            f"its adaptable layers are: {', '.join(adaptable_modules(model))}"
        )


def apply_lora(model: nn.Module, settings: LoraSettings, model_type: str) -> nn.Module:
    """Wrap ``model`` (a causal LM) with LoRA adapters; its own weights are frozen by peft.

    Args:
        model: The LLM (``AutoModelForCausalLM``).
        settings: Rank, alpha, dropout and targets; ``settings.target_modules`` is set to the targets
            used when it was ``None`` (so that a saved config names them).
        model_type: The LLM family, for the default targets.

    Returns:
        The ``PeftModelForCausalLM`` around ``model``.

    """
    peft = _peft()
    targets = settings.target_modules or default_lora_targets(model_type)
    check_lora_targets(model, targets)
    settings.target_modules = tuple(targets)
    from transformers.pytorch_utils import Conv1D

    conv1d = any(
        isinstance(m, Conv1D) and any(n == t or n.endswith("." + t) for t in targets)
        for n, m in model.named_modules()
    )
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(targets),
        fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores its weight transposed
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)
