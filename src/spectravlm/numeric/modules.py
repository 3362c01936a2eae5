"""Model-side number modules: the value-scaled number embedding and the number head.

After xVal (Golkar et al. 2023, https://arxiv.org/abs/2310.02989): a number enters the model as
one token whose embedding is scaled by the number's value, and leaves it through a regression head
read at the number's position. These modules work with any Hugging Face causal LM: they act on the
LM's input embeddings (``model.get_input_embeddings()``) and last hidden states, and take the
``numbers`` / ``number_mask`` tensors that :class:`~spectravlm.numeric.tokenizer.NumericTokenizer`
returns.

**Scaling.** Quantities in EO text span many magnitudes (reflectance 0.07, backscatter -12.5 dB,
AGB 152 t/ha, a year 2021, an area 1.2e6 ha); a raw value of 1e6 times an embedding would swamp
the residual stream. Both modules therefore work on a scaled value ``s``:

- ``"symlog"`` (default): ``s = sign(x) * log1p(|x| / scale)``; all of float32 maps into
  ``|s| <= 88.7`` (with ``scale=1``), 150 maps to 5.0, 0.71 to 0.54, -12.5 to -2.6;
- ``"linear"``: ``s = x / scale``, for quantities of one known magnitude (pick ``scale`` so that
  ``|s|`` stays within a few units).

The inverse of ``s`` clamps ``s`` to the range that maps into float32 (a documented clamp: a head
cannot predict a value float32 cannot hold).

**Precision.** Both modules scale values in float32 whatever the LM's dtype and whether or not an
autocast region is active: a bf16 value has 8 significant bits, so casting first would turn 1234.5
into 1232 and 87.6 into 87.5. The embedding computes its rows in float32 and rounds them to the LM's
dtype once; the head runs its MLP in float32 (its weights cast on use if the model was cast), so
its scaled and raw predictions are float32.

Axis legend: ``b`` batch, ``l`` sequence position, ``d`` embedding / hidden width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from spectravlm.errors import NumericInputError
from spectravlm.numeric.parsing import FLOAT32_MAX

Scaling = Literal["symlog", "linear"]


def scale_values(values: torch.Tensor, scaling: Scaling = "symlog", scale: float = 1.0) -> torch.Tensor:
    """Map raw values to the scaled values the modules work on (see the module docstring).

    Args:
        values: Raw values, any shape.
        scaling: ``"symlog"`` or ``"linear"``.
        scale: Unit of ``values`` that maps to ``s = log1p(1)`` (symlog) or ``s = 1`` (linear).

    Returns:
        Scaled values, same shape and dtype.

    """
    if scaling == "symlog":
        return torch.sign(values) * torch.log1p(values.abs() / scale)
    if scaling == "linear":
        return values / scale
    raise NumericInputError(f"scaling '{scaling}' is not known; expected 'symlog' or 'linear'")


def unscale_values(scaled: torch.Tensor, scaling: Scaling = "symlog", scale: float = 1.0) -> torch.Tensor:
    """Inverse of :func:`scale_values`, clamped so that the result stays within float32's range."""
    if scaling == "symlog":
        limit = math.log1p(FLOAT32_MAX / scale)
        s = scaled.clamp(-limit, limit)
        return (torch.sign(s) * torch.expm1(s.abs()) * scale).clamp(-FLOAT32_MAX, FLOAT32_MAX)
    if scaling == "linear":
        return (scaled * scale).clamp(-FLOAT32_MAX, FLOAT32_MAX)
    raise NumericInputError(f"scaling '{scaling}' is not known; expected 'symlog' or 'linear'")


def _check_numbers(numbers: torch.Tensor, number_mask: torch.Tensor, shape: torch.Size) -> None:
    if numbers.shape != shape or number_mask.shape != shape:
        raise NumericInputError(
            f"numbers {tuple(numbers.shape)} and number_mask {tuple(number_mask.shape)} must both have "
            f"the token shape {tuple(shape)}"
        )
    if not bool(torch.isfinite(numbers[number_mask.bool()]).all()):
        raise NumericInputError("numbers holds NaN or infinite values at number tokens; expected finite ones")


def _linear32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 (weights cast on use when the module was cast to a lower precision)."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x, layer.weight.float(), bias)


class NumberEmbedding(nn.Module):
    """Value-scaled embedding of number tokens (xVal).

    At a number token the LM's own embedding ``e`` of that token becomes ``e * s`` (``"multiply"``,
    as in xVal) or ``e + s * w`` with a learned direction ``w`` (``"add"``: keeps a zero value
    distinguishable from no token, at the price of one vector). Other tokens pass unchanged.

    Args:
        embed_dim: Width of the LM's input embeddings.
        combine: ``"multiply"`` or ``"add"``.
        scaling: ``"symlog"`` or ``"linear"`` (module docstring).
        scale: Scale of :func:`scale_values`.

    """

    def __init__(
        self,
        embed_dim: int,
        combine: Literal["multiply", "add"] = "multiply",
        scaling: Scaling = "symlog",
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if combine not in ("multiply", "add"):
            raise NumericInputError(f"combine '{combine}' is not known; expected 'multiply' or 'add'")
        scale_values(torch.zeros(1), scaling, scale)  # validates scaling
        self.combine = combine
        self.scaling: Scaling = scaling
        self.scale = scale
        self.direction = nn.Parameter(torch.randn(embed_dim) * 0.02) if combine == "add" else None

    def forward(
        self, token_embeds: torch.Tensor, numbers: torch.Tensor, number_mask: torch.Tensor
    ) -> torch.Tensor:
        """Apply the values to the embeddings of the number tokens.

        Args:
            token_embeds: ``[b, l, d]`` the LM's embeddings of ``input_ids``.
            numbers: ``[b, l]`` raw values (read where ``number_mask``).
            number_mask: ``[b, l]`` True at the number tokens that carry a value.

        Returns:
            ``[b, l, d]`` input embeddings for the LM (``inputs_embeds=``).

        """
        _check_numbers(numbers, number_mask, token_embeds.shape[:2])
        mask = number_mask.bool()
        with torch.autocast(device_type=token_embeds.device.type, enabled=False):
            rows = token_embeds[mask].float()  # (k, d): only the number tokens change
            scaled = rearrange(scale_values(numbers[mask].float(), self.scaling, self.scale), "k -> k 1")
            if self.direction is None:
                rows = rows * scaled
            else:
                rows = rows + scaled * self.direction.float()
        out = token_embeds.clone()
        out[mask] = rows.to(token_embeds.dtype)  # one rounding to the LM's dtype
        return out

    def embed(
        self,
        embedding: nn.Module,
        input_ids: torch.Tensor,
        numbers: torch.Tensor,
        number_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Embed ``input_ids`` with the LM's embedding layer, then apply the values.

        Args:
            embedding: The LM's input embedding layer (``model.get_input_embeddings()``).
            input_ids: ``[b, l]`` token ids.
            numbers: ``[b, l]`` raw values.
            number_mask: ``[b, l]`` True at number tokens.

        Returns:
            ``[b, l, d]`` embeddings to pass as ``inputs_embeds``.

        """
        return self(embedding(input_ids), numbers, number_mask)


@dataclass
class NumberHeadOutput:
    """What :class:`NumberHead` predicts at every position.

    Attributes:
        scaled: ``[b, l]`` float32 predicted scaled values (what the loss compares).
        values: ``[b, l]`` float32, the same mapped back to raw values (clamped to float32's range).

    """

    scaled: torch.Tensor
    values: torch.Tensor


@dataclass
class NumberLoss:
    """The number head's loss on one batch.

    Attributes:
        loss: Mean squared error between predicted and true scaled values over the positions
            that have a number target (0, still attached to the graph, when there are none).
        count: How many number targets entered the loss.

    """

    loss: torch.Tensor
    count: int


class NumberHead(nn.Module):
    """Regression head that predicts a number's value from an LM hidden state.

    A two-layer MLP (hidden -> hidden -> 1, GELU), as xVal's number head. In a causal LM the hidden
    state at position ``t`` predicts the token at ``t + 1``; so, by default (``shift=True``), the
    head at ``t`` is trained on the value of a number token at ``t + 1``, the same hidden state
    whose logits choose that number token. At generation, when the LM emits a number token, its
    value is the head's prediction at the position that emitted it.

    Args:
        hidden_dim: Width of the LM's hidden states.
        mlp_dim: Width of the MLP's hidden layer (defaults to ``hidden_dim``).
        scaling: ``"symlog"`` or ``"linear"`` (module docstring).
        scale: Scale of :func:`scale_values`.

    """

    def __init__(
        self,
        hidden_dim: int,
        mlp_dim: int | None = None,
        scaling: Scaling = "symlog",
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        scale_values(torch.zeros(1), scaling, scale)  # validates scaling
        width = mlp_dim or hidden_dim
        self.mlp = nn.Sequential(nn.Linear(hidden_dim, width), nn.GELU(), nn.Linear(width, 1))
        self.scaling: Scaling = scaling
        self.scale = scale

    def forward(self, hidden_states: torch.Tensor) -> NumberHeadOutput:
        """Predict a value at every position.

        Args:
            hidden_states: ``[b, l, d]`` last hidden states of the LM.

        Returns:
            Scaled and raw predictions, ``[b, l]`` each.

        """
        first, act, last = self.mlp
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            x = _linear32(last, act(_linear32(first, hidden_states.float())))
        scaled = rearrange(x, "b l 1 -> b l")
        values = unscale_values(scaled, self.scaling, self.scale)
        return NumberHeadOutput(scaled=scaled, values=values)

    def loss(
        self,
        hidden_states: torch.Tensor,
        numbers: torch.Tensor,
        number_mask: torch.Tensor,
        shift: bool = True,
    ) -> NumberLoss:
        """Mean squared error of the scaled value at the number tokens.

        Args:
            hidden_states: ``[b, l, d]`` last hidden states.
            numbers: ``[b, l]`` raw values aligned with the tokens.
            number_mask: ``[b, l]`` True where a number token's value is a target (combine it with
                the LM's label mask to leave prompt numbers out).
            shift: Read the prediction for token ``t`` at position ``t - 1`` (causal LMs).

        Returns:
            The loss and how many targets it covers.

        """
        _check_numbers(numbers, number_mask, hidden_states.shape[:2])
        pred = self(hidden_states).scaled  # float32
        target = scale_values(numbers.float(), self.scaling, self.scale)
        mask = number_mask.bool()
        if shift:
            pred, target, mask = pred[:, :-1], target[:, 1:], mask[:, 1:]
        count = int(mask.sum())
        if count == 0:
            return NumberLoss(loss=pred.sum() * 0.0, count=0)
        return NumberLoss(loss=F.mse_loss(pred[mask], target[mask]), count=count)
