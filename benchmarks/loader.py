"""Window loading: our CubeDataset/DataLoader vs the decode ceiling, plain zarr slicing and TorchGeo.

Data: the synthetic demo store at 1024 x 1024 px (S2: 10 bands uint16 + cloud layer, 10 dates; S1: VV/VH
float32 dB, 12 dates), zarr v3, blosc-zstd(3)+shuffle, chunks (1, C, 256, 256). The same data is also
written as one tiled GeoTIFF per date (256 px tiles, ZSTD level 3 with a predictor; S2 files carry the cloud
layer as an 11th band, the BioMassters layout) for TorchGeo. Page cache warm (every method runs a warm-up
pass first). Every method delivers raw values (uint16 / float32) for ``window`` px windows x all dates.

Methods, each in its own process (``--method``), 2 threads or worker processes where it can use them:

* ``ours``: ``CubeDataset`` (S2 with its cloud layer and validity mask) in a ``DataLoader`` with a
  ``WindowSampler``, batch 8, 0 or 2 workers. Windows on the chunk-aligned grid, shuffled.
* ``ceiling``: numcodecs decoding of exactly the chunk objects ``ours`` reads for the same windows
  (data + cloud chunks), compressed bytes preloaded in RAM, decoded into reused buffers by 2 threads,
  no Python per window: the decode limit of these cores.
* ``zarr``: a plain loop of ``array[:, :, rows, cols]`` (and the cloud layer) over the same windows, one
  process (zarr-python decodes chunks on its own thread pool).
* ``torchgeo``: ``RasterDataset`` per date over the GeoTIFFs, ``RandomGeoSampler`` (random windows, as
  TorchGeo users sample) or ``GridGeoSampler`` (the same aligned windows as ours), dates stacked per window,
  in a ``DataLoader`` with 0 or 2 workers, with ``GDAL_CACHEMAX=16`` (MB; data larger than RAM) and with
  GDAL's default cache (which holds this whole cube decoded: see ../shared/BENCHMARKS.md).

Run: ``flock /tmp/spectravlm-bench.lock python benchmarks/loader.py`` (about 3 minutes). Prints a
markdown table of windows/s, payload MB/s and decoded MB/s and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
WINDOW = 128
BATCH = 8


def _setup_threads() -> None:
    import torch

    torch.set_num_threads(2)


# -- data --------------------------------------------------------------------------------------------


def build(workdir: Path, size: int) -> tuple[Path, Path]:
    """The demo store and its per-date GeoTIFFs (reused when present)."""
    import rasterio

    from spectravlm.data.demo import write_demo_store
    from spectravlm.data.store import CubeStore

    store = workdir / f"demo{size}.zarr"
    tifs = workdir / f"tif{size}"
    if not store.exists():
        write_demo_store(store, size=size, seed=0)
    if not (tifs / "done").exists():
        s = CubeStore.open(store)
        for name in ("s2", "s1"):
            g = s[name]
            (tifs / name).mkdir(parents=True, exist_ok=True)
            t = g.grid.transform
            for ti in range(g.data.shape[0]):
                data = g.data[ti]
                if g.cloud is not None:
                    data = np.concatenate([data, g.cloud[ti][None].astype(data.dtype)])
                profile = dict(
                    driver="GTiff",
                    width=g.grid.width,
                    height=g.grid.height,
                    count=data.shape[0],
                    dtype=str(data.dtype),
                    crs=g.grid.crs_wkt,
                    transform=t,
                    tiled=True,
                    blockxsize=256,
                    blockysize=256,
                    compress="zstd",
                    zstd_level=3,
                    predictor=2 if data.dtype.kind == "u" else 3,
                    nodata=g.nodata,
                )
                with rasterio.open(tifs / name / f"{name}_{ti:02d}.tif", "w", **profile) as dst:
                    dst.write(data)
        (tifs / "done").write_text("ok")
    return store, tifs


def _windows(store: Path, group: str, epochs: int, seed: int = 0) -> list:
    """The aligned window grid in the sampler's shuffled order, ``epochs`` times."""
    from spectravlm.data.dataset import CubeDataset
    from spectravlm.data.windows import WindowSampler

    ds = CubeDataset([store], groups=[group], window_size=WINDOW, empty_windows="mask")
    out = []
    for e in range(epochs):
        s = WindowSampler(len(ds), seed=seed, rank=0, world_size=1)
        s.set_epoch(e)
        out += [ds.windows[i] for i in s]
    return out


def _chunk_bytes(store: Path, group: str) -> tuple[int, int, int, int]:
    """(dates, bytes of one data chunk, bytes of one cloud chunk or 0, bytes of one window payload)."""
    import zarr

    g = zarr.open_group(store, mode="r")[group]
    t, c, _, _ = g["data"].shape
    _, _, cy, cx = g["data"].chunks
    item = g["data"].dtype.itemsize
    cloud = cy * cx if "cloud" in g else 0
    payload = t * c * WINDOW * WINDOW * item + (t * WINDOW * WINDOW if cloud else 0)
    return t, c * cy * cx * item, cloud, payload


# -- methods -----------------------------------------------------------------------------------------


def run_ours(store: Path, group: str, workers: int, epochs: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from spectravlm.data.batchpool import LeasedStack
    from spectravlm.data.datamodule import _worker_init
    from spectravlm.data.dataset import CubeDataset
    from spectravlm.data.windows import WindowSampler
    from spectravlm.stack import collate_stacks

    ds = CubeDataset([store], groups=[group], window_size=WINDOW, empty_windows="mask")
    sampler = WindowSampler(len(ds), seed=0, rank=0, world_size=1)
    loader = DataLoader(
        ds,
        batch_size=BATCH,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_stacks,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init,
    )
    if workers == 0:
        _worker_init(0)
    for _ in loader:  # warm-up epoch: workers start, page cache fills
        pass
    n = 0
    t0 = time.perf_counter()
    for e in range(epochs):
        sampler.set_epoch(e + 1)
        for b in loader:
            n += b[group].values.shape[0]
            assert b[group].values.dtype in (torch.uint16, torch.float32)
            if isinstance(b, LeasedStack):  # done with it, as CubeDataModule.transform would be
                b.release()
    return {"windows": n, "seconds": time.perf_counter() - t0}


def run_ceiling(store: Path, group: str, threads: int, epochs: int) -> dict:
    import numcodecs
    import zarr

    numcodecs.blosc.set_nthreads(1)
    root = zarr.open_group(store, mode="r")
    arrays = [root[f"{group}/data"]] + ([root[f"{group}/cloud"]] if f"{group}/cloud" in root else [])
    wins = _windows(store, group, epochs)
    blobs: list[tuple[bytes, int]] = []  # (compressed chunk, which buffer)
    for w in wins:
        for k, a in enumerate(arrays):
            for t in range(a.shape[0]):
                coords = (
                    (t, 0, w.row // 256, w.col // 256) if a.ndim == 4 else (t, w.row // 256, w.col // 256)
                )
                key = a.metadata.encode_chunk_key(coords)
                blobs.append(((store / a.path / key).read_bytes(), k))
    shapes = [(a.shape[1], 256, 256) if a.ndim == 4 else (256, 256) for a in arrays]

    def work(part: list[tuple[bytes, int]]) -> None:
        bufs = [np.empty(s, a.dtype) for s, a in zip(shapes, arrays, strict=True)]
        for raw, k in part:
            numcodecs.blosc.decompress(raw, bufs[k])

    work(blobs[: len(blobs) // 8])  # warm-up
    parts = [blobs[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=work, args=(p,)) for p in parts]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"windows": len(wins), "seconds": time.perf_counter() - t0}


def run_zarr(store: Path, group: str, epochs: int) -> dict:
    import zarr

    root = zarr.open_group(store, mode="r")
    data = root[f"{group}/data"]
    cloud = root[f"{group}/cloud"] if f"{group}/cloud" in root else None
    wins = _windows(store, group, epochs)
    for w in wins[: len(wins) // epochs]:  # warm-up epoch
        rows, cols = w.slices()
        data[:, :, rows, cols]
    t0 = time.perf_counter()
    for w in wins:
        rows, cols = w.slices()
        data[:, :, rows, cols]
        if cloud is not None:
            cloud[:, rows, cols]
    return {"windows": len(wins), "seconds": time.perf_counter() - t0}


def run_core(store: Path, group: str, epochs: int, repeats: int) -> dict:
    """Ceiling, ours (2 and 0 workers) and plain zarr, interleaved ``repeats`` times: median rates."""
    runs: dict[str, list[float]] = {"ceiling": [], "ours2": [], "ours0": [], "zarr": []}
    for _ in range(repeats):
        for name, fn in (
            ("ceiling", lambda: run_ceiling(store, group, 2, epochs)),
            ("ours2", lambda: run_ours(store, group, 2, epochs)),
            ("zarr", lambda: run_zarr(store, group, epochs)),
        ):
            r = fn()
            runs[name].append(r["windows"] / r["seconds"])
    r = run_ours(store, group, 0, epochs)
    runs["ours0"].append(r["windows"] / r["seconds"])
    return {k: statistics.median(v) for k, v in runs.items()}


class _TimeSeries:
    """TorchGeo time series by hand: one RasterDataset per date, queried with the same box."""

    def __init__(self, files: list[Path]) -> None:
        from torchgeo.datasets import RasterDataset

        self.dates = [RasterDataset(paths=[str(f)]) for f in files]
        self.index = self.dates[0].index
        self.bounds = self.dates[0].bounds
        self.res = self.dates[0].res
        self.crs = self.dates[0].crs

    def __getitem__(self, query: object) -> dict:
        import torch

        return {"image": torch.stack([d[query]["image"] for d in self.dates])}


def run_torchgeo(tifs: Path, group: str, workers: int, sampler_kind: str, n: int) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

    ts = _TimeSeries(sorted((tifs / group).glob("*.tif")))
    if sampler_kind == "random":
        sampler = RandomGeoSampler(
            ts.dates[0], size=WINDOW, length=n, generator=torch.Generator().manual_seed(0)
        )
    else:
        sampler = GridGeoSampler(ts.dates[0], size=WINDOW, stride=WINDOW)

    def collate(samples: list[dict]) -> torch.Tensor:
        return torch.stack([s["image"] for s in samples])

    loader = DataLoader(
        ts,  # type: ignore[arg-type]
        batch_size=BATCH,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
    )
    seen = 0
    for b in loader:  # warm-up, one grid's worth of windows (opens files in each worker; GDAL cache fills)
        seen += b.shape[0]
        if seen >= len(GridGeoSampler(ts.dates[0], size=WINDOW, stride=WINDOW)):
            break
    count = 0
    t0 = time.perf_counter()
    rounds = max(1, n // len(sampler))
    t, c = len(ts.dates), ts.dates[0][next(iter(sampler))]["image"].shape[0]
    for _ in range(rounds):
        for b in loader:
            assert tuple(b.shape[1:]) == (t, c, WINDOW, WINDOW), b.shape
            count += b.shape[0]
    return {"windows": count, "seconds": time.perf_counter() - t0}


# -- orchestration -----------------------------------------------------------------------------------


def _sub(args: list[str], env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, str(HERE), *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    global WINDOW
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default=None)
    p.add_argument("--group", default="s2")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sampler", default="random")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--window", type=int, default=WINDOW)
    p.add_argument("--core-windows", default="256", help="extra window sizes for ceiling/ours/zarr only")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "spectravlm-bench-loader"))
    a = p.parse_args()
    WINDOW = a.window
    _setup_threads()
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store, tifs = build(workdir, a.size)
    if a.method is not None:
        n_windows = (a.size // WINDOW) ** 2 * a.epochs
        result = {
            "core": lambda: run_core(store, a.group, a.epochs, a.repeats),
            "ours": lambda: run_ours(store, a.group, a.workers, a.epochs),
            "ceiling": lambda: run_ceiling(store, a.group, a.workers, a.epochs),
            "zarr": lambda: run_zarr(store, a.group, a.epochs),
            "torchgeo": lambda: run_torchgeo(tifs, a.group, a.workers, a.sampler, n_windows),
        }[a.method]()
        print(json.dumps(result))
        return

    rows: list[dict] = []
    for group, window in [
        (g, w) for g in ("s2", "s1") for w in (a.window, *map(int, a.core_windows.split(",")))
    ]:
        WINDOW = window
        t, data_b, cloud_b, payload = _chunk_bytes(store, group)
        decoded = t * (data_b + cloud_b)  # per aligned window: one data (+ cloud) chunk per date
        common = ["--group", group, "--epochs", str(a.epochs), "--size", str(a.size), "--window", str(window)]
        key = f"{group}, {window} px"

        def add(label: str, rate: float, dec: int, key: str = key, payload: int = payload) -> None:
            rows.append({"group": key, "method": label, "win_s": rate, "payload": payload, "decoded": dec})
            print(f"{key} {label}: {rate:.1f} windows/s", file=sys.stderr, flush=True)

        core = _sub(["--method", "core", "--repeats", str(a.repeats), *common])
        add("ceiling, 2 threads", core["ceiling"], decoded)
        add("ours, 2 workers", core["ours2"], decoded)
        add("ours, 0 workers", core["ours0"], decoded)
        add("plain zarr loop", core["zarr"], decoded)
        if window != a.window:
            continue
        for kind in ("random", "grid"):
            for workers in (0, 2) if group == "s2" else (2,):
                for cache in ("16", None):
                    env = {"GDAL_CACHEMAX": cache} if cache else None
                    args = ["--method", "torchgeo", "--workers", str(workers), "--sampler", kind]
                    r = _sub([*args, *common], env)
                    cache_label = f"{cache} MB" if cache else "default"
                    add(
                        f"torchgeo {kind}, {workers} workers, GDAL cache {cache_label}",
                        r["windows"] / r["seconds"],
                        0,
                    )
    print(f"\nload average after the run: {os.getloadavg()}; 2 vCPU; batch {BATCH}\n")
    print(
        "| group, window | method | windows/s | payload MB/s | decoded MB/s | vs ceiling | ours (2 w)/this |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        same = [x for x in rows if x["group"] == r["group"]]
        ceil = next(x["win_s"] for x in same if x["method"].startswith("ceiling"))
        ours = next(x["win_s"] for x in same if x["method"] == "ours, 2 workers")
        rate = r["win_s"]
        dec = f"{rate * r['decoded'] / 1e6:.0f}" if r["decoded"] else "-"
        cells = [r["group"], r["method"], f"{rate:.1f}", f"{rate * r['payload'] / 1e6:.0f}", dec]
        cells += [f"{rate / ceil:.2f}", f"{ours / rate:.2f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
