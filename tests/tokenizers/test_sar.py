from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorSeries
from spectravlm.tokenizers.image import RATIO_DB_STATS
from spectravlm.tokenizers.sar import (
    SARFrontEnd,
    check_sar_unit,
    lee_filter,
    refined_lee_filter,
    to_db,
    to_linear,
)


def _series(
    values: torch.Tensor, bands: tuple[str, ...], units: str = "dB", orbit: str | None = None
) -> SensorSeries:
    b, t, _, h, w = values.shape
    return SensorSeries(
        "sentinel1_grd",
        bands,
        values,
        torch.zeros(b, t, dtype=torch.long),
        torch.ones(b, t, h, w, dtype=torch.bool),
        units=units,
        orbit=orbit,
    )


def _speckled(clean: torch.Tensor, looks: int = 4, seed: int = 0) -> torch.Tensor:
    """Multiplicative gamma speckle with mean 1 (``looks``-look intensity)."""
    shape = torch.full(clean.shape, float(looks))
    gamma = torch.distributions.Gamma(shape, shape)
    torch.manual_seed(seed)
    return clean * gamma.sample()


def test_db_linear_round_trip() -> None:
    lin = torch.logspace(-4, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(to_linear(to_db(lin)), lin)
    db = torch.linspace(-35, 5, 81, dtype=torch.float64)
    torch.testing.assert_close(to_db(to_linear(db)), db)
    assert float(to_db(torch.tensor(0.01))) == pytest.approx(-20.0)


def test_front_end_gives_same_result_from_db_and_linear() -> None:
    torch.manual_seed(0)
    db = torch.rand(1, 2, 2, 16, 16) * 20 - 25
    a = SARFrontEnd()(_series(db, ("VV", "VH"), "dB"))
    b = SARFrontEnd()(_series(to_linear(db), ("VV", "VH"), "linear"))
    assert a.unit == b.unit == "dB"
    torch.testing.assert_close(a.values, b.values, atol=1e-4, rtol=1e-4)


def test_wrong_unit_is_detected() -> None:
    lin = torch.rand(1, 1, 2, 8, 8) * 0.5 + 0.01
    with pytest.raises(ModelConfigError, match="looks like linear"):
        SARFrontEnd()(_series(lin, ("VV", "VH"), "dB"))
    with pytest.raises(ModelConfigError, match="looks like dB"):
        SARFrontEnd()(_series(to_db(lin), ("VV", "VH"), "linear"))
    check_sar_unit(to_db(lin), torch.ones(1, dtype=torch.bool), "dB")  # fine


def test_polarisation_sets_and_ratio_channel() -> None:
    db = torch.rand(1, 1, 4, 8, 8) * 10 - 20
    vv = SARFrontEnd()(_series(db[:, :, :1], ("VV",)))
    assert [c.name for c in vv.channels] == ["VV"]
    dual = SARFrontEnd().calibrated(_series(db[:, :, :2], ("VV", "VH")))
    assert [c.name for c in dual.channels] == ["VV", "VH", "VV/VH"]
    torch.testing.assert_close(dual.values[:, :, 2], db[:, :, 0] - db[:, :, 1])
    quad = SARFrontEnd()(_series(db, ("VV", "VH", "HH", "HV")))
    assert [c.name for c in quad.channels] == ["VV", "VH", "HH", "HV", "VV/VH", "HH/HV"]
    assert all(c.wavelength_nm is None and c.polarisation for c in quad.channels)
    assert RATIO_DB_STATS == (6.0, 3.0)  # the encoder's default ratio statistics (test_spectral checks use)


def test_nodata_nan_and_zero_border_are_masked() -> None:
    db = torch.rand(1, 1, 2, 8, 8) * 10 - 20
    db[0, 0, 0, 0, 0] = -9999.0
    db[0, 0, 1, 1, 1] = float("nan")
    out = SARFrontEnd()(_series(db, ("VV", "VH")))
    assert not out.valid[0, 0, 0, 0] and not out.valid[0, 0, 1, 1]
    assert out.valid.sum() == 62 and torch.isfinite(out.values).all()
    assert (out.values[0, 0, :, 0, 0] == 0).all()
    lin = to_linear(torch.rand(1, 1, 2, 8, 8) * 10 - 20)
    lin[..., :, :2] = 0.0  # zero-filled GRD border
    out = SARFrontEnd()(_series(lin, ("VV", "VH"), "linear"))
    assert not out.valid[..., :2].any() and out.valid[..., 2:].all()


def test_units_the_front_end_cannot_take_are_refused() -> None:
    with pytest.raises(ModelConfigError, match="unit 'normalised' is not known"):
        SARFrontEnd()(_series(torch.randn(1, 1, 2, 8, 8), ("VV", "VH"), "normalised"))
    with pytest.raises(ModelConfigError, match=r"values in 'DN' \(uncalibrated.*'dB' or 'linear'"):
        SARFrontEnd()(_series(torch.rand(1, 1, 2, 8, 8) * 500, ("VV", "VH"), "DN"))


def test_scale_and_offset_are_applied_before_db() -> None:
    db = torch.rand(1, 1, 2, 8, 8) * 20 - 25
    stored = ((db + 30.0) / 0.01).round()  # e.g. an int16 store with scale 0.01 and offset -30
    a = SARFrontEnd()(_series(db, ("VV", "VH")))
    b = SARFrontEnd()(replace(_series(stored, ("VV", "VH")), scale=0.01, offset=-30.0))
    torch.testing.assert_close(a.values, b.values, atol=0.011, rtol=0)  # two 0.005 dB roundings in the ratio


def test_lee_filters_reduce_speckle_and_keep_mean() -> None:
    clean = torch.full((1, 1, 64, 64), 0.05)
    noisy = _speckled(clean)
    valid = torch.ones(1, 64, 64, dtype=torch.bool)
    for out in (lee_filter(noisy, valid, 7), refined_lee_filter(noisy, valid)):
        inner = out[..., 8:-8, 8:-8]
        assert inner.std() < 0.5 * noisy[..., 8:-8, 8:-8].std()
        assert abs(float(inner.mean()) - 0.05) < 0.005


def test_refined_lee_keeps_edges_sharper_than_lee() -> None:
    clean = torch.full((1, 1, 64, 64), 0.01)
    clean[..., 32:, :] = 0.2  # a horizontal step edge between rows 31 and 32
    noisy = _speckled(clean, seed=1)
    valid = torch.ones(1, 64, 64, dtype=torch.bool)
    err_lee = (lee_filter(noisy, valid, 7) - clean)[..., 29:35, 8:-8].abs().mean()
    err_ref = (refined_lee_filter(noisy, valid) - clean)[..., 29:35, 8:-8].abs().mean()
    assert err_ref < 0.75 * err_lee


def test_filters_ignore_invalid_pixels() -> None:
    noisy = _speckled(torch.full((1, 1, 32, 32), 0.05))
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    valid[0, 10:14, 10:14] = False
    other = noisy.clone()
    other[0, 0, 10:14, 10:14] = 1e6
    for f in (lambda z: lee_filter(z, valid, 5), lambda z: refined_lee_filter(z, valid)):
        torch.testing.assert_close(f(noisy)[0, 0][valid[0]], f(other)[0, 0][valid[0]])


def test_real_biomassters_s1_through_front_end(biomassters_dir: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(biomassters_dir / "0060c0a5_S1_05.tif") as src:
        arr = src.read()  # VV asc, VH asc, VV desc, VH desc (dB)
    values = torch.from_numpy(np.stack([arr[:2], arr[2:]]))[:, None]  # (2 orbits, 1 date, 2, H, W)
    series = _series(values, ("VV", "VH"), "dB", orbit="ascending")
    plain = SARFrontEnd()(series)
    filtered = SARFrontEnd(speckle_filter="refined_lee")(series)
    assert plain.values.shape == (2, 1, 3, 256, 256)
    assert -20 < float(plain.values[:, :, 0][plain.valid].mean()) < -5  # VV in dB over boreal forest
    # speckle filtering smooths the real image: pixel-to-pixel differences shrink
    rough = lambda v: (v[..., 1:, :] - v[..., :-1, :]).abs().mean()  # noqa: E731
    assert rough(filtered.values[:, :, 0]) < 0.7 * rough(plain.values[:, :, 0])
    with pytest.raises(ModelConfigError, match="looks like dB"):
        SARFrontEnd()(_series(values, ("VV", "VH"), "linear"))
