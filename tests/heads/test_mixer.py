"""Mixer heads: shapes at input resolution, the fixed patch grid, missing locations, the pixel skip."""

from __future__ import annotations

import pytest
import torch

from helpers import seeded
from spectravlm.encoders.outputs import LocationTokens
from spectravlm.encoders.spectral import spectral_encoder_test
from spectravlm.errors import ModelConfigError
from spectravlm.heads.mixer import (
    DenseMixerHead,
    MixerStack,
    ScalarMixerHead,
    pixel_input_features,
    pixel_inputs,
)


def _locations(b=2, h=4, w=4, d=32, p=8, valid=None) -> LocationTokens:
    tokens = torch.randn(b, h * w, d, generator=seeded())
    ok = torch.ones(b, h * w, dtype=torch.bool) if valid is None else valid
    return LocationTokens(tokens * ok.unsqueeze(-1), ok, (h, w), p)


def test_dense_head_maps_every_pixel_with_its_own_weights():
    torch.manual_seed(0)
    head = DenseMixerHead(32, (4, 4), 8, outputs=2, dim=16, depth=2)
    out = head(_locations())
    assert out.shape == (2, 2, 32, 32)
    # the shuffle is learned per pixel of a patch: the 64 pixels of a patch differ (no nearest/bilinear copy)
    assert out[0, 0, :8, :8].flatten().unique().numel() == 64
    # token mixing: changing one location changes the outputs of the other patches too
    loc = _locations()
    moved = LocationTokens(loc.tokens.clone(), loc.valid, loc.grid, loc.patch_size)
    moved.tokens[0, 0] += 1.0
    delta = (head(moved) - head(loc))[0, 0]
    assert delta[16:, 16:].abs().max() > 0  # a patch far from location 0


def test_scalar_head_pools_valid_locations_only():
    torch.manual_seed(0)
    head = ScalarMixerHead(32, (4, 4), outputs=1, dim=16, depth=1)
    assert head(_locations()).shape == (2, 1)
    valid = torch.ones(2, 16, dtype=torch.bool)
    valid[:, 8:] = False
    loc = _locations(valid=valid)
    none = _locations(valid=torch.zeros(2, 16, dtype=torch.bool))
    assert torch.isfinite(head(loc)).all() and torch.isfinite(head(none)).all()


def test_missing_locations_enter_as_a_learned_embedding():
    stack = MixerStack(32, (2, 2), 16, depth=0)
    loc = _locations(h=2, w=2, valid=torch.tensor([[True, False, True, True]] * 2))
    out = stack(loc)
    expected = stack.norm(stack.missing.expand(16).unsqueeze(0))
    torch.testing.assert_close(out[0, 1], expected[0])
    assert "missing" in stack.no_weight_decay()


def test_a_grid_other_than_the_heads_is_refused_by_name():
    head = DenseMixerHead(32, (4, 4), 8, dim=16)
    with pytest.raises(ModelConfigError, match=r"built for a 4x4 patch grid \(16 tokens.*gave a 3x3 grid"):
        head(_locations(h=3, w=3))
    with pytest.raises(ModelConfigError, match="upsamples 8 px patches"):
        head(_locations(p=4))


def test_pixel_skip_takes_each_pixels_time_series(demo_batch):
    enc = spectral_encoder_test()
    bands = {g: demo_batch[g].bands for g in demo_batch}
    x = pixel_inputs(demo_batch, enc.statistics, list(bands), dates=12)
    b, _, _, h, w = demo_batch["s2"].values.shape
    assert x.shape == (b, pixel_input_features(bands, 12), h, w) and torch.isfinite(x).all()
    # the first S2 values are the normalised reflectance of date 0 (zero where invalid)
    s2 = demo_batch["s2"]
    mean, std = enc.statistics.lookup(s2.sensor, s2.bands)
    phys = s2.values[:, 0].float() * s2.scale + s2.offset
    want = torch.where(s2.valid[:, 0:1], (phys - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1), 0.0)
    torch.testing.assert_close(x[:, : len(s2.bands)], want)
    head = DenseMixerHead(32, (4, 4), 8, outputs=1, dim=16, pixel_features=x.shape[1])
    assert head(_locations(b=b), x).shape == (b, 1, h, w)
    with pytest.raises(ModelConfigError, match="pixel skip takes"):
        head(_locations(b=b))


def test_gradients_reach_every_parameter_and_skip_missing_locations():
    torch.manual_seed(0)
    head = DenseMixerHead(32, (4, 4), 8, outputs=2, dim=16, depth=2, pixel_features=5, pixel_dim=4)
    valid = torch.ones(2, 16, dtype=torch.bool)
    valid[:, :3] = False
    loc = _locations(valid=valid)
    tokens = loc.tokens.clone().requires_grad_(True)
    pixels = torch.randn(2, 5, 32, 32, requires_grad=True)
    out = head(LocationTokens(tokens, loc.valid, loc.grid, loc.patch_size), pixels)
    assert out.shape == (2, 2, 32, 32)
    out.square().mean().backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert tokens.grad is not None and pixels.grad is not None
    assert tokens.grad[:, :3].abs().max() == 0  # a missing location's token never reaches the output
    assert tokens.grad[:, 3:].abs().amax(dim=-1).min() > 0 and pixels.grad.abs().amax(dim=1).min() > 0
