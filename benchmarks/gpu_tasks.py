"""The downstream tasks on one GPU in bf16, through the command line exactly as a user runs them.

A prepared check for a GPU that is available for minutes (``benchmarks/gpu.py`` covers pretraining and
the encoder; ``benchmarks/vlm_gpu.py`` the VLM model). Each part runs the demo commands of its config with
``--trainer.accelerator=gpu --trainer.precision=bf16-mixed`` and shortened schedules, then checks what
they wrote:

* ``agb``: ``fit`` (from scratch), ``test`` and ``predict`` with ``configs/agb_demo.yaml``; the map is a
  georeferenced GeoTIFF on the store's grid whose AGB band is finite where the store is valid.
* ``points``: points drawn from the demo target, attached as a sparse layer, ``fit`` with
  ``configs/agb_points_demo.yaml``, the wall-to-wall map.
* ``vlm``: instruction data, a tiny local LLM, ``fit`` with ``configs/vlm_demo.yaml`` (stage 1 and 2).

Every command's wall time goes into the JSON; any failure makes the exit status non-zero. Run from the
project root::

    python benchmarks/gpu_tasks.py --out gpu_tasks.json [--parts agb points vlm] [--cpu]

``--cpu`` runs the same on the CPU in float32 (the dry run the tests can afford).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _cli(work: Path, log: list[dict[str, Any]], *args: str) -> None:
    cmd = [sys.executable, "-m", "spectravlm.cli", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    entry = {"command": " ".join(args), "seconds": round(time.perf_counter() - t0, 1), "rc": proc.returncode}
    log.append(entry)
    print(f"  {entry['seconds']:7.1f} s  rc={proc.returncode}  spectravlm {' '.join(args)}", flush=True)
    if proc.returncode != 0:
        entry["stderr"] = proc.stderr[-3000:]
        raise RuntimeError(f"spectravlm {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def _check_map(path: Path, store: Path) -> dict[str, Any]:
    import numpy as np
    import rasterio

    from spectravlm.data import CubeStore

    with rasterio.open(path) as src:
        band = src.read(1)
        transform, shape = src.transform, (src.height, src.width)
    grid = CubeStore.open(store).grid
    finite = float(np.isfinite(band).mean())
    if finite < 0.5 or shape != (grid.height, grid.width) or tuple(transform)[:6] != tuple(grid.transform)[:6]:
        raise RuntimeError(f"{path}: finite share {finite:.3f}, shape {shape}, transform {transform}")
    return {"finite_share": round(finite, 4), "mean": float(np.nanmean(band)), "shape": list(shape)}


def part_agb(work: Path, trainer: list[str], log: list[dict[str, Any]]) -> dict[str, Any]:
    _cli(work, log, "data", "demo", "data/demo.zarr", "--size", "256")
    cfg = ["--config", str(ROOT / "configs" / "agb_demo.yaml"), *trainer]
    _cli(work, log, "fit", *cfg, "--model.init_args.init_encoder=null", "--trainer.max_epochs=3")
    _cli(work, log, "test", *cfg, "--model.init_args.init_encoder=null", "--ckpt_path", "last")
    _cli(work, log, "predict", *cfg, "--model.init_args.init_encoder=null", "--ckpt_path", "last")
    return _check_map(work / "runs/agb_demo/maps/demo.tif", work / "data/demo.zarr")


def part_points(work: Path, trainer: list[str], log: list[dict[str, Any]]) -> dict[str, Any]:
    _cli(work, log, "data", "demo", "data/demo.zarr", "--size", "256")
    _cli(work, log, "data", "points", "draw", "data/demo.zarr", "data/demo_points.csv", "--n", "2000",
         "--noise-abs", "20", "--noise-rel", "0.05")  # fmt: skip
    _cli(work, log, "data", "points", "attach", "data/demo.zarr", "data/demo_points.csv", "--name", "agb_points",
         "--value", "agb", "--se", "agb_se", "--date", "date", "--units", "t/ha")  # fmt: skip
    cfg = ["--config", str(ROOT / "configs" / "agb_points_demo.yaml"), *trainer, "--trainer.max_epochs=3"]
    _cli(work, log, "fit", *cfg)
    _cli(work, log, "data", "points", "map", "data/demo.zarr", "runs/agb_points_demo/checkpoints/last.ckpt",
         "runs/agb_map.tif")  # fmt: skip
    return _check_map(work / "runs/agb_map.tif", work / "data/demo.zarr")


def part_vlm(work: Path, trainer: list[str], log: list[dict[str, Any]]) -> dict[str, Any]:
    _cli(work, log, "data", "demo", "data/demo.zarr", "--size", "256")
    _cli(work, log, "data", "qa", "data/demo.zarr", "data/demo_qa.jsonl")
    _cli(work, log, "data", "tiny-llm", "runs/tiny_llm", "--qa", "data/demo_qa.jsonl")
    cfg = ["--config", str(ROOT / "configs" / "vlm_demo.yaml"), *trainer]
    _cli(work, log, "fit", *cfg, "--trainer.max_steps=60", "--model.init_args.stage1_steps=20",
         "--trainer.val_check_interval=30")  # fmt: skip
    saved = work / "runs/vlm_demo/model"
    if not saved.is_dir():
        raise RuntimeError(f"{saved} was not written")
    return {"saved": sorted(p.name for p in saved.iterdir())}


PARTS = {"agb": part_agb, "points": part_points, "vlm": part_vlm}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--cpu", action="store_true", help="CPU, float32 (dry run)")
    args = parser.parse_args()
    trainer = (
        ["--trainer.accelerator=cpu"]
        if args.cpu
        else ["--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.precision=bf16-mixed"]
    )
    report: dict[str, Any] = {"device": "cpu" if args.cpu else "cuda", "parts": {}}
    failed = False
    for name in args.parts:
        log: list[dict[str, Any]] = []
        work = Path(tempfile.mkdtemp(prefix=f"gpu-tasks-{name}-"))
        print(f"== {name} in {work}", flush=True)
        t0 = time.perf_counter()
        try:
            result = PARTS[name](work, trainer, log)
            report["parts"][name] = {"ok": True, "result": result}
        except Exception as err:  # every part runs; the exit status says whether any failed
            failed = True
            report["parts"][name] = {"ok": False, "error": str(err)[-3000:]}
            print(f"!! {name} failed: {err}", flush=True)
        report["parts"][name] |= {"commands": log, "seconds": round(time.perf_counter() - t0, 1)}
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: {"ok": v["ok"], "seconds": v["seconds"]} for k, v in report["parts"].items()}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
