"""The wall-to-wall map of a model trained on points: every pixel of a store, as a georeferenced GeoTIFF.

:func:`predict_map` reads the store in windows of the model's window size over the whole grid (edge windows
overlap so that no pixel is left out; where they overlap the later window's values are kept), runs the
:class:`~spectravlm.tasks.points.PointsTask` on each batch, and writes one float32 band in the target's
units with the store's CRS and affine transform (none for a store without a georeference, such as a
BioMassters chip). Pixels without any valid observation in any sensor group and date are NaN (the GeoTIFF's
nodata). The file is built in memory and renamed into place (:func:`spectravlm.io.atomic_write_bytes`); an
existing file is never replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spectravlm.errors import ModelConfigError
from spectravlm.io import OutputExistsError, atomic_write_bytes
from spectravlm.tasks.points import PointsTask


@dataclass(frozen=True)
class MapReport:
    """What :func:`predict_map` wrote.

    Attributes:
        path: the GeoTIFF.
        shape: ``(rows, cols)``.
        windows: windows predicted.
        valid: pixels with a prediction (the others are NaN).
        mean: mean of the predictions.
        units: their unit.

    """

    path: Path
    shape: tuple[int, int]
    windows: int
    valid: int
    mean: float
    units: str

    def __str__(self) -> str:
        return (
            f"wrote {self.path}: {self.shape[0]}x{self.shape[1]} px from {self.windows} windows, "
            f"{self.valid} px predicted (mean {self.mean:.2f} {self.units}), the others NaN"
        )


def predict_map(
    task: PointsTask,
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, MapReport]:
    """Predict every pixel of ``store`` with ``task`` and write the map to ``out`` (a new ``.tif``).

    Args:
        task: a trained points task (its target statistics set).
        store: the cube store (local path or fsspec URL) with the task's sensor groups and bands.
        out: the GeoTIFF to write; it must not exist.
        batch_size: windows per forward pass.
        device: where to run (default: the task's device).

    Returns:
        The ``[rows, cols]`` float32 map and what was written.

    Raises:
        OutputExistsError: ``out`` exists.
        ModelConfigError: the task has no target statistics (not trained).

    """
    from rasterio.crs import CRS
    from rasterio.io import MemoryFile

    from spectravlm.data.dataset import CubeDataset

    out = Path(out)
    if out.exists():
        raise OutputExistsError(f"{out} exists; the map is never written over an existing file")
    if not task.scaler.fitted:
        raise ModelConfigError("the task has no target statistics: train it (or load its checkpoint) first")
    hp = task.hparams
    bands = {g: list(b) for g, b in hp["bands"].items()}
    ds = CubeDataset([str(store)], groups=bands, window_size=int(hp["window_size"]), empty_windows="mask")
    region = ds.regions[0]
    full = np.full((region.height, region.width), np.nan, dtype=np.float32)
    if device is not None:
        task = task.to(device)
    was_training = task.training
    task.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(ds.windows), batch_size):
                idx = list(range(start, min(start + batch_size, len(ds.windows))))
                batch = ds.read_batch(idx).to(task.device)
                pred = task(batch).float()  # (B, H, W)
                seen = torch.stack([batch[g].valid.any(dim=1) for g in bands]).any(dim=0)  # (B, H, W)
                pred = torch.where(seen, pred, torch.full_like(pred, float("nan"))).cpu().numpy()
                for k, i in enumerate(idx):
                    full[ds.windows[i].slices()] = pred[k]
    finally:
        task.train(was_training)
    grid = region.grid
    units = str(hp.get("target_units") or "")
    profile = {
        "driver": "GTiff",
        "height": region.height,
        "width": region.width,
        "count": 1,
        "dtype": "float32",
        "nodata": float("nan"),
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    if grid.crs_wkt:
        profile["crs"] = CRS.from_wkt(grid.crs_wkt)
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(full, 1)
            dst.update_tags(target=str(hp.get("target") or ""), units=units, source=str(store))
            dst.set_band_description(1, f"{hp.get('target') or 'prediction'} ({units})")
        data = mem.read()
    if out.exists():
        raise OutputExistsError(f"{out} appeared while the map was computed; it is not written over")
    atomic_write_bytes(data, out)
    ok = np.isfinite(full)
    report = MapReport(
        out,
        full.shape,
        len(ds.windows),
        int(ok.sum()),
        float(full[ok].mean()) if ok.any() else float("nan"),
        units,
    )
    return full, report


__all__ = ["MapReport", "predict_map"]
