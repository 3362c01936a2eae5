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

:class:`AtomicCheckpointIO` saves local checkpoints with
:func:`~spectravlm.io.atomic_torch_save`: ``torch.save`` streamed into a temporary file
*in the checkpoint's directory* (same filesystem, so the rename is atomic), fsynced, ``os.replace`` d onto
the final path, directory fsynced. A reader therefore finds either the previous complete checkpoint or the
new complete one, never a partial file. Temporary files of dead writers on this host are removed by the
next save in that directory. Remote paths (object stores, whose uploads are whole-object) are left to
Lightning's implementation.

Use: ``Trainer(plugins=[AtomicCheckpointIO()])``; ``spectravlm fit`` installs it by default.
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from spectravlm.io import atomic_torch_save

__all__ = ["AtomicCheckpointIO"]


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
