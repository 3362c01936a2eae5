from __future__ import annotations

import pytest
import torch

from spectravlm.encoders.blocks import Attention, Block, masked_attention, xformers_available
from spectravlm.errors import ModelConfigError


def _mask(b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, n, generator=g) > 0.4
    mask[:, 0] = True
    return mask


def test_block_shape_and_no_mask_equals_all_valid() -> None:
    torch.manual_seed(0)
    block = Block(32, num_heads=4).eval()
    x = torch.randn(2, 7, 32)
    out = block(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, block(x, torch.ones(2, 7, dtype=torch.bool)))


def test_masked_tokens_have_no_influence() -> None:
    torch.manual_seed(0)
    block = Block(32, num_heads=4).eval()
    x = torch.randn(3, 11, 32)
    mask = _mask(3, 11)
    y = x.clone()
    y[~mask] = torch.randn(int((~mask).sum()), 32) * 100.0
    a, b = block(x, mask), block(y, mask)
    torch.testing.assert_close(a[mask], b[mask])
    # and without the mask the changed tokens do leak (the test can fail)
    assert not torch.allclose(block(x)[mask], block(y)[mask])


def test_masked_equals_dropping_the_tokens() -> None:
    torch.manual_seed(0)
    block = Block(16, num_heads=2).eval()
    x = torch.randn(1, 9, 16)
    mask = _mask(1, 9, seed=3)
    dropped = block(x[:, mask[0]])
    torch.testing.assert_close(block(x, mask)[:, mask[0]], dropped)


def test_fully_masked_sample_is_finite_and_isolated() -> None:
    torch.manual_seed(0)
    block = Block(16, num_heads=2).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1] = False
    out = block(x, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], block(x[:1])[0])


def test_bad_inputs() -> None:
    with pytest.raises(ModelConfigError, match="divisible"):
        Attention(30, num_heads=4)
    attn = Attention(16, num_heads=2)
    with pytest.raises(ModelConfigError, match="key mask"):
        attn(torch.randn(2, 5, 16), torch.ones(2, 4, dtype=torch.bool))
    q = torch.randn(1, 2, 3, 8)
    with pytest.raises(ModelConfigError, match="backend"):
        masked_attention(q, q, q, backend="flash3")  # type: ignore[arg-type]
    if not xformers_available():
        with pytest.raises(ModelConfigError, match="xformers"):
            masked_attention(q, q, q, backend="xformers")


def test_gradients_do_not_flow_into_masked_tokens_from_valid_outputs() -> None:
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2)
    x = torch.randn(2, 6, 16, requires_grad=True)
    mask = _mask(2, 6, seed=5)
    attn(x, mask)[mask].sum().backward()
    assert x.grad is not None
    assert torch.count_nonzero(x.grad[~mask]) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(not xformers_available(), reason="needs xformers")
def test_xformers_matches_sdpa_on_cuda() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 37, 32, device="cuda") for _ in range(3))
    mask = _mask(2, 37).cuda()
    ref = masked_attention(q, k, v, mask, backend="sdpa")
    out = masked_attention(q, k, v, mask, backend="xformers")
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    block = Block(128, num_heads=4, backend="sdpa").cuda().eval()
    x = torch.randn(2, 37, 128, device="cuda")
    ref_b = block(x, mask)
    block.attn.backend = "xformers"
    torch.testing.assert_close(block(x, mask)[mask], ref_b[mask], atol=2e-3, rtol=2e-3)


def test_no_graph_breaks_in_the_transformer_blocks():
    """The blocks compile into one graph: no host-device synchronisation inside (torch._dynamo.explain)."""
    from spectravlm.encoders.spectral import spectral_encoder_test

    torch.manual_seed(0)
    x = torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 3:] = False
    for attention in ("joint", "factorised"):
        enc = spectral_encoder_test(attention=attention).eval()
        for blocks in (enc.blocks, enc.temporal_blocks):
            if len(blocks) == 0:
                continue
            for m in (mask, None):
                report = torch._dynamo.explain(lambda t, k, b=blocks, e=enc: e._blocks(b, t, k))(x, m)
                assert report.graph_break_count == 0, report.break_reasons
                assert report.graph_count == 1


def test_the_encoder_forward_asks_the_device_nothing_for_a_loader_batch():
    """With the loader's host-side facts (every pixel valid, vetted values) the forward never reads a
    tensor's value on the host: no ``bool()``, ``.item()`` or ``.tolist()`` anywhere in it."""
    from unittest import mock

    from spectravlm.encoders.spectral import build_encoder
    from spectravlm.stack import SensorSeries, SensorStack

    torch.manual_seed(0)
    dn = (torch.rand(2, 3, 4, 32, 32) * 4000).to(torch.int32).to(torch.uint16)
    s2 = SensorSeries(
        "sentinel2_l2a", ("B02", "B03", "B04", "B08"), dn, torch.tensor([[18000, 18010, 18020]] * 2),
        torch.ones(2, 3, 32, 32, dtype=torch.bool), units="reflectance", scale=1e-4,
        all_valid=True, finite=True,
    )  # fmt: skip
    s1 = SensorSeries(
        "sentinel1_grd", ("VV", "VH"), torch.rand(2, 2, 2, 32, 32) * 10 - 20,
        torch.tensor([[18002, 18014]] * 2), torch.ones(2, 2, 32, 32, dtype=torch.bool), units="dB",
        all_valid=True, finite=True,
    )  # fmt: skip
    stack = SensorStack({"s2": s2, "s1": s1})

    def host_read(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a tensor value was read on the host during the forward")

    for attention in ("joint", "factorised"):
        enc = build_encoder("test", patch_size=8, attention=attention, temporal_depth=1).eval()
        with torch.no_grad():
            ref = enc.forward_features(stack).tokens  # first call fills the layout caches
            with (
                mock.patch.object(torch.Tensor, "__bool__", host_read),
                mock.patch.object(torch.Tensor, "item", host_read),
                mock.patch.object(torch.Tensor, "tolist", host_read),
            ):
                out = enc.forward_features(stack).tokens
        torch.testing.assert_close(out, ref)
