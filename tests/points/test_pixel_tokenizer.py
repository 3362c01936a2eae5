"""The pixel tokenizer gives a pixel the token its patch tokenizer gives a patch filled with that pixel."""

from __future__ import annotations

import pytest
import torch
from einops import repeat

from spectravlm.encoders.spectral import spectral_encoder_test
from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorSeries
from spectravlm.tokenizers.pixel import CovariateTokenizer, PixelTokenizer

S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _series(values: torch.Tensor, sensor: str, bands, units: str, valid=None) -> SensorSeries:
    b, t, _, h, w = values.shape
    return SensorSeries(
        sensor=sensor,
        bands=bands,
        values=values,
        times=torch.arange(1, t + 1).repeat(b, 1) * 30 + 18000,
        valid=torch.ones(b, t, h, w, dtype=torch.bool) if valid is None else valid,
        units=units,
        orbit="ascending" if sensor == "sentinel1_grd" else None,
    )


@pytest.mark.parametrize("kind", ["wavelength", "cube", "band_group"])
def test_a_pixel_is_a_homogeneous_patch(kind):
    torch.manual_seed(0)
    enc = spectral_encoder_test(tokenizer=kind, patch_size=4)
    pixel = PixelTokenizer(enc.tokenizer)
    x = torch.rand(2, 3, len(S2), 2, 3) * 0.4  # 2 samples, 3 dates, a 2x3 neighbourhood
    s1 = torch.randn(2, 3, 2, 2, 3) * 3 - 15
    for values, sensor, bands, units in (
        (x, "sentinel2_l2a", S2, "reflectance"),
        (s1, "sentinel1_grd", ("VV", "VH"), "dB"),
    ):
        series = _series(values, sensor, bands, units)
        tokens = pixel(enc.prepare(series))
        assert tokens.tokens.shape[:2] == (2, 3 * tokens.grid.groups * 2 * 3) and tokens.patch_size == 1
        # each pixel as its own 4x4 patch: the patch tokenizer's tokens of the blown-up image
        big = repeat(values, "b t c h w -> b t c (h p) (w q)", p=4, q=4)
        reference = enc.tokenizer(enc.prepare(_series(big, sensor, bands, units)))
        assert reference.grid == tokens.grid
        torch.testing.assert_close(tokens.tokens, reference.tokens, rtol=1e-4, atol=1e-5)
        assert torch.equal(tokens.coords.time, reference.coords.time)
        assert torch.equal(tokens.coords.row, reference.coords.row)


def test_invalid_pixels_are_masked_and_carry_nothing():
    enc = spectral_encoder_test(patch_size=8)
    pixel = PixelTokenizer(enc.tokenizer)
    x = torch.rand(1, 2, len(S2), 1, 1)
    valid = torch.tensor([[True, False]]).view(1, 2, 1, 1)
    a = pixel(enc.prepare(_series(x, "sentinel2_l2a", S2, "reflectance", valid)))
    x2 = x.clone()
    x2[:, 1] = float("nan")
    b = pixel(enc.prepare(_series(x2, "sentinel2_l2a", S2, "reflectance", valid)))
    assert a.mask.tolist() == [[True, False]]
    torch.testing.assert_close(a.tokens, b.tokens)
    assert torch.isfinite(b.tokens).all()
    # the pixel tokenizer holds no parameters of its own: the encoder's are fine-tuned through it
    assert not list(pixel.parameters())


def test_covariate_tokens():
    cov = CovariateTokenizer(16, static=["elevation", "slope"], dynamic=["temperature"])
    cov.set_statistics({"elevation": (100.0, 50.0), "slope": (5.0, 0.0)}, {"temperature": (10.0, 5.0)})
    assert cov.statistics()["static"]["slope"] == (5.0, 1.0)  # a zero spread is taken as 1
    static = torch.tensor([[150.0, float("nan")], [100.0, 7.0]])
    dynamic = torch.tensor([[[15.0], [float("nan")]], [[10.0], [5.0]]])
    s_tok, s_ok, d_tok, d_ok = cov(static, dynamic)
    assert s_ok.tolist() == [[True, False], [True, True]] and d_ok[..., 0].tolist() == [
        [True, False],
        [True, True],
    ]
    # elevation 150 with mean 100, std 50 -> z = 1 -> w + b
    torch.testing.assert_close(s_tok[0, 0], cov.static_weight[0] + cov.static_bias[0])
    torch.testing.assert_close(s_tok[1, 0], cov.static_bias[0])  # z = 0
    assert torch.equal(s_tok[0, 1], torch.zeros(16)) and torch.equal(d_tok[0, 1, 0], torch.zeros(16))
    state = cov.state_dict()
    assert state["static_stats"].tolist() == [[100.0, 5.0], [50.0, 1.0]]  # saved with the weights
    with pytest.raises(ModelConfigError, match=r"no statistics for covariates \['temperature'\]"):
        cov.set_statistics({"elevation": (0, 1), "slope": (0, 1)}, {})
    with pytest.raises(ModelConfigError, match="got 3 static"):
        cov(torch.zeros(2, 3), dynamic)
