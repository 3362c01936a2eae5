from __future__ import annotations

import pytest
import torch

from spectravlm.errors import ModelConfigError, UnknownBandError, UnknownSensorError
from spectravlm.stack import SensorSeries
from spectravlm.tokenizers import GroupedTokenizer, WavelengthTokenizer, prepare_optical
from spectravlm.tokenizers.base import PatchTokenizer
from spectravlm.tokenizers.sar import SARFrontEnd

SENSORS = ("sentinel2_l2a", "sentinel2_l1c", "sentinel1_grd")
BANDS = ("B02", "B03", "B04", "B05", "B08", "B11", "B12")


def _tokenizers(dim: int = 24, patch: int = 4) -> list[PatchTokenizer]:
    torch.manual_seed(0)
    return [
        WavelengthTokenizer(dim, patch, SENSORS, descriptor_dim=32, generator_heads=2).eval(),
        GroupedTokenizer(dim, patch, SENSORS, grouping="cube", descriptor_dim=32).eval(),
        GroupedTokenizer(dim, patch, SENSORS, grouping="band_group", descriptor_dim=32).eval(),
    ]


def _s2(
    b: int = 2, t: int = 2, h: int = 12, w: int = 16, bands: tuple[str, ...] = BANDS, seed: int = 0
) -> SensorSeries:
    g = torch.Generator().manual_seed(seed)
    return SensorSeries(
        "sentinel2_l2a",
        bands,
        torch.rand(b, t, len(bands), h, w, generator=g) * 4000,
        torch.tensor([[17000 + 5 * i for i in range(t)]] * b),
        torch.ones(b, t, h, w, dtype=torch.bool),
        units="reflectance",
        scale=1e-4,
    )


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_permuting_bands_leaves_tokens_unchanged(kind: int) -> None:
    tok = _tokenizers()[kind]
    s = _s2()
    perm = torch.tensor([4, 0, 6, 2, 1, 5, 3])
    p = SensorSeries(
        s.sensor,
        tuple(s.bands[i] for i in perm),
        s.values[:, :, perm],
        s.times,
        s.valid,
        units=s.units,
        scale=s.scale,
        offset=s.offset,
    )
    a, b = tok(prepare_optical(s)), tok(prepare_optical(p))
    torch.testing.assert_close(a.tokens, b.tokens, rtol=1e-5, atol=1e-6)
    assert a.groups == b.groups
    # permuting values WITHOUT the names does change the tokens: the test can fail
    wrong = SensorSeries(
        s.sensor,
        s.bands,
        s.values[:, :, perm],
        s.times,
        s.valid,
        units=s.units,
        scale=s.scale,
        offset=s.offset,
    )
    assert not torch.allclose(a.tokens, tok(prepare_optical(wrong)).tokens, atol=1e-4)


def test_shapes_grid_and_coordinates() -> None:
    wl, cube, group = _tokenizers()
    s = _s2(b=2, t=3, h=12, w=16)
    img = prepare_optical(s)
    out = wl(img)
    assert out.tokens.shape == (2, 3 * 1 * 3 * 4, 24) and out.grid.per_date == 12
    tokens, mask = out.per_date()
    assert tokens.shape == (2, 3, 12, 24) and mask.shape == (2, 3, 12)
    assert out.coords.row.max() == 2 and out.coords.col.max() == 3
    assert torch.equal(out.coords.time[:, :12], s.times[:, :1].expand(2, 12))
    assert out.coords.sensor.unique().tolist() == [0]
    c = cube(img)
    # B02,B03,B04,B05,B08,B11,B12 touch all five wavelength runs of S2 (B01-B03, ..., B12)
    assert c.grid.groups == 5 and c.tokens.shape[1] == 3 * 5 * 12
    nm = c.coords.spectral_nm[0, ::12][:5]
    assert torch.all(nm[1:] > nm[:-1])  # groups ordered by wavelength
    g = group(img)
    assert [len(x) for x in g.groups] == [4, 4, 2]  # 10 m VNIR, 20 m VNIR, 20 m SWIR


def test_invalid_pixels_never_reach_tokens_and_mask_follows_validity() -> None:
    s = _s2(b=1, t=2)
    valid = s.valid.clone()
    valid[0, 0, :4, :4] = False  # patch (0,0) of date 0 fully invalid
    valid[0, 1, :2, :4] = False  # patch (0,0) of date 1 half invalid
    s1 = SensorSeries(
        s.sensor, s.bands, s.values, s.times, valid, units=s.units, scale=s.scale, offset=s.offset
    )
    changed = s.values.clone()
    changed[0, 0, :, :4, :4] = 1e5
    changed[0, 1, :, :2, :4] = float("nan")
    s2 = SensorSeries(
        s.sensor, s.bands, changed, s.times, valid, units=s.units, scale=s.scale, offset=s.offset
    )
    for tok in _tokenizers():
        a, b = tok(prepare_optical(s1)), tok(prepare_optical(s2))
        torch.testing.assert_close(a.tokens, b.tokens)
        _, mask = a.per_date()
        per_group = mask.reshape(1, 2, a.grid.groups, 3, 4)
        assert not per_group[0, 0, :, 0, 0].any()  # 0 valid pixels
        assert per_group[0, 1, :, 0, 0].all()  # 50% >= min_valid_fraction 0.5
        assert per_group.sum() == 2 * a.grid.groups * 12 - a.grid.groups


def test_size_policies() -> None:
    s = _s2(h=10, w=13)
    img = prepare_optical(s)
    torch.manual_seed(0)
    pad = WavelengthTokenizer(8, 4, SENSORS, descriptor_dim=16, generator_heads=2)
    out = pad(img)
    assert (out.grid.rows, out.grid.cols) == (3, 4)
    _, mask = out.per_date()
    assert mask.reshape(2, 2, 3, 4)[:, :, :, 3].logical_not().all()  # 1 of 4 columns real: < 50%
    assert mask.reshape(2, 2, 3, 4)[:, :, 2, :3].all()  # 2 of 4 rows real: = 50%
    pad.remainder = "crop"
    assert pad(img).grid.rows == 2 and pad(img).grid.cols == 3
    pad.remainder = "error"
    with pytest.raises(ModelConfigError, match="not divisible"):
        pad(img)
    with pytest.raises(ModelConfigError, match="smaller than one"):
        pad(prepare_optical(_s2(h=3, w=8)))


def test_unknown_sensor_and_band() -> None:
    tok = WavelengthTokenizer(8, 4, ["sentinel2_l2a"], descriptor_dim=16, generator_heads=2)
    s1 = SensorSeries(
        "sentinel1_grd",
        ("VV",),
        torch.full((1, 1, 1, 8, 8), -10.0),
        torch.zeros(1, 1, dtype=torch.long),
        torch.ones(1, 1, 8, 8, dtype=torch.bool),
        units="dB",
    )
    with pytest.raises(UnknownSensorError, match="built for sensors"):
        tok(SARFrontEnd()(s1))
    with pytest.raises(UnknownBandError):
        _s2(bands=("B02", "B13"))


def test_sar_tokens_use_polarisation_and_orbit() -> None:
    db = torch.rand(1, 1, 2, 8, 8) * 10 - 20
    kw = dict(
        times=torch.zeros(1, 1, dtype=torch.long), valid=torch.ones(1, 1, 8, 8, dtype=torch.bool), units="dB"
    )
    asc = SARFrontEnd()(SensorSeries("sentinel1_grd", ("VV", "VH"), db, orbit="ascending", **kw))  # type: ignore[arg-type]
    desc = SARFrontEnd()(SensorSeries("sentinel1_grd", ("VV", "VH"), db, orbit="descending", **kw))  # type: ignore[arg-type]
    for tok in _tokenizers():
        a, d = tok(asc), tok(desc)
        assert torch.isnan(a.coords.spectral_nm).all()
        assert not torch.allclose(a.tokens, d.tokens)  # orbit direction is encoded
        torch.testing.assert_close(a.tokens - tok.orbit_embed.weight[1], d.tokens - tok.orbit_embed.weight[2])


def test_one_weight_set_serves_any_subset_with_gradients() -> None:
    tok = _tokenizers()[0].train()
    for bands in [("B04",), BANDS, ("B8A", "B11")]:
        out = tok(prepare_optical(_s2(bands=bands)))
        out.tokens.square().mean().backward()
    assert tok.generator.fc_weight.weight.grad is not None


def test_nan_at_a_valid_pixel_is_masked_not_propagated() -> None:
    s = _s2(b=1, t=1)
    nan = s.values.clone()
    nan[0, 0, 2, 5, 6] = float("nan")  # one band of one pixel, which the series calls valid
    zeroed_valid = s.valid.clone()
    zeroed_valid[0, 0, 5, 6] = False
    for tok in _tokenizers():
        out = tok(
            prepare_optical(
                SensorSeries(
                    s.sensor, s.bands, nan, s.times, s.valid, units=s.units, scale=s.scale, offset=s.offset
                )
            )
        )
        ref = tok(
            prepare_optical(
                SensorSeries(
                    s.sensor,
                    s.bands,
                    s.values,
                    s.times,
                    zeroed_valid,
                    units=s.units,
                    scale=s.scale,
                    offset=s.offset,
                )
            )
        )
        assert torch.isfinite(out.tokens).all()
        torch.testing.assert_close(out.tokens, ref.tokens)
        assert out.mask.all()  # 15 of 16 pixels valid: the token stays


def test_inference_kernel_cache_follows_parameter_updates() -> None:
    tok = _tokenizers()[0]
    img = prepare_optical(_s2(b=1, t=1))
    with torch.no_grad():
        a = tok(img).tokens
        assert len(tok._kernel_cache) == 1
        torch.testing.assert_close(tok(img).tokens, a)  # served from the cache
        tok.generator.fc_weight.weight.mul_(2.0)  # e.g. an optimiser step
        b = tok(img).tokens
    assert not torch.allclose(a, b)
    torch.testing.assert_close(tok(img).tokens, b)  # with autograd: no cache, same result


def test_pruned_generator_equals_torchgeo_generator() -> None:
    from spectravlm.tokenizers.wavelength import generate_kernels

    tok = _tokenizers()[0].train()
    desc = torch.randn(7, 32, requires_grad=True)
    w_ref, b_ref = tok.generator(desc)
    w, b = generate_kernels(tok.generator, desc)
    torch.testing.assert_close(w, w_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b, b_ref, rtol=1e-4, atol=1e-5)
    (g_ref,) = torch.autograd.grad(w_ref.sum() + b_ref.sum(), desc)
    (g,) = torch.autograd.grad(w.sum() + b.sum(), desc)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bands", [BANDS, ("B8A", "B03", "B12")])
def test_folded_normalisation_equals_normalised_input(bands: tuple[str, ...]) -> None:
    s = _s2(bands=bands)
    lazy, eager = prepare_optical(s), prepare_optical(s, lazy=False)
    assert lazy.gain is not None and eager.gain is None
    torch.testing.assert_close(lazy.normalised().values, eager.values)
    for tok in _tokenizers():
        torch.testing.assert_close(tok(lazy).tokens, tok(eager).tokens, rtol=1e-4, atol=1e-4)
