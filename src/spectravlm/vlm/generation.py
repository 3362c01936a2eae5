"""Batched generation with numbers as values: the decoding loop, its output, and text streamers.

Why a loop of our own: in ``xval`` mode a generated number token's *input embedding* at the next step
is its embedding scaled by the value the number head read from the hidden state that chose it, and
the added tokens (number tokens, placeholders) are embedded and scored by the model's own rows, not
the LLM's. ``transformers``' ``generate`` embeds each new token with the LLM's embedding table and
has no hook between sampling a token and embedding it, so it would feed number tokens without their
values. The loop reuses the rest of the generate machinery: the LLM's KV cache (``use_cache``),
logits processors and warpers (``RepetitionPenaltyLogitsProcessor``, ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``, ``SuppressTokensLogitsProcessor`` for the placeholder,
plus any ``LogitsProcessorList`` given), stopping criteria (``StopStringCriteria``) and streamers
(``BaseStreamer.put``/``end``). Its cost against the LLM's own ``generate`` is measured in
``benchmarks/vlm.py`` (``benchmarks/RESULTS.md``, section ``vlm``).

Batches are left-padded (positions from the attention mask), so batched greedy decoding gives the
tokens each prompt gives alone. Rows that finish (EOS or a stop string) are filled with the pad
token while the others continue.

Axis legend: ``b`` prompts, ``l`` positions, ``v`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    StopStringCriteria,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TextIteratorStreamer,
    TextStreamer,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from spectravlm.errors import ModelConfigError
from spectravlm.numeric.tokenizer import NumericTokenizer

if TYPE_CHECKING:
    from spectravlm.vlm.model import SceneEmbeddings, Scenes, SpectraVLM


@dataclass
class VLMGeneration:
    """Generated answers, with the numbers as floats.

    Attributes:
        texts: The new text of each prompt, numbers written from their values (special tokens dropped).
        numbers: The numbers of each new text as floats: the number head's values (``xval``), or
            the numbers parsed from the text (``digits``, ``none``).
        sequences: ``[b, l + t]`` prompt ids followed by the new ids (pad after a row finished).
        values: ``[b, l + t]`` float32 values aligned with ``sequences`` (``xval``; 0 elsewhere).
        number_mask: ``[b, l + t]`` True at number tokens carrying a value.
        prompt_length: ``l``: where the new tokens start.
        scenes: The scene embeddings the answers were generated from.

    """

    texts: list[str]
    numbers: list[list[float]]
    sequences: Tensor
    values: Tensor
    number_mask: Tensor
    prompt_length: int
    scenes: SceneEmbeddings | None = None


class _StreamDecoder:
    """What a transformers streamer calls ``decode`` on: ids to text, numbers filled in from values.

    Streamers decode a tail of the tokens put so far; the values of every token put are kept here
    (in the same order), so a tail's values are the same tail of :attr:`values`.
    """

    def __init__(self, tokenizer: NumericTokenizer) -> None:
        self.tokenizer = tokenizer
        self.values: list[float] = []

    def decode(self, token_ids: int | Sequence[int], **kwargs: Any) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        numbers = self.values[len(self.values) - len(ids) :] if self.tokenizer.mode == "xval" else None
        return self.tokenizer.decode(ids, numbers=numbers, skip_special_tokens=True)


class NumericTextStreamer(TextStreamer):
    """``transformers.TextStreamer`` that prints numbers from their values (one prompt at a time).

    Args:
        tokenizer: The model's tokenizer (``model.tokenizer``).
        skip_prompt: Print only the new text (default True).

    """

    def __init__(self, tokenizer: NumericTokenizer, skip_prompt: bool = True) -> None:
        super().__init__(_StreamDecoder(tokenizer), skip_prompt=skip_prompt)  # type: ignore[arg-type]

    def put_values(self, values: Tensor) -> None:
        """Values of the tokens about to be put (called by the loop before :meth:`put`)."""
        self.tokenizer.values.extend(values.flatten().tolist())


class NumericTextIteratorStreamer(TextIteratorStreamer):
    """``transformers.TextIteratorStreamer`` with numbers from their values (iterate in another thread)."""

    def __init__(
        self, tokenizer: NumericTokenizer, skip_prompt: bool = True, timeout: float | None = None
    ) -> None:
        super().__init__(_StreamDecoder(tokenizer), skip_prompt=skip_prompt, timeout=timeout)  # type: ignore[arg-type]

    def put_values(self, values: Tensor) -> None:
        """Values of the tokens about to be put (called by the loop before :meth:`put`)."""
        self.tokenizer.values.extend(values.flatten().tolist())


def _processors(
    model: SpectraVLM,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float | None,
    extra: LogitsProcessorList | None,
) -> LogitsProcessorList:
    """Processors, then (when sampling) warpers, in the order transformers' generate applies them."""
    out = LogitsProcessorList()
    if repetition_penalty is not None and repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(penalty=repetition_penalty))
    device = str(model.bridge.query_tokens.device)  # transformers compares the ids on the scores' device
    out.append(SuppressTokensLogitsProcessor(suppress_tokens=[model.processor.image_token_id], device=device))
    if extra:
        out.extend(extra)
    if do_sample:
        if temperature <= 0:
            raise ModelConfigError(f"temperature must be > 0 when sampling; got {temperature}")
        if temperature != 1.0:
            out.append(TemperatureLogitsWarper(temperature=temperature))
        if top_k is not None and top_k > 0:
            out.append(TopKLogitsWarper(top_k=top_k))
        if top_p is not None and top_p < 1.0:
            out.append(TopPLogitsWarper(top_p=top_p))
    return out


@torch.no_grad()
def generate(
    model: SpectraVLM,
    scenes: Scenes | None,
    prompts: str | Sequence[str],
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    stop_strings: str | Sequence[str] | None = None,
    streamer: BaseStreamer | None = None,
    logits_processor: LogitsProcessorList | None = None,
    generator: torch.Generator | None = None,
) -> VLMGeneration:
    """Answer prompts about scenes: greedy or sampled decoding with a KV cache.

    Args:
        model: The VLM.
        scenes: Scenes for the prompts' placeholders, in order (``None``: text only).
        prompts: One prompt or a batch, ``model.config.image_token`` where each scene goes.
        max_new_tokens: Most tokens added per prompt.
        do_sample: Sample from the (warped) distribution instead of taking the argmax.
        temperature: Sampling temperature.
        top_k: Keep the ``k`` most likely tokens when sampling.
        top_p: Keep the smallest set of tokens whose probability reaches ``p`` when sampling.
        repetition_penalty: Penalty on tokens already present (1.0: none).
        stop_strings: Stop a row once its text ends with one of these (the stop string is kept).
        streamer: A transformers streamer (batch of one); :class:`NumericTextStreamer` prints
            numbers from their values, any other streamer shows the number token.
        logits_processor: Extra processors applied after the built-in ones.
        generator: Random generator for sampling (reproducible draws), on the model's device.

    Returns:
        :class:`VLMGeneration`.

    """
    if max_new_tokens < 1:
        raise ModelConfigError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    device = model.bridge.query_tokens.device
    inputs = model.processor(prompts, device=device)
    embeds, scene = model.embed_inputs(
        scenes, inputs.input_ids, inputs.attention_mask, inputs.numbers, inputs.number_mask
    )
    processors = _processors(
        model, do_sample, temperature, top_k, top_p, repetition_penalty, logits_processor
    )
    stop = None
    if stop_strings:
        strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        stop = StopStringCriteria(tokenizer=model.tokenizer.tokenizer, stop_strings=strings)
    eos = model.processor.eos_token_id
    pad = model.processor.pad_token_id
    num_ids = model.num_token_ids.to(device)
    xval = model.number_head is not None

    ids, attn = inputs.input_ids, inputs.attention_mask
    values, number_mask = inputs.numbers, inputs.number_mask
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=device)
    if streamer is not None:
        if hasattr(streamer, "put_values"):
            streamer.put_values(values.cpu())
        streamer.put(ids.cpu())
    out = model.llm_forward(embeds, attn, positions, logits_to_keep=1, use_cache=True)
    for _ in range(max_new_tokens):
        hidden = out.hidden_states[-1][:, -1:]  # (b, 1, d)
        scores = processors(ids, model.vocab.logits(out.logits[:, -1], hidden[:, 0]))  # type: ignore[arg-type]
        if do_sample:
            probs = torch.softmax(scores, dim=-1)
            next_ids = torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
        else:
            next_ids = scores.argmax(-1)
        next_ids = torch.where(unfinished, next_ids, pad)
        is_number = torch.isin(next_ids, num_ids) & unfinished
        next_values = torch.zeros_like(next_ids, dtype=torch.float32)
        if xval:
            read = model.number_values(hidden, scene).values[:, 0]
            next_values = torch.where(is_number, read, 0.0)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        values = torch.cat([values, next_values[:, None]], dim=1)
        number_mask = torch.cat([number_mask, is_number[:, None]], dim=1)
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        if streamer is not None:
            if hasattr(streamer, "put_values"):
                streamer.put_values(next_values.cpu())
            streamer.put(next_ids.cpu())
        if eos is not None:
            unfinished &= next_ids != eos
        if stop is not None:
            unfinished &= ~stop(ids, scores).to(device)
        if not bool(unfinished.any()):
            break
        step = model.embed_tokens(next_ids[:, None], next_values[:, None], is_number[:, None])
        out = model.llm_forward(step, attn, positions, logits_to_keep=1, cache=_cache(out), use_cache=True)
    if streamer is not None:
        streamer.end()

    start = inputs.input_ids.shape[1]
    texts, numbers = [], []
    for row in range(ids.shape[0]):
        new_ids, new_values = ids[row, start:], values[row, start:]
        text = model.processor.decode(new_ids, new_values if xval else None)
        texts.append(text)
        if xval:
            numbers.append(new_values[number_mask[row, start:]].tolist())
        else:
            numbers.append(model.tokenizer.numbers_in(text))
    return VLMGeneration(texts, numbers, ids, values, number_mask, start, scene)


def _cache(out: Any) -> Any:
    """The KV cache of an LLM output (``cache`` in transformers 5, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache
