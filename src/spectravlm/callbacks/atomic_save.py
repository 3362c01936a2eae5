"""``torch.save`` that never leaves a partial file at the target path (torch and the standard library only).

The object is written to a temporary file in the target's directory (same filesystem, so the rename is
atomic), fsynced, ``os.replace`` d onto the target, and the directory is fsynced: a reader finds either the
previous complete file or the new complete one. Temporary files are named
``.<name>.<host>.<pid>.<random>.partial``; those of dead writers on this host are removed by the next save
in the same directory. See :mod:`spectravlm.callbacks.checkpoint_io` for why Lightning's own save is not
enough.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

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
