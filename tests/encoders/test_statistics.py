"""The encoder owns normalisation: statistics as buffers, set from stores, saved and loaded with weights."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spectravlm.encoders.spectral import SpectralEncoder, load_encoder, spectral_encoder_test
from spectravlm.encoders.statistics import BandStatistics, store_statistics
from spectravlm.errors import ModelConfigError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack
from spectravlm.tokenizers.image import RATIO_DB_STATS


def _s2(seed: int = 0) -> SensorSeries:
    g = torch.Generator().manual_seed(seed)
    return SensorSeries(
        "sentinel2_l2a",
        ("B02", "B04", "B08"),
        (torch.rand(1, 2, 3, 16, 16, generator=g) * 4000).round(),
        torch.tensor([[18000, 18010]]),
        torch.ones(1, 2, 16, 16, dtype=torch.bool),
        units="reflectance",
        scale=1e-4,
    )


def _s1(seed: int = 1) -> SensorSeries:
    g = torch.Generator().manual_seed(seed)
    return SensorSeries(
        "sentinel1_grd",
        ("VV", "VH"),
        torch.rand(1, 2, 2, 16, 16, generator=g) * 10 - 22,
        torch.tensor([[18002, 18014]]),
        torch.ones(1, 2, 16, 16, dtype=torch.bool),
        units="dB",
    )


def test_defaults_are_the_catalogues_in_physical_units() -> None:
    stats = BandStatistics(("sentinel2_l2a", "sentinel1_grd"))
    mean, _ = stats.lookup("sentinel2_l2a", ("B04",))
    b04 = get_sensor("sentinel2_l2a").band("B04").stats
    assert b04 is not None and float(mean) == pytest.approx(b04.mean) and 0.01 < b04.mean < 0.2  # reflectance
    mean, _ = stats.lookup("sentinel1_grd", ("VV", "VV/VH"))
    assert mean.tolist() == pytest.approx([-12.62, RATIO_DB_STATS[0]], abs=0.01)


def test_prepare_uses_the_encoders_statistics_and_both_paths_agree() -> None:
    enc = spectral_encoder_test(sensors=("sentinel2_l2a", "sentinel1_grd")).eval()
    s2, s1 = _s2(), _s1()
    enc.set_statistics(
        "sentinel2_l2a", {"B02": (0.05, 0.02), "B04": (0.1, 0.05), "B08": (0.3, 0.1)}, "store:x"
    )
    enc.set_statistics("sentinel1_grd", {"VV": (-15.0, 3.0), "VH": (-20.0, 4.0)}, "store:x")
    assert enc.config.stats_source == {
        "sentinel2_l2a": "store:x",
        "sentinel1_grd": "store:x",
    }
    # optical: folded (every pixel valid) and eager paths give the normalised values with these statistics
    img = enc.prepare(s2)
    assert img.gain is not None  # folded into the projection
    expect = (s2.values * 1e-4 - torch.tensor([0.05, 0.1, 0.3]).view(1, 1, 3, 1, 1)) / torch.tensor(
        [0.02, 0.05, 0.1]
    ).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(img.normalised().values, expect, rtol=1e-5, atol=1e-5)
    sar = enc.prepare(s1)
    torch.testing.assert_close(sar.values[:, :, 0], (s1.values[:, :, 0] + 15.0) / 3.0, rtol=1e-5, atol=1e-5)
    ratio = s1.values[:, :, 0] - s1.values[:, :, 1]
    torch.testing.assert_close(sar.values[:, :, 2], (ratio - RATIO_DB_STATS[0]) / RATIO_DB_STATS[1])
    # the statistics change what the encoder computes: the test could fail
    before = enc(SensorStack({"s2": s2})).detach()
    enc.set_statistics("sentinel2_l2a", {"B04": (0.2, 0.05)}, "store:y")
    assert not torch.allclose(enc(SensorStack({"s2": s2})), before)
    with pytest.raises(ModelConfigError, match="channel 'B99'"):
        enc.set_statistics("sentinel2_l2a", {"B99": (0.1, 0.1)}, "x")
    with pytest.raises(ModelConfigError, match="not usable"):
        enc.set_statistics("sentinel2_l2a", {"B02": (0.1, 0.0)}, "x")


def test_statistics_travel_with_save_pretrained_and_overrides_are_checked(tmp_path: Path) -> None:
    enc = spectral_encoder_test(sensors=("sentinel2_l2a",)).eval()
    enc.set_statistics("sentinel2_l2a", {"B04": (0.123, 0.045)}, "store:/data/a.zarr")
    path = enc.save_pretrained(tmp_path / "enc")
    doc = json.loads((path / "config.json").read_text())
    assert doc["config"]["stats_source"]["sentinel2_l2a"] == "store:/data/a.zarr"
    b04 = next(b for b in doc["sensors"][0]["bands"] if b["name"] == "B04")
    assert b04["mean"] == pytest.approx(0.123) and b04["std"] == pytest.approx(0.045)
    loaded = SpectralEncoder.from_pretrained(path, gradient_checkpointing=True, drop_path_rate=0.1)
    assert loaded.config.gradient_checkpointing and loaded.config.stats_source == enc.config.stats_source
    torch.testing.assert_close(loaded.statistics.lookup("sentinel2_l2a", ("B04",))[0], torch.tensor([0.123]))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(_s2()), enc(_s2()), rtol=0, atol=0)
    assert "store:/data/a.zarr" in repr(loaded)
    with pytest.raises(ModelConfigError, match="cannot override dim=64"):
        SpectralEncoder.from_pretrained(path, dim=64)
    with pytest.raises(ModelConfigError, match="unknown SpectralEncoderConfig fields"):
        load_encoder(path, colour="red")
    with pytest.raises(Exception, match="already exists"):  # nothing of the user's is overwritten
        enc.save_pretrained(path)
    enc.save_pretrained(path, overwrite=True)


def test_store_statistics_pool_by_pixel_count() -> None:
    pooled = store_statistics(
        {"sentinel2_l2a": [("a.zarr", {"B04": (100, 0.1, 0.01)}), ("b.zarr", {"B04": (300, 0.2, 0.02)})]}
    )
    (stats, source) = pooled["sentinel2_l2a"]
    assert stats["B04"][0] == pytest.approx(0.175)
    var = (100 * (0.01**2 + 0.075**2) + 300 * (0.02**2 + 0.025**2)) / 400
    assert stats["B04"][1] == pytest.approx(var**0.5) and source == "store:a.zarr, store:b.zarr"


def test_units_the_encoder_cannot_take_name_the_group() -> None:
    enc = spectral_encoder_test(sensors=("sentinel2_l2a",))
    with pytest.raises(
        ModelConfigError, match=r"sensor group 'opt' \(sentinel2_l2a\): values in 'dB'.*'reflectance'"
    ):
        enc(SensorStack({"opt": replace(_s2(), units="dB")}))
