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
