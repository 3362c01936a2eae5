"""The number gate: at each value token, the stated value is a gated mixture of number sources.

The sources are the LLM's own number head (xVal, source ``lm``) and the experts
(:mod:`spectravlm.vlm.experts`): regression heads evaluated on the region the question names and statistics
of the scene. At every position the gate reads the LLM's last hidden state (the one whose logits choose the
number token that follows) and gives a weight to each source; the stated value is

    value = sum_k w_k * v_k,     w = softmax(gate(hidden)) over the sources available for the row

(or, when generating with ``stated="top1"``, the value of the source with the largest weight), with ``v_lm``
the number head's value at that position and ``v_k`` an expert's value for the prompt's scene
(the same at every position of the row). A source that cannot state a value for a row (no scene, its sensor
missing, no observation in the region) gets weight 0. Everything is float32 whatever the LLM's dtype, as the
number head is. The gate is trained end to end by the number loss on the mixed value (in the number modules'
scaled space) plus, optionally, a routing term (each source's own error weighted by its gate weight: the
competitive loss of Jacobs et al. 1991, https://doi.org/10.1162/neco.1991.3.1.79, which sharpens the weights
onto the sources that are right alone) and the load-balancing term of Switch Transformers (Fedus et al. 2021,
https://arxiv.org/abs/2101.03961): ``S * sum_k f_k * P_k`` over the value tokens, ``f_k`` the share of value
tokens whose largest weight is ``k``'s and ``P_k`` its mean weight (1 when every source is used equally).

This is a mixture of experts in the sense of Jacobs et al. 1991 (a gate over whole predictors), not the
token-level expert layers inside a transformer.

Axis legend: ``b`` prompts, ``l`` positions, ``d`` LLM width, ``S`` sources (``lm`` first), ``E`` experts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import repeat
from torch import Tensor, nn

from spectravlm.numeric.modules import NumberHeadOutput, Scaling, scale_values
from spectravlm.vlm.experts import LM_SOURCE


@dataclass
class GatedNumbers(NumberHeadOutput):
    """The gate's values at every position, with where they came from.

    Attributes:
        scaled: ``[b, l]`` float32 scaled mixed values (what the number loss compares).
        values: ``[b, l]`` float32 mixed values.
        weights: ``[b, l, S]`` the gate's weights (0 for sources not available to the row).
        source_values: ``[b, l, S]`` each source's value.
        sources: The source names, ``lm`` first, then the experts in order.

    """

    weights: Tensor
    source_values: Tensor
    sources: tuple[str, ...]

    def winners(self) -> Tensor:
        """``[b, l]`` index of the source with the largest weight."""
        return self.weights.argmax(-1)


class NumberGate(nn.Module):
    """Weights over the number sources from the LLM's hidden state (see the module docstring).

    Args:
        hidden_dim: The LLM's width.
        experts: The experts' names, in order (the sources are ``lm`` and these).
        hidden_size: Width of a hidden layer (GELU) before the source logits; 0: a linear gate.
        scaling: Value scaling of the number loss (as the number head's).
        scale: Unit of that scaling.

    """

    def __init__(
        self,
        hidden_dim: int,
        experts: Sequence[str],
        hidden_size: int = 0,
        scaling: Scaling = "symlog",
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.sources: tuple[str, ...] = (LM_SOURCE, *experts)
        n = len(self.sources)
        if hidden_size > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(hidden_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, n)
            )
        else:
            self.net = nn.Linear(hidden_dim, n)
        last = self.net[-1] if isinstance(self.net, nn.Sequential) else self.net
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)  # start from equal weights over the available sources
        nn.init.zeros_(last.bias)
        self.scaling: Scaling = scaling
        self.scale = scale

    def logits(self, hidden_states: Tensor) -> Tensor:
        """``[b, l, S]`` float32 source logits."""
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            x = hidden_states.float()
            for layer in self.net if isinstance(self.net, nn.Sequential) else [self.net]:
                if isinstance(layer, nn.Linear):
                    bias = None if layer.bias is None else layer.bias.float()
                    x = nn.functional.linear(x, layer.weight.float(), bias)
                else:
                    x = layer(x)
            return x

    def forward(
        self,
        hidden_states: Tensor,
        head: NumberHeadOutput,
        expert_values: Tensor,
        available: Tensor,
        top1: bool = False,
    ) -> GatedNumbers:
        """Mix the sources at every position.

        Args:
            hidden_states: ``[b, l, d]`` the LLM's last hidden states.
            head: The number head's output at those positions (``[b, l]``).
            expert_values: ``[b, E]`` each expert's value for the row's scene (0 where not available).
            available: ``[b, E]`` bool: the expert states a value for the row.
            top1: State the value of the source with the largest weight instead of the mixture (the weights
                are the same; used when generating).

        """
        length = head.values.shape[1]
        logits = self.logits(hidden_states)  # (b, l, S)
        mask = torch.cat([torch.ones_like(available[:, :1]), available.bool()], dim=1)  # (b, S)
        logits = logits.masked_fill(~mask[:, None, :], -torch.inf)
        weights = torch.softmax(logits, dim=-1)
        experts = repeat(expert_values.float(), "b e -> b l e", l=length)
        values = torch.cat([head.values.float()[..., None], experts], dim=-1)  # (b, l, S)
        mixed = (weights * values).sum(-1)
        if top1:
            mixed = values.gather(-1, weights.argmax(-1, keepdim=True))[..., 0]
        return GatedNumbers(
            scaled=scale_values(mixed, self.scaling, self.scale),
            values=mixed,
            weights=weights,
            source_values=values,
            sources=self.sources,
        )

    def scaled(self, values: Tensor) -> Tensor:
        """Raw values in the number loss's scaled space."""
        return scale_values(values.float(), self.scaling, self.scale)

    @staticmethod
    def route_loss(weights: Tensor, scaled_sources: Tensor, scaled_target: Tensor) -> Tensor:
        """``mean_k sum_S w_S (s_S - s_k)^2`` over ``k`` value tokens: each source's own error, gate-weighted.

        The competitive mixture-of-experts loss (Jacobs et al. 1991): it rewards weight on the sources that
        are right alone, where the loss on the mixed value is content with any mixture that averages right.
        Sources not available to a row have weight 0 (their values do not count).
        """
        if weights.numel() == 0:
            return weights.sum() * 0.0
        error = (scaled_sources - scaled_target[:, None]) ** 2
        return (weights * torch.where(weights > 0, error, 0.0)).sum(-1).mean()

    @staticmethod
    def balance_loss(weights: Tensor) -> Tensor:
        """Switch Transformers' load-balancing term over ``[k, S]`` weights of ``k`` value tokens."""
        if weights.numel() == 0:
            return weights.sum() * 0.0
        n = weights.shape[-1]
        routed = torch.nn.functional.one_hot(weights.argmax(-1), n).float().mean(0)
        return n * (routed * weights.mean(0)).sum()


__all__ = ["GatedNumbers", "NumberGate"]
