"""Invariances every temporal encoder must hold: masking, date order, padding, absent sensors."""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from spectravlm.encoders.temporal import temporal_encoder
from spectravlm.encoders.temporal.factorised import FactorisedSpaceTimeEncoder, SpatialBlocks
from spectravlm.encoders.temporal.fusion import SensorFusion
from spectravlm.encoders.temporal.joint import JointSpaceTimeEncoder
from spectravlm.encoders.temporal.ltae import LTAE
from spectravlm.encoders.temporal.transformer import TemporalTransformer
from spectravlm.encoders.temporal.types import DatedTokens, TemporalOutput
from spectravlm.errors import ModelConfigError

D = 16
N = 6  # a 2x3 grid of locations

ENCODERS: dict[str, Callable[[], nn.Module]] = {
    "ltae": lambda: LTAE(in_dim=D, d_model=32, num_heads=4, d_k=4, mlp_dims=(24,)),
    "transformer": lambda: TemporalTransformer(dim=D, depth=2, num_heads=2),
    "joint": lambda: JointSpaceTimeEncoder(dim=D, depth=2, num_heads=2),
    "factorised": lambda: FactorisedSpaceTimeEncoder(
        SpatialBlocks(dim=D, depth=1, num_heads=2), TemporalTransformer(dim=D, depth=1, num_heads=2)
    ),
    "factorised_ltae": lambda: FactorisedSpaceTimeEncoder(
        SpatialBlocks(dim=D, depth=1, num_heads=2),
        LTAE(in_dim=D, d_model=16, num_heads=4, d_k=4, mlp_dims=(16,)),
    ),
}


def make(name: str) -> nn.Module:
    torch.manual_seed(0)
    return ENCODERS[name]().eval()


def series(b: int, t: int, seed: int, start: int = 18000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, t, N, D, generator=g)
    gaps = torch.randint(1, 40, (b, t), generator=g)
    times = start + gaps.cumsum(1)
    valid = torch.rand(b, t, N, generator=g) > 0.25  # cloudy / nodata locations
    valid[:, 0] = True
    return tokens, times, valid


def outputs_close(a: TemporalOutput, b: TemporalOutput, exact: bool = False) -> None:
    tol = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(a.locations, b.locations, **tol)
    torch.testing.assert_close(a.pooled, b.pooled, **tol)
    assert torch.equal(a.location_valid, b.location_valid)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_masked_dates_and_pixels_have_exactly_no_influence(name):
    enc = make(name)
    tokens, times, valid = series(2, 6, seed=1)
    valid[:, 3] = False  # a missing date
    ref = enc(tokens, times, valid)
    assert torch.isfinite(ref.locations).all() and ref.location_valid.all()
    changed = tokens.clone()
    changed[~valid] = torch.randn(int((~valid).sum()), D) * 100
    changed[0, 3, 0, 0] = float("nan")
    moved = times.clone()
    moved[:, 3] = 1  # also the missing date's day
    outputs_close(enc(changed, moved, valid), ref, exact=True)
    # and the same as if the missing date had never been there
    keep = [0, 1, 2, 4, 5]
    outputs_close(enc(tokens[:, keep], times[:, keep], valid[:, keep]), ref)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_valid_content_and_dates_do_matter(name):
    enc = make(name)
    tokens, times, valid = series(1, 5, seed=2)
    ref = enc(tokens, times, valid).pooled
    other = tokens.clone()
    # random, not constant: a constant shift of a token is removed by LayerNorm
    other[0, 2, valid[0, 2]] += torch.randn(int(valid[0, 2].sum()), D)
    assert not torch.allclose(enc(other, times, valid).pooled, ref, atol=1e-4)
    later = times.clone()
    later[0, 2:] += 90  # same order, same index: only the dates differ
    assert not torch.allclose(enc(tokens, later, valid).pooled, ref, atol=1e-4)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_shuffling_dates_with_their_times_leaves_output_unchanged(name):
    enc = make(name)
    tokens, times, valid = series(2, 7, seed=3)
    ref = enc(tokens, times, valid)
    perm = torch.tensor([4, 0, 6, 2, 1, 5, 3])
    out = enc(tokens[:, perm], times[:, perm], valid[:, perm])
    outputs_close(out, ref)
    if ref.sequence is not None:
        assert out.sequence is not None
        torch.testing.assert_close(out.sequence, ref.sequence[:, perm], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_padded_batch_of_lengths_3_7_12_equals_one_by_one(name):
    enc = make(name)
    parts = [series(1, t, seed=10 + t, start=17000 + 100 * t) for t in (3, 7, 12)]
    pad = 12
    tokens = torch.zeros(3, pad, N, D)
    times = torch.zeros(3, pad, dtype=torch.int64)
    valid = torch.zeros(3, pad, N, dtype=torch.bool)
    for i, (x, t, v) in enumerate(parts):
        n = x.shape[1]
        tokens[i, :n], times[i, :n], valid[i, :n] = x[0], t[0], v[0]
    batch = enc(tokens, times, valid)
    for i, (x, t, v) in enumerate(parts):
        one = enc(x, t, v)
        torch.testing.assert_close(batch.locations[i], one.locations[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batch.pooled[i], one.pooled[0], rtol=1e-4, atol=1e-5)
        if one.sequence is not None:
            assert batch.sequence is not None
            n = x.shape[1]
            torch.testing.assert_close(batch.sequence[i, :n], one.sequence[0], rtol=1e-4, atol=1e-5)
            assert (batch.sequence[i, n:] == 0).all()


@pytest.mark.parametrize("name", list(ENCODERS))
def test_locations_without_any_valid_date_are_zero_and_excluded(name):
    enc = make(name)
    tokens, times, valid = series(2, 4, seed=4)
    valid[0, :, 1] = False
    valid[1] = False  # a sample with nothing observed at all
    out = enc(tokens, times, valid)
    assert out.location_valid[0].tolist() == [True, False, True, True, True, True]
    assert not out.location_valid[1].any()
    assert (out.locations[0, 1] == 0).all() and (out.locations[1] == 0).all() and (out.pooled[1] == 0).all()
    assert torch.isfinite(out.locations).all()
    enc.train()
    loss = enc(tokens, times, valid).pooled.square().sum()
    loss.backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_outputs_have_the_documented_shapes():
    tokens, times, valid = series(2, 5, seed=5)
    out = make("ltae")(tokens, times, valid, return_attention=True)
    assert out.locations.shape == (2, N, 24) and out.pooled.shape == (2, 24) and out.sequence is None
    assert out.attention is not None and out.attention.shape == (2, N, 4, 5)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, N, 4))
    assert (out.attention.permute(0, 3, 1, 2)[~valid] == 0).all()  # invalid dates get no weight
    out = make("transformer")(tokens, times, valid)
    assert out.sequence is not None and out.sequence.shape == (2, 5, N, D)
    assert out.dense((2, 3)).shape == (2, D, 2, 3)
    with pytest.raises(ModelConfigError, match="no grid"):
        out.dense()


def test_joint_attention_refuses_large_inputs_and_bad_shapes():
    enc = JointSpaceTimeEncoder(dim=D, depth=1, num_heads=2, max_tokens=20)
    tokens, times, valid = series(1, 4, seed=6)
    with pytest.raises(ModelConfigError, match="max_tokens"):
        enc(tokens, times, valid)
    enc = make("transformer")
    with pytest.raises(ModelConfigError, match="width"):
        enc(tokens[..., :8], times, valid)
    with pytest.raises(ModelConfigError, match="valid must be bool"):
        enc(tokens, times, valid[:, :, :3])
    with pytest.raises(ModelConfigError, match="integer days"):
        enc(tokens, times.float(), valid)


# ---------------------------------------------------------------------------------------------------
# Sensor fusion: S1 and S2 on different dates
# ---------------------------------------------------------------------------------------------------


def fusion(name: str) -> SensorFusion:
    torch.manual_seed(0)
    return SensorFusion(ENCODERS[name](), sensors=("s2", "s1"), in_dims=(10, 2)).eval()


def sensor_inputs(seed: int) -> dict[str, DatedTokens]:
    g = torch.Generator().manual_seed(seed)
    s2_times = torch.tensor([[18000, 18010, 18025, 18040, 18090]])
    s1_times = torch.tensor([[18003, 18015, 18027, 18039, 18051, 18063, 18075]])  # its own 12-day orbit
    s2_valid = torch.rand(1, 5, N, generator=g) > 0.3
    return {
        "s2": DatedTokens(torch.rand(1, 5, N, 10, generator=g), s2_times, s2_valid, grid=(2, 3)),
        "s1": DatedTokens(
            torch.randn(1, 7, N, 2, generator=g), s1_times, torch.ones(1, 7, N, dtype=torch.bool)
        ),
    }


@pytest.mark.parametrize("name", ["ltae", "transformer", "joint", "factorised"])
def test_fusion_runs_s1_only_s2_only_and_both(name):
    model = fusion(name)
    inputs = sensor_inputs(seed=7)
    both = model(inputs)
    s2 = model({"s2": inputs["s2"]})
    s1 = model({"s1": inputs["s1"]})
    for out in (both, s2, s1):
        assert out.locations.shape == (1, N, model.out_dim) and torch.isfinite(out.locations).all()
    assert both.grid == (2, 3) and s1.grid is None
    assert not torch.allclose(both.pooled, s2.pooled, atol=1e-4)
    assert not torch.allclose(both.pooled, s1.pooled, atol=1e-4)
    # a sensor present with nothing valid is the same as an absent sensor
    blind = dict(inputs)
    s1_in = inputs["s1"]
    blind["s1"] = DatedTokens(s1_in.tokens, s1_in.times, torch.zeros_like(s1_in.valid))
    outputs_close(model(blind), s2)
    # the order of the groups' dates within each group does not matter
    perm = torch.tensor([6, 2, 0, 4, 1, 3, 5])
    shuffled = dict(inputs)
    shuffled["s1"] = DatedTokens(s1_in.tokens[:, perm], s1_in.times[:, perm], s1_in.valid[:, perm])
    outputs_close(model(shuffled), both)


def test_fusion_tells_sensors_apart_by_embedding():
    model = fusion("transformer")
    model.in_proj = None  # feed tokens of the model width directly
    tokens, times, valid = series(1, 4, seed=8)
    item = DatedTokens(tokens, times, valid)
    a = model({"s2": item}).pooled
    b = model({"s1": item}).pooled  # same tokens, same dates, other sensor
    assert not torch.allclose(a, b, atol=1e-4)


def test_fusion_rejects_bad_groups():
    model = fusion("ltae")
    inputs = sensor_inputs(seed=9)
    with pytest.raises(ModelConfigError, match="unknown"):
        model({"s3": inputs["s2"]})
    with pytest.raises(ModelConfigError, match="at least one"):
        model({})
    short = inputs["s1"]
    with pytest.raises(ModelConfigError, match=r"\(B, N\)"):
        cut = DatedTokens(short.tokens[:, :, :3], short.times, short.valid[:, :, :3])
        model({"s2": inputs["s2"], "s1": cut})
    with pytest.raises(ModelConfigError, match="in_dims"):
        SensorFusion(make("ltae"), sensors=("s2", "s1"), in_dims=(10,))


@pytest.mark.parametrize("kind", ["ltae", "transformer", "factorised", "joint"])
def test_factory_builds_each_kind_with_width_in_and_out(kind):
    enc = temporal_encoder(kind, dim=D, depth=1, num_heads=2, spatial_depth=1).eval()
    tokens, times, valid = series(2, 3, seed=11)
    out = enc(tokens, times, valid)
    assert out.locations.shape == (2, N, D) and enc.out_dim == D


def test_factory_rejects_unknown_kind():
    with pytest.raises(ModelConfigError, match="unknown temporal encoder kind 'lstm'"):
        temporal_encoder("lstm", dim=D)  # type: ignore[arg-type]


def test_ltae_on_a_single_real_ndvi_channel_keeps_the_signal(eolearn_dir):
    """One channel per date (NDVI of the real eo-learn L1C scenes): a per-token LayerNorm would erase it."""
    import numpy as np

    from spectravlm.encoders.temporal.dates import days_since_epoch

    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")  # (5, 101, 100, 13) TOA reflectance
    nir, red = scenes[..., 7], scenes[..., 3]  # B08, B04
    ndvi = torch.from_numpy((nir - red) / (nir + red + 1e-6)).float()  # (5, 101, 100)
    order = [4, 1, 0, 3, 2]  # frames are dates 2015-08-20, 07-31, 09-09, 08-30, 07-11: sort by date
    dates = ["2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11"]
    tokens = ndvi[order].reshape(1, 5, -1, 1)  # [B=1, T=5, N=10100, C=1]
    assert 0.05 < float(ndvi.min()) and float(ndvi.max()) > 0.8  # real spread of values
    times = days_since_epoch([dates[i] for i in order]).unsqueeze(0)
    valid = torch.ones(1, 5, tokens.shape[2], dtype=torch.bool)
    torch.manual_seed(0)
    ltae = LTAE(in_dim=1, d_model=16, num_heads=4, d_k=4, mlp_dims=(16,)).eval()
    with torch.no_grad():
        out = ltae(tokens, times, valid).locations[0]  # [N, 16]
    spread = out.std(dim=0).mean()
    # a LayerNorm over the single channel gives exactly 0 here (every location the same); measured 0.0135
    assert spread > 1e-3, "every location came out the same: the single channel was normalised away"
    # water (low NDVI) and vegetation (high NDVI) locations get different embeddings
    mean_ndvi = tokens[0, :, :, 0].mean(0)
    low, high = int(mean_ndvi.argmin()), int(mean_ndvi.argmax())
    assert not torch.allclose(out[low], out[high], atol=1e-3)
