"""A figure of what the pretraining model sees and reconstructs, logged every validation epoch.

For the first validation batch, per sample and per sensor stream, three pseudo-RGB panels of the date
with the most valid pixels: the **input**, the **masked** input (what the encoder saw: hidden patches and
hidden bands black) and the **reconstruction** (the input with the hidden part replaced by the decoder's
prediction). Normalised values are mapped back to physical units (reflectance, dB) with the statistics the
encoder normalised them with, then drawn with the library's fixed composites
(:data:`~spectravlm.adapters.composites.S2_TRUE_COLOUR`, B04/B03/B02 with Sentinel Hub's gain;
:data:`~spectravlm.adapters.composites.S1_VV_VH_RATIO`, VV/VH/VV-VH in dB), so the colours mean the same
in every epoch and every run.

The figure goes to every TensorBoard logger (``add_figure``, tag ``val/reconstruction``) and, as a PNG,
to ``<log_dir>/reconstructions/epoch=NNN.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from einops import rearrange
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from spectravlm.adapters.composites import S1_VV_VH_RATIO, S2_TRUE_COLOUR, Composite, apply_composite
from spectravlm.encoders.spectral import SpectralEncoder
from spectravlm.pretraining.mae import MAEOutput, MaskedAutoencoder
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack

_COMPOSITES: dict[str, Composite] = {"Sentinel-2": S2_TRUE_COLOUR, "Sentinel-1": S1_VV_VH_RATIO}


def _rgb(
    sensor: str, bands: tuple[str, ...], normalised: Tensor, valid: Tensor, stats: tuple[Tensor, Tensor]
) -> Tensor | None:
    """``[B,C,H,W]`` normalised values -> ``[B,H,W,3]`` composite in [0, 1] (``None``: no composite)."""
    comp = _COMPOSITES.get(get_sensor(sensor).platform)
    if comp is None or any(b not in bands for b in comp.bands):
        return None
    mean, std = (t.cpu() for t in stats)
    physical = normalised * rearrange(std, "c -> 1 c 1 1") + rearrange(mean, "c -> 1 c 1 1")
    series = SensorSeries(
        sensor=sensor,
        bands=bands,
        values=physical.unsqueeze(1),
        times=torch.zeros(physical.shape[0], 1, dtype=torch.int64),
        valid=valid.unsqueeze(1),
        units="reflectance" if get_sensor(sensor).kind == "optical" else "dB",
    )
    return rearrange(apply_composite(series, comp)[:, 0], "b k h w -> b h w k")


def reconstruction_panels(
    batch: SensorStack, out: MAEOutput, encoder: SpectralEncoder, samples: int = 2
) -> list[tuple[str, list[Tensor]]]:
    """Return pseudo-RGB panels ``(title, [input, masked, reconstruction])`` (each ``[H,W,3]``) per row."""
    rows = []
    patch_size = encoder.config.patch_size
    for group, rec in out.streams.items():
        series = batch[group]
        stats = encoder.statistics.lookup(series.sensor, series.bands)
        target, masked, recon, hidden = MaskedAutoencoder.images(rec, patch_size)
        h, w = rec.size
        valid = rec.pixel_valid[..., :h, :w]
        for i in range(min(samples, target.shape[0])):
            t = int(valid[i].flatten(1).sum(1).argmax())  # the clearest date
            seen = valid[i, t] & ~hidden[i, t].all(0)
            panels = [
                _rgb(series.sensor, series.bands, x[i, t].unsqueeze(0).cpu(), v.unsqueeze(0).cpu(), stats)
                for x, v in ((target, valid[i, t]), (masked, seen), (recon, valid[i, t]))
            ]
            if any(p is None for p in panels):
                continue
            rows.append((f"{group} sample {i} date {t}", [p[0] for p in panels if p is not None]))
    return rows


class ReconstructionFigure(L.Callback):
    """Log input / masked / reconstruction composites of the first validation batch.

    Args:
        samples: samples of the batch to show.
        every_n_epochs: draw every this many validation epochs.
        save_png: also write ``<log_dir>/reconstructions/epoch=NNN.png``.

    """

    def __init__(self, samples: int = 2, every_n_epochs: int = 1, save_png: bool = True) -> None:
        self.samples = samples
        self.every_n_epochs = every_n_epochs
        self.save_png = save_png
        self.written: list[Path] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Draw and log the figure (rank zero, not during the sanity check)."""
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        log_dir = trainer.log_dir  # on every rank: with several ranks this is a broadcast
        example = getattr(pl_module, "val_example", None)
        if example is None or not trainer.is_global_zero:
            return
        self._draw(trainer, pl_module, log_dir, *example)

    def _draw(
        self, trainer: L.Trainer, pl_module: Any, log_dir: str | None, batch: SensorStack, out: MAEOutput
    ) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = reconstruction_panels(batch, out, pl_module.encoder, self.samples)
        if not rows:
            return
        fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
        for r, (title, panels) in enumerate(rows):
            for c, (name, img) in enumerate(zip(("input", "masked", "reconstruction"), panels, strict=True)):
                ax = axes[r, c]
                ax.imshow(img.numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{title}: {name}" if c == 0 else name, fontsize=8)
        fig.suptitle(f"epoch {trainer.current_epoch}, step {trainer.global_step}", fontsize=9)
        fig.tight_layout()
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("val/reconstruction", fig, trainer.global_step, close=False)
        if self.save_png and log_dir is not None:
            path = Path(log_dir) / "reconstructions" / f"epoch={trainer.current_epoch:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=80)
            self.written.append(path)
        plt.close(fig)
