"""Prompts to model inputs: the image placeholder, numbers as values, left padding, answer labels.

A prompt writes the placeholder (``<image>`` by default) where a scene goes; it may hold several
(``"Compare <image> with <image>."``), and scenes fill the placeholders in order, across the
batch. Each placeholder becomes ``num_query_tokens`` placeholder tokens, whose embeddings the model
replaces with the bridge's outputs (``inputs_embeds.masked_scatter``, as BLIP-2). Numbers are
encoded by the :class:`~spectravlm.numeric.tokenizer.NumericTokenizer` (in ``xval`` mode: one token
whose value is in ``numbers``).

Batches are padded on the left, so that every row's next token follows its last prompt token
(generation) and the same inputs serve training (positions come from the attention mask). The
wrapped tokenizer's BOS is kept; an EOS that its template appends to every text is dropped from
prompts (the model continues them). With ``targets`` (training), each row is the prompt followed by
its target and EOS, and ``labels`` are ``-100`` except on the target and EOS.

Axis legend: ``b`` batch, ``l`` positions.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor
from transformers import AddedToken, PreTrainedTokenizerBase

from spectravlm.errors import ModelConfigError
from spectravlm.numeric.tokenizer import DIGIT_TOKENS, NUM_TOKEN, SPACE_NUM_TOKEN, NumericTokenizer
from spectravlm.vlm.config import NumericConfig


@dataclass
class VLMInputs:
    """Tokenized prompts (and answers), left-padded.

    Attributes:
        input_ids: ``[b, l]`` token ids, placeholders included.
        attention_mask: ``[b, l]`` 1 at tokens, 0 at padding.
        numbers: ``[b, l]`` float32 values at number tokens (``xval``), 0 elsewhere.
        number_mask: ``[b, l]`` True at number tokens that carry a value.
        image_mask: ``[b, l]`` True at placeholder tokens.
        scenes_per_prompt: How many scenes each prompt takes.
        labels: ``[b, l]`` target ids, ``-100`` off the answer (only with ``targets``).

    """

    input_ids: Tensor
    attention_mask: Tensor
    numbers: Tensor
    number_mask: Tensor
    image_mask: Tensor
    scenes_per_prompt: list[int]
    labels: Tensor | None = None

    def to(self, device: torch.device | str) -> VLMInputs:
        """The same inputs on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            if isinstance(getattr(self, f.name), Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return VLMInputs(**moved)

    def model_kwargs(self) -> dict[str, Tensor | None]:
        """The tensors :meth:`SpectraVLM.forward` takes, by name."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "numbers": self.numbers,
            "number_mask": self.number_mask,
            "labels": self.labels,
        }


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase | NumericTokenizer, numeric: NumericConfig, image_token: str
) -> NumericTokenizer:
    """Wrap an LLM's tokenizer for the VLM: number tokens, the image placeholder, a pad token.

    The tokenizer passed in is not modified (the numeric wrapper works on a copy). A tokenizer
    without a pad token pads with its EOS token (a warning says so); one without either is refused.

    Args:
        tokenizer: The LLM's fast tokenizer, or a :class:`NumericTokenizer` already wrapped (then used
            as it is, after checking its mode).
        numeric: The numeric settings (mode, max_digits).
        image_token: The placeholder string.

    """
    if isinstance(tokenizer, NumericTokenizer):
        if tokenizer.mode != numeric.mode:
            raise ModelConfigError(
                f"the tokenizer was wrapped in {tokenizer.mode!r} mode; this model uses {numeric.mode!r}"
            )
        wrapped = tokenizer
    else:
        wrapped = NumericTokenizer(tokenizer, mode=numeric.mode, max_digits=numeric.max_digits)
    inner = wrapped.tokenizer
    if image_token not in inner.get_vocab():
        inner.add_tokens([AddedToken(image_token, special=True, normalized=False)], special_tokens=True)
    if inner.pad_token_id is None:
        if inner.eos_token is None:
            raise ModelConfigError(
                f"the LLM's tokenizer ({type(inner).__name__}) has neither a pad nor an eos token; set "
                "tokenizer.pad_token before building the model"
            )
        warnings.warn(
            f"the LLM's tokenizer has no pad token; padding with its eos token {inner.eos_token!r} "
            "(padding is masked out, so this changes no output)",
            UserWarning,
            stacklevel=2,
        )
        inner.pad_token = inner.eos_token
    inner.padding_side = "left"
    return wrapped


def added_tokens(tokenizer: NumericTokenizer, image_token: str) -> tuple[int, tuple[str, ...]]:
    """The vocabulary before spectravlm's tokens and those tokens in id order.

    Raises:
        ModelConfigError: The added tokens are not the last ids of the vocabulary.

    """
    inner = tokenizer.tokenizer
    ours = [] if tokenizer.mode == "none" else [NUM_TOKEN, SPACE_NUM_TOKEN]
    if tokenizer.mode == "digits":
        ours += list(DIGIT_TOKENS.values())
    ours.append(image_token)
    ids = [int(inner.convert_tokens_to_ids(t)) for t in ours]  # type: ignore[arg-type]
    ids, ours = (list(x) for x in zip(*sorted(zip(ids, ours, strict=True)), strict=True))
    base = len(tokenizer) - len(ours)
    if ids != list(range(base, base + len(ours))):
        raise ModelConfigError(
            f"the tokens spectravlm adds ({ours}) must be the last ids of the tokenizer's vocabulary "
            f"({base}..{len(tokenizer) - 1}); they are at {ids}"
        )
    return base, tuple(ours)


class SpectraVLMProcessor:
    """Turn prompts (and answers) into :class:`VLMInputs`; decode generated ids.

    Args:
        tokenizer: The wrapped tokenizer (:func:`prepare_tokenizer`).
        num_query_tokens: Placeholder tokens per scene (the bridge's queries).
        image_token: The placeholder string.

    """

    def __init__(
        self, tokenizer: NumericTokenizer, num_query_tokens: int, image_token: str = "<image>"
    ) -> None:
        inner = tokenizer.tokenizer
        if image_token not in inner.get_vocab() or inner.pad_token_id is None:
            raise ModelConfigError("wrap the tokenizer with prepare_tokenizer before making a processor")
        self.tokenizer = tokenizer
        self.num_query_tokens = num_query_tokens
        self.image_token = image_token
        self.image_token_id = int(inner.convert_tokens_to_ids(image_token))  # type: ignore[arg-type]
        self.pad_token_id = int(inner.pad_token_id)
        self.eos_token_id = inner.eos_token_id
        with_special = inner("a", add_special_tokens=True)["input_ids"]
        without = inner("a", add_special_tokens=False)["input_ids"]
        self._template_eos = bool(
            self.eos_token_id is not None
            and with_special[-1:] == [self.eos_token_id]
            and without[-1:] != [self.eos_token_id]
        )

    def count_images(self, prompt: str) -> int:
        """How many scenes ``prompt`` takes."""
        return prompt.count(self.image_token)

    def _encode(self, texts: list[str], special: bool) -> list[tuple[list[int], list[float], list[bool]]]:
        # the length check is made below, on the whole row (placeholders and target included)
        enc = self.tokenizer(texts, add_special_tokens=special, max_length=sys.maxsize)
        return [
            (list(ids), [float(v) for v in nums], [bool(m) for m in mask])
            for ids, nums, mask in zip(enc["input_ids"], enc["numbers"], enc["number_mask"], strict=True)
        ]

    def __call__(
        self,
        prompts: str | Sequence[str],
        targets: str | Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> VLMInputs:
        """Tokenize prompts (and their targets) into left-padded tensors.

        Args:
            prompts: One prompt or a batch; ``image_token`` marks each scene.
            targets: The answers to train on, one per prompt (EOS is appended).
            device: Where the tensors go.

        Raises:
            ModelConfigError: Mismatched targets; a sequence longer than the tokenizer's limit.
            NumericInputError: Text the numeric tokenizer refuses (see docs/numeric.md).

        """
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompt_list:
            raise ModelConfigError("expected at least one prompt")
        target_list = None if targets is None else ([targets] if isinstance(targets, str) else list(targets))
        if target_list is not None and len(target_list) != len(prompt_list):
            raise ModelConfigError(
                f"{len(target_list)} targets for {len(prompt_list)} prompts; give one per prompt"
            )
        expanded = [
            p.replace(self.image_token, self.image_token * self.num_query_tokens) for p in prompt_list
        ]
        rows = self._encode(expanded, special=True)
        if self._template_eos:
            rows = [
                (i[:-1], v[:-1], m[:-1]) if i[-1:] == [self.eos_token_id] else (i, v, m) for i, v, m in rows
            ]
        labels: list[list[int]] = [[-100] * len(r[0]) for r in rows]
        if target_list is not None:
            if self.eos_token_id is None:
                raise ModelConfigError(
                    "training targets need an eos token to end them; the tokenizer has none"
                )
            answers = self._encode(target_list, special=False)
            for k, (ids, vals, mask) in enumerate(answers):
                ids, vals, mask = [*ids, self.eos_token_id], [*vals, 0.0], [*mask, False]
                rows[k] = (rows[k][0] + ids, rows[k][1] + vals, rows[k][2] + mask)
                labels[k] = labels[k] + ids
        limit = self.tokenizer.model_max_length
        for k, (ids, _, _) in enumerate(rows):
            if len(ids) > limit:
                raise ModelConfigError(
                    f"prompt {k} is {len(ids)} tokens long with its {self.count_images(prompt_list[k])} "
                    f"scene(s) ({self.num_query_tokens} tokens each) and target; the tokenizer's limit is "
                    f"{limit}"
                )
        length = max(len(r[0]) for r in rows)
        pad = [length - len(r[0]) for r in rows]
        input_ids = torch.tensor([[self.pad_token_id] * p + r[0] for p, r in zip(pad, rows, strict=True)])
        attention = torch.tensor([[0] * p + [1] * len(r[0]) for p, r in zip(pad, rows, strict=True)])
        numbers = torch.tensor(
            [[0.0] * p + r[1] for p, r in zip(pad, rows, strict=True)], dtype=torch.float32
        )
        number_mask = torch.tensor(
            [[False] * p + r[2] for p, r in zip(pad, rows, strict=True)], dtype=torch.bool
        )
        image_mask = (input_ids == self.image_token_id) & attention.bool()
        counts = image_mask.sum(1).tolist()
        scenes = []
        for k, c in enumerate(counts):
            if c % self.num_query_tokens:
                raise ModelConfigError(
                    f"prompt {k} holds {c} placeholder tokens, not a multiple of {self.num_query_tokens}: "
                    f"write {self.image_token!r} once per scene"
                )
            scenes.append(c // self.num_query_tokens)
        out = VLMInputs(
            input_ids=input_ids,
            attention_mask=attention,
            numbers=numbers,
            number_mask=number_mask,
            image_mask=image_mask,
            scenes_per_prompt=scenes,
            labels=None
            if target_list is None
            else torch.tensor([[-100] * p + lab for p, lab in zip(pad, labels, strict=True)]),
        )
        return out if device is None else out.to(device)

    def decode(
        self, token_ids: Sequence[int] | Tensor, numbers: Sequence[float] | Tensor | None = None
    ) -> str:
        """Text of generated ids with numbers filled in (special tokens and placeholders dropped)."""
        return self.tokenizer.decode(token_ids, numbers=numbers, skip_special_tokens=True)

    def save_pretrained(self, path: Any) -> None:
        """Save the wrapped tokenizer (number and placeholder tokens included)."""
        self.tokenizer.save_pretrained(path)
