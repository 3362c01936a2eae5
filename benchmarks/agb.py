"""AGB regression on CPU: our encoder + Mixer head (pretrained, from scratch) vs TorchGeo's U-Net vs the mean.

Part ``quality``, one run on one data set, split, epoch count and thread count for every method: the real
BioMassters chip 0060c0a5 (../shared/data; 256 x 256 px, S2 10 bands + S1 ascending and descending VV/VH, 12
months each; LiDAR-derived AGB in t/ha), its four 128 px quadrants as blocks, seed 0: three quadrants train,
the bottom-right one is held out. Windows of 32 px, batch 4, ``--epochs`` epochs, AdamW with warm-up and
cosine decay, Gaussian NLL head (mean and variance) for every network, target standardised with the training
split's statistics.

* (a) ``ours, pretrained``: the encoder pretrained with masked modelling (MAE, ``--pretrain-epochs`` epochs,
  no labels) on the training quadrants, then fine-tuned with the dense Mixer head;
* (b) ``ours, scratch``: the same model and fine-tuning from a random encoder;
* (c) ``TorchGeo U-Net``: the network of ``PixelwiseRegressionTask(model="unet", backbone="resnet18")``, dates
  x bands stacked as channels (12 x 14 = 168), in the same harness (``UNetRegressionTask``);
* (d) ``predict-the-mean``: the training quadrants' mean AGB everywhere.

Reported: RMSE, MAE, R², bias on the held-out quadrant's pixels, 90% interval coverage, fit seconds
(pretraining not included) and parameters. Floor: (a) RMSE <= 1.0x (c).

Part ``steps``: the CPU cost of a training step (forward, backward, AdamW) of (a)/(b) and (c) on one fixed
batch of the chip (4 windows), the two taking turns ``--step-rounds`` times, median (the fit times of part
``quality`` include the machine's load at the time).

Part ``throughput``: ``spectravlm predict``'s path (``MapWriter`` over the extent windows, cosine blending,
COG written) over a whole synthetic demo store (``--scene`` px square, S2 10 bands x 10 dates, S1 VV/VH x
12 dates), ours vs the U-Net with the same windows (32 px, overlap 8, batch 16), untrained weights (the
speed does not depend on them); pixels of the store per second, median of ``--repeats`` runs.

Part ``rss``: peak RSS (``VmHWM``) of a child process that predicts a whole store of 4096 x 4096 px and one of
8192 x 8192 px (4x the pixels), made by tiling the 512 px demo store (S2 B02/B03/B04/B08 and S1 VV/VH, 2 dates
each): the peak must not grow with the scene. The RSS before ``predict`` (libraries, model) is given too.

Run from the project root:
    flock /tmp/spectravlm-bench.lock python benchmarks/agb.py [--parts quality,throughput,rss]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch

from spectravlm.data.bands import store_bands
from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import make_demo_cubes, write_demo_store
from spectravlm.data.ingest import ingest_biomassters
from spectravlm.data.store import Grid, StoreTransaction
from spectravlm.predict import MapWriter
from spectravlm.tasks import PretrainTask, RegressionTask
from spectravlm.tasks.baselines import UNetRegressionTask

ROOT = Path(__file__).resolve().parents[1]
CHIP = ROOT.parent / "shared" / "data" / "biomassters" / "0060c0a5"
GROUPS = ["s2", "s1_asc", "s1_desc"]


def _trainer(epochs: int, **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, gradient_clip_val=1.0, **kw,
    )  # fmt: skip


def _chip_dm(store: Path, targets: tuple[str, ...] = ("agb",)) -> CubeDataModule:
    return CubeDataModule(
        stores=[str(store)], groups=GROUPS, targets=list(targets), window_size=32, block_size=128,
        split_fractions=(0.75, 0.25, 0.0), batch_size=4, num_workers=0, seed=0,
    )  # fmt: skip


def _ours(bands, init: str | None, args) -> RegressionTask:
    return RegressionTask(
        bands=bands, window_size=32, encoder=args.encoder, patch_size=args.patch, attention=args.attention,
        temporal_depth=2, init_encoder=init, head_dim=128, head_depth=2, uncertainty="gaussian", lr=2e-3,
        warmup=0.1,
    )  # fmt: skip


def _unet(bands, window: int = 32) -> UNetRegressionTask:
    return UNetRegressionTask(bands=bands, window_size=window, uncertainty="gaussian", lr=1e-3, warmup=0.1)


def _fit(task, store: Path, epochs: int) -> dict:
    L.seed_everything(0)
    dm = _chip_dm(store)
    trainer = _trainer(epochs, check_val_every_n_epoch=epochs)
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    seconds = time.perf_counter() - t0
    m = trainer.validate(task, datamodule=dm, verbose=False)[0]
    out = {k.split("/")[1]: float(v) for k, v in m.items()}
    out["fit_s"] = seconds
    out["params_M"] = sum(p.numel() for p in task.parameters()) / 1e6
    return out


def quality_part(args: argparse.Namespace, work: Path) -> dict:
    store = work / "0060c0a5.zarr"
    ingest_biomassters(CHIP, store)
    dm = _chip_dm(store)
    bands = store_bands(dm.stores, dm.groups)
    res: dict[str, dict] = {}
    # (a) pretrain on the training quadrants (no labels), then fine-tune
    L.seed_everything(0)
    pre_dm = _chip_dm(store, targets=())
    pre = PretrainTask(
        bands=bands, window_size=32, encoder=args.encoder, patch_size=args.patch, attention=args.attention,
        temporal_depth=2, decoder_dim=64, decoder_depth=1, decoder_heads=4, lr=1.5e-3, warmup=0.1,
    )  # fmt: skip
    t0 = time.perf_counter()
    _trainer(args.pretrain_epochs, limit_val_batches=0).fit(pre, datamodule=pre_dm)
    pretrain_s = time.perf_counter() - t0
    encoder = pre.export_encoder(work / "encoder")
    res["(a) ours, pretrained"] = _fit(_ours(bands, str(encoder), args), store, args.epochs)
    res["(a) ours, pretrained"]["pretrain_s"] = pretrain_s
    res["(b) ours, scratch"] = _fit(_ours(bands, None, args), store, args.epochs)
    res["(c) TorchGeo U-Net"] = _fit(_unet(bands), store, args.epochs)
    a = res["(a) ours, pretrained"]
    res["(d) predict-the-mean"] = {
        "rmse": a["baseline_rmse"], "mae": a["baseline_mae"], "r2": a["baseline_r2"],
    }  # fmt: skip
    res["floor (a) rmse / (c) rmse"] = {"ratio": a["rmse"] / res["(c) TorchGeo U-Net"]["rmse"]}
    return res


def steps_part(args: argparse.Namespace, work: Path) -> dict:
    """Training step time (forward, backward, AdamW) of ours and the U-Net on one chip batch, interleaved."""
    store = work / "0060c0a5.zarr"
    if not store.exists():
        ingest_biomassters(CHIP, store)
    dm = _chip_dm(store)
    dm.setup("fit")
    batch = dm.transform(next(iter(dm.train_dataloader())), train=False)
    bands = store_bands(dm.stores, dm.groups)
    models = {"ours": _ours(bands, None, args), "unet": _unet(bands)}
    for task in models.values():
        task.objective.load_statistics({"transform_mean": 76.0, "transform_std": 73.0, "train_mean": 76.0})
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}

    def step(name: str) -> float:
        t0 = time.perf_counter()
        loss = models[name].objective.step(models[name].raw(batch), batch, "train")
        loss.backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {k: [] for k in models}
    for name in models:  # warm-up
        step(name)
    for _ in range(args.step_rounds):
        for name in models:
            times[name].append(step(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "batch": batch.batch_size,
        "ours_step_s": med["ours"],
        "unet_step_s": med["unet"],
        "ours/unet": med["ours"] / med["unet"],
    }


def _predict_seconds(task, store: Path, maps: Path) -> float:
    dm = CubeDataModule(
        stores=[str(store)], groups=["s2", "s1"], window_size=32, block_size=64, batch_size=16, num_workers=0,
        empty_windows="mask", predict_windows="extent", predict_overlap=8, predict_tile_size=1024,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[MapWriter(str(maps), overwrite=True)],
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.predict(task, datamodule=dm)
    return time.perf_counter() - t0


def _forward_seconds(task, store: Path) -> float:
    """Seconds in the model's forward alone over the same extent windows (no reading, blending or writing)."""
    from spectravlm.predict.loader import extent_dataloader

    dm = CubeDataModule(
        stores=[str(store)], groups=["s2", "s1"], window_size=32, block_size=64, batch_size=16, num_workers=0,
        empty_windows="mask",
    )  # fmt: skip
    spent = 0.0
    with torch.no_grad():
        for batch in extent_dataloader(dm, dm.stores, 8, 1024):
            t0 = time.perf_counter()
            task.predict_step(batch, 0)
            spent += time.perf_counter() - t0
    return spent


def throughput_part(args: argparse.Namespace, work: Path) -> dict:
    store = work / "scene.zarr"
    write_demo_store(store, size=args.scene, seed=0)
    bands = store_bands([str(store)], ["s2", "s1"])
    stats = {"transform_mean": 100.0, "transform_std": 50.0, "train_mean": 100.0}
    L.seed_everything(0)
    models = {
        f"ours ({args.encoder} encoder + Mixer head)": RegressionTask(
            bands=bands, window_size=32, encoder=args.encoder, patch_size=args.patch,
            attention=args.attention, temporal_depth=2, head_dim=128, head_depth=2, uncertainty="gaussian",
            **stats,
        ),
        "TorchGeo U-Net (resnet18)": UNetRegressionTask(
            bands=bands, window_size=32, uncertainty="gaussian", **stats
        ),
    }  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in models}
    for task in models.values():  # warm-up
        _predict_seconds(task.eval(), store, work / "maps")
    for _ in range(args.repeats):
        for name, task in models.items():
            times[name].append(_predict_seconds(task, store, work / "maps"))
    pixels = args.scene**2
    out: dict[str, dict] = {
        name: {"seconds": statistics.median(t), "pixels_per_s": pixels / statistics.median(t), "runs": t}
        for name, t in times.items()
    }
    for name, task in models.items():  # the model alone: what tiling, reading and writing add on top
        forward = statistics.median(_forward_seconds(task, store) for _ in range(args.repeats))
        out[name] |= {"forward_only_s": forward, "predict_s / forward_only_s": out[name]["seconds"] / forward}
    ours, unet = (out[k]["pixels_per_s"] for k in models)
    out["ours / U-Net pixels per s"] = {"ratio": ours / unet}
    return out


def _big_store(path: Path, size: int) -> None:
    """A ``size`` px square store: the 512 px demo store tiled (S2 4 bands, S1 2 bands, 2 dates each)."""
    s2, s1, _, grid = make_demo_cubes(size=512, seed=0)
    reps = size // 512
    big = Grid(size, size, grid.transform, grid.crs_wkt)
    keep = [s2.bands.index(b) for b in ("B02", "B03", "B04", "B08")]
    s2 = replace(
        s2, bands=("B02", "B03", "B04", "B08"), data=np.tile(s2.data[4:6][:, keep], (1, 1, reps, reps)),
        cloud=np.tile(s2.cloud[4:6], (1, reps, reps)), times=s2.times[4:6], grid=big,
    )  # fmt: skip
    s1 = replace(s1, data=np.tile(s1.data[5:7], (1, 1, reps, reps)), times=s1.times[5:7], grid=big)
    with StoreTransaction(
        path, mode="create", overwrite=True, title=f"tiled demo {size}", synthetic=True
    ) as tx:
        tx.write_sensor("s2", s2)
        tx.write_sensor("s1", s1)


def rss_child(store: str, maps: str, tile: int) -> None:
    """Predict a whole store (test-size encoder, 64 px windows) and print the peak RSS as JSON."""

    def status(key: str) -> float:
        with open("/proc/self/status") as f:
            return int(next(x for x in f if x.startswith(key)).split()[1]) / 1024

    torch.set_num_threads(1)
    L.seed_everything(0)
    dm = CubeDataModule(
        stores=[store], groups=["s2", "s1"], window_size=64, block_size=1024, batch_size=16, num_workers=2,
        empty_windows="mask", predict_windows="extent", predict_overlap=16, predict_tile_size=tile,
    )  # fmt: skip
    task = RegressionTask(
        bands=store_bands([store], ["s2", "s1"]), window_size=64, encoder="test", patch_size=16, head_dim=32,
        head_depth=1, transform_mean=100.0, transform_std=50.0, train_mean=100.0, uncertainty="gaussian",
    )  # fmt: skip
    before = status("VmRSS:")
    writer = MapWriter(maps, overwrite=True)
    t0 = time.perf_counter()
    L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[writer],
    ).predict(task, datamodule=dm)
    seconds = time.perf_counter() - t0
    print(json.dumps({"rss_before_mb": before, "peak_mb": status("VmHWM:"), "seconds": seconds}))


def rss_part(args: argparse.Namespace, work: Path) -> dict:
    res = {}
    for size in args.rss_sizes:
        store = work / f"tiled{size}.zarr"
        _big_store(store, size)
        cmd = [sys.executable, __file__, "--rss-child", str(store), str(work / f"maps{size}"), "1024"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        res[f"{size} x {size}"] = json.loads(out.strip().splitlines()[-1])
        res[f"{size} x {size}"]["pixels_per_s"] = size * size / res[f"{size} x {size}"]["seconds"]
        subprocess.run(["rm", "-rf", str(store), str(work / f"maps{size}")], check=True)
    return res


def map_figure_png(store: str, tif: str, png: str) -> None:
    """Render the docs' map figure: S2 true colour (clearest date), target, predicted AGB, uncertainty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio

    from spectravlm.data.store import CubeStore

    cube = CubeStore.open(store)
    s2 = cube["s2"]
    cloud = [
        float(np.asarray(s2.cloud[t]).mean()) if s2.cloud is not None else 0.0 for t in range(len(s2.times))
    ]
    t = int(np.argmin(cloud))  # the date with the least mean cloud probability
    rgb = np.asarray(s2.data[t], dtype=np.float32)[s2.band_index(["B04", "B03", "B02"])]
    rgb = np.clip(rgb.transpose(1, 2, 0) * s2.scale_factor * 2.5, 0, 1)  # Sentinel Hub true colour gain
    target = np.asarray(cube.targets["agb"][:]) if "agb" in cube.targets else None
    with rasterio.open(tif) as src:
        pred, std = src.read(1), src.read(2) if src.count > 1 else None
    panels = [("S2 true colour, " + str(s2.times[t])[:10], rgb, None)]
    vmax = float(np.nanpercentile(pred, 99.5))
    if target is not None:
        panels.append(("AGB target (t/ha)", target, ("YlGn", 0.0, vmax)))
    panels.append(("predicted AGB (t/ha)", pred, ("YlGn", 0.0, vmax)))
    if std is not None:
        panels.append(("uncertainty, sigma (t/ha)", std, ("magma", 0.0, float(np.nanpercentile(std, 99.5)))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.5))
    for ax, (title, img, style) in zip(axes, panels, strict=True):
        if style is None:
            ax.imshow(img)
        else:
            im = ax.imshow(img, cmap=style[0], vmin=style[1], vmax=style[2], interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(png, dpi=72)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="quality,steps,throughput,rss")
    p.add_argument("--step-rounds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--encoder", default="tiny")
    p.add_argument("--attention", default="joint")
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--scene", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rss-sizes", type=int, nargs="+", default=[4096, 8192], help="edges, multiples of 512")
    p.add_argument("--rss-child", nargs=3, metavar=("STORE", "MAPS", "TILE"))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--figure", nargs=3, metavar=("STORE", "TIF", "PNG"), help="render the docs' map figure")
    args = p.parse_args()
    if args.figure:
        map_figure_png(*args.figure)
        return
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1], int(args.rss_child[2]))
        return
    torch.set_num_threads(args.threads)
    results: dict[str, dict] = {"args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for part in args.parts.split(","):
            parts = {
                "quality": quality_part,
                "steps": steps_part,
                "throughput": throughput_part,
                "rss": rss_part,
            }
            fn = parts[part]
            results[part] = fn(args, work)
            print(json.dumps({part: results[part]}, indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
