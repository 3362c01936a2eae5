from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spectravlm.encoders.spectral import (
    SpectralEncoder,
    SpectralEncoderConfig,
    build_encoder,
    spectral_encoder_test,
    spectral_encoder_tiny,
)
from spectravlm.errors import ModelConfigError, UnknownBandError
from spectravlm.stack import SensorSeries, SensorStack

BIOMASSTERS_S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
EOLEARN_L1C = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


def _biomassters_s2(root: Path, months: tuple[int, ...] = (6, 7)) -> SensorSeries:
    rasterio = pytest.importorskip("rasterio")
    frames, valid = [], []
    for m in months:
        with rasterio.open(root / f"0060c0a5_S2_{m:02d}.tif") as src:
            arr = src.read().astype(np.float32)  # 10 bands + cloud probability
        frames.append(arr[:10])
        valid.append(arr[10] < 50)  # cloud probability (%) as the validity mask
    days = torch.tensor([[17410 + 30 * i for i in range(len(months))]])
    return SensorSeries(
        "sentinel2_l2a",
        BIOMASSTERS_S2,
        torch.from_numpy(np.stack(frames))[None],
        days,
        torch.from_numpy(np.stack(valid))[None],
        units="reflectance",
        scale=1e-4,  # L2A digital numbers
    )


def _eolearn(root: Path) -> SensorSeries:
    scenes = np.load(root / "REFERENCE_SCENES.npy")  # (5, 101, 100, 13) TOA reflectance 0-1
    values = torch.from_numpy(scenes).permute(0, 3, 1, 2)[None, :2].float()
    return SensorSeries(
        "sentinel2_l1c",
        EOLEARN_L1C,
        values,
        torch.tensor([[16667, 16647]]),
        torch.ones(1, 2, 101, 100, dtype=torch.bool),
        units="reflectance",
    )


@pytest.fixture(
    scope="module",
    params=[
        ("wavelength", "joint"),
        ("cube", "joint"),
        ("band_group", "joint"),
        ("wavelength", "factorised"),
    ],
    ids=lambda p: "-".join(p),
)
def encoder(request: pytest.FixtureRequest) -> SpectralEncoder:
    torch.manual_seed(0)
    tokenizer, attention = request.param
    return spectral_encoder_test(tokenizer=tokenizer, attention=attention).eval()


def test_any_band_subset_on_real_data_with_same_weights(
    encoder: SpectralEncoder, biomassters_dir: Path, eolearn_dir: Path
) -> None:
    bm = _biomassters_s2(biomassters_dir)
    eo = _eolearn(eolearn_dir)
    with torch.no_grad():
        out_bm = encoder.forward_features(bm)
        out_eo = encoder.forward_features(eo)
        # and the 10 BioMassters bands cut out of the 13 eo-learn bands
        idx = [EOLEARN_L1C.index(b) for b in BIOMASSTERS_S2]
        eo10 = SensorSeries(
            eo.sensor, BIOMASSTERS_S2, eo.values[:, :, idx], eo.times, eo.valid, units="reflectance"
        )
        out_eo10 = encoder.forward_features(eo10)
    assert out_bm.tokens.shape[1] == 2 * out_bm.grids["sentinel2_l2a"].groups * 32 * 32
    # 101x100 px padded to 104x104 (policy "pad"): 13x13 patches; the last row/column: 5/8 and 4/8 real
    assert (out_eo.grids["sentinel2_l1c"].rows, out_eo.grids["sentinel2_l1c"].cols) == (13, 13)
    for out in (out_bm, out_eo, out_eo10):
        assert torch.isfinite(out.tokens[out.mask]).all()
    # only the bottom-right corner patch of each date (5x4 of 8x8 px real) is below the 50% policy
    assert (~out_eo.mask).sum() == 2 * out_eo.grids["sentinel2_l1c"].groups
    assert not out_eo.mask.reshape(2, -1, 13, 13)[:, :, 12, 12].any()
    cloudy = 1 - out_bm.mask.float().mean()
    assert 0 <= cloudy < 1
    # B01/B09/B10 carry information: 13 bands and 10 bands give different features
    assert not torch.allclose(out_eo.pooled(), out_eo10.pooled(), atol=1e-4)


def test_permuting_real_bands_leaves_output_unchanged(
    encoder: SpectralEncoder, biomassters_dir: Path
) -> None:
    bm = _biomassters_s2(biomassters_dir, months=(7,))
    perm = [9, 3, 0, 7, 5, 1, 8, 2, 6, 4]
    shuffled = SensorSeries(
        bm.sensor,
        tuple(bm.bands[i] for i in perm),
        bm.values[:, :, perm],
        bm.times,
        bm.valid,
        units=bm.units,
        scale=bm.scale,
        offset=bm.offset,
    )
    with torch.no_grad():
        a = encoder.forward_features(bm)
        b = encoder.forward_features(shuffled)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(a.mask, b.mask)


def _synthetic(t: int = 3, seed: int = 0) -> SensorStack:
    g = torch.Generator().manual_seed(seed)
    s2 = SensorSeries(
        "sentinel2_l2a",
        ("B02", "B03", "B04", "B08", "B11"),
        torch.rand(2, t, 5, 24, 24, generator=g) * 4000,
        torch.tensor([[17000 + 10 * i for i in range(t)]] * 2),
        torch.ones(2, t, 24, 24, dtype=torch.bool),
        units="reflectance",
        scale=1e-4,
    )
    s1 = SensorSeries(
        "sentinel1_grd",
        ("VV", "VH"),
        torch.rand(2, 2, 2, 24, 24, generator=g) * 10 - 22,
        torch.tensor([[17004, 17016]] * 2),
        torch.ones(2, 2, 24, 24, dtype=torch.bool),
        units="dB",
        orbit="ascending",
    )
    return SensorStack({"s2": s2, "s1": s1})


def test_masked_tokens_have_no_influence(encoder: SpectralEncoder) -> None:
    stack = _synthetic()
    s2 = stack["s2"]
    valid = s2.valid.clone()
    valid[0, 1] = False  # a whole date missing for sample 0
    valid[1, 0, :8, :8] = False  # one patch missing for sample 1
    changed = s2.values.clone()
    changed[0, 1] = torch.rand_like(changed[0, 1]) * 9000
    changed[1, 0, :, :8, :8] = float("nan")
    a_stack = SensorStack(
        {
            "s2": SensorSeries(
                s2.sensor,
                s2.bands,
                s2.values,
                s2.times,
                valid,
                units=s2.units,
                scale=s2.scale,
                offset=s2.offset,
            ),
            "s1": stack["s1"],
        }
    )
    b_stack = SensorStack(
        {
            "s2": SensorSeries(
                s2.sensor,
                s2.bands,
                changed,
                s2.times,
                valid,
                units=s2.units,
                scale=s2.scale,
                offset=s2.offset,
            ),
            "s1": stack["s1"],
        }
    )
    with torch.no_grad():
        a, b = encoder.forward_features(a_stack), encoder.forward_features(b_stack)
        plain = encoder.forward_features(stack)
    assert (~a.mask).sum() == a.grids["s2"].groups * (9 + 1)
    torch.testing.assert_close(a.tokens, b.tokens)  # invalid tokens come out as zeros in both
    da, db = a.per_date("s2"), b.per_date("s2")
    torch.testing.assert_close(da[0], db[0])
    assert not da[1][0, 1].any() and (da[0][0, 1] == 0).all()
    # the masked content would have mattered: without the mask the outputs differ
    assert not torch.allclose(plain.tokens[a.mask], a.tokens[a.mask], atol=1e-4)


def test_missing_date_equals_absent_date(encoder: SpectralEncoder) -> None:
    stack = _synthetic(t=3)
    s2 = stack["s2"]
    valid = s2.valid.clone()
    valid[:, 2] = False
    padded = SensorStack(
        {
            "s2": SensorSeries(
                s2.sensor,
                s2.bands,
                s2.values,
                s2.times,
                valid,
                units=s2.units,
                scale=s2.scale,
                offset=s2.offset,
            )
        }
    )
    short = SensorStack(
        {
            "s2": SensorSeries(
                s2.sensor,
                s2.bands,
                s2.values[:, :2],
                s2.times[:, :2],
                s2.valid[:, :2],
                units=s2.units,
                scale=s2.scale,
                offset=s2.offset,
            )
        }
    )
    with torch.no_grad():
        a, b = encoder.forward_features(padded), encoder.forward_features(short)
    n = b.tokens.shape[1]
    torch.testing.assert_close(a.tokens[:, :n], b.tokens, rtol=1e-4, atol=1e-5)


def test_output_views(encoder: SpectralEncoder) -> None:
    stack = _synthetic(t=2)
    s2 = stack["s2"]
    valid = s2.valid.clone()
    valid[0, :, :8, :8] = False  # patch (0, 0) of sample 0 is missing on every date
    stack = SensorStack({"s2": replace(s2, valid=valid), "s1": stack["s1"]})
    with torch.no_grad():
        out = encoder.forward_features(stack)
    g = out.grids["s2"].groups
    tokens, mask = out.per_date("s2")
    assert tokens.shape == (2, 2, g * 9, 32) and mask.shape == (2, 2, g * 9)
    loc = out.locations()
    assert loc.tokens.shape == (2, 9, 32) and loc.grid == (3, 3) and loc.patch_size == 8
    assert loc.image().shape == (2, 32, 3, 3)
    assert loc.valid[0, 0] and loc.valid.all()  # S1 still sees patch (0, 0) of sample 0
    # the location's embedding is the mean of its valid tokens over groups, dates and sensors
    seqs, times, seq_valid = out.location_sequences()
    assert seqs.shape[1] == 2 * g + 2 and times.shape == (2, 2 * g + 2)
    w = seq_valid[0, :, 4].float().unsqueeze(-1)
    torch.testing.assert_close(loc.tokens[0, 4], (seqs[0, :, 4] * w).sum(0) / w.sum())
    assert not seq_valid[0, : 2 * g, 0].any() and seq_valid[0, 2 * g :, 0].all()
    torch.testing.assert_close(
        out.pooled(), (out.tokens * out.mask.unsqueeze(-1)).sum(1) / out.mask.sum(1, keepdim=True)
    )


@pytest.mark.parametrize("bands", [("VV",), ("VV", "VH"), ("VV", "VH", "HH", "HV")])
def test_sar_polarisation_sets(bands: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    enc = spectral_encoder_test(sensors=("sentinel1_grd",)).eval()
    db = torch.rand(1, 1, len(bands), 16, 16) * 10 - 22
    s = SensorSeries(
        "sentinel1_grd",
        bands,
        db,
        torch.zeros(1, 1, dtype=torch.long),
        torch.ones(1, 1, 16, 16, dtype=torch.bool),
        units="dB",
    )
    out = enc.forward_features(s)
    assert out.tokens.shape == (1, 4, 32) and torch.isfinite(out.tokens).all()
    with pytest.raises(ModelConfigError, match="looks like linear"):
        enc(SensorSeries("sentinel1_grd", bands, -db / 100, s.times, s.valid, units="dB"))
    with pytest.raises(ModelConfigError, match=r"sensor group 's1' \(sentinel1_grd\): values in 'DN'"):
        enc(SensorStack({"s1": replace(s, values=db.abs() * 100, units="DN")}))


def test_gradient_checkpointing_gives_same_gradients() -> None:
    stack = _synthetic(t=1)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        enc = spectral_encoder_test(gradient_checkpointing=ckpt).train()
        enc(stack).square().sum().backward()
        grads.append(enc.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = spectral_encoder_test(tokenizer="cube").eval()
    stack = _synthetic(t=1)
    path = enc.save_pretrained(tmp_path / "enc")
    doc = json.loads((path / "config.json").read_text())
    s2 = next(s for s in doc["sensors"] if s["name"] == "sentinel2_l2a")
    assert [b["name"] for b in s2["bands"]][:3] == ["B01", "B02", "B03"]
    assert s2["bands"][3]["wavelength_nm"] == 664.6
    loaded = SpectralEncoder.from_pretrained(path).eval()
    assert loaded.config == enc.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(stack), enc(stack), rtol=0, atol=0)
    with pytest.raises(ModelConfigError, match="missing"):
        SpectralEncoder.from_pretrained(tmp_path / "nowhere")
    other = SpectralEncoder(
        SpectralEncoderConfig(dim=32, depth=1, num_heads=2, patch_size=8, descriptor_dim=32)
    )
    other.save_pretrained(tmp_path / "other")
    cfg = json.loads((tmp_path / "other" / "config.json").read_text())
    cfg["config"]["depth"] = 2
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError, match="does not fit"):
        SpectralEncoder.from_pretrained(tmp_path / "other")


def test_bad_inputs() -> None:
    enc = spectral_encoder_test(sensors=("sentinel2_l2a",))
    s1 = _synthetic()["s1"]
    with pytest.raises(ModelConfigError, match="accepts sensors"):
        enc(s1)
    with pytest.raises(UnknownBandError):
        SensorSeries(
            "sentinel2_l2a",
            ("B02", "CLP"),
            torch.zeros(1, 1, 2, 8, 8),
            torch.zeros(1, 1),
            torch.ones(1, 1, 8, 8),
            units="reflectance",
        )
    with pytest.raises(ModelConfigError, match="divisible"):
        SpectralEncoderConfig(dim=30, num_heads=4)


def test_named_sizes() -> None:
    tiny = spectral_encoder_tiny(tokenizer="cube")
    assert tiny.dim == 192 and len(tiny.blocks) == 12 and tiny.blocks[0].attn.num_heads == 3
    assert tiny.config.tokenizer == "cube" and tiny.config.patch_size == 16
    fact = build_encoder("tiny", attention="factorised", temporal_depth=4)
    assert len(fact.blocks) == 8 and len(fact.temporal_blocks) == 4  # the same 12 blocks, split
    with pytest.raises(ModelConfigError, match="temporal_depth=12 must be between 1 and 11"):
        build_encoder("tiny", attention="factorised", temporal_depth=12)
