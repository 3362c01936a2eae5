"""The prepared GPU check: one script, a few minutes on one GPU, every figure in one JSON file.

What it runs (each part is timed and reported; any failure makes the exit status non-zero):

1. ``bf16_step``: masked pretraining steps (``MaskedAutoencoder``, mask ratio 0.75) of the ``base`` encoder
   (ViT-B: D=768, 12 blocks) on a synthetic S2 + S1 batch in physical units (128 px windows, 12 S2 dates of
   10 bands and 12 S1 dates of VV/VH, patch 16: 1536 tokens), under ``torch.autocast(bfloat16)`` with
   AdamW: median step time, samples/s, model FLOPs per step counted with
   ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward, one counted step), the model FLOPs
   utilisation against the device's bf16 dense peak, and ``torch.cuda.max_memory_allocated``. Both attention
   patterns (``joint``, ``factorised``) are run.
2. ``attention``: the SDPA and xformers paths of :func:`spectravlm.encoders.blocks.masked_attention` on the
   same masked inputs in bf16: the largest difference, and the time of each (xformers is optional: when
   it is not installed this part says so and is not a failure).
3. ``ddp_fit``: a Lightning ``Trainer(strategy="ddp", devices=1, precision="bf16-mixed")`` fit of a few steps
   of ``PretrainTask`` (``small`` encoder) from in-memory batches, with the encoder export callback.

Run on the device machine (it needs the project's dependencies; the device image lacks torchgeo, zarr,
rasterio, kornia and jsonargparse, which travel as wheels, see the device README)::

    python benchmarks/gpu.py --out $OUT/gpu.json

On a CPU, ``--dry-run`` runs every part with tiny sizes and no timing claims (the test suite does, so the
script cannot rot between GPU sessions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from spectravlm.encoders.blocks import masked_attention, xformers_available
from spectravlm.encoders.spectral import build_encoder
from spectravlm.pretraining.mae import build_mae
from spectravlm.stack import SensorSeries, SensorStack

H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H200 SXM datasheet, dense BF16 tensor-core peak
MEASURED_MATMUL_TFLOPS = 790.0  # 8192^3 bf16 matmul measured on this workplace's H200 (device KINDS.md)


def synthetic_stack(batch: int, size: int, t_s2: int, t_s1: int, device: torch.device) -> SensorStack:
    """A batch in the loader's form: S2 digital numbers (x 1e-4 reflectance) and S1 dB, every pixel valid."""
    g = torch.Generator().manual_seed(0)
    s2 = SensorSeries(
        "sentinel2_l2a",
        ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
        (torch.rand(batch, t_s2, 10, size, size, generator=g) * 4000).to(torch.int32).to(torch.uint16),
        torch.arange(t_s2).repeat(batch, 1) * 30 + 18000,
        torch.ones(batch, t_s2, size, size, dtype=torch.bool),
        units="reflectance",
        scale=1e-4,
        all_valid=True,
        finite=True,
    )
    s1 = SensorSeries(
        "sentinel1_grd",
        ("VV", "VH"),
        torch.rand(batch, t_s1, 2, size, size, generator=g) * 15 - 25,
        torch.arange(t_s1).repeat(batch, 1) * 30 + 18003,
        torch.ones(batch, t_s1, size, size, dtype=torch.bool),
        units="dB",
        all_valid=True,
        finite=True,
    )
    return SensorStack({"s2": s2, "s1": s1}).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bf16_step(device: torch.device, dry: bool) -> dict[str, Any]:
    """Pretraining steps in bf16: time, FLOPs, MFU, peak memory, for both attention patterns."""
    from torch.utils.flop_counter import FlopCounterMode

    size, batch, steps = (32, 2, 2) if dry else (128, 16, 8)
    stack = synthetic_stack(batch, size, 4 if dry else 12, 4 if dry else 12, device)
    bands = {g: stack[g].bands for g in stack}
    out: dict[str, Any] = {"batch": batch, "window": size}
    for attention in ("joint", "factorised"):
        torch.manual_seed(0)
        encoder = build_encoder(
            "test" if dry else "base",
            patch_size=8 if dry else 16,
            attention=attention,
            temporal_depth=2 if not dry else 1,
        )
        mae = (
            build_mae(encoder, bands, 64 if dry else 512, 1 if dry else 4, 4 if dry else 16)
            .to(device)
            .train()
        )
        opt = torch.optim.AdamW(mae.parameters(), lr=1e-4, fused=device.type == "cuda")
        gen = torch.Generator(device=device)

        def step(
            mae: torch.nn.Module = mae, opt: torch.optim.Optimizer = opt, gen: torch.Generator = gen
        ) -> float:
            gen.manual_seed(0)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = mae(stack, gen).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss)

        for _ in range(2):  # warm-up (allocator, kernel selection)
            step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            _sync(device)
            t0 = time.perf_counter()
            loss = step()
            _sync(device)
            times.append(time.perf_counter() - t0)
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
        median = statistics.median(times)
        res: dict[str, Any] = {
            "tokens": int(
                sum(s.values.shape[1] for s in stack.series.values())
                * (size // encoder.config.patch_size) ** 2
            ),
            "step_s_median": median,
            "step_s_min": min(times),
            "samples_per_s": batch / median,
            "model_tflop_per_step": flops / 1e12,
            "loss": loss,
            "finite": bool(torch.isfinite(torch.tensor(loss))),
        }
        if device.type == "cuda":
            achieved = flops / median / 1e12
            res |= {
                "achieved_tflops": achieved,
                "mfu_vs_datasheet_peak": achieved / H200_BF16_DENSE_TFLOPS,
                "mfu_vs_measured_matmul": achieved / MEASURED_MATMUL_TFLOPS,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
        if not res["finite"]:
            raise RuntimeError(f"{attention}: the bf16 loss is not finite ({loss})")
        out[attention] = res
    return out


def attention_paths(device: torch.device, dry: bool) -> dict[str, Any]:
    """SDPA against xformers on the same masked bf16 inputs: equality and time."""
    b, h, n, e = (2, 2, 16, 8) if dry else (32, 12, 1536, 64)
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(b, h, n, e, generator=g).to(device, torch.bfloat16) for _ in range(3))
    mask = torch.rand(b, n, generator=g).to(device) > 0.3
    out: dict[str, Any] = {"shape": [b, h, n, e], "xformers_installed": xformers_available()}

    def timed(backend: str) -> tuple[torch.Tensor, float]:
        for _ in range(3):
            y = masked_attention(q, k, v, mask, backend=backend)  # type: ignore[arg-type]
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            y = masked_attention(q, k, v, mask, backend=backend)  # type: ignore[arg-type]
        _sync(device)
        return y, (time.perf_counter() - t0) / 10

    ref, out["sdpa_ms"] = timed("sdpa")
    out["sdpa_ms"] *= 1e3
    if device.type == "cuda" and xformers_available():
        xf, t = timed("xformers")
        out["xformers_ms"] = t * 1e3
        out["max_abs_diff"] = float(
            (xf.float() - ref.float())[mask.unsqueeze(1).unsqueeze(-1).expand_as(ref)].abs().max()
        )
        if out["max_abs_diff"] > 2e-2:  # bf16: a few units in the last place
            raise RuntimeError(f"xformers and SDPA disagree by {out['max_abs_diff']}")
    else:
        out["xformers"] = "not run: " + (
            "no CUDA device" if device.type != "cuda" else "xformers not installed"
        )
    return out


def ddp_fit(device: torch.device, dry: bool, workdir: Path) -> dict[str, Any]:
    """A few steps of ``Trainer(strategy="ddp", devices=1)`` on in-memory batches, with the encoder export."""
    import lightning as L
    from torch.utils.data import DataLoader

    from spectravlm.callbacks import ExportEncoder
    from spectravlm.tasks import PretrainTask

    size, batch = (32, 2) if dry else (128, 8)
    stack = synthetic_stack(batch, size, 3, 3, torch.device("cpu"))
    loader = DataLoader([stack] * (2 if dry else 6), batch_size=None)
    task = PretrainTask(
        bands={g: list(stack[g].bands) for g in stack},
        window_size=size,
        encoder="test" if dry else "small",
        patch_size=8 if dry else 16,
        decoder_dim=64 if dry else 256,
        decoder_heads=4 if dry else 8,
    )
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        strategy="ddp" if device.type == "cuda" else "auto",
        precision="bf16-mixed",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(workdir),
        callbacks=[ExportEncoder(str(workdir / "encoder"))],
    )
    t0 = time.perf_counter()
    trainer.fit(task, train_dataloaders=loader)
    return {
        "strategy": type(trainer.strategy).__name__,
        "steps": int(trainer.global_step),
        "seconds": time.perf_counter() - t0,
        "train_loss": float(trainer.callback_metrics["train/loss"]),
        "exported": (workdir / "encoder" / "model.safetensors").is_file(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every part; write the JSON; exit 1 if any part failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu.json", help="JSON file to write (default gpu.json)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes (on a CPU: checks the script)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        print("no CUDA device: run with --dry-run to check the script on a CPU", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dry_run": args.dry_run,
    }
    failed = []
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    parts = {
        "bf16_step": lambda: bf16_step(device, args.dry_run),
        "attention": lambda: attention_paths(device, args.dry_run),
        "ddp_fit": lambda: ddp_fit(device, args.dry_run, workdir),
    }
    for name, run in parts.items():
        t0 = time.perf_counter()
        try:
            report[name] = run()
        except Exception as err:  # every part reports; the exit status says whether any failed
            report[name] = {
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-3000:],
            }
            failed.append(name)
        report[name]["wall_s"] = time.perf_counter() - t0
        print(f"{name}: {json.dumps(report[name])[:400]}", flush=True)
    report["failed"] = failed
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
