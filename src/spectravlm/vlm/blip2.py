"""Read the Q-Former of a BLIP-2 checkpoint: its config and its ``qformer.*`` / ``query_tokens`` tensors.

Only those tensors are read from the checkpoint's safetensors file(s), so starting a bridge from a
multi-gigabyte BLIP-2 checkpoint does not load its vision tower or LLM. A checkpoint is a folder or a
hub name, resolved through transformers' ``cached_file`` (the path ``from_pretrained`` takes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from spectravlm.errors import ModelConfigError

QFORMER_PREFIX = "qformer."
QUERY_TOKENS = "query_tokens"
_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


def _resolve(name_or_path: str, filename: str) -> str | None:
    from transformers.utils import cached_file

    if name_or_path.startswith(("/", ".", "~")) and not Path(name_or_path).expanduser().is_dir():
        raise ModelConfigError(f"BLIP-2 checkpoint folder {name_or_path} does not exist")
    try:
        path = cached_file(
            name_or_path,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError as err:
        raise ModelConfigError(f"BLIP-2 checkpoint {name_or_path!r} cannot be read: {err}") from err
    return None if path is None else str(path)


def read_blip2_config(name_or_path: str) -> dict[str, Any]:
    """The ``config.json`` of a BLIP-2 checkpoint (checked to be one).

    Raises:
        ModelConfigError: No ``config.json``, or one of another model type.

    """
    path = _resolve(name_or_path, "config.json")
    if path is None:
        raise ModelConfigError(f"BLIP-2 checkpoint {name_or_path!r} has no config.json")
    doc: dict[str, Any] = json.loads(open(path).read())
    if doc.get("model_type") != "blip-2":
        raise ModelConfigError(
            f"{name_or_path!r} is a {doc.get('model_type')!r} checkpoint; expected a BLIP-2 one "
            "(model_type 'blip-2')"
        )
    return doc


def read_blip2_qformer(name_or_path: str) -> dict[str, torch.Tensor]:
    """The ``qformer.*`` and ``query_tokens`` tensors of a BLIP-2 checkpoint (float32).

    Returns:
        Tensors keyed as in the checkpoint (``qformer.encoder.layer.0....``, ``query_tokens``).

    Raises:
        ModelConfigError: No safetensors weights, or weights without Q-Former keys.

    """
    index = _resolve(name_or_path, _INDEX)
    if index is not None:
        weight_map: dict[str, str] = json.loads(open(index).read())["weight_map"]
        wanted = {k: f for k, f in weight_map.items() if k.startswith(QFORMER_PREFIX) or k == QUERY_TOKENS}
        files = sorted(set(wanted.values()))
    else:
        files = [_SINGLE]
    out: dict[str, torch.Tensor] = {}
    for name in files:
        path = _resolve(name_or_path, name)
        if path is None:
            raise ModelConfigError(
                f"BLIP-2 checkpoint {name_or_path!r} has no {name}; expected safetensors weights "
                "(convert a pytorch_model.bin with transformers' save_pretrained)"
            )
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                if key.startswith(QFORMER_PREFIX) or key == QUERY_TOKENS:
                    out[key] = f.get_tensor(key).float()
    if not any(k.startswith(QFORMER_PREFIX) for k in out) or QUERY_TOKENS not in out:
        raise ModelConfigError(
            f"BLIP-2 checkpoint {name_or_path!r} holds no Q-Former weights: expected 'qformer.*' and "
            f"'{QUERY_TOKENS}' keys, found {len(out)} of them"
        )
    return out
