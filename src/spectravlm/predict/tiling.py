"""The plan of a whole-scene prediction: output tiles, and the overlapping windows that cover each one.

Every pixel of every region (store, or stores sharing one grid) is covered by square windows of the model's
``window_size`` placed every ``stride = window_size - overlap`` pixels from the top-left corner, the last
row and column of windows snapped to the scene's edge (so nothing is left out and no window reads past the
edge). The output is cut into square *tiles* of ``tile_size`` pixels, aligned to the output's chunks; a
tile is the unit of work: its windows are the windows that intersect it, and its pixels are complete once
they are all predicted and blended. A window that straddles two tiles is run once for each (with tiles of
1024 px and windows of 64 px overlapping by 16, about 4% more windows than the grid itself); in exchange
tiles are independent, so

* memory is bounded by the tiles in flight (one or two), not by the scene;
* ranks take disjoint tiles (round robin) and write disjoint, chunk-aligned parts of one output, with no
  communication and no locks;
* every pixel's blend is the same sum over the same windows, however the tiles are dealt.

:class:`PredictionPlan` lists the windows tile by tile (the order the data loader reads them in); tile
``t`` owns the consecutive entries ``tiles[t].entries``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from spectravlm.data.store import Grid
from spectravlm.data.windows import Window
from spectravlm.errors import DataConfigError

OUTPUT_CHUNK = 256
"""Chunk edge of the output arrays (the stores' chunk edge); tiles are multiples of it."""


@dataclass(frozen=True)
class RegionExtent:
    """A region to predict: where its stores are, its grid and the name of its outputs.

    Attributes:
        paths: store paths or URLs of the region (the first one holds the predictions group).
        grid: the pixel grid (shape, transform, CRS).
        name: base name of the region's output files (from the first store's folder name).

    """

    paths: tuple[str, ...]
    grid: Grid
    name: str


@dataclass(frozen=True)
class Tile:
    """An output tile: pixels ``[row, row + height) x [col, col + width)`` of region ``region``.

    Attributes:
        region: position of the region in the plan.
        row: top pixel row.
        col: left pixel column.
        height: rows.
        width: columns.
        entries: positions in :attr:`PredictionPlan.windows` of the windows that cover the tile.

    """

    region: int
    row: int
    col: int
    height: int
    width: int
    entries: tuple[int, ...] = field(default=(), compare=False)

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` of the tile in its region."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


@dataclass
class PredictionPlan:
    """Tiles and windows of a whole-scene prediction (see the module docstring).

    Attributes:
        regions: the regions, in the data's order.
        window_size: window edge in pixels.
        overlap: pixels shared by neighbouring windows.
        tile_size: tile edge in pixels.
        tiles: every tile of every region, row-major per region.
        windows: the windows, tile by tile (a window covering several tiles appears once per tile).
        tile_of: per entry of ``windows``, its tile.

    """

    regions: list[RegionExtent]
    window_size: int
    overlap: int
    tile_size: int
    tiles: list[Tile]
    windows: list[Window]
    tile_of: list[int]

    def rank_tiles(self, rank: int, world_size: int) -> list[int]:
        """Tiles of ``rank`` among ``world_size`` (round robin over all tiles)."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataConfigError(f"rank {rank} is not in 0..{world_size - 1}")
        return list(range(rank, len(self.tiles), world_size))

    def rank_entries(self, rank: int, world_size: int) -> list[int]:
        """Window entries of ``rank``'s tiles, tile by tile."""
        return [e for t in self.rank_tiles(rank, world_size) for e in self.tiles[t].entries]

    def count(self) -> tuple[int, int]:
        """``(windows to run, distinct windows)``: the first counts windows shared by tiles once per tile."""
        return len(self.windows), len(set(self.windows))


def window_starts(extent: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride`` px from 0, the last one snapped to ``extent - size``."""
    if size > extent:
        raise DataConfigError(f"window of {size} px is larger than the extent of {extent} px")
    starts = list(range(0, extent - size + 1, stride))
    if starts[-1] + size < extent:
        starts.append(extent - size)
    return starts


def region_name(path: str) -> str:
    """Output base name of a store: its folder name without ``.zarr`` (``data/demo.zarr`` -> ``demo``)."""
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    return (tail[: -len(".zarr")] if tail.endswith(".zarr") else tail) or "region"


def plan_prediction(
    regions: Sequence[tuple[Sequence[str], Grid]],
    window_size: int,
    overlap: int,
    tile_size: int = 1024,
) -> PredictionPlan:
    """Plan the tiles and windows that cover every pixel of ``regions`` (see the module docstring).

    Args:
        regions: per region, its store paths and grid.
        window_size: window edge in pixels (the model's).
        overlap: pixels shared by neighbouring windows, ``0 <= overlap < window_size`` (blended with a cosine
            ramp over these pixels).
        tile_size: output tile edge in pixels, a multiple of the output chunk (256).

    Raises:
        DataConfigError: sizes out of range, or a region smaller than a window.

    """
    if window_size < 1 or not 0 <= overlap < window_size:
        raise DataConfigError(f"predict overlap must be in [0, window_size={window_size}), got {overlap}")
    if tile_size < OUTPUT_CHUNK or tile_size % OUTPUT_CHUNK:
        raise DataConfigError(
            f"predict tile_size must be a positive multiple of the output chunk {OUTPUT_CHUNK} px (so that "
            "ranks "
            f"write whole chunks), got {tile_size}"
        )
    stride = window_size - overlap
    extents: list[RegionExtent] = []
    tiles: list[Tile] = []
    windows: list[Window] = []
    tile_of: list[int] = []
    names: set[str] = set()
    for r, (paths, grid) in enumerate(regions):
        if window_size > min(grid.height, grid.width):
            raise DataConfigError(
                f"{', '.join(paths)}: the store grid of {grid.height}x{grid.width} px is smaller than the "
                f"model's {window_size} px window"
            )
        name = base = region_name(paths[0])
        k = 1
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        extents.append(RegionExtent(tuple(paths), grid, name))
        rows = window_starts(grid.height, window_size, stride)
        cols = window_starts(grid.width, window_size, stride)
        for t_row in range(0, grid.height, tile_size):
            for t_col in range(0, grid.width, tile_size):
                height, width = min(tile_size, grid.height - t_row), min(tile_size, grid.width - t_col)
                row_sel = _covering(rows, window_size, t_row, t_row + height)
                col_sel = _covering(cols, window_size, t_col, t_col + width)
                start = len(windows)
                for wr in row_sel:
                    for wc in col_sel:
                        windows.append(Window(r, wr, wc, window_size))
                        tile_of.append(len(tiles))
                tiles.append(Tile(r, t_row, t_col, height, width, tuple(range(start, len(windows)))))
    return PredictionPlan(extents, window_size, overlap, tile_size, tiles, windows, tile_of)


def _covering(starts: list[int], size: int, lo: int, hi: int) -> list[int]:
    """Starts of the windows ``[s, s + size)`` that intersect ``[lo, hi)`` (``starts`` sorted)."""
    first = bisect.bisect_right(starts, lo - size)  # s + size > lo
    last = bisect.bisect_left(starts, hi)  # s < hi
    return starts[first:last]


__all__ = [
    "OUTPUT_CHUNK",
    "PredictionPlan",
    "RegionExtent",
    "Tile",
    "plan_prediction",
    "region_name",
    "window_starts",
]
