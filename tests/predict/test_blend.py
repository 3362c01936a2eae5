"""Blending: the cosine ramp, a smooth field through overlapping windows, and no seam at tile borders."""

from __future__ import annotations

import numpy as np
import rasterio

from spectravlm.data.store import Grid
from spectravlm.predict import MapWriter
from spectravlm.predict.blend import cosine_ramp, window_weight
from spectravlm.predict.tiling import plan_prediction


def test_ramps_of_neighbouring_windows_add_up_to_one():
    ramp = cosine_ramp(32, 8)
    assert ramp.dtype == np.float32 and (ramp > 0).all() and (ramp[8:24] == 1).all()
    np.testing.assert_allclose(ramp[24:] + ramp[:8], 1.0, rtol=1e-6)  # the next window starts 24 px later
    assert window_weight(32, 0).min() == 1.0


def _blend_globally(field, h: int, w: int, window: int, overlap: int, offset: float) -> np.ndarray:
    """The same blend in one scene-sized accumulator (what the tiles must reproduce)."""
    plan = plan_prediction([(("x",), Grid(h, w))], window, overlap, 256)
    weight = window_weight(window, overlap)
    num, den = np.zeros((h, w)), np.zeros((h, w))
    for win in sorted(set(plan.windows)):
        rows, cols = np.meshgrid(
            np.arange(win.row, win.row + window), np.arange(win.col, win.col + window), indexing="ij"
        )
        value = field(rows, cols) + offset * np.sin(1.7 * win.row + 0.3 * win.col)
        num[win.slices()] += weight * value
        den[win.slices()] += weight
    return num / den


def test_no_seam_at_tile_borders(scene_store, tmp_path, kit):
    writer = MapWriter(output_dir=str(tmp_path / "maps"))
    kit.predictor(tmp_path, [writer]).predict(
        kit.FieldModule(offset=5.0), datamodule=kit.extent_dm(scene_store, window=64, overlap=16)
    )
    field = kit.field
    with rasterio.open(tmp_path / "maps" / "scene.tif") as src:
        m = src.read(1).astype(np.float64)
    # tiles reproduce the scene-wide blend exactly (float32 accumulators)
    np.testing.assert_allclose(m, _blend_globally(field, 300, 300, 64, 16, 5.0), atol=2e-4)
    step_rows = np.abs(np.diff(m, axis=0))  # step between row r and r+1
    step_cols = np.abs(np.diff(m, axis=1))
    across = max(step_rows[255].max(), step_cols[:, 255].max())  # across the tile borders at 256
    inside = max(np.delete(step_rows, 255, axis=0).max(), np.delete(step_cols, 255, axis=1).max())
    truth = field(*np.meshgrid(np.arange(300), np.arange(300), indexing="ij"))
    plain = max(np.abs(np.diff(truth, axis=0)).max(), np.abs(np.diff(truth, axis=1)).max())
    print(
        f"max |difference| between neighbouring pixels: across tile borders {across:.3f}, inside tiles "
        f"{inside:.3f}, of the field itself {plain:.3f} (per-window offsets of up to 5)"
    )
    assert across <= inside
