"""Reusable shared-memory batch slots of DataLoader workers: leases, release, fallback, correctness."""

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from spectravlm.data.batchpool import BatchPool, LeasedStack
from spectravlm.data.dataset import CubeDataset
from spectravlm.data.demo import write_demo_store
from spectravlm.stack import SensorSeries, collate_stacks


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "demo.zarr"
    write_demo_store(path, size=256, seed=4)
    return path


def _leased(pool: BatchPool) -> LeasedStack:
    got = pool.acquire()
    assert got is not None
    slot, gen = got
    valid = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    s = SensorSeries("s1", ("VV",), torch.zeros(1, 1, 1, 2, 2), torch.zeros(1, 1), valid)
    return LeasedStack(series={"s1": s}, lease=pool.flags, slot=slot, generation=gen)


def test_leases_release_and_stale_copies_do_nothing():
    pool = BatchPool(max_slots=2)
    a, b = _leased(pool), _leased(pool)
    assert (a.slot, b.slot) == (0, 1) and pool.acquire() is None  # all slots leased
    stale = LeasedStack(series=a.series, lease=a.lease, slot=a.slot, generation=a.generation)
    a.release()
    c = _leased(pool)
    assert c.slot == 0 and c.generation > a.generation  # slot 0 reused under a new generation
    stale.release()  # an old copy of the first lease must not free the new one
    assert pool.acquire() is None
    moved = c.to(torch.float64)  # a copy elsewhere releases the slot
    assert not isinstance(moved, LeasedStack) and pool.acquire() == (0, 4)


def _reference(ds: CubeDataset, n: int) -> dict[int, torch.Tensor]:
    return {i: ds[i]["s2"].values[0] for i in range(n)}


@pytest.mark.parametrize("release", [True, False])
def test_worker_batches_stay_correct_with_and_without_release(store, release):
    # 4 slots per worker: one batch held by the consumer, two prefetched, one being built; never short
    slots_per_worker = 4 if release else 2
    ds = CubeDataset(
        [store], groups={"s2": ["B04", "B8A"]}, targets=["agb"], window_size=32, pool_slots=slots_per_worker
    )
    ref = _reference(ds, len(ds))
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_stacks)
    kept, slots = [], []
    for b in loader:
        if isinstance(b, LeasedStack):
            slots.append(b.slot)
        for k, i in enumerate(b.index.tolist()):
            assert torch.equal(b["s2"].values[k], ref[i])
        if release and isinstance(b, LeasedStack):
            b.release()
        else:
            kept.append(b)
    for b in kept:  # batches never released are never overwritten
        for k, i in enumerate(b.index.tolist()):
            assert torch.equal(b["s2"].values[k], ref[i])
            assert torch.equal(b.targets["agb"][k], ds[i].targets["agb"][0])
    if release:
        assert len(slots) == 16 and len(set(slots)) <= 4  # every batch came from a reused slot
    else:
        assert len(slots) == 4  # 2 slots per worker, then fresh shared memory
