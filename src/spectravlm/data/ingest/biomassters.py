"""Ingest a BioMassters chip (monthly S1/S2 GeoTIFFs and the AGB target) into a cube store.

BioMassters (Nascetti et al., NeurIPS 2023 Datasets & Benchmarks, https://nascetti-a.github.io/BioMasster/)
ships, per 256 x 256 px chip at 10 m over Finland:

* ``<chip>_S1_MM.tif``: 4 float32 bands in dB, VV asc, VH asc, VV desc, VH desc, -9999 = missing;
* ``<chip>_S2_MM.tif``: 11 uint16 bands, B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 (L2A reflectance x 1e4)
  and the cloud probability (0-100; 255 where unknown);
* ``<chip>_agbm.tif``: AGB in t/ha.

``MM`` is the month index 00..11 = September..August. The files carry no georeference and no year: the
store gets a pixel grid without CRS and nominal dates (the 15th of each month of the season starting in
September of ``start_year``, recorded as nominal in the group attributes). The two S1 orbit directions
become two sensor groups, ``s1_asc`` and ``s1_desc``, each with bands VV, VH: SAR bands are polarisations,
and the orbit is a property of the acquisition.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from tqdm.auto import tqdm

from spectravlm.data.store import Grid, SensorCube, StoreTransaction
from spectravlm.errors import IngestError

S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
MONTHS = 12
S1_NODATA = -9999.0


def month_dates(start_year: int) -> np.ndarray:
    """Nominal dates (15th of each month) for month indices 00..11 = Sep ``start_year`` .. Aug."""
    return np.array(
        [np.datetime64(f"{start_year + (m + 8) // 12}-{(m + 8) % 12 + 1:02d}-15") for m in range(MONTHS)],
        dtype="datetime64[s]",
    )


def _read(path: Path, count: int, dtype: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                if src.count != count:
                    raise IngestError(f"{path}: {src.count} bands, expected {count} (BioMassters layout)")
                if src.dtypes[0] != dtype:
                    raise IngestError(f"{path}: dtype {src.dtypes[0]}, expected {dtype} (BioMassters layout)")
                if (src.height, src.width) != (256, 256):
                    raise IngestError(
                        f"{path}: {src.height}x{src.width} px, expected 256x256 (BioMassters chip)"
                    )
                return src.read()
        except rasterio.errors.RasterioIOError as err:
            raise IngestError(f"{path}: cannot be read as a raster: {err}") from err


def ingest_biomassters(
    chip_dir: str | os.PathLike[str],
    store: str | os.PathLike[str],
    chip_id: str | None = None,
    start_year: int = 2020,
    allow_missing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> None:
    """Ingest one BioMassters chip into a new store at ``store``.

    Args:
        chip_dir: directory holding the chip's ``*_S1_MM.tif``, ``*_S2_MM.tif`` and ``*_agbm.tif``.
        store: path of the store to create.
        chip_id: chip id (file prefix); inferred when the directory holds exactly one chip.
        start_year: year of the September that month 00 falls in (the dataset does not say).
        allow_missing: skip months whose files are absent (real BioMassters chips lack some); otherwise a
            missing month is an error naming the file.
        overwrite: replace an existing store.
        progress: show a progress bar.

    """
    chip_dir = Path(chip_dir)
    if not chip_dir.is_dir():
        raise IngestError(f"{chip_dir} is not a directory of BioMassters chip files")
    if chip_id is None:
        ids = sorted({p.name.split("_")[0] for p in chip_dir.glob("*_agbm.tif")})
        if len(ids) != 1:
            raise IngestError(
                f"{chip_dir}: expected exactly one *_agbm.tif to infer the chip id, found {ids}"
            )
        chip_id = ids[0]
    dates = month_dates(start_year)
    s1_arrays: list[np.ndarray] = []
    s1_times: list[np.datetime64] = []
    s2_arrays: list[np.ndarray] = []
    s2_times: list[np.datetime64] = []
    for m in tqdm(range(MONTHS), desc=f"ingest {chip_id}", disable=not progress):
        for kind, count, dtype, arrays, times in (
            ("S1", 4, "float32", s1_arrays, s1_times),
            ("S2", 11, "uint16", s2_arrays, s2_times),
        ):
            path = chip_dir / f"{chip_id}_{kind}_{m:02d}.tif"
            if not path.exists():
                if allow_missing:
                    continue
                raise IngestError(
                    f"{path} is missing (month {m:02d}); pass allow_missing=True to skip absent months"
                )
            arrays.append(_read(path, count, dtype))
            times.append(dates[m])
    if not s2_arrays and not s1_arrays:
        raise IngestError(f"{chip_dir}: no S1 or S2 files for chip {chip_id}")
    agb_path = chip_dir / f"{chip_id}_agbm.tif"
    if not agb_path.exists():
        raise IngestError(f"{agb_path} (the AGB target) is missing")
    agb = _read(agb_path, 1, "float32")[0]

    grid = Grid(height=256, width=256)
    source = (
        f"BioMassters chip {chip_id} ({chip_dir}); dates nominal (15th of month), start_year={start_year}"
    )
    title = f"BioMassters chip {chip_id}"
    with StoreTransaction(store, mode="create", overwrite=overwrite, title=title) as tx:
        if s2_arrays:
            s2 = np.stack(s2_arrays)
            cloud = s2[:, 10]
            # 255 marks an unknown cloud probability: store it as 100 (treated as cloudy, never as clear).
            cloud = np.where(cloud > 100, 100, cloud).astype(np.uint8)
            tx.write_sensor(
                "s2",
                SensorCube(
                    sensor="sentinel2_l2a",
                    bands=S2_BANDS,
                    data=np.ascontiguousarray(s2[:, :10]),
                    times=np.array(s2_times),
                    grid=grid,
                    nodata=None,
                    cloud=cloud,
                    scale_factor=1e-4,
                    units="reflectance",
                    source=source,
                ),
            )
        if s1_arrays:
            s1 = np.stack(s1_arrays)
            for group, sl, orbit in (
                ("s1_asc", slice(0, 2), "ascending"),
                ("s1_desc", slice(2, 4), "descending"),
            ):
                tx.write_sensor(
                    group,
                    SensorCube(
                        sensor="sentinel1_grd",
                        bands=("VV", "VH"),
                        data=np.ascontiguousarray(s1[:, sl]),
                        times=np.array(s1_times),
                        grid=grid,
                        nodata=S1_NODATA,
                        units="dB",
                        orbit=orbit,
                        source=source,
                    ),
                )
        tx.write_target("agb", agb, grid, units="t/ha", long_name="above-ground biomass")
