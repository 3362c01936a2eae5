"""A run that says what it does: one summary block when ``fit`` starts.

Printed by rank zero before the first step: the stores, sensor groups, bands and their units; the windows of
each split with a warning when a split is tiny or its share differs much from the one asked for (with the
reason: the block size against the store size); the steps per epoch; device, precision and threads; the
encoder's normalisation statistics and where they came from; and the output folders (logs, checkpoints,
exported encoder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

SPLITS = ("train", "val", "test")
TINY_SPLIT = 2
"""A split with this many windows or fewer is called tiny (its metric is a noisy estimate)."""


def split_warnings(
    counts: dict[str, int], asked: tuple[float, float, float], block: int, extents: list[tuple[int, int]]
) -> list[str]:
    """Warnings on the windows per split: tiny splits, and shares far from the fractions asked for."""
    total = sum(counts.values())
    out = []
    blocks_per_store = [max(1, -(-h // block)) * max(1, -(-w // block)) for h, w in extents]
    reason = (
        f"block_size {block} px on stores of {', '.join(f'{h}x{w}' for h, w in extents)} px gives "
        f"{sum(blocks_per_store)} block(s) to deal to train/val/test"
    )
    for name, frac in zip(SPLITS, asked, strict=True):
        n = counts.get(name, 0)
        share = n / total if total else 0.0
        if frac > 0 and n <= TINY_SPLIT:
            out.append(
                f"the {name} split has {n} window(s): {reason}; use a smaller block_size or more stores"
            )
        elif frac > 0 and abs(share - frac) > max(0.1, frac / 4):
            out.append(f"the {name} split holds {share:.0%} of the windows, {frac:.0%} were asked: {reason}")
    return out


class RunSummary(L.Callback):
    """Print what the run is about to do (see the module docstring); ``lines`` keeps the text."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Collect and print the summary (rank zero prints; every rank computes, cheaply)."""
        log_dir = trainer.log_dir  # every rank: with several ranks this is a broadcast
        lines = ["spectravlm run summary"]
        dm: Any = getattr(trainer, "datamodule", None)
        datasets = getattr(dm, "datasets", None) or {}
        if datasets:
            train = datasets["train"]
            lines.append(f"  stores: {', '.join(' + '.join(r.paths) for r in train.regions)}")
            for name, info in train.groups.items():
                encoding = "" if info.scale is None else f" x {info.scale:g} {info.offset:+g}"
                lines.append(
                    f"  group {name}: {info.sensor}, {len(info.bands)} bands {','.join(info.bands)}, "
                    f"{info.dtype}{encoding} -> {info.units}"
                )
            counts = {s: len(ds.windows) for s, ds in datasets.items()}
            empty = sum(getattr(ds, "n_empty", 0) for ds in datasets.values())
            block = getattr(dm, "block_size", None)
            lines.append(
                f"  windows of {dm.window_size} px: train {counts['train']}, val {counts['val']}, "
                f"test {counts['test']} (blocks of {block} px, fractions {tuple(dm.split_fractions)}; "
                f"{empty} empty window(s) skipped)"
            )
            extents = [(r.height, r.width) for r in train.regions]
            self.warnings = split_warnings(
                counts, tuple(dm.split_fractions), int(block or dm.window_size), extents
            )
        steps = trainer.num_training_batches
        lines.append(
            f"  steps per epoch: {steps}, epochs: {trainer.max_epochs}, max steps: {trainer.max_steps}, "
            f"estimated optimiser steps: {int(trainer.estimated_stepping_batches)}"
        )
        device = trainer.strategy.root_device
        lines.append(
            f"  device: {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
            f"{trainer.num_devices} device(s) x {trainer.num_nodes} node(s), precision {trainer.precision}, "
            f"torch threads {torch.get_num_threads()}, loader workers {getattr(dm, 'num_workers', '-')}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        )
        encoder = getattr(pl_module, "encoder", None)
        if encoder is not None and hasattr(encoder, "config"):
            sources = "; ".join(f"{k}: {v}" for k, v in encoder.config.stats_source.items())
            lines.append(f"  encoder: {encoder!r}".split("; statistics")[0] + ")")
            lines.append(f"  normalisation statistics: {sources}")
        lines.append(f"  logs: {log_dir}")
        ckpt: Any = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "dirpath", None):
            lines.append(f"  checkpoints: {ckpt.dirpath}")
        export = next((c for c in trainer.callbacks if type(c).__name__ == "ExportEncoder"), None)  # type: ignore[attr-defined]
        if export is not None:
            lines.append(
                f"  exported encoder (at the end): {export.dirpath or Path(log_dir or '.') / 'encoder'}"
            )
        self.lines = lines + [f"  warning: {w}" for w in self.warnings]
        if trainer.is_global_zero:
            print("\n".join(self.lines), flush=True)

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save (the summary is recomputed on resume)."""
        return {}
