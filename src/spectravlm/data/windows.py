"""Windows over cube stores: the chunk-aligned window grid, the spatial-block split and the sharding sampler.

A *window* is a square of ``size`` pixels at ``(row, col)`` in one store (a *region*). Three steps turn a
set of stores into what each dataloader process reads in one epoch:

1. :func:`window_grid` lays windows on a grid that respects the stores' chunk tiles: a window never
   straddles a chunk boundary when it fits in one chunk, so it decodes one chunk per date
   (a window of 128 px placed at random over 256 px chunks touches up to four; see docs/loading.md).
2. :func:`split_windows` assigns square *blocks* of pixels (several windows each) to train/val/test with a
   seeded permutation. A window belongs to a split only when it lies inside one block, so no pixel is
   shared between splits and neighbouring windows of different splits are at least a block edge apart
   in their block assignment (no leakage through overlap).
3. :class:`WindowSampler` shuffles the window indices with ``seed + epoch`` and gives rank ``r`` of
   ``world_size`` the positions ``r, r + world_size, ...``. The DataLoader then hands each batch of
   indices to exactly one worker, so in one epoch every window is read once by one process, and none is
   skipped. Ranks whose share is one window short get a padding index ``-1`` (with ``pad_to_even``) so
   that every rank runs the same number of steps (DDP needs that); a padding index is never read: the
   dataset turns it into an empty sample with ``valid == False`` everywhere and NaN targets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from spectravlm.errors import DataConfigError

SPLITS = ("train", "val", "test")
PAD_INDEX = -1
"""Index that stands for "no window" in a padded shard."""


@dataclass(frozen=True, order=True)
class Window:
    """A square window in one region.

    Attributes:
        region: position of the region (store, or stores sharing one grid) in the dataset's list.
        row: top row of the window in the region's grid.
        col: left column.
        size: edge in pixels.

    """

    region: int
    row: int
    col: int
    size: int

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of the window."""
        return slice(self.row, self.row + self.size), slice(self.col, self.col + self.size)


def _starts(extent: int, size: int, stride: int, chunk: int, align: bool, cover_edges: bool) -> list[int]:
    """Window starts along one axis (see :func:`window_grid`)."""
    if not align:
        out = list(range(0, extent - size + 1, stride))
    elif size > chunk:  # start on chunk edges: the stride rounded to whole chunks
        step = -(-stride // chunk) * chunk  # up, unless that would leave gaps between windows
        if cover_edges and step > size >= stride:
            step = max(chunk, stride // chunk * chunk)
        out = list(range(0, extent - size + 1, step))
    else:
        out = []
        for c0 in range(0, extent, chunk):
            end = min(c0 + chunk, extent)
            inside = list(range(c0, end - size + 1, stride))
            if cover_edges and end - c0 >= size and inside[-1] + size < end:
                inside.append(end - size)  # snapped to the tile's end: still one chunk, overlapping
            out.extend(inside)
    if cover_edges and out[-1] + size < extent:
        out.append(extent - size)  # snapped to the grid's border
    return sorted(set(out))


def window_grid(
    height: int,
    width: int,
    size: int,
    stride: int | None = None,
    chunk: tuple[int, int] = (256, 256),
    align_to_chunks: bool = True,
    region: int = 0,
    cover_edges: bool = True,
) -> list[Window]:
    """All windows of ``size`` px of a ``height`` x ``width`` grid, in row-major order.

    With ``align_to_chunks`` and ``size <= chunk``, windows are laid out inside each chunk tile at
    ``stride`` steps and never cross a tile edge: the aligned fast path, one chunk per date. With
    ``size > chunk`` they start on chunk boundaries (the stride rounded up to whole chunks, or down when
    rounding up would leave pixels between windows). Without alignment they start every ``stride`` px
    from 0.

    With ``cover_edges`` (default) no pixel is left out: where the steps stop short of a tile's end,
    one more window is snapped to that end (inside the tile, overlapping its neighbour); where they stop
    short of the grid's border (a last partial tile narrower than the window, a stride that does not
    divide the grid), one more window is snapped to the border (it may cross one chunk edge). A 64 px
    window grid on a 122 px store thus has starts 0 and 58 per axis and reads every pixel.

    Args:
        height: rows of the grid.
        width: columns of the grid.
        size: window edge in pixels.
        stride: step between window starts (default ``size``: no overlap).
        chunk: spatial chunk edges ``(rows, cols)`` of the stored arrays.
        align_to_chunks: keep windows inside chunk tiles (see above).
        region: region index stored in each window.
        cover_edges: add windows snapped to tile ends and to the grid border so every pixel is covered.

    Raises:
        DataConfigError: when the window is larger than the grid or sizes are not positive.

    """
    stride = size if stride is None else stride
    if size <= 0 or stride <= 0:
        raise DataConfigError(f"window size and stride must be positive, got size={size}, stride={stride}")
    if size > height or size > width:
        raise DataConfigError(
            f"window of {size}x{size} px is larger than the store grid of {height}x{width} px "
            f"(region {region}); choose window_size <= {min(height, width)}"
        )
    rows = _starts(height, size, stride, chunk[0], align_to_chunks, cover_edges)
    cols = _starts(width, size, stride, chunk[1], align_to_chunks, cover_edges)
    return [Window(region, r, c, size) for r in rows for c in cols]


def split_windows(
    windows: Sequence[Window],
    block_size: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, list[Window]]:
    """Split windows into train/val/test by square spatial blocks of ``block_size`` px.

    Blocks (``region, row // block_size, col // block_size``) that hold at least one window are
    shuffled with ``seed`` and dealt to the splits in proportion to ``fractions``: every split with a
    positive fraction gets at least one block when there are enough blocks. A window that spans two
    blocks is dropped (it would share pixels with windows of another split); choose ``block_size`` as a
    multiple of the window size (and stride) so that none is.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in the input order.

    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise DataConfigError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    if block_size <= 0:
        raise DataConfigError(f"block_size must be positive, got {block_size}")
    block_of: dict[Window, tuple[int, int, int]] = {}
    for w in windows:
        b0 = (w.region, w.row // block_size, w.col // block_size)
        b1 = (w.region, (w.row + w.size - 1) // block_size, (w.col + w.size - 1) // block_size)
        if b0 == b1:
            block_of[w] = b0
    blocks = sorted(set(block_of.values()))
    order = np.random.default_rng(seed).permutation(len(blocks))
    counts = _deal(len(blocks), fractions)
    assign: dict[tuple[int, int, int], str] = {}
    pos = 0
    for name, n in zip(SPLITS, counts, strict=True):
        for i in order[pos : pos + n]:
            assign[blocks[i]] = name
        pos += n
    out: dict[str, list[Window]] = {name: [] for name in SPLITS}
    for w in windows:
        if w in block_of:
            out[assign[block_of[w]]].append(w)
    return out


def auto_block_size(extents: Sequence[tuple[int, int]], window_size: int, stride: int | None = None) -> int:
    """The default edge of the split blocks: at least 4 x 4 blocks in the smallest region.

    The largest multiple of the window size (and stride) that fits four times into the smaller side of the
    smallest region, and never less than one window. A 512 px store with 128 px windows gets 128 px blocks
    (16 blocks); a 10980 px Sentinel-2 tile with 128 px windows 2688 px blocks (16 blocks).
    """
    unit = math.lcm(window_size, stride or window_size)
    side = min(min(h, w) for h, w in extents)
    return max(unit, side // 4 // unit * unit)


def _deal(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Integer block counts per split: proportional, each positive fraction >= 1 block when n allows."""
    counts = [math.floor(n * f) for f in fractions]
    for i in sorted(range(3), key=lambda k: -fractions[k]):  # hand out the remainder, largest first
        if sum(counts) >= n:
            break
        counts[i] += 1
    for i in range(3):
        if fractions[i] > 0 and counts[i] == 0:
            donor = max(range(3), key=lambda k: counts[k])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class WindowSampler(DistributedSampler):
    """Epoch-seeded shuffle of window indices, sharded across distributed ranks without repeats.

    It is a :class:`~torch.utils.data.DistributedSampler` so that Lightning keeps it as it is (Lightning
    wraps any other sampler in its own distributed sampler) and calls :meth:`set_epoch` every epoch.
    Unlike ``DistributedSampler`` it never repeats a window to even out the shards: a short shard is
    padded with :data:`PAD_INDEX` (``pad_to_even=True``) or left one shorter (``pad_to_even=False``).

    Args:
        n_windows: number of windows in the dataset.
        shuffle: shuffle every epoch (with ``seed + epoch``); otherwise dataset order.
        seed: base seed, identical on every rank.
        rank: this process's rank; default from ``torch.distributed`` (0 when not initialised).
        world_size: number of ranks; default from ``torch.distributed`` (1 when not initialised).
        pad_to_even: pad short shards with :data:`PAD_INDEX` so all ranks have the same length.

    """

    def __init__(
        self,
        n_windows: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        pad_to_even: bool = True,
    ) -> None:
        d_rank, d_world = dist_rank_world()
        rank = d_rank if rank is None else rank
        world_size = d_world if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataConfigError(f"rank {rank} is not in 0..{world_size - 1} (world_size={world_size})")
        # The parent's attributes, set without its constructor (which needs a dataset and a process group).
        self.num_replicas = world_size
        self.rank = rank
        self.epoch = 0
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = False
        self.n_windows = n_windows
        self.pad_to_even = pad_to_even
        self.num_samples = len(self)
        self.total_size = self.num_samples * world_size
        self._resume: tuple[int, int] | None = None  # (epoch, samples of this rank's share already consumed)

    def order(self) -> np.ndarray:
        """Window indices of this epoch, before sharding (the same on every rank)."""
        if not self.shuffle:
            return np.arange(self.n_windows)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_windows)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle; a resume position of another epoch no longer applies."""
        super().set_epoch(epoch)
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None

    def resume(self, epoch: int, consumed: int) -> None:
        """Continue epoch ``epoch`` after the first ``consumed`` samples of this rank's share.

        Every iteration of that epoch starts there (Lightning may create an iterator more than once) until
        :meth:`set_epoch` moves on to another epoch.
        """
        self.set_epoch(epoch)
        self._resume = (epoch, consumed)

    def __iter__(self) -> Iterator[int]:
        mine = self.order()[self.rank :: self.num_replicas].tolist()
        if self.pad_to_even:
            mine += [PAD_INDEX] * (len(self) - len(mine))
        if self._resume is not None and self._resume[0] == self.epoch:
            mine = mine[self._resume[1] :]
        return iter(mine)

    def __len__(self) -> int:
        if self.pad_to_even:
            return -(-self.n_windows // self.num_replicas)
        return len(range(self.rank, self.n_windows, self.num_replicas))
