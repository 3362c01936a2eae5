"""NumberEmbedding, NumberHead and the value scaling."""

from __future__ import annotations

import pytest
import torch

from spectravlm.errors import NumericInputError
from spectravlm.numeric import NumberEmbedding, NumberHead, scale_values, unscale_values


@pytest.mark.parametrize(("scaling", "scale"), [("symlog", 1.0), ("symlog", 100.0), ("linear", 50.0)])
def test_scaling_inverts(scaling: str, scale: float) -> None:
    x = torch.tensor([-3e5, -12.5, -0.5, 0.0, 0.07, 1.0, 152.3, 2021.0, 1.2e6], dtype=torch.float64)
    back = unscale_values(scale_values(x, scaling, scale), scaling, scale)  # type: ignore[arg-type]
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)


def test_symlog_compresses_magnitudes() -> None:
    s = scale_values(torch.tensor([-3.4e38, -12.5, 0.71, 150.0, 3.4e38]))
    assert s.abs().max() < 89.0
    assert s.tolist() == pytest.approx([-88.722, -2.6027, 0.5365, 5.0173, 88.722], abs=1e-3)


def test_unscale_clamps_to_float32() -> None:
    values = unscale_values(torch.tensor([1e4, -1e4, 1e38]), "symlog")
    assert torch.isfinite(values).all()
    assert values[0] == pytest.approx(3.4028235e38, rel=1e-6) and values[1] == -values[0]
    assert torch.isfinite(unscale_values(torch.tensor([1e38]), "linear", 1e10)).all()


def test_bad_scaling_name() -> None:
    with pytest.raises(NumericInputError, match="scaling"):
        NumberHead(8, scaling="log")  # type: ignore[arg-type]
    with pytest.raises(NumericInputError, match="combine"):
        NumberEmbedding(8, combine="concat")  # type: ignore[arg-type]


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    embeds = torch.randn(2, 5, 8)
    numbers = torch.tensor([[0.0, 152.3, 0.0, 0.0, -12.5], [0.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, False, False, True], [False, False, False, False, False]])
    return embeds, numbers, mask


def test_multiply_scales_only_number_tokens() -> None:
    embeds, numbers, mask = _inputs()
    out = NumberEmbedding(8)(embeds, numbers, mask)
    torch.testing.assert_close(out[~mask], embeds[~mask])
    torch.testing.assert_close(out[0, 1], embeds[0, 1] * torch.log1p(torch.tensor(152.3)))
    torch.testing.assert_close(out[0, 4], -embeds[0, 4] * torch.log1p(torch.tensor(12.5)))


def test_add_keeps_zero_distinguishable() -> None:
    embeds, numbers, mask = _inputs()
    layer = NumberEmbedding(8, combine="add")
    out = layer(embeds, numbers, mask)
    torch.testing.assert_close(out[~mask], embeds[~mask])
    assert layer.direction is not None
    torch.testing.assert_close(out[0, 1], embeds[0, 1] + torch.log1p(torch.tensor(152.3)) * layer.direction)
    zero = layer(embeds, torch.zeros_like(numbers), mask)
    torch.testing.assert_close(zero, embeds)  # value 0: the token's own embedding, not a zero vector


def test_embedding_ignores_nan_outside_numbers_and_refuses_it_inside() -> None:
    embeds, numbers, mask = _inputs()
    layer = NumberEmbedding(8)
    noisy = numbers.masked_fill(~mask, float("nan"))
    assert torch.isfinite(layer(embeds, noisy, mask)).all()
    with pytest.raises(NumericInputError, match="NaN or infinite"):
        layer(embeds, numbers.masked_fill(mask, float("inf")), mask)
    with pytest.raises(NumericInputError, match="token shape"):
        layer(embeds, numbers[:, :3], mask[:, :3])


def test_embed_uses_the_lm_embedding_layer() -> None:
    embedding = torch.nn.Embedding(20, 8)
    ids = torch.tensor([[1, 2, 3]])
    out = NumberEmbedding(8).embed(
        embedding, ids, torch.tensor([[0.0, 4.0, 0.0]]), torch.tensor([[0, 1, 0]]).bool()
    )
    torch.testing.assert_close(out[0, 0], embedding.weight[1])
    torch.testing.assert_close(out[0, 1], embedding.weight[2] * torch.log1p(torch.tensor(4.0)))


def test_head_loss_is_shifted_mse() -> None:
    torch.manual_seed(0)
    head = NumberHead(8)
    hidden = torch.randn(2, 5, 8)
    _, numbers, mask = _inputs()
    result = head.loss(hidden, numbers, mask, shift=True)
    pred = head(hidden).scaled
    want = torch.stack(
        [pred[0, 0] - torch.log1p(torch.tensor(152.3)), pred[0, 3] + torch.log1p(torch.tensor(12.5))]
    )
    assert result.count == 2
    torch.testing.assert_close(result.loss, (want**2).mean())
    unshifted = head.loss(hidden, numbers, mask, shift=False)
    want = torch.stack(
        [pred[0, 1] - torch.log1p(torch.tensor(152.3)), pred[0, 4] + torch.log1p(torch.tensor(12.5))]
    )
    torch.testing.assert_close(unshifted.loss, (want**2).mean())


def test_head_loss_without_targets_is_zero_with_a_graph() -> None:
    head = NumberHead(8)
    result = head.loss(torch.randn(2, 5, 8), torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool))
    assert result.count == 0 and result.loss.item() == 0.0
    result.loss.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_head_learns_a_value_from_hidden_states() -> None:
    """A few hundred steps fit values over four orders of magnitude from a feature that carries them."""
    torch.manual_seed(0)
    values = torch.tensor([0.07, 1.5, 12.5, 152.3, 2021.0, -12.5, -0.5, 830.0])
    hidden = torch.cat([scale_values(values)[:, None], torch.randn(8, 7)], dim=1)[None]  # (1, 8, 8)
    head = NumberHead(8, mlp_dim=32)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    mask = torch.ones(1, 8, dtype=torch.bool)
    first = head.loss(hidden, values[None], mask, shift=False).loss.item()
    for _ in range(400):
        opt.zero_grad()
        loss = head.loss(hidden, values[None], mask, shift=False).loss
        loss.backward()
        opt.step()
    assert loss.item() < first / 100
    predicted = head(hidden).values[0]
    torch.testing.assert_close(predicted, values, rtol=0.05, atol=0.02)


# ---- issue 10 item 7: values are scaled in float32 whatever the LM's dtype ------------------------------

PRECISE = torch.tensor([1234.5, 87.6, -12.5, 152.3])


def _head_emitting(scaled: torch.Tensor, width: int = 16) -> NumberHead:
    """A head whose output at every position is ``scaled[k]`` when the hidden state is the one-hot ``e_k``."""
    head = NumberHead(width, mlp_dim=width)
    first, _, last = head.mlp
    with torch.no_grad():
        first.weight.copy_(torch.eye(width) * 10.0)  # GELU(10 * x) = 10 * x for x in {0, 1}
        first.bias.zero_()
        last.weight.zero_()
        last.weight[0, : len(scaled)] = scaled / 10.0
        last.bias.zero_()
    return head


@pytest.mark.parametrize("lm_dtype", [torch.float32, torch.bfloat16])
def test_head_values_survive_bf16_autocast(lm_dtype: torch.dtype) -> None:
    """1234.5 and 87.6 come back to float32 precision from bf16 hidden states, inside CPU bf16 autocast."""
    head = _head_emitting(scale_values(PRECISE))
    hidden = torch.eye(16)[None, : len(PRECISE)].to(lm_dtype)  # one-hot rows: exact in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(hidden)
    assert out.scaled.dtype == torch.float32 and out.values.dtype == torch.float32
    torch.testing.assert_close(out.values[0], PRECISE, rtol=2e-6, atol=0.0)
    # the old behaviour (the head's output in bf16) loses them: 1234.5 -> ~1232, 87.6 -> ~86.x
    coarse = unscale_values(scale_values(PRECISE).bfloat16().float())
    assert (coarse - PRECISE).abs().max() > 1.0


def test_head_weights_cast_to_bf16_still_scale_in_float32() -> None:
    head = _head_emitting(scale_values(PRECISE)).to(torch.bfloat16)  # e.g. model.to(torch.bfloat16)
    hidden = torch.eye(16)[None, : len(PRECISE)].bfloat16()
    out = head(hidden)
    # the weights themselves are now bf16-rounded, so compare with what float32 arithmetic gives on them
    first, _, last = head.mlp
    want = torch.nn.functional.gelu(hidden.float() @ first.weight.float().T) @ last.weight.float().T
    torch.testing.assert_close(out.scaled[0], want[0, :, 0], rtol=1e-6, atol=1e-6)


def test_head_loss_targets_in_float32_under_autocast() -> None:
    """A head that predicts exactly symlog(1234.5) has zero loss on 1234.5 (bf16 targets made it 1232)."""
    head = _head_emitting(scale_values(PRECISE))
    hidden = torch.eye(16)[None, : len(PRECISE)].bfloat16()
    mask = torch.ones(1, len(PRECISE), dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = head.loss(hidden, PRECISE[None], mask, shift=False)
    assert result.loss.dtype == torch.float32
    assert result.loss.item() < 1e-10


@pytest.mark.parametrize("combine", ["multiply", "add"])
def test_embedding_scales_in_float32_and_rounds_once(combine: str) -> None:
    """bf16 embeddings: the value is scaled from its float32 value and the result is rounded to bf16 once."""
    torch.manual_seed(0)
    embeds = torch.randn(1, 4, 64).bfloat16()
    mask = torch.ones(1, 4, dtype=torch.bool)
    layer = NumberEmbedding(64, combine=combine)  # type: ignore[arg-type]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(embeds, PRECISE[None], mask)
    assert out.dtype == torch.bfloat16
    s = scale_values(PRECISE)[None, :, None]  # float32
    if combine == "multiply":
        want = (embeds.float() * s).bfloat16()
    else:
        assert layer.direction is not None
        want = (embeds.float() + s * layer.direction.float()).bfloat16()
    assert torch.equal(out, want)
    # the old behaviour (values cast to bf16 before scaling: 1234.5 -> 1232, 87.6 -> 87.5) differs
    s_old = scale_values(PRECISE.bfloat16()).float()[None, :, None]
    old = (embeds.float() * s_old).bfloat16() if combine == "multiply" else want
    if combine == "multiply":
        assert not torch.equal(out, old)


def test_embedding_gradients_reach_embeddings_and_direction() -> None:
    embeds, numbers, mask = _inputs()
    embeds.requires_grad_(True)
    layer = NumberEmbedding(8, combine="add")
    layer(embeds, numbers, mask).sum().backward()
    assert embeds.grad is not None and torch.equal(embeds.grad, torch.ones_like(embeds))
    assert layer.direction is not None and layer.direction.grad is not None
