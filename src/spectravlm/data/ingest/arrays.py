"""Ingest data that arrives as numpy arrays plus metadata (times, bands, grid)."""

from __future__ import annotations

import os

from spectravlm.data.ingest.common import write_cube
from spectravlm.data.store import SensorCube, StoreTransaction


def ingest_arrays(
    store: str | os.PathLike[str],
    group: str,
    cube: SensorCube,
    append: bool = False,
    overwrite: bool = False,
    title: str = "",
    stats: bool = False,
) -> None:
    """Write ``cube`` as sensor group ``group`` of ``store``.

    Dates are sorted on the way in. With ``append=True`` the store must exist: a new group is added, or
    an existing group is extended by later dates (same bands, grid and dtype). Without it a new store
    is created (``overwrite`` replaces an existing one). Either way the write is atomic. With ``stats``
    the group's statistics are computed from the arrays as they are written (the CLI's ``npy`` ingest
    does; off by default here, where the caller holds the arrays and decides).
    """
    mode = "append" if append else "create"
    with StoreTransaction(store, mode=mode, overwrite=overwrite, title=title) as tx:
        write_cube(tx, group, cube, stats=stats)
