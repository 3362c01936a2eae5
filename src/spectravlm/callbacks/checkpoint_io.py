"""Checkpoints that are never left half-written: write beside the target, fsync, rename.

What Lightning 2.6 does (``TorchCheckpointIO.save_checkpoint`` -> ``lightning.fabric.utilities.cloud_io.
_atomic_save``): it serialises the whole checkpoint into an in-memory buffer, then writes it inside an
fsspec transaction. For a local path, fsspec's transaction writes to ``tempfile.mkstemp()`` (the system
temporary directory, not the checkpoint's) and commits with ``shutil.move``. So:

* when the temporary directory is on another filesystem than the checkpoints (``/tmp`` or ``/dev/shm`` as
  tmpfs and checkpoints on a disk or network volume, the usual cluster layout), ``shutil.move`` *copies*
  into the final path: a kill during that copy leaves a truncated ``.ckpt`` under the final name (shown in
  ``tests/tasks/test_checkpoint_io.py`` with ``TMPDIR`` on ``/dev/shm``);
* nothing is fsynced, so after a power loss or node crash the renamed file can be empty;
* a killed save leaves its temporary file behind in the temporary directory, and the checkpoint is held
  twice in memory (buffer + bytes).

:class:`AtomicCheckpointIO` writes local checkpoints to a temporary file *in the checkpoint's directory*
(same filesystem, so the rename is atomic), streams ``torch.save`` into it, fsyncs it, ``os.replace`` s it
onto the final path and fsyncs the directory. A reader therefore finds either the previous complete
checkpoint or the new complete one, never a partial file. Temporary files of dead writers on this host
are removed by the next save in that directory. Remote paths (object stores, whose uploads are
whole-object) are left to Lightning's implementation.

Use: ``Trainer(plugins=[AtomicCheckpointIO()])``; ``spectravlm fit`` installs it by default.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

_SUFFIX = ".partial"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{socket.gethostname()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_partials(directory: Path) -> list[Path]:
    """Remove temporary checkpoint files in ``directory`` left by dead writers on this host.

    Returns:
        The removed paths.

    """
    removed = []
    host = socket.gethostname()
    for f in directory.glob(f".*.{host}.*{_SUFFIX}"):
        try:
            pid = int(f.name[: -len(_SUFFIX)].rsplit(".", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _alive(pid):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` so that ``path`` is always either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO whose local saves are atomic and durable (see the module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically (local paths) or as Lightning does (remote)."""
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, os.fspath(path))
