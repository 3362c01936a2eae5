"""Ingest throughput of the real BioMassters chip: ingest_biomassters vs a plain loop of rasterio reads.

Run from the project root (venv active), under the shared benchmark lock:

    flock /tmp/spectravlm-bench.lock python benchmarks/ingest.py

Input: chip 0060c0a5 from ../shared/data/biomassters (12 monthly S1 files of 4 float32 bands, 12 monthly S2
files of 11 uint16 bands, the float32 AGB target; 256 x 256 px; uncompressed GeoTIFFs). Throughput is in
MB/s of *decoded input* (the bytes of all arrays the files hold, the same numerator for every method).

Methods, timed round-robin in one process (A B C D A B C D ...) after a warm-up pass that puts every file in
the page cache (warm cache), median over ``--reps`` repetitions:

* ``rasterio_read`` (the read ceiling): open each file with rasterio, ``read()`` all bands, close.
* ``ingest_biomassters``: the library ingest into a new store (reads, stacks, checks, encodes the chunks with
  blosc-zstd, writes to a hidden temporary directory, consolidates metadata, renames), no stats pass.
* ``store_write``: only the write half: the same arrays, already in memory, through StoreTransaction.
* ``blosc_encode`` (the encode ceiling): numcodecs Blosc zstd with byte shuffle at the store's codec
  settings (level 1, blosc's default 2 threads here, as zarr uses them) over the same chunks, no file system.
* ``ingest+stats``: what ``spectravlm data ingest biomassters`` does by default (ingest, then the stats pass).

Every timed call writes a new store path (a fresh ingest); the stores are deleted outside the timed region,
because replacing a store (``overwrite=True``) also deletes the old one, and deleting directories costs
~3 ms each on this VM's ext4 disk (a store of this chip has ~180 directories). Stores go to ``--tmp``
(default: the system temp dir).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from spectravlm.data.ingest import ingest_biomassters
from spectravlm.data.ingest.biomassters import S1_NODATA, S2_BANDS, month_dates
from spectravlm.data.stats import compute_stats
from spectravlm.data.store import _COMPRESSOR, Grid, SensorCube, StoreTransaction

CHIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "biomassters" / "0060c0a5"


def chip_files(chip: Path) -> list[Path]:
    return sorted(chip.glob("*.tif"))


def decoded_bytes(files: list[Path]) -> int:
    total = 0
    for f in files:
        with rasterio.open(f) as src:
            total += src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
    return total


def rasterio_read(files: list[Path]) -> int:
    n = 0
    for f in files:
        with rasterio.open(f) as src:
            n += src.read().nbytes
    return n


def load_arrays(chip: Path) -> dict[str, np.ndarray]:
    s1 = np.stack([rasterio.open(chip / f"0060c0a5_S1_{m:02d}.tif").read() for m in range(12)])
    s2 = np.stack([rasterio.open(chip / f"0060c0a5_S2_{m:02d}.tif").read() for m in range(12)])
    agb = rasterio.open(chip / "0060c0a5_agbm.tif").read(1)
    return {"s1": s1, "s2": s2, "agb": agb}


def _ingested(chip: Path, path: Path) -> Path:
    ingest_biomassters(chip, path, progress=False)
    return path


def store_write(arrays: dict[str, np.ndarray], path: Path) -> None:
    """The write half of ingest_biomassters, on arrays already in memory (same groups, same codecs)."""
    grid = Grid(256, 256)
    times = month_dates(2020)
    s1, s2 = arrays["s1"], arrays["s2"]
    cloud = np.minimum(s2[:, 10], 100).astype(np.uint8)
    with StoreTransaction(path, mode="create") as tx:
        data = np.ascontiguousarray(s2[:, :10])
        cube = SensorCube(
            "sentinel2_l2a", S2_BANDS, data, times, grid, cloud=cloud, scale_factor=1e-4, units="reflectance"
        )
        tx.write_sensor("s2", cube)
        for group, sl in (("s1_asc", slice(0, 2)), ("s1_desc", slice(2, 4))):
            data = np.ascontiguousarray(s1[:, sl])
            cube = SensorCube("sentinel1_grd", ("VV", "VH"), data, times, grid, nodata=S1_NODATA, units="dB")
            tx.write_sensor(group, cube)
        tx.write_target("agb", arrays["agb"], grid, units="t/ha")


def blosc_encode(arrays: dict[str, np.ndarray]) -> int:
    """Encode the chunks the store writes: (1, C, 256, 256) per date and group, and the AGB tile."""
    # the store's own codec settings (spectravlm.data.store._COMPRESSOR)
    codec = numcodecs.Blosc(
        cname=_COMPRESSOR.cname.value, clevel=_COMPRESSOR.clevel, shuffle=numcodecs.Blosc.SHUFFLE
    )
    chunks = [np.ascontiguousarray(arrays["s2"][t, :10]) for t in range(12)]
    chunks += [np.minimum(arrays["s2"][t, 10], 100).astype(np.uint8) for t in range(12)]
    chunks += [
        np.ascontiguousarray(arrays["s1"][t, sl]) for t in range(12) for sl in (slice(0, 2), slice(2, 4))
    ]
    chunks.append(arrays["agb"])
    return sum(len(codec.encode(c)) for c in chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chip", type=Path, default=CHIP)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    files = chip_files(args.chip)
    if len(files) != 25:
        raise SystemExit(f"{args.chip}: expected 25 tifs (12 S1, 12 S2, agbm), found {len(files)}")
    nbytes = decoded_bytes(files)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        out = Path(tmp)
        arrays = load_arrays(args.chip)
        fresh = (out / f"s{i}.zarr" for i in itertools.count())
        methods: dict[str, Callable[[], object]] = {
            "rasterio_read": lambda: rasterio_read(files),
            "ingest_biomassters": lambda: ingest_biomassters(args.chip, next(fresh), progress=False),
            "store_write": lambda: store_write(arrays, next(fresh)),
            "blosc_encode": lambda: blosc_encode(arrays),
            "ingest+stats": lambda: compute_stats(_ingested(args.chip, next(fresh))),
        }
        for fn in methods.values():  # warm-up: page cache, imports, first-call costs
            fn()
        times: dict[str, list[float]] = {k: [] for k in methods}
        for _ in range(args.reps):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                for old in out.glob("s*.zarr"):  # outside the timed region
                    if old != out / "s0.zarr":
                        shutil.rmtree(old)
        store = out / "s0.zarr"
        store_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6
    mb = nbytes / 1e6
    ceiling = statistics.median(times["rasterio_read"])
    print(f"chip {args.chip.name}: {len(files)} files, {mb:.1f} MB decoded input, store {store_mb:.1f} MB")
    print(f"{'method':<20} {'median s':>9} {'MB/s':>8} {'x ceiling':>10}   (min..max s, {args.reps} reps)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{name:<20} {med:>9.4f} {mb / med:>8.1f} {ceiling / med:>10.3f}   ({min(ts):.4f}..{max(ts):.4f})"
        )


if __name__ == "__main__":
    main()
