"""Sharding across DataLoader workers and distributed ranks: every window once per epoch, none skipped."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import write_demo_store
from spectravlm.data.windows import PAD_INDEX, WindowSampler


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shard") / "demo.zarr"
    write_demo_store(path, size=256, seed=2)
    return path


def _dm(store: Path, **kw) -> CubeDataModule:
    args = dict(
        stores=[store],
        groups={"s2": ["B04", "B08"]},
        targets=["agb"],
        window_size=32,
        block_size=32,
        split_fractions=(0.75, 0.15, 0.1),  # 49 train and 9 val windows: odd, so a rank gets padding
        n_times=2,
        batch_size=3,
        num_workers=2,
        augment=False,
        seed=7,
    )
    return CubeDataModule(**(args | kw))


def _epoch_indices(dm: CubeDataModule, split: str, epoch: int) -> list[list[int]]:
    loader = getattr(dm, f"{split}_dataloader")()
    assert isinstance(loader.sampler, WindowSampler)
    loader.sampler.set_epoch(epoch)
    return [b.index.tolist() for b in loader]


def test_two_ranks_two_workers_read_each_window_once(store):
    ranks = [_dm(store, rank=r, world_size=2) for r in range(2)]
    for dm in ranks:
        dm.setup("fit")
    n = len(ranks[0].datasets["train"])
    assert n % 2 == 1  # odd: one rank gets a padding sample (the split is fixed by the seed)
    assert ranks[0].datasets["train"].windows == ranks[1].datasets["train"].windows  # same split everywhere
    orders = []
    for epoch in (0, 1):
        per_rank = [_epoch_indices(dm, "train", epoch) for dm in ranks]
        assert len(per_rank[0]) == len(per_rank[1])  # same number of steps on each rank
        flat = [i for batches in per_rank for b in batches for i in b]
        real = [i for i in flat if i != PAD_INDEX]
        assert sorted(real) == list(range(n)), "a window was read twice or skipped"
        assert len(flat) - len(real) == (-n) % 2  # at most one padding sample per short rank
        orders.append(real)
    assert orders[0] != orders[1]  # reshuffled between epochs
    # validation is sharded the same way, in a fixed order
    val = [i for dm in ranks for b in _epoch_indices(dm, "val", 0) for i in b if i != PAD_INDEX]
    assert sorted(val) == list(range(len(ranks[0].datasets["val"])))


def test_padding_samples_are_masked_and_carry_no_data(store):
    dm = _dm(store, rank=1, world_size=4, num_workers=0)
    dm.setup("fit")
    n = len(dm.datasets["train"])
    batches = list(dm.train_dataloader())
    idx = torch.cat([b.index for b in batches])
    pads = idx == PAD_INDEX
    assert int(pads.sum()) == (-(-n // 4)) - len(range(1, n, 4))
    if pads.any():
        b = next(b for b in batches if (b.index == PAD_INDEX).any())
        k = (b.index == PAD_INDEX).nonzero()[0, 0]
        assert not b["s2"].valid[k].any() and b.targets["agb"][k].isnan().all()
        assert b.origin[k].tolist() == [-1, -1]


def _gloo_worker(rank: int, world: int, store: str, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        from spectravlm.data.dataset import CubeDataset

        scans = {"n": 0}
        has_data = CubeDataset.has_data

        def counted(self, window):  # type: ignore[no-untyped-def]
            scans["n"] += 1
            return has_data(self, window)

        CubeDataset.has_data = counted  # type: ignore[method-assign]
        dm = _dm(Path(store), num_workers=2)  # rank and world size come from torch.distributed
        dm.setup("fit")
        CubeDataset.has_data = has_data  # type: ignore[method-assign]
        assert dm.rank_world() == (rank, world)
        seen = [i for b in _epoch_indices(dm, "train", 0) for i in b]
        gathered: list[list[int] | None] = [None] * world
        dist.all_gather_object(gathered, seen)
        scanned: list[int | None] = [None] * world
        dist.all_gather_object(scanned, scans["n"])
        if rank == 0:
            Path(out).write_text(
                json.dumps({"seen": gathered, "n": len(dm.datasets["train"]), "scanned": scanned})
            )
    finally:
        dist.destroy_process_group()


def test_real_two_process_gloo_run(store, tmp_path):
    out = tmp_path / "seen.json"
    init = f"file://{tmp_path / 'init'}"
    # fork: the children inherit the imported modules instead of importing torch and lightning again
    mp.start_processes(_gloo_worker, args=(2, str(store), init, str(out)), nprocs=2, start_method="fork")
    result = json.loads(out.read_text())
    seen, n = result["seen"], result["n"]
    assert len(seen[0]) == len(seen[1])
    real = [i for s in seen for i in s if i != PAD_INDEX]
    assert sorted(real) == list(range(n))
    assert not set(seen[0]) - {PAD_INDEX} & set(seen[1])
    # the empty-window scan ran once, on rank 0, and reached rank 1 by broadcast
    assert result["scanned"][0] > 0 and result["scanned"][1] == 0
