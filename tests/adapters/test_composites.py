from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spectravlm.adapters import PseudoRGBAdapter, apply_composite
from spectravlm.adapters.composites import composite_inputs
from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorSeries

BIOMASSTERS_S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _series(
    sensor: str, bands: tuple[str, ...], values: torch.Tensor, units: str = "reflectance", scale: float = 1e-4
) -> SensorSeries:
    """S2 digital numbers (reflectance x 1e4) by default."""
    b, t, _, h, w = values.shape
    return SensorSeries(
        sensor,
        bands,
        values,
        torch.zeros(b, t, dtype=torch.long),
        torch.ones(b, t, h, w, dtype=torch.bool),
        units=units,
        scale=1.0 if units != "reflectance" else scale,
    )


def test_s2_true_colour_values() -> None:
    # B02=400 (0.04), B03=800, B04=2000 (0.2 reflectance -> 0.5), B08 ignored; B04=5000 saturates
    v = torch.tensor([400.0, 800.0, 2000.0, 9999.0]).view(1, 1, 4, 1, 1).repeat(1, 1, 1, 1, 2)
    v[..., 2, 0, 1] = 5000.0
    rgb = apply_composite(_series("sentinel2_l2a", ("B02", "B03", "B04", "B08"), v), "s2_true_colour")
    assert rgb.shape == (1, 1, 3, 1, 2)
    torch.testing.assert_close(rgb[0, 0, :, 0, 0], torch.tensor([0.5, 0.2, 0.1]))
    assert rgb[0, 0, 0, 0, 1] == 1.0
    refl = apply_composite(
        _series("sentinel2_l2a", ("B02", "B03", "B04", "B08"), v / 1e4, "reflectance", 1.0), "s2_true_colour"
    )
    torch.testing.assert_close(refl, rgb)


def test_s1_composite_values_and_units() -> None:
    db = torch.tensor([-12.5, -19.0]).view(1, 1, 2, 1, 1)
    rgb = apply_composite(_series("sentinel1_grd", ("VV", "VH"), db, "dB"), "s1_vv_vh_ratio")
    torch.testing.assert_close(rgb[0, 0, :, 0, 0], torch.tensor([0.5, 11 / 25, 6.5 / 15]))
    lin = apply_composite(_series("sentinel1_grd", ("VV", "VH"), 10 ** (db / 10), "linear"), "s1_vv_vh_ratio")
    torch.testing.assert_close(lin, rgb)
    with pytest.raises(ModelConfigError, match="lacks bands"):
        apply_composite(_series("sentinel1_grd", ("VV",), db[:, :, :1], "dB"), "s1_vv_vh_ratio")
    with pytest.raises(ModelConfigError, match="is for Sentinel-2"):
        apply_composite(_series("sentinel1_grd", ("VV", "VH"), db, "dB"), "s2_true_colour")


def test_invalid_pixels_are_black() -> None:
    v = torch.full((1, 1, 2, 2, 2), -10.0)
    v[0, 0, 0, 0, 0] = -9999.0
    rgb = apply_composite(_series("sentinel1_grd", ("VV", "VH"), v, "dB"), "s1_vv_vh_ratio")
    assert (rgb[0, 0, :, 0, 0] == 0).all() and (rgb[0, 0, 0, 1, 1] > 0)


@pytest.mark.parametrize("bands", [None, BIOMASSTERS_S2])
def test_adapter_init_reproduces_composite_exactly_on_real_s2(
    biomassters_dir: Path, bands: tuple[str, ...] | None
) -> None:
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(biomassters_dir / "0060c0a5_S2_07.tif") as src:
        arr = src.read()[:10].astype(np.float32)
    series = _series("sentinel2_l2a", BIOMASSTERS_S2, torch.from_numpy(arr)[None, None])
    fixed = apply_composite(series, "s2_true_colour")[:, 0]
    adapter = PseudoRGBAdapter("s2_true_colour", bands=bands)
    x, _ = composite_inputs(series, adapter.bands, "reflectance")
    learned = adapter(x)
    assert torch.equal(learned, fixed)  # bit for bit
    assert 0.01 < float(fixed.mean()) < 0.9  # a real, not blank, image
    # the adapter is trainable and moves away from the composite
    learned.mean().backward()
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0


def test_adapter_init_reproduces_s1_composite_exactly(biomassters_dir: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(biomassters_dir / "0060c0a5_S1_07.tif") as src:
        arr = src.read()[:2]
    series = _series("sentinel1_grd", ("VV", "VH"), torch.from_numpy(arr)[None, None], "dB")
    fixed = apply_composite(series, "s1_vv_vh_ratio")[:, 0]
    adapter = PseudoRGBAdapter("s1_vv_vh_ratio", sensor="sentinel1_grd")
    x, valid = composite_inputs(series, adapter.bands, "dB")
    assert torch.equal(adapter(x) * valid.unsqueeze(1), fixed)
