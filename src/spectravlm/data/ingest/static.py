"""Static layers (DEM, slope, aspect, land cover) onto an existing store's grid.

A static layer is one 2-D array ``(y, x)`` on the store's grid in the store's ``static`` group, with its
``units`` (a fact, required) and optional ``nodata``. It comes from a raster (read as is when it is on the
grid, else warped onto it with ``resampling``; ``nearest`` for classes such as land cover, ``bilinear``
for a DEM) or from a ``.npy`` array of the grid's shape (a trailing or leading axis of 1 is dropped).
The store is rewritten atomically (hard-link copy, swap).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spectravlm.data.ingest.geotiff import check_alignment, resampling_method
from spectravlm.data.ingest.scenes import grid_reader, open_raster
from spectravlm.data.store import Layer, StoreTransaction
from spectravlm.errors import IngestError


def ingest_static(
    file: str | os.PathLike[str],
    store: str | os.PathLike[str],
    name: str,
    units: str,
    long_name: str = "",
    nodata: float | None = None,
    resampling: str = "nearest",
    allow_reproject: bool = False,
) -> None:
    """Write ``file`` as static layer ``name`` of the existing ``store`` (module docstring)."""
    path = Path(file)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    method = resampling_method(resampling)
    with StoreTransaction(store, mode="append") as tx:
        grid = tx.grid()
        if grid is None:
            raise IngestError(f"{store} has no sensor group yet, so no grid to put a static layer on")
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
            values = (
                np.squeeze(values)
                if values.ndim == 3 and 1 in (values.shape[0], values.shape[-1])
                else values
            )
            if values.shape != (grid.height, grid.width):
                raise IngestError(
                    f"{path}: array {values.shape}, the store's grid is {grid.height}x{grid.width}"
                )
            file_nodata = None
        else:
            from contextlib import ExitStack

            with open_raster(str(path)) as src:
                if src.count != 1:
                    raise IngestError(f"{path}: {src.count} bands; a static layer is one band")
                on_grid = check_alignment(src, grid, f"the grid of {store}", allow_reproject)
                file_nodata = src.nodata
            with ExitStack() as stack:
                reader = grid_reader(stack, str(path), grid, on_grid, method, nodata)
                values = reader.read(1)
        tx.write_static(
            name,
            Layer(
                values,
                units,
                long_name or name,
                nodata if nodata is not None else file_nodata,
                attrs={"source": str(path), "resampling": method.name},
            ),
            grid,
        )
