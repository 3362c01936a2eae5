"""Figures of a regression run, drawn every validation epoch: predicted vs observed, and maps.

* **Scatter**: predicted against observed target values of (a sample of up to 200 000) validation pixels, as a
  hexbin with a logarithmic count scale (a plain scatter of that many points is a blot), with the 1:1 line and
  RMSE, bias and R² of the plotted pixels in the title.
* **Maps**: for the first samples of the first validation batch, one row each: Sentinel-2 true colour of the
  clearest date (:data:`~spectravlm.adapters.composites.S2_TRUE_COLOUR`, physical reflectance; when the data
  has no Sentinel-2 stream, the first date's Sentinel-1 composite) | target | prediction | uncertainty (when
  the task predicts one). Target and prediction share one colour scale; NaN (no target) is drawn grey.

Both go to every TensorBoard logger (``add_figure``: ``val/scatter``, ``val/maps``) and as PNGs to
``<log_dir>/figures/{scatter,maps}-epoch=NNN.png``. The task keeps what they need during validation
(``val_example``, ``val_pairs``; see :class:`~spectravlm.tasks.regression.RegressionTask`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from spectravlm.adapters.composites import S1_VV_VH_RATIO, S2_TRUE_COLOUR, apply_composite
from spectravlm.heads.uncertainty import RegressionOutput
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorStack


def true_colour(batch: SensorStack, sample: int) -> np.ndarray | None:
    """``[H,W,3]`` composite of one sample: S2 true colour of its clearest date (else S1), or ``None``."""
    for platform, comp in (("Sentinel-2", S2_TRUE_COLOUR), ("Sentinel-1", S1_VV_VH_RATIO)):
        for series in batch.series.values():
            if get_sensor(series.sensor).platform != platform or any(
                b not in series.bands for b in comp.bands
            ):
                continue
            valid = series.valid[sample].flatten(1).sum(1)
            t = int(valid.argmax())
            one = series.to("cpu")
            from dataclasses import replace

            one = replace(
                one,
                values=one.values[sample : sample + 1, t : t + 1],
                times=one.times[sample : sample + 1, t : t + 1],
                valid=one.valid[sample : sample + 1, t : t + 1],
                all_valid=None,
            )
            rgb = apply_composite(one, comp)[0, 0]  # (3, H, W)
            return rgb.permute(1, 2, 0).numpy()
    return None


def scatter_figure(observed: np.ndarray, predicted: np.ndarray, target: str, units: str, title: str) -> Any:
    """A hexbin of predicted vs observed values with the 1:1 line."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.0))  # no pyplot: the caller's backend (a notebook's) stays as it is
    ax = fig.subplots()
    lo = float(min(observed.min(), predicted.min()))
    hi = float(max(observed.max(), predicted.max()))
    hb = ax.hexbin(
        observed, predicted, gridsize=60, extent=(lo, hi, lo, hi), norm=LogNorm(), cmap="viridis", mincnt=1
    )
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
    fig.colorbar(hb, ax=ax, label="pixels")
    u = f" ({units})" if units else ""
    ax.set_xlabel(f"observed {target}{u}")
    ax.set_ylabel(f"predicted {target}{u}")
    err = predicted - observed
    ss = float(((observed - observed.mean()) ** 2).sum())
    r2 = 1 - float((err**2).sum()) / ss if ss > 0 else float("nan")
    ax.set_title(
        f"{title}\nRMSE {np.sqrt((err**2).mean()):.1f}, bias {err.mean():+.1f}, R² {r2:.2f}, "
        f"n={observed.size}",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def map_figure(
    batch: SensorStack, out: RegressionOutput, target: str, units: str, samples: int = 2, title: str = ""
) -> Any:
    """Rows of true colour | target | prediction | uncertainty for the first ``samples`` samples."""
    import matplotlib
    from matplotlib.figure import Figure

    y = batch.targets.get(target)
    n = min(samples, batch.batch_size)
    cols = 3 + (out.std is not None)
    fig = Figure(figsize=(2.6 * cols, 2.5 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        h, w = batch.series[next(iter(batch.series))].values.shape[-2:]
        pred = out.mean[i].float().cpu()
        pred = pred.expand(h, w) if pred.ndim == 0 else pred
        tgt = y[i].float().cpu() if y is not None else torch.full((h, w), float("nan"))
        finite = torch.cat([t[torch.isfinite(t)] for t in (pred, tgt)])
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
        rgb = true_colour(batch, i)
        panels: list[tuple[str, Any, dict[str, Any]]] = [
            ("true colour", rgb if rgb is not None else np.zeros((h, w, 3)), {}),
            (f"target {target}", tgt.numpy(), {"vmin": vmin, "vmax": vmax, "cmap": "YlGn"}),
            (f"predicted {target}", pred.numpy(), {"vmin": vmin, "vmax": vmax, "cmap": "YlGn"}),
        ]
        if out.std is not None:
            std = out.std[i].float().cpu()
            std = std.expand(h, w) if std.ndim == 0 else std
            panels.append(("uncertainty (sigma)", std.numpy(), {"cmap": "magma"}))
        for c, (name, img, kw) in enumerate(panels):
            ax = axes[i, c]
            if kw.get("cmap"):
                cmap = matplotlib.colormaps[kw.pop("cmap")].with_extremes(bad="0.6")
                im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, interpolation="nearest", **kw)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=units or None)
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


class RegressionFigures(L.Callback):
    """Log the scatter and map figures of each validation epoch (see the module docstring).

    Args:
        samples: rows of the map figure.
        every_n_epochs: draw every this many validation epochs.
        save_png: also write ``<log_dir>/figures/*.png``.

    """

    def __init__(self, samples: int = 2, every_n_epochs: int = 1, save_png: bool = True) -> None:
        self.samples = samples
        self.every_n_epochs = every_n_epochs
        self.save_png = save_png
        self.written: list[Path] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Draw and log the figures (rank zero, not during the sanity check)."""
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        log_dir = trainer.log_dir  # on every rank: with several ranks this is a broadcast
        objective = getattr(pl_module, "objective", None)
        example = getattr(objective, "val_example", None)
        pairs = getattr(objective, "val_pairs", None)
        if not trainer.is_global_zero or example is None:
            return

        target = str(pl_module.hparams.get("target", "target"))
        units = str(getattr(pl_module, "target_units", ""))
        stamp = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        batch, out = example
        figures = {"maps": map_figure(batch, out, target, units, self.samples, stamp)}
        if pairs:
            obs = torch.cat([o for o, _ in pairs]).numpy()
            pred = torch.cat([p for _, p in pairs]).numpy()
            if obs.size:
                figures["scatter"] = scatter_figure(obs, pred, target, units, f"validation, {stamp}")
        for name, fig in figures.items():
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(f"val/{name}", fig, trainer.global_step, close=False)
            if self.save_png and log_dir is not None:
                path = Path(log_dir) / "figures" / f"{name}-epoch={trainer.current_epoch:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(path, dpi=80)
                self.written.append(path)


__all__ = ["RegressionFigures", "map_figure", "scatter_figure", "true_colour"]
