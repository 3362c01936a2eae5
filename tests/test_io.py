"""Checkpoint writes killed at random moments never leave a truncated file at the final path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spectravlm.callbacks.checkpoint_io import AtomicCheckpointIO
from spectravlm.io import clean_stale_partials

MB = 1 << 20
# Saves checkpoints {"i": i, "payload": float32 tensor filled with i} to argv[1] in a loop, with our IO or
# Lightning's default (argv[2]); prints "saved i" after each.
WRITER = """
import sys, torch
if sys.argv[2] == "atomic":  # what AtomicCheckpointIO.save_checkpoint calls for a local path
    from spectravlm.io import atomic_torch_save as save
else:
    from lightning.pytorch.plugins.io import TorchCheckpointIO
    save = TorchCheckpointIO().save_checkpoint
n = int(sys.argv[3]) // 4
for i in range(1, 1000):
    save({"i": i, "payload": torch.full((n,), float(i))}, sys.argv[1])
    print("saved", i, flush=True)
"""


def _writer(path: Path, kind: str, nbytes: int, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), kind, str(nbytes)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | (env or {}),
    )


def _complete(path: Path, nbytes: int) -> int:
    """The checkpoint's ``i`` if it loads and holds a whole payload (raises otherwise)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["payload"].numel() * 4 == nbytes and bool((ckpt["payload"] == ckpt["i"]).all())
    return int(ckpt["i"])


def test_sigkill_during_atomic_saves_leaves_a_complete_checkpoint(tmp_path):
    path, nbytes = tmp_path / "last.ckpt", 48 * MB
    mid_write = 0
    for delay in (0.0, 0.07, 0.15, 0.26):
        proc = _writer(path, "atomic", nbytes)  # its first save also removes the previous writer's partial
        assert proc.stdout is not None
        proc.stdout.readline()  # one save done: the file exists; now kill during a later one
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _complete(path, nbytes)  # the final path holds a whole checkpoint, whenever the kill came
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["last.ckpt"]
        partials = list(tmp_path.glob(".last.ckpt.*.partial"))
        mid_write += bool(partials)
    assert mid_write >= 1  # at least one kill landed in the middle of a write
    removed = clean_stale_partials(tmp_path)  # files of dead writers are cleaned by the next save
    assert removed == partials and not list(tmp_path.glob(".*partial"))


def test_atomic_io_saves_and_loads_like_lightning(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.arange(4)}, "epoch": 3}, tmp_path / "sub" / "a.ckpt")
    loaded = io.load_checkpoint(tmp_path / "sub" / "a.ckpt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.arange(4))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.ckpt"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm (a tmpfs) as TMPDIR")
def test_lightning_default_io_can_leave_a_truncated_checkpoint(tmp_path):
    """Why AtomicCheckpointIO exists: with TMPDIR on another filesystem (tmpfs), Lightning's save copies."""
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem as tmp_path: rename is atomic there")
    path, nbytes = tmp_path / "last.ckpt", 192 * MB
    proc = _writer(path, "lightning", nbytes, {"TMPDIR": "/dev/shm"})
    assert proc.stdout is not None
    proc.stdout.readline()
    truncated = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        size = path.stat().st_size if path.exists() else 0
        if 0 < size < nbytes:  # the copy into the final path is under way
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            truncated = True
            break
    if not truncated:
        proc.kill()
        proc.wait()
        pytest.skip("did not catch Lightning's copy in progress on this machine")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.load raises on a truncated zip
        _complete(path, nbytes)
    for leftover in Path("/dev/shm").glob("tmp*"):
        if leftover.stat().st_uid == os.getuid() and leftover.stat().st_size >= nbytes // 2:
            leftover.unlink(missing_ok=True)  # the killed writer's temporary file stays behind in TMPDIR
