"""Blending overlapping window predictions into tiles, in float32, with a cosine ramp.

Axis legend: ``L`` output layers (``agb``, ``agb_std``), ``s`` window edge, ``h, w`` tile rows and columns.

Each window's prediction is weighted per pixel by a separable cosine ramp: 1 in the window's interior,
falling as ``sin^2`` over the ``overlap`` pixels at each edge (the weights of two neighbouring windows over
their shared pixels add up to 1, so a smooth field passes through the blend unchanged, and the seams that
per-window errors would leave at window edges are spread over the overlap). A tile accumulates
``sum(weight * value)`` and ``sum(weight)`` in float32 (Raster Vision blends in float16 with uint8 counts),
and its value is their ratio; pixels that no window predicted (never observed, or in windows without any
valid observation) have weight 0 and come out as NaN, the outputs' nodata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from torch import Tensor

from spectravlm.predict.tiling import PredictionPlan, Tile


def cosine_ramp(size: int, overlap: int) -> np.ndarray:
    """``[size]`` float32 weights: 1 inside, ``sin^2`` over the first and last ``overlap`` pixels."""
    w = np.ones(size, dtype=np.float32)
    if overlap > 0:
        x = (np.arange(overlap, dtype=np.float64) + 0.5) / overlap
        ramp = np.sin(0.5 * np.pi * x) ** 2
        w[:overlap] = ramp
        w[size - overlap :] = np.minimum(w[size - overlap :], ramp[::-1])
    return w


def window_weight(size: int, overlap: int) -> np.ndarray:
    """``[s,s]`` float32 separable cosine-ramp weight of a window."""
    ramp = cosine_ramp(size, overlap)
    return np.outer(ramp, ramp).astype(np.float32)


class TileAccumulator:
    """Weighted sums of the window predictions that fall on one tile.

    Args:
        tile: the tile.
        layers: number of output layers ``L``.

    """

    def __init__(self, tile: Tile, layers: int) -> None:
        self.tile = tile
        self.sums = np.zeros((layers, tile.height, tile.width), dtype=np.float32)
        self.weight = np.zeros((tile.height, tile.width), dtype=np.float32)
        self.seen = 0

    def add(self, row: int, col: int, values: np.ndarray, weight: np.ndarray) -> None:
        """Add a window's ``[L,s,s]`` prediction at ``(row, col)`` of the region (NaN in layer 0: none)."""
        t, s = self.tile, values.shape[-1]
        r0, r1 = max(row, t.row), min(row + s, t.row + t.height)
        c0, c1 = max(col, t.col), min(col + s, t.col + t.width)
        if r0 >= r1 or c0 >= c1:
            return
        v = values[:, r0 - row : r1 - row, c0 - col : c1 - col]
        ok = np.isfinite(v[0])
        wt = np.where(ok, weight[r0 - row : r1 - row, c0 - col : c1 - col], np.float32(0))
        rows, cols = slice(r0 - t.row, r1 - t.row), slice(c0 - t.col, c1 - t.col)
        self.sums[:, rows, cols] += np.where(ok, v, np.float32(0)) * wt
        self.weight[rows, cols] += wt

    def result(self) -> np.ndarray:
        """``[L,h,w]`` float32 blended values, NaN where no window gave one."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.sums / self.weight
        out[:, self.weight == 0] = np.nan
        return out


class MapAssembler:
    """Blend batches of window predictions into tiles and hand each finished tile to ``write``.

    Windows arrive tile by tile (the loader's order), so one or two tiles are open at a time; a tile is
    written
    as soon as all its windows have been added, and then forgotten.

    Args:
        plan: the prediction plan.
        tiles: the tiles this process predicts (its rank's).
        layers: names of the output layers, in the order they are written.
        write: ``write(tile, {layer: [h,w] float32})``, called once per tile.

    """

    def __init__(
        self,
        plan: PredictionPlan,
        tiles: Sequence[int],
        layers: Sequence[str],
        write: Callable[[Tile, dict[str, np.ndarray]], None],
    ) -> None:
        self.plan = plan
        self.layers = list(layers)
        self.write = write
        self.expected = {t: len(plan.tiles[t].entries) for t in tiles}
        self.open: dict[int, TileAccumulator] = {}
        self.done: set[int] = set()
        self.weight = window_weight(plan.window_size, plan.overlap)
        self.windows = 0
        self.max_open = 0
        for t, n in self.expected.items():  # a tile without any window (cannot happen with a full grid)
            if n == 0:
                self._finish(t, TileAccumulator(plan.tiles[t], len(self.layers)))

    def add(self, prediction: Mapping[str, Tensor]) -> None:
        """Add a batch: ``{"index": [B], layer: [B,H,W], ...}`` as returned by the tasks' ``predict_step``.

        Layers missing from ``prediction`` (a batch of empty windows carries only the first) count as NaN.
        """
        index = prediction["index"].detach().cpu().numpy()
        first = prediction[self.layers[0]]
        b, s = first.shape[0], first.shape[-1]
        values = np.full((b, len(self.layers), s, s), np.nan, dtype=np.float32)
        for k, name in enumerate(self.layers):
            if name in prediction:
                values[:, k] = prediction[name].detach().float().cpu().numpy()
        origin = prediction.get("origin")
        origins = None if origin is None else origin.detach().cpu().numpy()
        for i, entry in enumerate(index.tolist()):
            if entry < 0:  # a padding sample
                continue
            t, win = self.plan.tile_of[entry], self.plan.windows[entry]
            if origins is not None and (int(origins[i, 0]), int(origins[i, 1])) != (win.row, win.col):
                raise RuntimeError(
                    f"window {entry} arrived with origin {origins[i].tolist()}, but the plan has "
                    f"{(win.row, win.col)}"
                    ": the loader and the plan disagree"
                )
            if t not in self.expected or t in self.done:
                raise RuntimeError(
                    f"window {entry} belongs to tile {t}, which this process does not (or no longer) fill"
                )
            acc = self.open.get(t)
            if acc is None:
                acc = self.open[t] = TileAccumulator(self.plan.tiles[t], len(self.layers))
                self.max_open = max(self.max_open, len(self.open))
            acc.add(win.row, win.col, values[i], self.weight)
            acc.seen += 1
            self.windows += 1
            if acc.seen == self.expected[t]:
                self._finish(t, self.open.pop(t))

    def _finish(self, t: int, acc: TileAccumulator) -> None:
        result = acc.result()
        self.write(self.plan.tiles[t], {name: result[k] for k, name in enumerate(self.layers)})
        self.done.add(t)

    def close(self) -> None:
        """Check that every tile was completed and written."""
        missing = sorted(set(self.expected) - self.done)
        if missing:
            raise RuntimeError(
                f"{len(missing)} tiles were not completed (first: {self.plan.tiles[missing[0]]}); windows "
                "are missing from the loader"
            )


__all__ = ["MapAssembler", "TileAccumulator", "cosine_ramp", "window_weight"]
