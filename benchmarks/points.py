"""Pixel time-series regression: our encoder + scalar Mixer head vs a random forest and linear regression.

The baselines that pixel time-series papers report (Presto, CropHarvest) are scikit-learn's
``RandomForestRegressor`` and linear regression on the flattened series: every band of every date of every
sensor group as one feature (physical units, SAR in dB; a date without a valid observation filled with
the training mean of that feature). Ours is :class:`~spectravlm.tasks.PixelSeriesTask`: each pixel of each
date tokenized by the encoder's patch tokenizer, the encoder's blocks over the pixel's dates and sensors,
an L-TAE over each pixel's per-date tokens (``temporal: ltae``), the scalar Mixer head; 30 epochs from
scratch (AdamW, warm-up and cosine decay, gradient clipping), keeping the weights of the epoch with the
lowest RMSE on the VALIDATION split (never the test split). All three see the same samples and the same
spatial-block split (``PixelSeriesDataModule``); the RMSE is over the held-out test samples, beside
predicting the training mean.

Two data sets:

* ``biomassters``: 2000 random pixels of the REAL BioMassters chip 0060c0a5 (S2 10 bands, S1 ascending and
  descending VV/VH, 12 months; the chip's AGB as the target, no added noise), split in 32 px blocks;
* ``demo``: 3000 points drawn from the SYNTHETIC demo store's AGB (256 px, 10 m) with GEDI-like noise
  (20 t/ha + 5 %), split in 640 m blocks.

Run from the project root::

    flock /tmp/spectravlm-bench.lock python benchmarks/points.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPECTRAVLM_SHARED_DATA", ROOT.parent / "shared" / "data"))


OURS: dict[str, Any] = {"patch_size": 8, "lr": 3e-3, "head_dim": 64, "temporal": "ltae"}
"""Our task's hyperparameters in the benchmark (besides the encoder, the epochs and the seed)."""


def make_pixels(kind: str, work: Path) -> tuple[Path, float]:
    """The points store of a data set and its split block size."""
    from spectravlm.data.demo import write_demo_store
    from spectravlm.data.ingest import ingest_biomassters
    from spectravlm.data.points import draw_points, sample_cubes
    from spectravlm.data.points.pointstore import write_points_store

    store = work / f"{kind}.zarr"
    if kind == "biomassters":
        ingest_biomassters(SHARED / "biomassters" / "0060c0a5", store)
        points, block = draw_points(store, "agb", n=2000, seed=0), 32.0
    else:
        write_demo_store(store, size=256, seed=0)
        points, block = draw_points(store, "agb", n=3000, noise_abs=20.0, noise_rel=0.05, seed=0), 640.0
    series, _ = sample_cubes(store, points)
    return write_points_store(work / f"{kind}_pixels.zarr", series), block


def flat_features(series: Any) -> np.ndarray:
    """``[N, F]``: every band of every date of every group (physical units, SAR dB), NaN where invalid."""
    parts = []
    for g in series.groups.values():
        k = g.values.shape[-1] // 2
        x = g.values[..., k, k].astype(np.float64) * g.scale + g.offset  # (N, T, C)
        if g.units == "linear":
            x = 10 * np.log10(np.clip(x, 1e-10, None))
        valid = np.ones(x.shape[:2], bool) if g.valid is None else np.asarray(g.valid)[..., k, k]
        x[~valid] = np.nan
        parts.append(x.reshape(len(x), -1))
    return np.concatenate(parts, axis=1)


def baselines(series: Any, splits: dict[str, np.ndarray], seed: int) -> dict[str, dict[str, float]]:
    """RMSE of the random forest and linear regression on the flattened series (fit on train, score test)."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    x, y = flat_features(series), np.asarray(series.target, dtype=np.float64)
    tr, te = splits["train"], splits["test"]
    fill = np.nanmean(x[tr], axis=0)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    x = np.where(np.isfinite(x), x, fill)
    out = {}
    for name, model in (
        ("random_forest", RandomForestRegressor(n_estimators=300, n_jobs=1, random_state=seed)),
        ("linear_regression", LinearRegression()),
    ):
        t0 = time.perf_counter()
        scaler = StandardScaler().fit(x[tr])
        model.fit(scaler.transform(x[tr]), y[tr])
        pred = model.predict(scaler.transform(x[te]))
        out[name] = {
            "rmse": float(np.sqrt(np.mean((pred - y[te]) ** 2))),
            "seconds": time.perf_counter() - t0,
            "features": int(x.shape[1]),
        }
    return out


def best_on_validation() -> Any:
    """A callback that keeps the weights of the epoch with the lowest ``val/rmse`` (the validation split,
    never the test split) and puts them back when the fit ends: early stopping without cutting the LR
    schedule short. ``.epoch`` and ``.best`` say which epoch and what validation RMSE."""
    import copy

    import lightning as L

    class BestOnValidation(L.Callback):
        def __init__(self) -> None:
            self.best = float("inf")
            self.state: dict[str, Any] | None = None
            self.epoch = -1

        def on_validation_epoch_end(self, trainer: Any, module: Any) -> None:
            if trainer.sanity_checking:
                return
            value = trainer.callback_metrics.get("val/rmse")
            if value is not None and float(value) < self.best:
                self.best, self.epoch = float(value), trainer.current_epoch
                self.state = copy.deepcopy(module.state_dict())

        def on_fit_end(self, trainer: Any, module: Any) -> None:
            if self.state is not None:
                module.load_state_dict(self.state)

    return BestOnValidation()


def ours(
    pixels: Path,
    block: float,
    epochs: int,
    encoder: str,
    seed: int,
    **task: Any,
) -> tuple[dict[str, Any], Any]:
    """Fit and test the pixel-series task; its test RMSE, predict-the-mean RMSE and time.

    ``task`` overrides :data:`OURS` (the task's hyperparameters in the benchmark). The weights kept are those
    of the epoch with the lowest validation RMSE (:func:`best_on_validation`).
    """
    import lightning as L
    import torch

    from spectravlm.data.points import PixelSeriesDataModule
    from spectravlm.tasks import PixelSeriesTask

    torch.manual_seed(seed)
    dm = PixelSeriesDataModule(
        str(pixels), block_size=block, split_fractions=(0.7, 0.15, 0.15), batch_size=64
    )
    options = {**OURS, **task}
    module = PixelSeriesTask(encoder=encoder, seed=seed, **options)
    best = best_on_validation()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        callbacks=[best],
    )
    t0 = time.perf_counter()
    trainer.fit(module, dm)
    seconds = time.perf_counter() - t0
    (result,) = trainer.test(module, dm, verbose=False)
    return {
        "rmse": float(result["test/rmse"]),
        "baseline_rmse": float(result["test/baseline_rmse"]),
        "r2": float(result["test/r2"]),
        "n_test": int(result["test/n"]),
        "seconds": seconds,
        "epochs": epochs,
        "best_epoch": best.epoch,
        "val_rmse": best.best,
        "encoder": encoder,
        **options,
    }, dm


def main() -> None:
    """Run both data sets; print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--encoder", default="test", help="encoder size of ours (test, tiny, ...)")
    parser.add_argument("--data", default="biomassters,demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--task",
        default="{}",
        help="JSON overrides of OURS, the task's hyperparameters, e.g. '{\"lr\": 1e-3}'",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "points.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads 1",
        "command": f"python benchmarks/points.py --epochs {args.epochs} --encoder {args.encoder}"
        + (f" --task '{args.task}'" if args.task != "{}" else ""),
    }
    overrides = json.loads(args.task)
    with tempfile.TemporaryDirectory(prefix="bench-points-") as tmp:
        for kind in args.data.split(","):
            pixels, block = make_pixels(kind, Path(tmp))
            mine, dm = ours(pixels, block, args.epochs, args.encoder, args.seed, **overrides)
            base = baselines(dm.series, dm.splits, args.seed)
            results[kind] = {"ours": mine, **base, "n_train": len(dm.splits["train"])}
            rf = base["random_forest"]["rmse"]
            print(
                f"{kind}: test RMSE ours {mine['rmse']:.1f}, random forest {rf:.1f}, linear regression "
                f"{base['linear_regression']['rmse']:.1f}, predict-the-mean {mine['baseline_rmse']:.1f} "
                f"(ours / RF = {mine['rmse'] / rf:.2f}; {mine['n_test']} test samples; "
                f"ours {mine['seconds']:.0f} s, RF {base['random_forest']['seconds']:.1f} s)",
                flush=True,
            )
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
