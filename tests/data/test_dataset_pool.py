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
    s = SensorSeries("s1", ("VV",), torch.zeros(1, 1, 1, 2, 2), torch.zeros(1, 1), valid, units="dB")
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


def test_a_view_at_an_offset_is_cloned_before_the_slot_is_released():
    """A transform returning a view into the pooled batch (a crop at an offset) must not keep slot memory."""
    from dataclasses import replace

    from spectravlm.data.datamodule import _own_copy

    pool = BatchPool(max_slots=1)
    raw = _leased(pool)
    s = raw["s1"]
    big = replace(
        s, values=torch.arange(16.0).view(1, 1, 1, 4, 4), valid=torch.ones(1, 1, 4, 4, dtype=torch.bool)
    )
    raw = LeasedStack(series={"s1": big}, lease=raw.lease, slot=raw.slot, generation=raw.generation)
    view = replace(big, values=big.values[..., 1:3, 1:3], valid=big.valid[..., 1:3, 1:3])  # offset view
    assert view.values.data_ptr() != big.values.data_ptr()  # a data_ptr comparison would miss it
    from spectravlm.stack import SensorStack

    out = _own_copy(SensorStack({"s1": view}), raw)
    assert out["s1"].values.untyped_storage().data_ptr() != big.values.untyped_storage().data_ptr()
    raw.release()
    big.values.zero_()  # the slot is reused and overwritten
    assert out["s1"].values.flatten().tolist() == [5.0, 6.0, 9.0, 10.0]


def test_batches_used_as_they_are_are_released_when_the_next_one_arrives(store):
    """Validation without augmentation: the batch is used as it is; its slot comes back at the next batch."""
    from spectravlm.data.datamodule import CubeDataModule

    dm = CubeDataModule(
        [str(store)], groups=["s2"], window_size=64, block_size=128, batch_size=2, num_workers=0
    )
    dm.setup("fit")
    first = dm.datasets["val"].read_batch([0, 1])
    assert isinstance(first, LeasedStack) and first.lease is not None
    flags = first.lease  # the worker's shared slot flags
    assert dm.transform(first, train=False) is first
    assert int(flags[first.slot]) != 0  # in use by the step
    second = dm.datasets["val"].read_batch([0, 1])
    dm.transform(second, train=False)
    assert int(flags[first.slot]) == 0  # released once the next batch arrived
