"""Pretraining on CPU: masked (ratio 0.75) vs unmasked (ratio 0) steps of the small encoder, and data wait.

Part 1, the model (one fixed batch, no data loading): the ``small`` encoder (ViT-S: D=384, 12 blocks, 6 heads,
patch 16) with the default decoder (D=256, 2 blocks) on a batch of 64 px windows of the demo store (S2: 10
bands x 10 dates, S1: VV/VH x 12 dates -> 352 tokens per window). For mask ratio 0.75 and 0 in turn (the two
take turns inside every round, so load from other processes hits them alike):

* ``encoder f+b``: forward+backward of the encoder blocks alone on the sequence they actually get (the
  visible tokens: K = 88 of 352 at 0.75; all 352 at 0), from a ``MaskedAutoencoder`` call's own inputs;
* ``step``: a whole training step (tokenize, mask, encoder, decoder, loss, backward, AdamW);
* samples/s = batch / step; peak memory = the peak RSS (``VmHWM``) of a child process over three steps at
  that ratio, and its rise above the RSS just before them (model, batch and libraries loaded); torch's CPU
  allocations are invisible to ``tracemalloc``.

Part 2, data wait (the real loop): ``Trainer.fit`` with ``CubeDataModule`` (2 worker processes, batch 8,
augmentation on) and the same model at ratio 0.75 on the 512 px demo store. Data wait = time from the end of
one training batch to the start of the next (fetching from the workers, transfer, on-device augmentation),
as a share of the whole step (wait + compute). The first step of each epoch (worker start-up) is reported
apart.

Run from the project root:  flock /tmp/spectravlm-bench.lock python benchmarks/pretrain.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import write_demo_store
from spectravlm.encoders.spectral import build_encoder
from spectravlm.pretraining.mae import build_mae

RATIOS = (0.75, 0.0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux ``clear_refs`` 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mb() -> float:
    """Peak RSS of this process's address space (``VmHWM``).

    Not ``getrusage``: its ``ru_maxrss`` keeps the parent's RSS at fork across ``execve``, so a child started
    by a large parent reports the parent's size.
    """
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _batch(store: Path, window: int, batch: int):
    dm = CubeDataModule(
        stores=[str(store)], groups=["s2", "s1"], window_size=window, block_size=2 * window,
        batch_size=batch, num_workers=0, augment=False, seed=0,
    )  # fmt: skip
    dm.setup("fit")
    return dm.transform(next(iter(dm.train_dataloader())), train=False)


def _encoder_inputs(mae, batch, ratio: float):
    """The visible-token sequence and mask the encoder blocks get inside one MAE call at ``ratio``."""
    captured = {}
    hook = mae.encoder.blocks[0].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args))
    mae.mask_ratio = ratio
    with torch.no_grad():
        mae(batch, torch.Generator().manual_seed(0))
    hook.remove()
    x, mask = captured["x"]
    return x.detach(), mask


def _step_fn(mae, opt, batch, ratio: float):
    def step() -> None:
        mae.mask_ratio = ratio
        out = mae(batch, torch.Generator().manual_seed(0))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _encoder_fn(mae, x, mask):
    def run() -> None:
        xi = x.clone().requires_grad_(True)
        mae.encoder.blocks_forward(xi, mask).sum().backward()

    return run


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def model_part(store: Path, args: argparse.Namespace) -> dict:
    batch = _batch(store, args.window, args.batch)
    bands = {g: batch[g].bands for g in batch}
    torch.manual_seed(0)
    mae = build_mae(build_encoder("small", 16), bands).train()
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-4)
    res: dict[str, dict] = {}
    enc_fns, step_fns = {}, {}
    for r in RATIOS:
        x, mask = _encoder_inputs(mae, batch, r)
        res[str(r)] = {"K": int(x.shape[1]), "N": None, "encoder": [], "step": []}
        enc_fns[r] = _encoder_fn(mae, x, mask)
        step_fns[r] = _step_fn(mae, opt, batch, r)
    with torch.no_grad():
        mae.mask_ratio = 0.0
        res["0.0"]["N"] = res["0.75"]["N"] = mae(batch, torch.Generator().manual_seed(0)).total_tokens
    for r in RATIOS:  # warm-up
        enc_fns[r]()
        step_fns[r]()
    for _ in range(args.rounds):
        for r in RATIOS:
            res[str(r)]["encoder"].append(_timed(enc_fns[r]))
            res[str(r)]["step"].append(_timed(step_fns[r]))
    for r in RATIOS:
        cmd = [sys.executable, __file__, "--child", str(r), "--store", str(store), "--batch", str(args.batch)]
        cmd += ["--window", str(args.window), "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        res[str(r)]["memory"] = json.loads(out.strip().splitlines()[-1])
    return res


def child(store: Path, ratio: float, args: argparse.Namespace) -> None:
    """Peak RSS of training steps at one ratio, in a fresh process."""
    batch = _batch(store, args.window, args.batch)
    torch.manual_seed(0)
    mae = build_mae(build_encoder("small", 16), {g: batch[g].bands for g in batch}).train()
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-4)
    step = _step_fn(mae, opt, batch, ratio)
    before = _rss_mb()  # model, optimiser (no state yet), batch, libraries
    _reset_peak()
    for _ in range(3):
        step()
    peak = _peak_mb()
    doc = {"rss_before_mb": round(before), "peak_rss_mb": round(peak), "rise_mb": round(peak - before)}
    print(json.dumps(doc))


def loop_part(store: Path, args: argparse.Namespace) -> dict:
    import lightning as L

    from spectravlm.data.bands import store_bands
    from spectravlm.tasks import PretrainTask

    class Waits(L.Callback):
        def __init__(self) -> None:
            self.end: float | None = None
            self.rows: list[tuple[int, float, float]] = []  # (batch_idx, wait, compute)
            self.start = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.end = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.start = time.perf_counter()
            self.wait = self.start - (self.end or self.start)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.end = time.perf_counter()
            self.rows.append((batch_idx, self.wait, self.end - self.start))

    dm = CubeDataModule(
        stores=[str(store)], groups=["s2", "s1"], window_size=args.window, block_size=2 * args.window,
        batch_size=args.batch, num_workers=args.workers, seed=0,
    )  # fmt: skip
    task = PretrainTask(bands=store_bands(dm.stores, dm.groups), window_size=args.window, encoder="small")
    waits = Waits()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=args.epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[waits],
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    total = time.perf_counter() - t0
    steady = [(w, c) for i, w, c in waits.rows if i > 0]
    first = [(w, c) for i, w, c in waits.rows if i == 0]
    wait, compute = sum(w for w, _ in steady), sum(c for _, c in steady)
    return {
        "steps": len(waits.rows),
        "fit_s": total,
        "steady_wait_share": wait / (wait + compute),
        "steady_wait_median_s": statistics.median(w for w, _ in steady),
        "steady_step_median_s": statistics.median(w + c for w, c in steady),
        "first_step_wait_s": [round(w, 3) for w, _ in first],
        "samples_per_s": args.batch * len(steady) / (wait + compute),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        child(args.store, args.child, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "demo.zarr"
        write_demo_store(store, size=512, seed=0)
        model = model_part(store, args)
        loop = loop_part(store, args)
    med = {r: {k: statistics.median(model[r][k]) for k in ("encoder", "step")} for r in model}
    low = {r: {k: min(model[r][k]) for k in ("encoder", "step")} for r in model}
    print(
        f"small encoder, batch {args.batch}, {args.window} px windows, {args.threads} threads, "
        f"{args.rounds} rounds"
    )
    print(
        "| mask ratio | tokens to the encoder | encoder f+b s (median / min) | step s (median / min) "
        "| samples/s | peak RSS MB (rise in the steps) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in ("0.75", "0.0"):
        m = model[r]["memory"]
        print(
            f"| {r} | {model[r]['K']} of {model[r]['N']} | {med[r]['encoder']:.3f} / {low[r]['encoder']:.3f} "
            f"| {med[r]['step']:.3f} / {low[r]['step']:.3f} | {args.batch / med[r]['step']:.1f} "
            f"| {m['peak_rss_mb']} ({m['rise_mb']}) |"
        )
    print(
        f"ratios 0.75 / 0: encoder f+b {med['0.75']['encoder'] / med['0.0']['encoder']:.2f}x "
        f"(min {low['0.75']['encoder'] / low['0.0']['encoder']:.2f}x), step "
        f"{med['0.75']['step'] / med['0.0']['step']:.2f}x "
        f"(min {low['0.75']['step'] / low['0.0']['step']:.2f}x)"
    )
    print(f"training loop ({args.workers} workers, ratio 0.75, {args.epochs} epochs): {json.dumps(loop)}")


if __name__ == "__main__":
    main()
