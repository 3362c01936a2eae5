"""A deterministic SYNTHETIC Sentinel-1 + Sentinel-2 monthly store with an AGB target.

It is the embedded default data of the README's first command: made in seconds from a seed, never
mistaken for real data (the store's ``synthetic`` flag and title say so), and built so that the AGB
target is learnable from the imagery by the same physics that makes real biomass mapping work:

* **Land cover** from smooth Gaussian random fields: water, bare soil, grassland/cropland, and
  coniferous forest divided into stands. **AGB** (t/ha) is set per stand (20-350 t/ha, boreal range)
  with within-stand texture; zero outside forest.
* **Sentinel-2 L2A** (the 10 BioMassters bands, reflectance x 1e4) as a linear mixture of endmember
  spectra: canopy cover ``1 - exp(-AGB/100)`` of conifer spectrum over an understory/grass spectrum
  whose vegetation fraction follows a phenology curve peaking in July; snow on open ground Dec-Mar.
  Clouds come from a thresholded random field per date with a cloud-probability layer; cloudy pixels
  are blended towards a bright, flat cloud spectrum. Two winter months (Dec, Jan: polar night) are
  missing, as real S2 series in Finland are.
* **Sentinel-1 GRD** VV/VH in dB on other days than S2: a water-cloud-like response that rises with
  AGB and saturates (``a + b (1 - exp(-AGB / c))``), a frozen-ground drop in winter, and
  multiplicative Gamma speckle (ENL 4.4) applied in linear power before converting to dB.
"""

from __future__ import annotations

import os

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from spectravlm.data.store import CubeStore, Grid, SensorCube, StoreTransaction

S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")

# Endmember spectra, reflectance x 1e4, in S2_BANDS order (typical values from spectral libraries,
# rounded: water, bare soil, green grass at peak, conifer canopy, snow).
_WATER = np.array([600, 500, 300, 250, 200, 180, 150, 140, 80, 50], dtype=np.float32)
_SOIL = np.array([900, 1200, 1500, 1700, 1900, 2000, 2100, 2200, 3000, 2500], dtype=np.float32)
_GRASS = np.array([400, 800, 450, 1200, 2800, 3500, 3800, 3900, 2000, 1000], dtype=np.float32)
_CONIFER = np.array([250, 450, 250, 700, 1700, 2100, 2300, 2400, 1100, 500], dtype=np.float32)
_SNOW = np.array([9000, 8800, 8600, 8400, 8000, 7800, 7600, 7400, 1200, 900], dtype=np.float32)
_CLOUD = np.array([7500, 7400, 7400, 7300, 7300, 7200, 7200, 7100, 5000, 4000], dtype=np.float32)

WATER, SOIL, GRASS, FOREST = 0, 1, 2, 3


def _field(rng: np.random.Generator, h: int, w: int, scale_px: float) -> np.ndarray:
    """A smooth Gaussian random field with unit variance and correlation length ~``scale_px``."""
    noise = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-0.5 * (2 * np.pi * scale_px) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(h, w))
    return ((out - out.mean()) / (out.std() + 1e-12)).astype(np.float32)


def _land_cover(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Land-cover classes and AGB (t/ha) per pixel."""
    wet = _field(rng, h, w, 40)
    use = _field(rng, h, w, 25)
    cover = np.full((h, w), GRASS, dtype=np.uint8)
    cover[use > -0.1] = FOREST
    cover[use < -1.2] = SOIL
    cover[wet < -1.5] = WATER
    # Forest stands: nearest of a set of random centres (computed on a coarse grid, then repeated).
    n_stands = max(8, h * w // 4000)
    cy, cx = rng.uniform(0, h, n_stands), rng.uniform(0, w, n_stands)
    step = 4
    gy, gx = np.mgrid[0:h:step, 0:w:step]
    d2 = (gy[..., None] - cy) ** 2 + (gx[..., None] - cx) ** 2
    stand = np.argmin(d2, axis=-1).repeat(step, 0).repeat(step, 1)[:h, :w]
    stand_agb = rng.uniform(20, 350, n_stands).astype(np.float32)
    texture = 1.0 + 0.15 * _field(rng, h, w, 2)
    agb = np.where(cover == FOREST, stand_agb[stand] * texture, 0.0).clip(0, None).astype(np.float32)
    return cover, agb


def _months(start_year: int) -> list[np.datetime64]:
    return [np.datetime64(f"{start_year + (m + 8) // 12}-{(m + 8) % 12 + 1:02d}-01") for m in range(12)]


def make_demo_cubes(
    size: int = 512, seed: int = 0, start_year: int = 2021
) -> tuple[SensorCube, SensorCube, np.ndarray, Grid]:
    """Build the synthetic S2 and S1 cubes, the AGB map and the grid (nothing is written).

    Args:
        size: grid edge in pixels (10 m pixels).
        seed: random seed; equal seeds give identical data.
        start_year: the series runs September ``start_year`` .. August ``start_year + 1``.

    """
    rng = np.random.default_rng(seed)
    h = w = size
    cover, agb = _land_cover(rng, h, w)
    canopy = np.where(cover == FOREST, 1.0 - np.exp(-agb / 100.0), 0.0).astype(np.float32)
    grid = Grid(
        height=h,
        width=w,
        transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6900000.0),
        crs_wkt=CRS.from_epsg(32635).to_wkt(),
    )
    months = _months(start_year)

    # ---- Sentinel-2 ----------------------------------------------------------------------------
    s2_months = [m for i, m in enumerate(months) if i not in (3, 4)]  # Dec and Jan missing
    s2_times, s2_data, s2_cloud = [], [], []
    for month in s2_months:
        day = int(rng.integers(3, 26))
        t = month + np.timedelta64(day, "D")
        doy = (t - t.astype("datetime64[Y]")).astype(int)
        veg = 0.15 + 0.85 * np.exp(-(((doy - 195) / 45.0) ** 2))
        snowy = int(str(t)[5:7]) in (12, 1, 2, 3)
        open_ground = veg * _GRASS[:, None, None] + (1 - veg) * _SOIL[:, None, None]
        if snowy:
            open_ground = 0.1 * open_ground + 0.9 * _SNOW[:, None, None]
        refl = np.where(
            cover == WATER,
            _WATER[:, None, None],
            np.where(
                cover == SOIL,
                _SOIL[:, None, None]
                if not snowy
                else 0.2 * _SOIL[:, None, None] + 0.8 * _SNOW[:, None, None],
                canopy * _CONIFER[:, None, None] + (1 - canopy) * open_ground,
            ),
        )
        refl = refl * (1.0 + 0.03 * rng.standard_normal((len(S2_BANDS), h, w), dtype=np.float32))
        cover_frac = rng.uniform(0.0, 0.6)
        cfield = _field(rng, h, w, 30)
        threshold = np.quantile(cfield, 1 - cover_frac)
        prob = 1.0 / (1.0 + np.exp(-(cfield - threshold) * 6.0))
        refl = (1 - prob) * refl + prob * _CLOUD[:, None, None]
        s2_data.append(np.clip(refl, 1, 10000).astype(np.uint16))
        s2_cloud.append(np.round(prob * 100).astype(np.uint8))
        s2_times.append(t)

    # ---- Sentinel-1 (ascending) ----------------------------------------------------------------
    s1_times, s1_data = [], []
    enl = 4.4
    base_vv = np.select([cover == WATER, cover == SOIL], [-22.0, -12.0], -14.0).astype(np.float32)
    base_vh = np.select([cover == WATER, cover == SOIL], [-28.0, -20.0], -22.0).astype(np.float32)
    for month in months:
        t = month + np.timedelta64(int(rng.integers(0, 27)), "D") + np.timedelta64(16 * 3600 + 25 * 60, "s")
        frozen = int(str(t)[5:7]) in (12, 1, 2)
        vv = base_vv + np.where(cover == FOREST, 6.5 * (1 - np.exp(-agb / 120.0)), 0.0) - 1.5 * frozen
        vh = base_vh + np.where(cover == FOREST, 8.0 * (1 - np.exp(-agb / 100.0)), 0.0) - 1.5 * frozen
        db = np.stack([vv, vh])
        linear = 10.0 ** (db / 10.0) * rng.gamma(enl, 1.0 / enl, size=db.shape)
        s1_data.append((10.0 * np.log10(linear)).astype(np.float32))
        s1_times.append(t)

    s2 = SensorCube(
        sensor="sentinel2_l2a",
        bands=S2_BANDS,
        data=np.stack(s2_data),
        times=np.array(s2_times, dtype="datetime64[s]"),
        grid=grid,
        nodata=0,
        cloud=np.stack(s2_cloud),
        scale_factor=1e-4,
        units="reflectance",
        source=f"SYNTHETIC spectravlm demo data, seed {seed}",
    )
    s1 = SensorCube(
        sensor="sentinel1_grd",
        bands=("VV", "VH"),
        data=np.stack(s1_data),
        times=np.array(s1_times, dtype="datetime64[s]"),
        grid=grid,
        nodata=-9999.0,
        units="dB",
        orbit="ascending",
        source=f"SYNTHETIC spectravlm demo data, seed {seed}",
    )
    return s2, s1, agb, grid


def write_demo_store(
    path: str | os.PathLike[str], size: int = 512, seed: int = 0, overwrite: bool = False
) -> None:
    """Write the synthetic demo store (groups ``s2``, ``s1``; target ``agb``) and its statistics.

    ``overwrite`` replaces an earlier demo store only: a path that holds anything else (a real store, any
    other folder or file) is refused, so that demo data never replaces a user's data.

    Raises:
        StoreExistsError: ``path`` exists and is not a synthetic demo store (or ``overwrite`` is off).

    """
    from pathlib import Path

    from spectravlm.data.stats import compute_stats
    from spectravlm.errors import StoreError, StoreExistsError

    if overwrite and Path(path).exists():
        try:
            synthetic = CubeStore.open(path).synthetic
        except StoreError:
            synthetic = False
        if not synthetic:
            raise StoreExistsError(
                f"{path} exists and is not a synthetic demo store: the demo store never replaces it; "
                "choose another path"
            )

    s2, s1, agb, grid = make_demo_cubes(size=size, seed=seed)
    title = f"SYNTHETIC spectravlm demo store (seed {seed}): not real satellite data"
    with StoreTransaction(path, mode="create", overwrite=overwrite, title=title, synthetic=True) as tx:
        tx.write_sensor("s2", s2)
        tx.write_sensor("s1", s1)
        tx.write_target("agb", agb, grid, units="t/ha", long_name="above-ground biomass")
    compute_stats(path)
