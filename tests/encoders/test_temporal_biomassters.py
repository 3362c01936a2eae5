"""The temporal encoders on the real BioMassters chip: 12 months of S2 (with clouds) and S1 asc/desc."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from spectravlm.data.ingest.biomassters import S1_NODATA, S2_BANDS, month_dates
from spectravlm.encoders.spectral import SpectralEncoder, spectral_encoder_test
from spectravlm.encoders.temporal.dates import days_since_epoch
from spectravlm.encoders.temporal.fusion import SensorFusion
from spectravlm.encoders.temporal.ltae import LTAE
from spectravlm.encoders.temporal.transformer import TemporalTransformer
from spectravlm.encoders.temporal.types import DatedTokens
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack

WINDOW = Window(col_off=64, row_off=64, width=16, height=16)  # partly cloudy in Dec, fully in Aug
RAW_WINDOW = Window(col_off=64, row_off=64, width=32, height=32)  # 4 x 4 patches of 8 px
CLOUD_THRESHOLD = 50  # cloud probability (%) at or above which an S2 pixel is masked


def _read(path: Path, window: Window = WINDOW) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(window=window)


def _normalise(values: np.ndarray, sensor: str, bands: tuple[str, ...], scale: float = 1.0) -> torch.Tensor:
    """Physical values (``stored * scale``) normalised with the catalogue's default statistics."""
    stats = [get_sensor(sensor).band(b).stats for b in bands]
    mean = np.array([s.mean for s in stats], dtype=np.float32)[:, None, None]
    std = np.array([s.std for s in stats], dtype=np.float32)[:, None, None]
    return torch.from_numpy((values.astype(np.float32) * scale - mean) / std)


def _pixels(values: torch.Tensor, times: torch.Tensor, valid: torch.Tensor) -> DatedTokens:
    """Every pixel of ``values [1,T,C,H,W]`` as a location with its bands as features."""
    h, w = values.shape[-2:]
    return DatedTokens(
        tokens=values.permute(0, 1, 3, 4, 2).reshape(1, values.shape[1], h * w, values.shape[2]),
        times=times,
        valid=valid.flatten(2),
        grid=(int(h), int(w)),
    )


@pytest.fixture(scope="module")
def chip(biomassters_dir: Path) -> dict[str, DatedTokens]:
    """Pixel time series of a 16 x 16 px window of chip 0060c0a5, normalised, with cloud and nodata masks."""
    chip_id = biomassters_dir.name
    times = days_since_epoch(list(month_dates(2020))).unsqueeze(0)  # nominal: 15th of each month
    s2, s2_valid, s1, s1_valid = [], [], [], []
    for m in range(12):
        raw2 = _read(biomassters_dir / f"{chip_id}_S2_{m:02d}.tif")
        s2.append(_normalise(raw2[:10], "s2", S2_BANDS, scale=1e-4))  # L2A digital numbers
        s2_valid.append(torch.from_numpy((raw2[10] < CLOUD_THRESHOLD) & (raw2[:10] > 0).all(0)))
        raw1 = _read(biomassters_dir / f"{chip_id}_S1_{m:02d}.tif")
        s1.append(_normalise(raw1, "s1", ("VV", "VH", "VV", "VH")))
        s1_valid.append(torch.from_numpy(np.isfinite(raw1) & (raw1 != S1_NODATA)))
    s2_v, s1_v = torch.stack(s2)[None], torch.stack(s1)[None]  # [1,12,C,16,16]
    s1_ok = torch.stack(s1_valid)[None]  # [1,12,4,16,16]
    return {
        "s2": _pixels(s2_v, times, torch.stack(s2_valid)[None]),
        "s1_asc": _pixels(s1_v[:, :, :2], times, s1_ok[:, :, :2].all(2)),
        "s1_desc": _pixels(s1_v[:, :, 2:], times, s1_ok[:, :, 2:].all(2)),
    }


@pytest.fixture(scope="module")
def agb(biomassters_dir: Path) -> torch.Tensor:
    return torch.from_numpy(_read(biomassters_dir / f"{biomassters_dir.name}_agbm.tif")[0].astype(np.float32))


def _fusion(kind: str) -> SensorFusion:
    torch.manual_seed(0)
    encoder = (
        LTAE(in_dim=32, d_model=32, num_heads=4, d_k=4, mlp_dims=(32,))
        if kind == "ltae"
        else TemporalTransformer(dim=32, depth=1, num_heads=2)
    )
    return SensorFusion(encoder, sensors=("s2", "s1_asc", "s1_desc"), in_dims=(10, 2, 2)).eval()


def test_chip_has_real_clouds(chip):
    cloudy = 1 - chip["s2"].valid.float().mean(dim=(0, 2))  # per month
    assert 0.1 < cloudy[3] < 0.9  # December: partly cloudy
    assert cloudy[11] == 1.0  # August: fully clouded in this window
    assert chip["s1_asc"].valid.all() and chip["s1_desc"].valid.all()


@pytest.mark.parametrize("kind", ["ltae", "transformer"])
@pytest.mark.parametrize("groups", [("s2",), ("s1_asc", "s1_desc"), ("s2", "s1_asc", "s1_desc")])
def test_s1_only_s2_only_and_s1_s2_on_the_real_chip(kind, groups, chip):
    model = _fusion(kind)
    out = model({g: chip[g] for g in groups})
    assert out.locations.shape == (1, 256, 32) and out.pooled.shape == (1, 32)
    assert out.location_valid.all() and torch.isfinite(out.locations).all()
    assert out.dense().shape == (1, 32, 16, 16)


@pytest.mark.parametrize("kind", ["ltae", "transformer"])
def test_cloudy_pixels_and_the_clouded_month_contribute_nothing(kind, chip):
    model = _fusion(kind)
    ref = model(chip)
    s2 = chip["s2"]
    assert not s2.valid.all()
    noisy = s2.tokens.clone()
    hidden = ~s2.valid.unsqueeze(-1).expand_as(noisy)
    noisy[hidden] = torch.randn(int(hidden.sum())) * 50  # anything under the clouds
    out = model({**chip, "s2": DatedTokens(noisy, s2.times, s2.valid, s2.grid)})
    torch.testing.assert_close(out.locations, ref.locations, rtol=0, atol=0)
    # dropping the fully clouded August from the S2 series gives the same result
    keep = list(range(11))
    short = DatedTokens(s2.tokens[:, keep], s2.times[:, keep], s2.valid[:, keep], s2.grid)
    out = model({**chip, "s2": short})
    torch.testing.assert_close(out.locations, ref.locations, rtol=1e-4, atol=1e-5)


def _months(item: DatedTokens, months: list[int], length: int = 12) -> DatedTokens:
    """The given months, padded to ``length`` dates with invalid entries (as collate_stacks pads)."""
    pad = length - len(months)
    tokens = torch.cat([item.tokens[:, months], item.tokens.new_zeros(1, pad, *item.tokens.shape[2:])], 1)
    times = torch.cat([item.times[:, months], item.times.new_zeros(1, pad)], 1)
    valid = torch.cat([item.valid[:, months], item.valid.new_zeros(1, pad, item.valid.shape[2])], 1)
    return DatedTokens(tokens, times, valid, item.grid)


@pytest.mark.parametrize("kind", ["ltae", "transformer"])
def test_real_sequences_of_3_7_12_months_collated_equal_one_by_one(kind, chip):
    """Samples with 3, 7 and 12 S2 months (and 12, 3, 7 S1 months), padded by collate_stacks."""
    model = _fusion(kind)
    s2_months = [[0, 4, 9], [1, 2, 3, 5, 7, 8, 11], list(range(12))]
    s1_months = [list(range(12)), [2, 6, 10], [0, 1, 3, 5, 6, 8, 9]]
    samples = [
        {
            "s2": _months(chip["s2"], a),
            "s1_asc": _months(chip["s1_asc"], b),
            "s1_desc": _months(chip["s1_desc"], b),
        }
        for a, b in zip(s2_months, s1_months, strict=True)
    ]
    batch = {
        g: DatedTokens(
            torch.cat([s[g].tokens for s in samples]),
            torch.cat([s[g].times for s in samples]),
            torch.cat([s[g].valid for s in samples]),
            (16, 16),
        )
        for g in samples[0]
    }
    assert not batch["s2"].valid[0, 3:].any()
    out = model(batch)
    for i, sample in enumerate(samples):
        one = model({g: DatedTokens(d.tokens, d.times, d.valid, d.grid) for g, d in sample.items()})
        torch.testing.assert_close(out.locations[i], one.locations[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.pooled[i], one.pooled[0], rtol=1e-4, atol=1e-5)


def test_fused_encoder_learns_per_pixel_agb_on_the_real_chip(chip, agb):
    """A few optimiser steps through the masked fusion reduce the per-pixel AGB error (gradients flow)."""
    model = _fusion("ltae").train()
    head = torch.nn.Linear(32, 1)
    agb = agb.flatten()  # t/ha
    target = (agb - agb.mean()) / agb.std()
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(40):
        pred = head(model(chip).locations[0]).squeeze(-1)
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------------------------------
# The sensor-native encoder with factorised attention: tokenizer + blocks per date, then per location
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_chip(biomassters_dir: Path) -> SensorStack:
    """A 32 x 32 px window in store units (S2 reflectance x 1e4, S1 dB with -9999 nodata)."""
    chip_id = biomassters_dir.name
    times = days_since_epoch(list(month_dates(2020))).unsqueeze(0)
    s2, s2_valid, s1 = [], [], []
    for m in range(12):
        raw2 = _read(biomassters_dir / f"{chip_id}_S2_{m:02d}.tif", RAW_WINDOW).astype(np.float32)
        s2.append(raw2[:10])
        s2_valid.append((raw2[10] < CLOUD_THRESHOLD) & (raw2[:10] > 0).all(0))
        s1.append(_read(biomassters_dir / f"{chip_id}_S1_{m:02d}.tif", RAW_WINDOW))
    s2_v = torch.from_numpy(np.stack(s2))[None]
    s1_v = torch.from_numpy(np.stack(s1))[None]  # [1,12,4,32,32] dB, -9999 = missing
    ok = (s1_v != S1_NODATA) & torch.isfinite(s1_v)
    s1, pols = "sentinel1_grd", ("VV", "VH")  # the spectral encoder wants catalogue names, not "s1"
    return SensorStack(
        series={
            "s2": SensorSeries(
                "sentinel2_l2a",
                S2_BANDS,
                s2_v,
                times,
                torch.from_numpy(np.stack(s2_valid))[None],
                units="reflectance",
                scale=1e-4,
            ),
            "s1_asc": SensorSeries(
                s1, pols, s1_v[:, :, :2], times, ok[:, :, :2].all(2), units="dB", orbit="ascending"
            ),
            "s1_desc": SensorSeries(
                s1, pols, s1_v[:, :, 2:], times, ok[:, :, 2:].all(2), units="dB", orbit="descending"
            ),
        }
    )


def _spectral_temporal(pool: str) -> SpectralEncoder:
    torch.manual_seed(0)
    enc = spectral_encoder_test(
        sensors=("sentinel2_l2a", "sentinel1_grd"), patch_size=8, attention="factorised"
    )
    if pool == "ltae":  # the per-location view pooled by a date-aware L-TAE that is part of the encoder
        from dataclasses import replace

        enc = SpectralEncoder(replace(enc.config, location_pool="ltae"))
    return enc.eval()


@pytest.mark.parametrize("kind", ["ltae", "mean"])
@pytest.mark.parametrize("groups", [("s2",), ("s1_asc", "s1_desc"), ("s2", "s1_asc", "s1_desc")])
def test_factorised_encoder_on_the_real_chip(kind, groups, raw_chip):
    model = _spectral_temporal(kind)
    with torch.no_grad():
        out = model.forward_features(SensorStack(series={g: raw_chip[g] for g in groups}))
        loc = out.locations()
    assert loc.grid == (4, 4) and loc.tokens.shape == (1, 16, 32) and out.pooled().shape == (1, 32)
    assert loc.valid.all() and torch.isfinite(loc.tokens).all()


@pytest.mark.parametrize("kind", ["ltae", "mean"])
def test_factorised_encoder_ignores_the_clouded_month(kind, raw_chip):
    """August is clouded over the whole window: its tokens are invalid, its pixels contribute nothing."""
    model = _spectral_temporal(kind)

    def run(stack: SensorStack) -> torch.Tensor:
        with torch.no_grad():
            return model.forward_features(stack).locations().tokens

    ref = run(raw_chip)
    s2 = raw_chip["s2"]
    assert not s2.valid[:, 11].any()
    noisy = s2.values.clone()
    noisy[:, 11] = torch.rand_like(noisy[:, 11]) * 10000
    cloudy = SensorSeries(
        s2.sensor, s2.bands, noisy, s2.times, s2.valid, units=s2.units, scale=s2.scale, offset=s2.offset
    )
    torch.testing.assert_close(
        run(SensorStack(series={**raw_chip.series, "s2": cloudy})), ref, rtol=0, atol=0
    )
    keep = list(range(11))
    short = SensorSeries(
        s2.sensor,
        s2.bands,
        s2.values[:, keep],
        s2.times[:, keep],
        s2.valid[:, keep],
        units=s2.units,
        scale=s2.scale,
        offset=s2.offset,
    )
    torch.testing.assert_close(
        run(SensorStack(series={**raw_chip.series, "s2": short})), ref, rtol=1e-4, atol=1e-5
    )
