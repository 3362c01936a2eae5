"""Mixed precision as a GPU runs it: CUDA's autocast lowers ``einsum`` to bf16, which the CPU's does not.

Found on an H200 (``benchmarks/gpu.py``): the wavelength, date and grid sine/cosine embeddings went
through TorchGeo's ``position_embedding`` (an ``einsum``) in bf16, which spaced 2190 nm 8 nm apart and
broke the descriptor's float32 index-put. These tests emulate CUDA's op list on the CPU (``cuda_autocast``).
"""

from __future__ import annotations

import pytest
import torch

from helpers import cuda_autocast, seeded
from spectravlm.encoders.embeddings import date_embedding, grid_embedding
from spectravlm.encoders.spectral import build_encoder
from spectravlm.pretraining.mae import build_mae
from spectravlm.tokenizers.channels import lookup_channels
from spectravlm.tokenizers.spectral import ChannelDescriptor


def test_emulation_lowers_einsum_like_cuda():
    a = torch.randn(4)
    with cuda_autocast():
        assert torch.einsum("i,j->ij", a, a).dtype == torch.bfloat16
        with torch.autocast("cpu", enabled=False):
            assert torch.einsum("i,j->ij", a, a).dtype == torch.float32


def test_sincos_embeddings_stay_float32_under_gpu_autocast():
    days = torch.tensor([[19000, 19300, 19301, 19302]])
    valid = torch.ones_like(days, dtype=torch.bool)
    row, col = (
        torch.arange(64).reshape(8, 8).div(8, rounding_mode="floor"),
        torch.arange(64).reshape(8, 8) % 8,
    )
    want_dates, want_grid = date_embedding(days, valid, 128), grid_embedding(row, col, 128)
    with cuda_autocast():
        dates, grid = date_embedding(days, valid, 128), grid_embedding(row, col, 128)
    assert dates.dtype == grid.dtype == torch.float32
    torch.testing.assert_close(dates, want_dates, rtol=0, atol=0)
    torch.testing.assert_close(grid, want_grid, rtol=0, atol=0)
    assert not torch.equal(dates[0, 2], dates[0, 3])  # one day apart, 300 days after the first date


def test_channel_descriptors_under_gpu_autocast():
    desc = ChannelDescriptor(128)
    universe = build_encoder("test").tokenizer.universe  # SAR and optical channels
    channels = lookup_channels(universe, tuple(c.key for c in universe))
    want = desc(channels)
    with cuda_autocast():
        got = desc(channels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("attention", ["joint", "factorised"])
def test_mae_step_under_gpu_autocast(demo_batch, demo_bands, attention):
    torch.manual_seed(0)
    encoder = build_encoder("test", patch_size=8, attention=attention, temporal_depth=1)
    mae = build_mae(encoder, demo_bands, 64, 1, 4).train()
    with cuda_autocast():
        loss = mae(demo_batch, seeded(0)).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in mae.parameters() if p.grad is not None)
