"""Any Hugging Face causal LM with numbers as values: number embedding in, number head out.

:class:`NumericCausalLM` wraps an ``AutoModelForCausalLM``-style model (anything with
``get_input_embeddings()`` that accepts ``inputs_embeds``, ``attention_mask``, ``position_ids``,
a KV cache (``cache`` in transformers 5, ``past_key_values`` before) and returns ``logits`` and
``hidden_states``). In ``xval`` mode it scales the number tokens' embeddings by their values
(:class:`~spectravlm.numeric.modules.NumberEmbedding`), adds the number head's loss to the LM loss, and
fills in the value of every number token it generates. In ``digits`` and ``none`` mode it is the LM
alone, so that the three modes are compared with one code path.

A model that puts something in front of the text (the Q-Former bridge) calls :meth:`embed_inputs`
for the text, concatenates its own embeddings, and calls :meth:`forward_embeds` with ``labels``,
``numbers`` and ``number_mask`` padded to match (``-100`` / ``0`` / ``False`` on its prefix).

Axis legend: ``b`` batch, ``l`` sequence position, ``d`` hidden width, ``v`` vocabulary.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from spectravlm.errors import NumericInputError
from spectravlm.numeric.modules import NumberEmbedding, NumberHead, Scaling
from spectravlm.numeric.tokenizer import NumericTokenizer


@dataclass
class NumericLMOutput:
    """One forward pass.

    Attributes:
        logits: ``[b, l, v]`` next-token logits.
        hidden_states: ``[b, l, d]`` last hidden states.
        number_values: ``[b, l]`` the number head's value for the token after each position
            (``None`` without a number head).
        loss: ``lm_loss + number_loss_weight * number_loss`` when ``labels`` were given.
        lm_loss: Next-token cross-entropy over the positions whose label is not ``-100``.
        number_loss: Number head loss (scaled-value MSE) at number tokens with a label.

    """

    logits: torch.Tensor
    hidden_states: torch.Tensor
    number_values: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    number_loss: torch.Tensor | None = None


@dataclass
class NumericGeneration:
    """Greedy generation: the prompt and the new tokens, with the values of number tokens.

    Attributes:
        input_ids: ``[b, l]`` prompt ids followed by the generated ids.
        numbers: ``[b, l]`` values aligned with ``input_ids`` (prompt values, then predicted ones).
        number_mask: ``[b, l]`` True at number tokens that carry a value.
        attention_mask: ``[b, l]`` prompt mask followed by ones.

    """

    input_ids: torch.Tensor
    numbers: torch.Tensor
    number_mask: torch.Tensor
    attention_mask: torch.Tensor


class NumericCausalLM(nn.Module):
    """A causal LM with xVal number embedding and number head (identity in other modes).

    Args:
        lm: The causal LM (its embeddings already resized to the tokenizer, see
            :meth:`from_tokenizer`).
        num_token_ids: Ids of the number tokens that carry values (``NumericTokenizer.num_token_ids``
            in ``xval`` mode); empty for ``digits`` / ``none``, which disables the number modules.
        combine: How the value enters the embedding (:class:`NumberEmbedding`).
        scaling: Value scaling of both number modules.
        scale: Scale of that scaling.
        number_loss_weight: Weight of the number head loss in ``loss``.

    """

    def __init__(
        self,
        lm: nn.Module,
        num_token_ids: Sequence[int] = (),
        combine: Literal["multiply", "add"] = "multiply",
        scaling: Scaling = "symlog",
        scale: float = 1.0,
        number_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.lm = lm
        embedding = lm.get_input_embeddings()  # type: ignore[operator]
        width = int(embedding.embedding_dim)
        hidden = int(getattr(getattr(lm, "config", None), "hidden_size", width))
        self.num_token_ids = tuple(int(i) for i in num_token_ids)
        if any(i >= embedding.num_embeddings for i in self.num_token_ids):
            raise NumericInputError(
                f"number token ids {self.num_token_ids} do not fit the LM's {embedding.num_embeddings} "
                "embeddings; resize them first: lm.resize_token_embeddings(len(tokenizer))"
            )
        enabled = bool(self.num_token_ids)
        self.number_embedding = NumberEmbedding(width, combine, scaling, scale) if enabled else None
        self.number_head = NumberHead(hidden, scaling=scaling, scale=scale) if enabled else None
        self.number_loss_weight = number_loss_weight

    @classmethod
    def from_tokenizer(
        cls,
        lm: nn.Module,
        tokenizer: NumericTokenizer,
        combine: Literal["multiply", "add"] = "multiply",
        scaling: Scaling = "symlog",
        scale: float = 1.0,
        number_loss_weight: float = 1.0,
    ) -> NumericCausalLM:
        """Resize ``lm``'s token embeddings to ``len(tokenizer)`` and wrap it for the tokenizer's mode."""
        if lm.get_input_embeddings().num_embeddings != len(tokenizer):  # type: ignore[operator]
            lm.resize_token_embeddings(len(tokenizer))  # type: ignore[operator]
        ids = tokenizer.num_token_ids if tokenizer.mode == "xval" else ()
        return cls(lm, ids, combine, scaling, scale, number_loss_weight)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        numbers: torch.Tensor | None = None,
        number_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[b, l]`` ids (and values) to ``[b, l, d]`` input embeddings for the LM."""
        embeds = self.lm.get_input_embeddings()(input_ids)  # type: ignore[operator]
        if self.number_embedding is None or number_mask is None or numbers is None:
            if self.number_embedding is not None and self._has_number_tokens(input_ids):
                raise NumericInputError("input_ids hold number tokens; pass numbers= and number_mask=")
            return embeds
        return self.number_embedding(embeds, numbers, number_mask)

    def _has_number_tokens(self, input_ids: torch.Tensor) -> bool:
        ids = torch.tensor(self.num_token_ids, device=input_ids.device)
        return bool(torch.isin(input_ids, ids).any())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        numbers: torch.Tensor | None = None,
        number_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> NumericLMOutput:
        """Run the LM on ``[b, l]`` token ids (see :meth:`forward_embeds`)."""
        embeds = self.embed_inputs(input_ids, numbers, number_mask)
        return self.forward_embeds(embeds, attention_mask, numbers, number_mask, labels)

    def forward_embeds(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        numbers: torch.Tensor | None = None,
        number_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> NumericLMOutput:
        """Run the LM on ``[b, l, d]`` input embeddings; losses when ``labels`` are given.

        Args:
            inputs_embeds: ``[b, l, d]`` from :meth:`embed_inputs` (possibly with a prefix).
            attention_mask: ``[b, l]`` 1 for tokens, 0 for padding (left or right).
            numbers: ``[b, l]`` raw values (targets of the number head).
            number_mask: ``[b, l]`` True at number tokens.
            labels: ``[b, l]`` target ids (usually ``input_ids``), ``-100`` where no loss is wanted;
                shifted inside, as in Hugging Face causal LMs.

        Returns:
            Logits, hidden states, the head's values and the losses.

        """
        position_ids = None
        if attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.lm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=[-1],  # only the last layer's states are kept
            use_cache=False,
        )
        hidden = out.hidden_states[-1]
        head = self.number_head(hidden) if self.number_head is not None else None
        result = NumericLMOutput(
            logits=out.logits, hidden_states=hidden, number_values=None if head is None else head.values
        )
        if labels is None:
            return result
        logits = rearrange(out.logits[:, :-1], "b l v -> (b l) v")
        targets = rearrange(labels[:, 1:], "b l -> (b l)")
        result.lm_loss = F.cross_entropy(logits.float(), targets, ignore_index=-100)
        result.loss = result.lm_loss
        if self.number_head is not None and numbers is not None and number_mask is not None:
            target_mask = number_mask.bool() & (labels != -100)
            result.number_loss = self.number_head.loss(hidden, numbers, target_mask, shift=True).loss
            result.loss = result.lm_loss + self.number_loss_weight * result.number_loss
        return result

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        numbers: torch.Tensor | None = None,
        number_mask: torch.Tensor | None = None,
        max_new_tokens: int = 16,
        eos_token_id: int | None = None,
    ) -> NumericGeneration:
        """Greedy decoding with a KV cache; each generated number token gets the head's value.

        Batches must be left-padded (``tokenizer.tokenizer.padding_side = "left"``) so that every
        row's next token follows its last prompt token.

        Args:
            input_ids: ``[b, l]`` prompt ids.
            attention_mask: ``[b, l]`` prompt mask (all ones when omitted).
            numbers: ``[b, l]`` prompt values (xval).
            number_mask: ``[b, l]`` prompt number tokens (xval).
            max_new_tokens: How many tokens to add at most.
            eos_token_id: Stop a row after this token (the row is then filled with it).

        Returns:
            Prompt plus generated ids, values, number mask and attention mask.

        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask[:, -1].eq(0).any():
            raise NumericInputError(
                "generate needs left-padded prompts: the last column of attention_mask has 0s"
            )
        if numbers is None or number_mask is None:
            numbers = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
            number_mask = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        ids, vals, mask, attn = input_ids, numbers.float(), number_mask.bool(), attention_mask
        embeds = self.embed_inputs(ids, vals, mask)
        position_ids = (attn.long().cumsum(-1) - 1).clamp(min=0)
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        past: Any = None
        num_ids = torch.tensor(self.num_token_ids, dtype=torch.long, device=ids.device)
        cache_kwarg = (
            "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"
        )
        for _ in range(max_new_tokens):
            kwargs: dict[str, Any] = {} if past is None else {cache_kwarg: past}
            out = self.lm(
                inputs_embeds=embeds,
                attention_mask=attn,
                position_ids=position_ids,
                use_cache=True,
                output_hidden_states=[-1],
                **kwargs,
            )
            past = getattr(out, "cache", None)
            past = out.past_key_values if past is None else past
            next_id = out.logits[:, -1].argmax(-1)
            if eos_token_id is not None:
                next_id = torch.where(done, torch.full_like(next_id, eos_token_id), next_id)
            next_value = torch.zeros(ids.shape[0], dtype=torch.float32, device=ids.device)
            next_mask = torch.isin(next_id, num_ids) & ~done
            if self.number_head is not None:
                predicted = self.number_head(out.hidden_states[-1][:, -1:]).values[:, 0]
                next_value = torch.where(next_mask, predicted, 0.0)
            ids = torch.cat([ids, next_id[:, None]], dim=1)
            vals = torch.cat([vals, next_value[:, None]], dim=1)
            mask = torch.cat([mask, next_mask[:, None]], dim=1)
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
            if eos_token_id is not None:
                done |= next_id.eq(eos_token_id)
                if bool(done.all()):
                    break
            embeds = self.embed_inputs(ids[:, -1:], vals[:, -1:], mask[:, -1:])
            position_ids = position_ids[:, -1:] + 1
        return NumericGeneration(input_ids=ids, numbers=vals, number_mask=mask, attention_mask=attn)
