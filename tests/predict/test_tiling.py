"""The prediction plan: every pixel covered, tiles aligned to chunks, disjoint rank shares, bad sizes."""

from __future__ import annotations

import numpy as np
import pytest

from spectravlm.data.store import Grid
from spectravlm.errors import DataConfigError
from spectravlm.predict.tiling import plan_prediction, region_name, window_starts


def test_window_starts_reach_the_edge():
    assert window_starts(100, 32, 24) == [0, 24, 48, 68]
    assert window_starts(96, 32, 32) == [0, 32, 64]
    assert window_starts(32, 32, 8) == [0]
    with pytest.raises(DataConfigError, match="larger than the extent"):
        window_starts(20, 32, 8)


@pytest.mark.parametrize(("h", "w"), [(600, 530), (256, 256), (300, 1100)])
def test_every_pixel_of_every_tile_is_covered_by_its_windows(h, w):
    plan = plan_prediction([(("a.zarr",), Grid(h, w)), (("b.zarr",), Grid(64, 64))], 32, 8, tile_size=256)
    for t, tile in enumerate(plan.tiles):
        assert tile.row % 256 == 0 and tile.col % 256 == 0  # chunk-aligned
        cover = np.zeros((tile.height, tile.width), dtype=int)
        for e in tile.entries:
            assert plan.tile_of[e] == t
            win = plan.windows[e]
            rows = slice(max(win.row - tile.row, 0), max(0, min(win.row + 32 - tile.row, tile.height)))
            cols = slice(max(win.col - tile.col, 0), max(0, min(win.col + 32 - tile.col, tile.width)))
            assert rows.stop > rows.start and cols.stop > cols.start  # every window touches its tile
            cover[rows, cols] += 1
        assert cover.min() >= 1
    heights = {r: sum(t.height * t.width for t in plan.tiles if t.region == r) for r in (0, 1)}
    assert heights == {0: h * w, 1: 64 * 64}  # the tiles partition each region
    run, distinct = plan.count()
    assert run >= distinct and [r.name for r in plan.regions] == ["a", "b"]


def test_ranks_take_disjoint_tiles_and_together_all():
    plan = plan_prediction([(("s.zarr",), Grid(1100, 900))], 64, 16, tile_size=256)
    shares = [plan.rank_tiles(r, 3) for r in range(3)]
    assert sorted(t for s in shares for t in s) == list(range(len(plan.tiles)))
    entries = [plan.rank_entries(r, 3) for r in range(3)]
    assert sorted(e for s in entries for e in s) == list(range(len(plan.windows)))


def test_bad_sizes_and_names():
    g = [(("s.zarr",), Grid(512, 512))]
    with pytest.raises(DataConfigError, match=r"overlap must be in \[0, window_size=32\)"):
        plan_prediction(g, 32, 32)
    with pytest.raises(DataConfigError, match="multiple of the output chunk 256"):
        plan_prediction(g, 32, 8, tile_size=300)
    with pytest.raises(DataConfigError, match="smaller than the model's 64 px window"):
        plan_prediction([(("s.zarr",), Grid(40, 512))], 64, 8)
    assert region_name("s3://bucket/area/north.zarr/") == "north" and region_name("data/demo.zarr") == "demo"
    plan = plan_prediction([(("x/demo.zarr",), Grid(64, 64)), (("y/demo.zarr",), Grid(64, 64))], 32, 0)
    assert [r.name for r in plan.regions] == ["demo", "demo_1"]
