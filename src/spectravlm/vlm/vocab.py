"""The model's own rows for the tokens spectravlm adds to an LLM's vocabulary.

The numeric tokenizer adds number tokens (``<|num|>``, ``" <|num|>"``; the digit tokens in ``digits``
mode) and the VLM adds the image placeholder. Growing the LLM's embedding matrix
(``resize_token_embeddings``) would put their rows inside the LLM's weights, which stay fixed when the
LLM is frozen: the number tokens could never learn. So the LLM keeps its vocabulary, and these
tokens get a small embedding and a small output layer of their own, trainable whatever the LLM:

* ids ``< base`` are embedded by the LLM's embedding layer; ids ``base .. base + n - 1`` by
  :attr:`AddedTokens.input`;
* logits are the LLM's first ``base`` logits (rows beyond the tokenizer's vocabulary, which some
  LLMs pad to a multiple of 64 or 128, are dropped) followed by :attr:`AddedTokens.output` applied to
  the same final hidden states. So a logit's index is its token id.

New rows start at the mean of the LLM's rows (plus a little noise, so that no two tie), as
transformers' ``resize_token_embeddings`` initialises them.

Axis legend: ``b`` batch, ``l`` positions, ``d`` LLM width, ``v`` vocabulary, ``n`` added tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError


class AddedTokens(nn.Module):
    """Input and output rows of the tokens at ids ``base_vocab_size ..``.

    Args:
        base_vocab_size: The tokenizer's vocabulary before the added tokens (at most the LLM's rows).
        num_added: How many tokens were added.
        width: The LLM's hidden size.

    """

    def __init__(self, base_vocab_size: int, num_added: int, width: int) -> None:
        super().__init__()
        if num_added < 1:
            raise ModelConfigError(f"AddedTokens needs at least one token; got {num_added}")
        self.base_vocab_size = base_vocab_size
        self.num_added = num_added
        self.input = nn.Embedding(num_added, width)
        self.output = nn.Linear(width, num_added, bias=False)

    @property
    def vocab_size(self) -> int:
        """Ids the model knows: the base vocabulary plus the added tokens."""
        return self.base_vocab_size + self.num_added

    @torch.no_grad()
    def init_from(self, input_embeddings: Tensor, output_embeddings: Tensor | None) -> None:
        """Start every row at the mean of the LLM's rows, plus noise of 1% of their spread."""
        for layer, rows in ((self.input, input_embeddings), (self.output, output_embeddings)):
            if rows is None:
                continue
            base = rows[: self.base_vocab_size].float()
            mean, std = base.mean(0), base.std(0)
            layer.weight.copy_(mean + torch.randn_like(layer.weight) * std * 0.01)

    def embed(self, input_ids: Tensor, llm_embedding: nn.Module) -> Tensor:
        """``[b, l]`` ids to ``[b, l, d]`` embeddings in the LLM's dtype.

        Raises:
            ModelConfigError: An id beyond the vocabulary.

        """
        if input_ids.numel() and int(input_ids.max()) >= self.vocab_size:
            raise ModelConfigError(
                f"token id {int(input_ids.max())} is beyond this model's vocabulary of {self.vocab_size}"
            )
        added = input_ids >= self.base_vocab_size
        embeds: Tensor = llm_embedding(input_ids.clamp(max=self.base_vocab_size - 1))
        own = self.input((input_ids - self.base_vocab_size).clamp(min=0)).to(embeds.dtype)
        return torch.where(added.unsqueeze(-1), own, embeds)

    def logits(self, llm_logits: Tensor, hidden_states: Tensor) -> Tensor:
        """Full float32 logits ``[..., v]`` from the LLM's logits and the same positions' hidden states.

        Args:
            llm_logits: ``[..., V]`` the LLM's logits (``V >= base_vocab_size``).
            hidden_states: ``[..., d]`` the final hidden states those logits were computed from.

        """
        own = F.linear(hidden_states.float(), self.output.weight.float())
        return torch.cat([llm_logits[..., : self.base_vocab_size].float(), own], dim=-1)
