"""Physical units end to end, on real scenes: one scene stored in different encodings gives one encoding.

Each scene is written into cube stores in the encodings users have (S2 L2A digital numbers x 1e-4; the
same with the -1000 offset of processing baseline >= 04.00; float reflectance; S1 in dB and in linear
power), read back through :class:`~spectravlm.data.dataset.CubeDataset` (which carries each store's unit,
scale and offset), and encoded: the encoder outputs must agree within the stated tolerances. Also the fast
paths the loader's host-side facts open (every pixel valid: no mask, normalisation folded into the patch
projection) against the slow path on the same real batch, and the masked-pretraining loss of a cloud-free
real batch (the case where the reconstruction target once stayed in raw units).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from spectravlm.data.dataset import CubeDataset
from spectravlm.data.ingest import ingest_geotiff
from spectravlm.data.ingest.biomassters import S2_BANDS
from spectravlm.data.store import Grid, SensorCube, StoreTransaction
from spectravlm.encoders.spectral import SpectralEncoder, build_encoder, spectral_encoder_test
from spectravlm.pretraining.mae import build_mae
from spectravlm.stack import SensorStack

EOLEARN_L1C = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
DAYS = np.array(["2020-06-15", "2020-07-15"], dtype="datetime64[s]")


def _read(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read()


def _store(path: Path, group: str, cube: SensorCube) -> Path:
    with StoreTransaction(path) as tx:
        tx.write_sensor(group, cube)
    return path


def _encode(encoder: SpectralEncoder, stores: list[Path], group: str) -> torch.Tensor:
    ds = CubeDataset(
        [str(stores[0])] if len(stores) == 1 else [str(s) for s in stores], groups=[group], window_size=64
    )
    batch = ds.read_batch(list(range(len(ds))))
    with torch.no_grad():
        out = encoder.forward_features(batch)
    return out.tokens * out.mask.unsqueeze(-1)


@pytest.fixture(scope="module")
def encoder() -> SpectralEncoder:
    torch.manual_seed(0)
    return spectral_encoder_test(sensors=("sentinel2_l2a", "sentinel2_l1c", "sentinel1_grd")).eval()


def test_s2_digital_numbers_with_and_without_the_baseline_04_offset_and_float_reflectance(
    biomassters_dir: Path, tmp_path: Path, encoder: SpectralEncoder
) -> None:
    """BioMassters L2A months 6 and 7: uint16 x 1e-4, (DN + 1000) x 1e-4 - 0.1, float32 reflectance."""
    frames = [_read(biomassters_dir / f"{biomassters_dir.name}_S2_{m:02d}.tif") for m in (6, 7)]
    dn = np.stack([f[:10] for f in frames])  # (2, 10, 256, 256) uint16
    cloud = np.stack([f[10] for f in frames]).astype(np.uint8)
    grid = Grid(256, 256)
    common = dict(
        sensor="sentinel2_l2a", bands=S2_BANDS, times=DAYS, grid=grid, cloud=cloud, units="reflectance"
    )
    plain = _store(tmp_path / "dn.zarr", "s2", SensorCube(data=dn, scale_factor=1e-4, **common))  # type: ignore[arg-type]
    shifted = _store(
        tmp_path / "dn_offset.zarr",
        "s2",
        SensorCube(data=(dn + 1000).astype(np.uint16), scale_factor=1e-4, add_offset=-0.1, **common),  # type: ignore[arg-type]
    )
    floats = _store(
        tmp_path / "float.zarr", "s2", SensorCube(data=dn.astype(np.float32) * np.float32(1e-4), **common)
    )  # type: ignore[arg-type]
    ref = _encode(encoder, [plain], "s2")
    assert ref.abs().max() > 0.1  # real content
    for other in (shifted, floats):
        # float32 rounding of x * scale + offset only (measured max difference 7e-7)
        torch.testing.assert_close(_encode(encoder, [other], "s2"), ref, rtol=0, atol=1e-5)
    # a unit that is a lie changes the output: the test can fail
    wrong = _store(tmp_path / "wrong.zarr", "s2", SensorCube(data=dn, scale_factor=1e-3, **common))  # type: ignore[arg-type]
    assert not torch.allclose(_encode(encoder, [wrong], "s2"), ref, atol=1e-2)


def test_l1c_float_reflectance_and_digital_numbers(
    eolearn_dir: Path, tmp_path: Path, encoder: SpectralEncoder
) -> None:
    """eo-learn L1C (13 bands, float TOA reflectance) against the same scene as uint16 digital numbers."""
    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")[:2].transpose(0, 3, 1, 2)  # (2, 13, 101, 100)
    grid = Grid(101, 100)
    common = dict(sensor="sentinel2_l1c", bands=EOLEARN_L1C, times=DAYS, grid=grid, units="reflectance")
    refl = _store(tmp_path / "refl.zarr", "s2", SensorCube(data=scenes.astype(np.float32), **common))  # type: ignore[arg-type]
    dn = _store(
        tmp_path / "dn.zarr",
        "s2",
        SensorCube(data=np.round(scenes * 1e4).astype(np.uint16), scale_factor=1e-4, **common),  # type: ignore[arg-type]
    )
    a, b = _encode(encoder, [refl], "s2"), _encode(encoder, [dn], "s2")
    # digital numbers round reflectance to 5e-5: tokens differ by that rounding only (measured 7e-7)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_s1_in_db_and_in_linear_power(
    biomassters_dir: Path, tmp_path: Path, encoder: SpectralEncoder
) -> None:
    """BioMassters S1 ascending VV/VH of two months, stored in dB and as linear power."""
    db = np.stack([_read(biomassters_dir / f"{biomassters_dir.name}_S1_{m:02d}.tif")[:2] for m in (6, 7)])
    grid = Grid(256, 256)
    common = dict(sensor="sentinel1_grd", bands=("VV", "VH"), times=DAYS, grid=grid, orbit="ascending")
    in_db = _store(tmp_path / "db.zarr", "s1", SensorCube(data=db, nodata=-9999.0, units="dB", **common))  # type: ignore[arg-type]
    linear = np.where(db == -9999.0, 0.0, 10.0 ** (db / 10.0)).astype(np.float32)
    in_linear = _store(
        tmp_path / "lin.zarr", "s1", SensorCube(data=linear, nodata=0.0, units="linear", **common)
    )  # type: ignore[arg-type]
    a, b = _encode(encoder, [in_db], "s1"), _encode(encoder, [in_linear], "s1")
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)  # float32 dB <-> linear round trip (measured 7e-7)
    lying = _store(tmp_path / "lie.zarr", "s1", SensorCube(data=linear, nodata=0.0, units="dB", **common))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="looks like linear"):  # caught on the CPU by the loader
        CubeDataset([str(lying)], groups=["s1"], window_size=64).read_batch([0])


@pytest.fixture(scope="module")
def cloud_free_s2(bigearthnet_patches: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, cloud-free BigEarthNet S2 L2A patch (Portugal, 2017) ingested at 10 m (12 bands)."""
    patch = sorted((bigearthnet_patches / "BigEarthNet-S2-Example").iterdir())[0]
    store = tmp_path_factory.mktemp("ben") / "s2.zarr"
    ingest_geotiff(
        patch, store, "s2", "sentinel2_l2a", units="reflectance", scale_factor=1e-4, add_offset=0.0, nodata=0,
        band_pattern=r"_(B\d[\dA])\.tif$", date_pattern=r"_(\d{8})T", progress=False,
    )  # fmt: skip
    return store


def _ben_batch(store: Path) -> SensorStack:
    ds = CubeDataset([str(store)], groups=["s2"], window_size=64, align_to_chunks=False, stride=56)
    return ds.read_batch(list(range(len(ds))))


def test_fast_paths_equal_the_slow_path_on_a_cloud_free_real_batch(cloud_free_s2: Path) -> None:
    batch = _ben_batch(cloud_free_s2)
    s2 = batch["s2"]
    assert s2.all_valid is True and s2.finite  # the common case the fast paths are for
    slow = SensorStack({"s2": replace(s2, all_valid=None, finite=False)})  # the encoder must find out
    for attention in ("joint", "factorised"):
        torch.manual_seed(0)
        enc = build_encoder("test", patch_size=8, attention=attention, temporal_depth=1).eval()
        with torch.no_grad():
            fast_out, slow_out = enc.forward_features(batch), enc.forward_features(slow)
        assert enc.prepare(s2, "s2").gain is not None  # folded normalisation, unmasked attention
        torch.testing.assert_close(fast_out.tokens, slow_out.tokens, rtol=1e-4, atol=1e-4)


def test_mae_loss_is_in_normalised_units_on_a_cloud_free_real_batch(cloud_free_s2: Path) -> None:
    """A fully valid batch and the same batch with one invalid pixel give nearly the same loss.

    Before the fix, the fully valid batch (normalisation folded into the projection) was reconstructed
    against raw digital numbers: a loss of about 1e7 against about 1 with one invalid pixel.
    """
    batch = _ben_batch(cloud_free_s2)
    s2 = batch["s2"]
    valid = s2.valid.clone()
    valid[0, 0, 10, 10] = False
    one_invalid = SensorStack({"s2": replace(s2, valid=valid, all_valid=False)})
    torch.manual_seed(0)
    mae = build_mae(build_encoder("test", patch_size=8), {"s2": s2.bands}, 32, 1, 4, mask_ratio=0.75).eval()
    with torch.no_grad():
        full = mae(batch, torch.Generator().manual_seed(0)).reconstruction_loss
        holed = mae(one_invalid, torch.Generator().manual_seed(0)).reconstruction_loss
    assert 0.05 < float(full) < 20  # normalised units
    assert float(full) == pytest.approx(float(holed), rel=1e-3)  # one pixel of ~40,000 in the loss
