"""Fixtures of the numeric tests: the three tiny tokenizers of :mod:`numeric.tiny_tokenizers`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from numeric.tiny_tokenizers import BUILDERS


@pytest.fixture(scope="session")
def hf_tokenizers() -> dict[str, PreTrainedTokenizerFast]:
    """The three wrapped tokenizers, by name (built once a session; wrapping copies them)."""
    return {name: build() for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def gpt2_like(hf_tokenizers: dict[str, PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    return hf_tokenizers["gpt2_like"]


@pytest.fixture(scope="session")
def spm_digits(hf_tokenizers: dict[str, PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    return hf_tokenizers["spm_digits"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run these small models on one thread: on the shared 2-core machine two threads ran 8x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
