"""Ingest throughput against the read + encode ceiling: a real BioMassters chip, a full-size tile, a folder.

Run from the project root (venv active), under the shared benchmark lock:

    flock /tmp/spectravlm-bench.lock python benchmarks/ingest.py --part chip
    flock /tmp/spectravlm-bench.lock python benchmarks/ingest.py --part tile
    flock /tmp/spectravlm-bench.lock python benchmarks/ingest.py --part folder

Throughput is in MB/s of *decoded input* (the bytes of all arrays the source files hold, the same
numerator for every method). The ceiling of an ingest is **read + encode**: the time of a plain loop of
rasterio reads of every source file, plus the time of numcodecs Blosc (the store's codec, zstd level 1 +
byte shuffle, blosc's 2 threads) over exactly the chunks the store holds, without a file system. An
ingest also checks, resamples, writes files, computes statistics and builds metadata; ``x ceiling`` is
``(read + encode) / method``.

``--part chip``: chip 0060c0a5 from ../shared/data/biomassters (12 monthly S1 files of 4 float32 bands, 12
monthly S2 files of 11 uint16 bands, the float32 AGB target; 256 x 256 px; uncompressed GeoTIFFs). Methods
timed round-robin in one process after a warm-up pass (warm page cache), median over ``--reps``:

* ``rasterio_read``, ``blosc_encode``: the two halves of the ceiling;
* ``ingest`` (the default: statistics accumulated during the ingest, one pass);
* ``ingest_nostats`` (``stats=False``);
* ``ingest+stats_pass``: ingest without statistics, then ``compute_stats`` (a second pass reading the store
  back: what ``spectravlm data ingest`` did before statistics moved into the ingest);
* ``store_write`` / ``store_write_zarr``: the write half only (arrays already in memory), with the store's
  direct chunk writer (:class:`~spectravlm.data.store.ChunkFiles`: whole chunks encoded by a thread pool
  and written as files) and with every chunk through zarr-python's own write path.

``--part tile``: a synthetic Sentinel-2 L1C tile of ``--size`` px at 10 m (default 10980, a full tile), 13
band files at their native 10/20/60 m resolutions, tiled 512 px, deflate + predictor (generated once into
``--tile-dir``). Timed in turn, ``--reps`` times: the read ceiling (every file read in strips, 2 threads),
the encode ceiling (blosc over the store's chunks of the 13-band 10 m cube, the data already in memory one
row of chunks at a time), and ``ingest_geotiff`` in a fresh subprocess with statistics (read threads 2 and
1) and without, and with the 20/60 m bands through GDAL's warper instead of the nested-grid read, reporting
its peak RSS (``VmHWM``).

``--part odc``: the reading question of the STAC ingest: ``ingest_stac`` (our windowed reader) against
odc-stac (``odc.stac.load`` into dask chunks of one row of 256 px chunks, then ``to_zarr`` with the same
codec), both from one STAC item over the ``--size`` tile's files, each in a fresh subprocess (time, peak
RSS). odc-stac is not a dependency of the library; install it beside the venv to run this part (the
figures in RESULTS.md: ``pip install --no-deps --target /tmp/odc_pkgs odc-stac odc-geo odc-loader dask
toolz partd locket cloudpickle cachetools importlib_metadata zipp lazy-importer`` and ``PYTHONPATH``).

``--part folder``: ``ingest_biomassters_folder`` over ``--chips`` copies of the chip (symlinked under
other ids): chips per second with 1 and 2 worker processes (each measured twice, alternating), a resume
with every chip done, and the cost of opening 8 per-chip stores in a ``CubeDataset`` (the loader's side
of "one store per chip").
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs
import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.windows import Window

from spectravlm.data import store as store_module
from spectravlm.data.ingest import ingest_biomassters
from spectravlm.data.ingest.biomassters import S1_NODATA, S2_BANDS, month_dates
from spectravlm.data.stats import compute_stats
from spectravlm.data.store import _COMPRESSOR, CHUNK_XY, Grid, SensorCube, StoreTransaction

CHIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "biomassters" / "0060c0a5"
S2_RES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
          "B09": 60, "B10": 60, "B11": 20, "B12": 20}  # fmt: skip


def codec() -> numcodecs.Blosc:
    """The store's own codec settings (spectravlm.data.store._COMPRESSOR)."""
    return numcodecs.Blosc(
        cname=_COMPRESSOR.cname.value, clevel=_COMPRESSOR.clevel, shuffle=numcodecs.Blosc.SHUFFLE
    )


def median_table(times: dict[str, list[float]], mb: float, ceiling: float, reps: int) -> None:
    print(f"{'method':<22} {'median s':>9} {'MB/s':>8} {'x ceiling':>10}   (min..max s, {reps} reps)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{name:<22} {med:>9.4f} {mb / med:>8.1f} {ceiling / med:>10.3f}   ({min(ts):.4f}..{max(ts):.4f})"
        )


# --------------------------------------------------------------------------------------------------
# chip
# --------------------------------------------------------------------------------------------------


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


def store_write_zarr(arrays: dict[str, np.ndarray], path: Path) -> None:
    """``store_write`` with every chunk written through zarr-python (no ChunkFiles fast path)."""
    real = store_module.ChunkFiles.of
    store_module.ChunkFiles.of = classmethod(lambda cls, array: None)  # type: ignore[method-assign,assignment]
    try:
        store_write(arrays, path)
    finally:
        store_module.ChunkFiles.of = real  # type: ignore[method-assign]


def blosc_encode(arrays: dict[str, np.ndarray]) -> int:
    """Encode the chunks the store writes: (1, C, 256, 256) per date and group, and the AGB tile."""
    c = codec()
    chunks = [np.ascontiguousarray(arrays["s2"][t, :10]) for t in range(12)]
    chunks += [np.minimum(arrays["s2"][t, 10], 100).astype(np.uint8) for t in range(12)]
    chunks += [
        np.ascontiguousarray(arrays["s1"][t, sl]) for t in range(12) for sl in (slice(0, 2), slice(2, 4))
    ]
    chunks.append(arrays["agb"])
    return sum(len(c.encode(x)) for x in chunks)


def part_chip(args: argparse.Namespace) -> None:
    files = chip_files(args.chip)
    if len(files) != 25:
        raise SystemExit(f"{args.chip}: expected 25 tifs (12 S1, 12 S2, agbm), found {len(files)}")
    nbytes = decoded_bytes(files)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        out = Path(tmp)
        arrays = load_arrays(args.chip)
        fresh = (out / f"s{i}.zarr" for i in itertools.count())

        def two_pass() -> None:
            path = next(fresh)
            ingest_biomassters(args.chip, path, progress=False, stats=False)
            compute_stats(path)

        methods: dict[str, Callable[[], object]] = {
            "rasterio_read": lambda: rasterio_read(files),
            "blosc_encode": lambda: blosc_encode(arrays),
            "ingest": lambda: ingest_biomassters(args.chip, next(fresh), progress=False),
            "ingest_nostats": lambda: ingest_biomassters(args.chip, next(fresh), progress=False, stats=False),
            "ingest+stats_pass": two_pass,
            "store_write": lambda: store_write(arrays, next(fresh)),
            "store_write_zarr": lambda: store_write_zarr(arrays, next(fresh)),
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
        store_mb = sum(f.stat().st_size for f in (out / "s0.zarr").rglob("*") if f.is_file()) / 1e6
    mb = nbytes / 1e6
    ceiling = statistics.median(times["rasterio_read"]) + statistics.median(times["blosc_encode"])
    print(f"chip {args.chip.name}: {len(files)} files, {mb:.1f} MB decoded input, store {store_mb:.1f} MB")
    print(f"read + encode ceiling: {ceiling:.4f} s")
    median_table(times, mb, ceiling, args.reps)


# --------------------------------------------------------------------------------------------------
# tile
# --------------------------------------------------------------------------------------------------


def make_tile(folder: Path, size: int) -> list[Path]:
    """13 S2 L1C band files of a ``size`` px 10 m tile at native resolutions (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for band, res in S2_RES.items():
        n = size * 10 // res
        path = folder / f"T33UUP_20200613T101031_{band}.tif"
        out.append(path)
        if path.exists():
            continue
        profile = dict(driver="GTiff", height=n, width=n, count=1, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(300000, 5100000, res, res), tiled=True, blockxsize=512,
                       blockysize=512, compress="deflate", predictor=2, nodata=0)  # fmt: skip
        rng = np.random.default_rng(list(S2_RES).index(band))
        tmp = path.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            x = np.arange(n)
            for r0 in range(0, n, 512):
                rows = np.arange(r0, min(r0 + 512, n))
                field = 1500 + 800 * np.sin(rows[:, None] / 300.0) * np.cos(x[None, :] / 450.0)
                strip = (field + rng.normal(0, 60, field.shape)).clip(1, 65535).astype(np.uint16)
                if r0 == 0:
                    strip[:, : n // 8] = 0  # some fill at the tile edge, declared as nodata
                dst.write(strip, 1, window=Window(0, r0, n, len(rows)))
        tmp.rename(path)
    return out


def read_ceiling(files: list[Path], size: int) -> float:
    """Every file read at its own resolution, in strips of 256 target rows, 2 files at a time."""

    def read_file(path: Path) -> None:
        with rasterio.open(path) as src:
            step = max(1, CHUNK_XY * src.height // size)
            for r0 in range(0, src.height, step):
                src.read(1, window=Window(0, r0, src.width, min(step, src.height - r0)))

    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=256), ThreadPoolExecutor(2) as pool:
        list(pool.map(read_file, files))
    return time.perf_counter() - t0


def encode_ceiling(files: list[Path], size: int) -> float:
    """Blosc over the store's (1, 13, 256, 256) chunks of the 10 m cube (data in memory; read untimed)."""
    c = codec()
    ordered = sorted(files, key=lambda p: list(S2_RES).index(p.name.split("_")[-1][:3]))
    total = 0.0
    with rasterio.Env(GDAL_CACHEMAX=256):
        srcs = [rasterio.open(p) for p in ordered]
        for r0 in range(0, size, CHUNK_XY):
            h = min(CHUNK_XY, size - r0)
            slab = np.empty((len(srcs), h, size), dtype=np.uint16)
            for i, src in enumerate(srcs):
                f = size // src.height
                s0, s1 = r0 // f, (r0 + h - 1) // f + 1
                block = src.read(1, window=Window(0, s0, src.width, s1 - s0))
                slab[i] = np.repeat(np.repeat(block, f, 0), f, 1)[r0 - s0 * f : r0 - s0 * f + h]
            t0 = time.perf_counter()
            for c0 in range(0, size, CHUNK_XY):
                c.encode(np.ascontiguousarray(slab[:, :, c0 : c0 + CHUNK_XY]))
            total += time.perf_counter() - t0
        for src in srcs:
            src.close()
    return total


_INGEST_SCRIPT = textwrap.dedent(
    """
    import sys, time, warnings
    warnings.simplefilter("ignore")
    from spectravlm.data.ingest import ingest_geotiff
    t0 = time.perf_counter()
    ingest_geotiff(sys.argv[1], sys.argv[2], "s2", "sentinel2_l1c", units="reflectance", add_offset=0.0,
                   stats=sys.argv[3] == "1", read_threads=int(sys.argv[4]), nested_reads=sys.argv[5] == "1",
                   progress=False)
    dt = time.perf_counter() - t0
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
    print(dt, int(hwm) / 1024)
    """
)


def ingest_subprocess(
    folder: Path, store: Path, stats: bool, threads: int, nested: bool = True
) -> tuple[float, float]:
    """``(seconds, peak RSS MiB)`` of one ingest in a fresh process."""
    flags = ["1" if stats else "0", str(threads), "1" if nested else "0"]
    args = [sys.executable, "-c", _INGEST_SCRIPT, str(folder), str(store), *flags]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def part_tile(args: argparse.Namespace) -> None:
    files = make_tile(args.tile_dir / f"tile{args.size}", args.size)
    decoded = sum(decoded_bytes([f]) for f in files) / 1e6
    out_mb = 13 * args.size * args.size * 2 / 1e6
    read_ceiling(files, args.size)  # warm the page cache
    runs: dict[str, list[float]] = {"read": [], "encode": []}
    rss: dict[str, list[float]] = {}
    variants = {"ingest (stats, 2 read threads)": (True, 2, True),
                "ingest (stats, 1 read thread)": (True, 1, True),
                "ingest (no stats, 2 threads)": (False, 2, True),
                "ingest (stats, GDAL warp 20/60 m)": (True, 2, False)}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for _ in range(args.reps):
            runs["read"].append(read_ceiling(files, args.size))
            runs["encode"].append(encode_ceiling(files, args.size))
            for name, (stats, threads, nested) in variants.items():
                store = Path(tmp) / "tile.zarr"
                seconds, peak = ingest_subprocess(files[0].parent, store, stats, threads, nested)
                runs.setdefault(name, []).append(seconds)
                rss.setdefault(name, []).append(peak)
                store_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6
                shutil.rmtree(store)
    ceiling = statistics.median(runs["read"]) + statistics.median(runs["encode"])
    print(
        f"tile {args.size} x {args.size} px, 13 bands (4 at 10 m, 6 at 20 m, 3 at 60 m): {decoded:.0f} MB "
        f"decoded input, {out_mb:.0f} MB as the 10 m cube, store {store_mb:.0f} MB"
    )
    print(f"read + encode ceiling: {ceiling:.1f} s (read {statistics.median(runs['read']):.1f}, encode "
          f"{statistics.median(runs['encode']):.1f})")  # fmt: skip
    print(f"{'method':<32} {'median s':>9} {'x ceiling':>10} {'peak RSS MiB':>13}   ({args.reps} reps)")
    for name, ts in runs.items():
        med = statistics.median(ts)
        peak = f"{max(rss[name]):>13.0f}" if name in rss else f"{'':>13}"
        print(f"{name:<32} {med:>9.1f} {ceiling / med:>10.3f} {peak}   ({min(ts):.1f}..{max(ts):.1f})")


# --------------------------------------------------------------------------------------------------
# folder
# --------------------------------------------------------------------------------------------------


def part_folder(args: argparse.Namespace) -> None:
    from spectravlm.data.dataset import CubeDataset
    from spectravlm.data.ingest.biomassters import ingest_biomassters_folder

    n = args.chips
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        features = Path(tmp) / "features"
        features.mkdir()
        ids = [f"b{k:07d}" for k in range(n)]
        for chip in ids:
            for f in args.chip.iterdir():
                (features / f.name.replace("0060c0a5", chip)).symlink_to(f)
        print(f"BioMassters folder of {n} chips (symlinks to 0060c0a5), os.cpu_count() = {os.cpu_count()}")
        opened = False
        for workers in (1, 2, 1, 2):
            out = Path(tmp) / f"out{workers}"
            t0 = time.perf_counter()
            report = ingest_biomassters_folder(features, out, workers=workers, progress=False)
            dt = time.perf_counter() - t0
            assert len(report.written) == n, report.summary()
            print(f"workers {workers}: {dt:.2f} s, {n / dt:.2f} chips/s")
            t0 = time.perf_counter()
            skipped = ingest_biomassters_folder(features, out, workers=workers, progress=False)
            print(f"  resume with all {len(skipped.skipped)} done: {time.perf_counter() - t0:.2f} s")
            stores = sorted(str(p) for p in out.glob("*.zarr"))[:8]
            if opened:
                shutil.rmtree(out)
                continue
            opened = True
            t0 = time.perf_counter()
            CubeDataset(
                stores, groups=["s2", "s1_asc"], targets=["agb"], window_size=128, empty_windows="mask"
            )
            dt_mask = time.perf_counter() - t0
            t0 = time.perf_counter()
            ds = CubeDataset(stores, groups=["s2", "s1_asc"], targets=["agb"], window_size=128)
            dt_open = time.perf_counter() - t0
            print(f"  CubeDataset over {len(stores)} chip stores, empty_windows='mask' (open only): "
                  f"{dt_mask / len(stores) * 1e3:.0f} ms per store")  # fmt: skip
            t0 = time.perf_counter()
            batch = ds.read_batch(list(range(len(ds))))
            dt_read = time.perf_counter() - t0
            per_store = dt_open / len(stores) * 1e3
            print(f"  CubeDataset over {len(stores)} chip stores: built in {dt_open:.2f} s "
                  f"({per_store:.0f} ms per store, empty-window pass included), {len(ds)} windows read in "
                  f"{dt_read:.2f} s "
                  f"({len(ds) / dt_read:.0f} windows/s)")  # fmt: skip
            del batch
            shutil.rmtree(out)


_ODC_SCRIPT = textwrap.dedent(
    """
    import sys, time, warnings
    warnings.simplefilter("ignore")
    import pystac
    item = pystac.Item.from_file(sys.argv[1])
    t0 = time.perf_counter()
    if sys.argv[3] == "odc":
        import dask, numcodecs, odc.stac
        from zarr.codecs import BloscCodec
        dask.config.set(scheduler="threads", num_workers=2)
        from affine import Affine
        from odc.geo.geobox import GeoBox
        ref = item.assets["B02"].extra_fields  # the 10 m grid, exactly (as our ingest's target)
        gbox = GeoBox(tuple(ref["proj:shape"]), Affine(*ref["proj:transform"]), "EPSG:32633")
        ds = odc.stac.load([item], bands=sys.argv[4].split(","), geobox=gbox, resampling="nearest",
                           chunks={"time": 1, "y": 256, "x": -1})
        cube = ds.to_array("band").transpose("time", "band", "y", "x").rename("data").to_dataset()
        cube = cube.chunk({"time": 1, "band": -1, "y": 256, "x": 256})
        enc = {"data": {"compressors": BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")}}
        cube.to_zarr(sys.argv[2], mode="w", encoding=enc, zarr_format=3, consolidated=False)
    else:
        from spectravlm.data.ingest import ingest_stac
        ingest_stac(sys.argv[1], sys.argv[2], "s2", "sentinel2_l1c", stats=sys.argv[3] == "ours",
                    overwrite=True, progress=False)
    dt = time.perf_counter() - t0
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
    print(dt, int(hwm) / 1024)
    """
)


def tile_item(files: list[Path], path: Path) -> Path:
    """A STAC item over the tile's band files, with the proj and raster fields odc-stac needs."""
    import json
    from datetime import UTC, datetime

    import pystac
    from rasterio.warp import transform_geom

    with rasterio.open(files[1]) as src:  # B02, 10 m
        left, bottom, right, top = src.bounds
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    geometry = transform_geom("EPSG:32633", "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    lons = [p[0] for p in geometry["coordinates"][0]]
    lats = [p[1] for p in geometry["coordinates"][0]]
    when = datetime(2020, 6, 13, 10, 10, 31, tzinfo=UTC)
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    item = pystac.Item("tile", dict(geometry), bbox, when, {"proj:epsg": 32633})
    for f in files:
        band = f.name.split("_")[-1][:3]
        with rasterio.open(f) as src:
            shape, transform = [src.height, src.width], list(src.transform)[:6]
        fields = {
            "eo:bands": [{"name": band}],
            "proj:shape": shape,
            "proj:transform": transform,
            "raster:bands": [{"nodata": 0, "scale": 1e-4, "offset": 0.0, "data_type": "uint16"}],
        }
        item.add_asset(band, pystac.Asset(str(f), media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                                          extra_fields=fields))  # fmt: skip
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return path


def part_odc(args: argparse.Namespace) -> None:
    files = make_tile(args.tile_dir / f"tile{args.size}", args.size)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        item = tile_item(files, Path(tmp) / "item.json")
        read_ceiling(files, args.size)  # warm the page cache
        runs: dict[str, list[tuple[float, float]]] = {"ours": [], "ours_nostats": [], "odc": []}
        for _ in range(args.reps):
            for name in runs:
                store = Path(tmp) / "out.zarr"
                cmd = [sys.executable, "-c", _ODC_SCRIPT, str(item), str(store), name, ",".join(S2_RES)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
                out = done.stdout.split()
                runs[name].append((float(out[0]), float(out[1])))
                shutil.rmtree(store)
    print(f"tile {args.size} px, 13 bands from one STAC item; each run in a fresh process ({args.reps} reps)")
    for name, rs in runs.items():
        label = {"ours": "ingest_stac (stats)", "ours_nostats": "ingest_stac (no stats)",
                 "odc": "odc.stac.load + to_zarr (dask, 2 threads)"}[name]  # fmt: skip
        print(f"{label:<44} median {statistics.median(r[0] for r in rs):6.1f} s, "
              f"peak RSS {max(r[1] for r in rs):6.0f} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("chip", "tile", "odc", "folder"), default="chip")
    parser.add_argument("--chip", type=Path, default=CHIP)
    parser.add_argument("--reps", type=int, default=None, help="default 7 (chip), 2 (tile)")
    parser.add_argument("--size", type=int, default=10980, help="tile edge in px at 10 m")
    parser.add_argument("--chips", type=int, default=32, help="chips in the folder part")
    parser.add_argument(
        "--tile-dir", type=Path, default=Path(tempfile.gettempdir()) / "spectravlm-bench-tile"
    )
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if args.part == "chip":
        args.reps = args.reps or 7
        part_chip(args)
    elif args.part == "tile":
        args.reps = args.reps or 2
        part_tile(args)
    elif args.part == "odc":
        args.reps = args.reps or 1
        part_odc(args)
    else:
        part_folder(args)


if __name__ == "__main__":
    main()
