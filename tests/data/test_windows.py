import numpy as np
import pytest

from spectravlm.data.windows import PAD_INDEX, Window, WindowSampler, split_windows, window_grid
from spectravlm.errors import DataConfigError


def test_grid_aligned_windows_stay_inside_chunk_tiles():
    wins = window_grid(512, 512, 128, chunk=(256, 256))
    assert len(wins) == 16
    for w in wins:  # one chunk tile per window: first and last pixel in the same tile
        assert w.row // 256 == (w.row + w.size - 1) // 256
        assert w.col // 256 == (w.col + w.size - 1) // 256
    # 96 px windows do not divide 256: aligned ones never cross a tile edge, unaligned ones do
    aligned = window_grid(512, 512, 96, chunk=(256, 256))
    assert all(w.col // 256 == (w.col + 95) // 256 for w in aligned)
    plain = window_grid(512, 512, 96, chunk=(256, 256), align_to_chunks=False)
    assert any(w.col // 256 != (w.col + 95) // 256 for w in plain)
    # windows larger than a chunk start on chunk edges (and one is snapped to the border: 1024 - 300)
    assert {w.row for w in window_grid(1024, 1024, 300, chunk=(256, 256))} == {0, 256, 512, 724}
    assert {w.row for w in window_grid(1024, 1024, 300, cover_edges=False)} == {0, 512}


def _cover(windows, shape):
    cover = np.zeros(shape, int)
    for w in windows:
        rows, cols = w.slices()
        cover[rows, cols] += 1
    return cover


def test_grid_covers_every_pixel_once_when_size_divides_chunk():
    cover = _cover(window_grid(300, 520, 64, chunk=(256, 256), cover_edges=False), (300, 520))
    assert cover.max() == 1
    # without edge windows the 44 px tail past the last chunk row / 8 px past the last column are lost
    assert cover[:256, :512].min() == 1 and cover[256:].max() == 0


def test_grid_covers_every_pixel_of_a_122px_store():
    wins = window_grid(122, 122, 64)
    assert sorted({w.row for w in wins}) == [0, 58] and len(wins) == 4  # today: one window, 72% unread
    assert _cover(wins, (122, 122)).min() == 1
    assert len(window_grid(122, 122, 64, cover_edges=False)) == 1


@pytest.mark.parametrize(
    ("h", "w", "size", "stride", "align"),
    [(300, 520, 64, None, True), (300, 520, 96, None, True), (1000, 777, 128, 100, True),
     (300, 520, 64, 48, False), (700, 700, 300, None, True), (256, 260, 256, None, True)],
)  # fmt: skip
def test_grid_edge_windows_cover_and_interior_stays_aligned(h, w, size, stride, align):
    wins = window_grid(h, w, size, stride=stride, align_to_chunks=align)
    assert _cover(wins, (h, w)).min() == 1  # every pixel can be sampled
    assert len(set(wins)) == len(wins) and all(x.row + size <= h and x.col + size <= w for x in wins)
    if align and size <= 256:
        crossing = [x for x in wins if x.row // 256 != (x.row + size - 1) // 256]
        # only windows snapped to the grid's border may cross a chunk edge (a last tile narrower than them)
        assert all(x.row == h - size for x in crossing)
        assert all(x.col // 256 == (x.col + size - 1) // 256 or x.col == w - size for x in wins)


def test_grid_rejects_window_larger_than_store():
    with pytest.raises(DataConfigError, match=r"larger than the store grid of 100x300"):
        window_grid(100, 300, 128)
    with pytest.raises(DataConfigError, match="positive"):
        window_grid(100, 100, 0)


def test_split_by_blocks_has_no_shared_pixels_and_is_seeded():
    wins = window_grid(1024, 1024, 64, stride=32, align_to_chunks=False) + window_grid(512, 512, 64, region=1)
    splits = split_windows(wins, block_size=256, fractions=(0.6, 0.2, 0.2), seed=3)
    assert all(splits[s] for s in ("train", "val", "test"))
    owner = {0: np.full((1024, 1024), -1), 1: np.full((512, 512), -1)}
    for k, name in enumerate(("train", "val", "test")):
        for w in splits[name]:
            rows, cols = w.slices()
            seen = owner[w.region][rows, cols]
            assert ((seen == -1) | (seen == k)).all(), f"a pixel of {w} is in two splits"
            owner[w.region][rows, cols] = k
    # overlapping windows that straddle block edges were dropped, the others kept
    kept = sum(len(v) for v in splits.values())
    straddle = [w for w in wins if w.row // 256 != (w.row + 63) // 256 or w.col // 256 != (w.col + 63) // 256]
    assert kept == len(wins) - len(straddle) and straddle
    again = split_windows(wins, block_size=256, fractions=(0.6, 0.2, 0.2), seed=3)
    other = split_windows(wins, block_size=256, fractions=(0.6, 0.2, 0.2), seed=4)
    assert again == splits
    assert other != splits


def test_split_small_store_splits_whole_stores():
    wins = [w for r in range(5) for w in window_grid(256, 256, 128, region=r)]
    splits = split_windows(wins, block_size=512, fractions=(0.6, 0.2, 0.2), seed=0)
    regions = {k: {w.region for w in v} for k, v in splits.items()}
    assert [len(regions[k]) for k in ("train", "val", "test")] == [3, 1, 1]
    with pytest.raises(DataConfigError, match="sum"):
        split_windows(wins, 512, (0.5, 0.2, 0.2))


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_sampler_shards_partition_the_epoch(n, world):
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            s = WindowSampler(n, shuffle=True, seed=5, rank=rank, world_size=world)
            s.set_epoch(epoch)
            shards.append(list(s))
        assert len({len(x) for x in shards}) == 1  # every rank steps the same number of times
        real = [i for x in shards for i in x if i != PAD_INDEX]
        assert sorted(real) == list(range(n))  # each window once, none skipped
        assert sum(i == PAD_INDEX for x in shards for i in x) == len(shards[0]) * world - n
    s = WindowSampler(n, seed=5, rank=0, world_size=1)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first or n < 3
    uneven = [list(WindowSampler(n, rank=r, world_size=world, pad_to_even=False)) for r in range(world)]
    assert sorted(i for x in uneven for i in x) == list(range(n))


def test_sampler_rejects_bad_rank():
    with pytest.raises(DataConfigError, match="rank 2"):
        WindowSampler(4, rank=2, world_size=2)


def test_window_slices():
    w = Window(region=0, row=10, col=20, size=5)
    assert w.slices() == (slice(10, 15), slice(20, 25))
