"""Save and load a whole :class:`~spectravlm.vlm.model.SpectraVLM`.

A saved model is one folder, built aside and swapped into place (:class:`spectravlm.io.AtomicDirectory`):

::

    model/
      spectravlm.json      SpectraVLMConfig: encoder, bridge, LLM reference, numeric settings, vocabulary
      encoder/             SpectralEncoder.save_pretrained (config.json, model.safetensors)
      bridge/              QFormerBridge (bridge_config.json, bridge.safetensors)
      heads.safetensors    the added tokens' rows and the number modules
      tokenizer/           the wrapped tokenizer (number and placeholder tokens included)
      lora/                LoRA adapters (peft's save_pretrained), when llm.lora is set
      llm/                 the LLM's weights, only when they were trained (llm.freeze=False)

The LLM is otherwise a reference: loading calls ``AutoModelForCausalLM.from_pretrained`` on
``llm.name_or_path`` (and ``revision``), the path users take with hub names, and checks that the
LLM it gets has the input embeddings the model was saved with (``llm.fingerprint``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, load_model, save_file
from torch import nn

from spectravlm.encoders.spectral import SpectralEncoder
from spectravlm.errors import ModelConfigError
from spectravlm.io import AtomicDirectory, atomic_write_text
from spectravlm.numeric.tokenizer import NumericTokenizer
from spectravlm.vlm.bridge import BRIDGE_WEIGHTS
from spectravlm.vlm.config import SpectraVLMConfig

if TYPE_CHECKING:
    from spectravlm.vlm.model import SpectraVLM

CONFIG_FILE = "spectravlm.json"
HEADS_FILE = "heads.safetensors"
FORMAT_VERSION = 1


def _heads(model: SpectraVLM) -> dict[str, nn.Module]:
    parts: dict[str, nn.Module] = {"vocab": model.vocab}
    if model.number_embedding is not None:
        parts["number_embedding"] = model.number_embedding
    if model.number_head is not None:
        parts["number_head"] = model.number_head
    return parts


def save_vlm(model: SpectraVLM, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` into folder ``path`` (layout in the module docstring).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.

    """
    from spectravlm import __version__
    from spectravlm.vlm.model import embedding_fingerprint

    config = model.config
    config.llm.fingerprint = embedding_fingerprint(
        model.llm.get_input_embeddings().weight,  # type: ignore[operator]
        config.base_vocab_size,
    )  # at save time: a trained LLM's embeddings may have changed
    with AtomicDirectory(path, overwrite=overwrite, what="SpectraVLM folder") as tmp:
        doc = {
            "format_version": FORMAT_VERSION,
            "spectravlm_version": __version__,
            "config": config.to_dict(),
        }
        atomic_write_text(json.dumps(doc, indent=2) + "\n", tmp / CONFIG_FILE)
        model.encoder.save_pretrained(tmp / "encoder")
        (tmp / "bridge").mkdir()
        model.bridge.write(tmp / "bridge")
        tensors = {
            f"{name}.{key}": value.detach().cpu().contiguous()
            for name, part in _heads(model).items()
            for key, value in part.state_dict().items()
        }
        save_file(tensors, str(tmp / HEADS_FILE))
        model.tokenizer.save_pretrained(tmp / "tokenizer")
        if config.llm.lora is not None:
            model.llm.save_pretrained(str(tmp / "lora"))  # type: ignore[operator]
        if not config.llm.freeze:
            model.base_llm.save_pretrained(str(tmp / "llm"))  # type: ignore[operator]
    return Path(path)


def read_config(path: str | Path) -> SpectraVLMConfig:
    """The :class:`SpectraVLMConfig` of a saved model.

    Raises:
        ModelConfigError: Not a saved SpectraVLM, or one of a newer format.

    """
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise ModelConfigError(f"{path} is not a saved SpectraVLM: {CONFIG_FILE} is missing")
    doc = json.loads(file.read_text())
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelConfigError(
            f"{file} has format version {doc.get('format_version')}; this spectravlm reads up to "
            f"{FORMAT_VERSION}"
        )
    return SpectraVLMConfig.from_dict(doc["config"])


def load_vlm(
    path: str | Path, llm: nn.Module | None = None, device: str | torch.device = "cpu"
) -> SpectraVLM:
    """Load a model written by :func:`save_vlm`.

    Args:
        path: The folder.
        llm: The LLM to use instead of loading the reference (it must be the same LLM: checked).
        device: Where to put the model.

    """
    from spectravlm.vlm.lora import _peft
    from spectravlm.vlm.model import SpectraVLM, load_llm

    folder = Path(path)
    config = read_config(folder)
    encoder = SpectralEncoder.from_pretrained(folder / "encoder")
    tokenizer = NumericTokenizer.from_pretrained(folder / "tokenizer")
    if llm is None:
        trained = folder / "llm"
        llm = load_llm(config.llm, str(trained) if trained.is_dir() else None)
    model = SpectraVLM(config, encoder=encoder, llm=llm, tokenizer=tokenizer, initialise_bridge=False)
    missing, unexpected = load_model(model.bridge, str(folder / "bridge" / BRIDGE_WEIGHTS), strict=False)
    if missing or unexpected:
        raise ModelConfigError(
            f"bridge weights in {folder / 'bridge'} do not fit the config: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    state = load_file(str(folder / HEADS_FILE))
    for name, part in _heads(model).items():
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        part.load_state_dict(own)
    unknown = [k for k in state if k.split(".", 1)[0] not in _heads(model)]
    if unknown:
        raise ModelConfigError(f"{folder / HEADS_FILE} holds tensors this model has no place for: {unknown}")
    if config.llm.lora is not None:
        peft: Any = _peft()
        adapters = peft.utils.load_peft_weights(str(folder / "lora"), device="cpu")
        result = peft.set_peft_model_state_dict(model.llm, adapters)
        missing = [k for k in getattr(result, "unexpected_keys", [])]
        if missing:
            raise ModelConfigError(f"LoRA adapters in {folder / 'lora'} do not fit the LLM: {missing}")
    return model.to(device)
