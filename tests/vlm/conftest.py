"""Fixtures of the VLM tests: tiny LLMs of three families saved locally, a demo store and a batch from it.

The LLMs (:mod:`vlm.tiny`) are saved with their tokenizers into a temporary folder and loaded back through
``AutoModelForCausalLM.from_pretrained(folder)``: the code path users take with hub names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM as Auto

from spectravlm.data.demo import write_demo_store
from spectravlm.stack import SensorStack
from vlm.tiny import FAMILIES, TOKENIZERS, read_scenes, tiny_llm_config


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small models on one thread (two threads wait on each other on the shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def llm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A saved tiny LLM and tokenizer per family (the GPT-2 one's tokenizer has no pad token)."""
    out = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        tok = TOKENIZERS[family]()
        llm = Auto.from_config(tiny_llm_config(family, tok))
        folder = tmp_path_factory.mktemp(f"llm_{family}")
        llm.save_pretrained(folder)
        tok.save_pretrained(folder)
        out[family] = folder
    return out


@pytest.fixture(scope="session")
def demo_store_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vlm_demo") / "demo.zarr"
    write_demo_store(path, size=64, seed=0)
    return path


@pytest.fixture(scope="session")
def scenes(demo_store_64: Path) -> SensorStack:
    """Two 32 px windows (S2 10 bands x 10 dates, S1 VV/VH x 12 dates)."""
    return read_scenes(demo_store_64, [0, 1])
