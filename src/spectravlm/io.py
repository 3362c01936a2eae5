"""Atomic writes: nothing of the user's is ever half-written (files, checkpoints, folders, stores).

Two mechanisms, used by every writer of the library:

* **Files** (:func:`atomic_torch_save`, :func:`atomic_write_bytes`): the content is written to a temporary
  file *in the target's directory* (same filesystem, so the rename is atomic), fsynced, ``os.replace`` d onto
  the target, and the directory is fsynced. A reader finds either the previous complete file or the new
  complete one. Temporary files are named ``.<name>.<host>.<pid>.<random>.partial``; those of dead writers
  on this host are removed by the next save in the same directory. (See
  :mod:`spectravlm.callbacks.checkpoint_io` for why Lightning's own checkpoint save is not enough.)
* **Folders** (:class:`AtomicDirectory`: cube stores, ``save_pretrained`` folders, map stores): the new
  folder is built in a hidden sibling ``.<name>.tmp-<pid>-<id>`` and swapped into place with one
  ``renameat2(RENAME_EXCHANGE)`` (Linux), or, where the file system cannot exchange, by moving the old
  folder aside first. A failed or killed write leaves the previous folder (or none), never a partial one;
  stale build folders of dead processes are removed by the next write to the same path.

This module sits at the bottom of the layer stack (torch and the standard library only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from spectravlm.errors import SpectraVLMError

_SUFFIX = ".partial"


class OutputExistsError(SpectraVLMError, FileExistsError):
    """An output (folder, file) already exists where one would be written without ``overwrite``."""


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


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
    """Remove temporary files in ``directory`` left by dead writers on this host.

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


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (a rename into it) to disk, where the platform allows it."""
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


def _atomic_file(path: str | os.PathLike[str], write: Any) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` so that ``path`` is always either the old file or the complete new one."""
    return _atomic_file(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    return _atomic_file(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(text.encode("utf-8"), path)


# --------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False if unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL/ENOSYS/EOPNOTSUPP: file system cannot exchange
            return False
        raise OSError(errno, os.strerror(errno), str(a))
    return True


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` at ``target`` (replacing what is there) without a partial state."""
    if not target.exists():
        os.rename(new, target)
    elif exchange_paths(new, target):
        shutil.rmtree(new)  # now holds the previous folder
    else:
        # Without an atomic exchange: move the old folder aside first (a kill between the two renames
        # leaves the old folder at the .old path, never a half-written one).
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        os.rename(new, target)
        shutil.rmtree(old)
    fsync_dir(target.parent)


def stale_build_dirs(path: Path) -> Iterator[Path]:
    """Hidden build folders ``.<name>.tmp-<pid>-<id>`` of ``path`` whose process is gone."""
    for p in path.parent.glob(f".{path.name}.tmp-*"):
        pid = p.name.rsplit("-", 2)[-2] if p.name.count("-") >= 2 else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            yield p


def build_dir_for(path: Path) -> Path:
    """The hidden sibling in which a new version of folder ``path`` is built."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class AtomicDirectory:
    """Build a folder aside and swap it into place on success (``with AtomicDirectory(path) as tmp:``).

    Args:
        path: the folder to write.
        overwrite: replace an existing folder; without it an existing ``path`` is an
            :class:`OutputExistsError` raised before anything is written.
        what: what the folder is, for the error message (``"encoder folder"``, ``"map store"``).

    On an exception the build folder is removed and ``path`` is untouched; after a kill the build folder
    stays behind, hidden, and is removed by the next write to ``path``.

    """

    def __init__(self, path: str | os.PathLike[str], overwrite: bool = False, what: str = "folder") -> None:
        self.path = Path(path).absolute()
        self.overwrite = overwrite
        self.what = what
        self.tmp = build_dir_for(self.path)

    def __enter__(self) -> Path:
        for stale in stale_build_dirs(self.path):
            shutil.rmtree(stale, ignore_errors=True)
        if self.path.exists() and not self.overwrite:
            raise OutputExistsError(
                f"{self.path} already exists; pass overwrite=True (--overwrite) to replace this {self.what}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            replace_dir(self.tmp, self.path)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise


__all__ = [
    "AtomicDirectory",
    "OutputExistsError",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_dir_for",
    "clean_stale_partials",
    "exchange_paths",
    "fsync_dir",
    "replace_dir",
    "stale_build_dirs",
]
