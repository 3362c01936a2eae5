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
# Lightning's default (argv[2]); prints "saved i" after each. With argv[4] = "mid" or "rename", the second
# save stops at a known point (halfway through writing the file, or just before the rename onto the final
# path), prints where it stopped and waits for its stdin: the test then kills it there.
WRITER = """
import os, sys, torch
if sys.argv[2] == "atomic":  # what AtomicCheckpointIO.save_checkpoint calls for a local path
    from spectravlm.io import atomic_torch_save as save
else:
    from lightning.pytorch.plugins.io import TorchCheckpointIO
    save = TorchCheckpointIO().save_checkpoint
n = int(sys.argv[3]) // 4
stop = sys.argv[4] if len(sys.argv) > 4 else ""

def wait(where):
    print(where, flush=True)
    sys.stdin.read()  # never returns before the kill

real_save, real_replace = torch.save, os.replace

class Halfway:  # a file that stops halfway through the checkpoint
    def __init__(self, f):
        self.f, self.done = f, 0
    def write(self, b):
        if self.done + len(b) > int(sys.argv[3]) // 2:
            self.f.flush()
            wait("mid")
        self.done += len(b)
        return self.f.write(b)
    def __getattr__(self, name):
        return getattr(self.f, name)

for i in range(1, 1000):
    if i == 2 and stop == "mid":
        torch.save = lambda obj, f: real_save(obj, Halfway(f))
    if i == 2 and stop == "rename":
        os.replace = lambda a, b: (wait("rename"), real_replace(a, b))
    save({"i": i, "payload": torch.full((n,), float(i))}, sys.argv[1])
    print("saved", i, flush=True)
"""


def _writer(
    path: Path, kind: str, nbytes: int, env: dict[str, str] | None = None, stop: str = ""
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), kind, str(nbytes), stop],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | (env or {}),
    )


def _complete(path: Path, nbytes: int) -> int:
    """The checkpoint's ``i`` if it loads and holds a whole payload (raises otherwise)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["payload"].numel() * 4 == nbytes and bool((ckpt["payload"] == ckpt["i"]).all())
    return int(ckpt["i"])


@pytest.mark.parametrize("stop", ["mid", "rename"])
def test_sigkill_during_an_atomic_save_leaves_the_previous_complete_checkpoint(tmp_path, stop):
    path, nbytes = tmp_path / "last.ckpt", 8 * MB
    proc = _writer(path, "atomic", nbytes, stop=stop)
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["saved", "1"]
    assert proc.stdout.readline().strip() == stop  # the second save stopped where the test wants it
    partials = list(tmp_path.glob(".last.ckpt.*.partial"))
    if stop == "mid":
        assert len(partials) == 1 and 0 < partials[0].stat().st_size < nbytes  # half written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _complete(path, nbytes) == 1  # the final path still holds the whole first checkpoint
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["last.ckpt"]
    removed = clean_stale_partials(tmp_path)  # files of dead writers are cleaned by the next save
    assert removed == partials and len(removed) == 1 and not list(tmp_path.glob(".*partial"))


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
