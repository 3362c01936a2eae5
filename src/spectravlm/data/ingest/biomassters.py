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

Whole folders (:func:`ingest_biomassters_folder`, ``spectravlm data ingest biomassters DIR OUT``): the
challenge ships ~13,000 chips as flat folders (``train_features/`` with every ``<chip>_S1_MM.tif`` and
``<chip>_S2_MM.tif``, ``train_agbm/`` with the ``<chip>_agbm.tif``). Each chip becomes its own store
``OUT/<chip>.zarr``: the loader treats many small stores as regions and splits them by store (no chip in
two splits), a chip's store is written atomically on its own, so an interrupted run resumes by skipping
the stores that exist (a store at its final path is always complete), and one bad chip fails alone.
Chips are ingested by a process pool with a progress bar; failures are collected and reported at the
end (and written to ``OUT/ingest-failures.json``), not raised one by one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from tqdm.auto import tqdm

from spectravlm.data.ingest.common import GroupIngest, write_cube
from spectravlm.data.store import CubeStore, Grid, SensorCube, StoreTransaction
from spectravlm.errors import IngestError, SpectraVLMError, StoreError
from spectravlm.io import atomic_write_text

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


_CHIP_FILE = re.compile(r"^(?P<chip>[0-9a-zA-Z]+)_(?:S[12]_\d{2}|agbm)\.tif$")


def find_chips(folder: str | os.PathLike[str]) -> list[str]:
    """The chip ids of the BioMassters files in ``folder`` (``<chip>_S1_MM.tif``, ``_S2_MM``, ``_agbm``)."""
    root = Path(folder)
    if not root.is_dir():
        raise IngestError(f"{root} is not a directory of BioMassters chip files")
    return sorted({m.group("chip") for p in root.iterdir() if (m := _CHIP_FILE.match(p.name))})


def ingest_biomassters(
    chip_dir: str | os.PathLike[str],
    store: str | os.PathLike[str],
    chip_id: str | None = None,
    start_year: int = 2020,
    allow_missing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    agbm_dir: str | os.PathLike[str] | None = None,
    stats: bool = True,
) -> None:
    """Ingest one BioMassters chip into a new store at ``store``.

    Args:
        chip_dir: directory holding the chip's ``*_S1_MM.tif`` and ``*_S2_MM.tif`` (and ``*_agbm.tif``,
            unless ``agbm_dir`` is given).
        store: path of the store to create.
        chip_id: chip id (file prefix); inferred when the directory holds exactly one chip.
        start_year: year of the September that month 00 falls in (the dataset does not say).
        allow_missing: skip months whose files are absent (real BioMassters chips lack some); otherwise a
            missing month is an error naming the file.
        overwrite: replace an existing store.
        progress: show a progress bar.
        agbm_dir: directory of the ``*_agbm.tif`` targets (the challenge's ``train_agbm``), when not
            ``chip_dir``.
        stats: store per-band statistics computed from the arrays as they are written.

    """
    chip_dir = Path(chip_dir)
    if not chip_dir.is_dir():
        raise IngestError(f"{chip_dir} is not a directory of BioMassters chip files")
    if chip_id is None:
        ids = find_chips(chip_dir)
        if len(ids) != 1:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            raise IngestError(
                f"{chip_dir} holds {len(ids)} chips ({shown or 'none'}); pass --chip-id for one, or give an "
                "output folder to ingest them all (one store per chip)"
            )
        chip_id = ids[0]
    dates = month_dates(start_year)
    s1_arrays: list[np.ndarray] = []
    s1_times: list[np.datetime64] = []
    s2_arrays: list[np.ndarray] = []
    s2_times: list[np.datetime64] = []
    todo: list[tuple[Path, int, str, list[np.ndarray], list[np.datetime64], np.datetime64]] = []
    for m in range(MONTHS):
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
            todo.append((path, count, dtype, arrays, times, dates[m]))
    with ThreadPoolExecutor(2) as pool:  # GDAL reads release the GIL: two files at a time
        read = pool.map(lambda job: _read(job[0], job[1], job[2]), todo)
        for (_, _, _, arrays, times, when), values in tqdm(
            zip(todo, read, strict=True), total=len(todo), desc=f"ingest {chip_id}", disable=not progress
        ):
            arrays.append(values)
            times.append(when)
    if not s2_arrays and not s1_arrays:
        raise IngestError(f"{chip_dir}: no S1 or S2 files for chip {chip_id}")
    agb_path = Path(agbm_dir or chip_dir) / f"{chip_id}_agbm.tif"
    if not agb_path.exists():
        raise IngestError(f"{agb_path} (the AGB target) is missing")
    agb = _read(agb_path, 1, "float32")[0]

    grid = Grid(height=256, width=256)
    source = (
        f"BioMassters chip {chip_id} ({chip_dir}); dates nominal (15th of month), start_year={start_year}"
    )
    title = f"BioMassters chip {chip_id}"
    writers: list[GroupIngest] = []
    with StoreTransaction(store, mode="create", overwrite=overwrite, title=title) as tx:
        if s2_arrays:
            s2 = np.stack(s2_arrays)
            cloud = s2[:, 10]
            # 255 marks an unknown cloud probability: store it as 100 (treated as cloudy, never as clear).
            cloud = np.where(cloud > 100, 100, cloud).astype(np.uint8)
            writers.append(
                write_cube(
                    tx,
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
                        attrs={
                            "scale_source": "BioMassters: L2A reflectance x 1e4",
                            "offset_source": "BioMassters: L2A reflectance x 1e4, no offset",
                            "nodata_source": "none: BioMassters S2 has no fill value",
                        },
                    ),
                    stats=stats,
                    background=True,
                )
            )
        if s1_arrays:
            s1 = np.stack(s1_arrays)
            for group, sl, orbit in (
                ("s1_asc", slice(0, 2), "ascending"),
                ("s1_desc", slice(2, 4), "descending"),
            ):
                writers.append(
                    write_cube(
                        tx,
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
                            attrs={"nodata_source": "BioMassters: -9999 = missing S1"},
                        ),
                        stats=stats,
                        background=True,
                    )
                )
        tx.write_target("agb", agb, grid, units="t/ha", long_name="above-ground biomass")
        for writer in writers:  # statistics computed in the background while the rest was written
            writer.finish()


@dataclass
class FolderReport:
    """What :func:`ingest_biomassters_folder` did.

    Attributes:
        written: chips ingested in this run.
        skipped: chips whose store already existed (ingested by an earlier run).
        failed: chip -> one-line error.
        out_dir: the folder of stores.

    """

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    out_dir: Path = Path()

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.out_dir}: {len(self.written)} chips ingested, {len(self.skipped)} already there, "
            f"{len(self.failed)} failed"
        ]
        for chip, err in list(self.failed.items())[:20]:
            lines.append(f"  {chip}: {err}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more (see {self.out_dir / FAILURES_FILE})")
        return "\n".join(lines)


FAILURES_FILE = "ingest-failures.json"


def _chip_task(
    features: str, agbm: str | None, out: str, chip: str, start_year: int, allow_missing: bool, stats: bool
) -> tuple[str, str | None]:
    """Ingest one chip in a worker process: ``(chip, None)`` or ``(chip, error line)``."""
    try:
        ingest_biomassters(
            features,
            out,
            chip_id=chip,
            start_year=start_year,
            allow_missing=allow_missing,
            progress=False,
            agbm_dir=agbm,
            stats=stats,
        )
    except SpectraVLMError as err:
        return chip, str(err)
    except Exception as err:  # a failure of one chip must not stop the others
        return chip, f"{type(err).__name__}: {err}"
    return chip, None


def _complete(store: Path) -> bool:
    try:
        CubeStore.open(store)
    except StoreError:
        return False
    return True


def ingest_biomassters_folder(
    features_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    agbm_dir: str | os.PathLike[str] | None = None,
    chips: Sequence[str] | None = None,
    start_year: int = 2020,
    allow_missing: bool = False,
    workers: int = 2,
    stats: bool = True,
    progress: bool = True,
) -> FolderReport:
    """Ingest every chip of a BioMassters folder, one store per chip (module docstring).

    Args:
        features_dir: the folder of ``<chip>_S1_MM.tif`` / ``<chip>_S2_MM.tif`` (``train_features``).
        out_dir: the folder of stores, ``<out_dir>/<chip>.zarr`` (created).
        agbm_dir: the folder of ``<chip>_agbm.tif`` (``train_agbm``; default ``features_dir``).
        chips: only these chips (default: every chip found).
        start_year: see :func:`ingest_biomassters`.
        allow_missing: see :func:`ingest_biomassters`.
        workers: worker processes (1: in this process).
        stats: store statistics with each chip.
        progress: show a progress bar.

    Returns:
        The chips written, skipped (already there) and failed (with their error).

    """
    features = Path(features_dir)
    found = find_chips(features)
    if chips is not None:
        unknown = sorted(set(chips) - set(found))
        if unknown:
            raise IngestError(f"{features}: no files of chip(s) {', '.join(unknown[:10])}")
        found = sorted(set(chips))
    if not found:
        raise IngestError(f"{features}: no BioMassters chip files (<chip>_S1_MM.tif, <chip>_S2_MM.tif)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise IngestError(
            f"{out} exists and is not a folder; the folder ingest writes one store per chip there"
        )
    out.mkdir(parents=True, exist_ok=True)
    report = FolderReport(out_dir=out)
    todo = []
    for chip in found:
        if (out / f"{chip}.zarr").exists() and _complete(out / f"{chip}.zarr"):
            report.skipped.append(chip)
        else:
            todo.append(chip)
    agbm = None if agbm_dir is None else str(agbm_dir)
    args = [(str(features), agbm, str(out / f"{c}.zarr"), c, start_year, allow_missing, stats) for c in todo]
    with tqdm(total=len(todo), desc="BioMassters chips", disable=not progress) as bar:
        if workers <= 1:
            results = []
            for a in args:
                results.append(_chip_task(*a))
                bar.update(1)
        else:
            # forkserver/spawn: never fork a parent whose zarr event loop or GDAL handles are live
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            ctx = multiprocessing.get_context(method)
            if method == "forkserver":  # workers fork from a server that imported the ingest once
                ctx.set_forkserver_preload([__name__])
            results = []
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(_chip_task, *a) for a in args]
                for f in as_completed(futures):
                    results.append(f.result())
                    bar.update(1)
    for chip, err in sorted(results):
        if err is None:
            report.written.append(chip)
        else:
            report.failed[chip] = err
    if report.failed:
        atomic_write_text(json.dumps(report.failed, indent=1, sort_keys=True), out / FAILURES_FILE)
    elif (out / FAILURES_FILE).exists():
        (out / FAILURES_FILE).unlink()
    return report
