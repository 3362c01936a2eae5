"""Where a whole-scene prediction goes: a ``predictions`` group in each store and/or Cloud-Optimized GeoTIFFs.

Two outputs, each written atomically (nothing half-written after an error or a kill):

* **store group** (``store_group=True``): a group ``predictions`` in each region's (first) store, one
  float32 array per layer (``agb``, ``agb_std``) on the store's grid, chunked 256 x 256 like the store, with
  the store's ``y``/``x`` coordinates and CF grid mapping, so ``xarray.open_zarr(store, group="predictions")``
  reads it. It is written inside the store's :class:`~spectravlm.data.store.StoreTransaction` (a hard-linked
  copy of the store, swapped in by one rename at the end); an existing group is replaced only with
  ``overwrite``.
* **GeoTIFFs** (``geotiff_dir``): one float32 COG per region, ``<dir>/<store name>.tif``, one band per
  layer (band descriptions and units set, NaN nodata), with the store's CRS and transform; a store without
  a CRS (BioMassters chips) gives a GeoTIFF on its pixel grid without CRS (``coordinates="auto"``), or an
  error with ``coordinates="map"``. The folder is built aside (:class:`~spectravlm.io.AtomicDirectory`) and
  swapped in whole; an existing folder is replaced only with ``overwrite``.

The tiles are written into Zarr arrays (the store group's, or a scratch store inside the GeoTIFF build
folder), tile by tile, chunk-aligned, by whichever rank predicted them: ranks need no lock and no
communication besides the build paths, which rank 0 creates (:meth:`MapOutputs.begin`) and broadcasts
(:meth:`MapOutputs.attach`). At the end rank 0 converts each region's arrays into a GeoTIFF block by block
(memory: one 1024 x 1024 block and GDAL's block cache, capped at :data:`GDAL_CACHE_MB`), then commits every
output (:meth:`MapOutputs.finish`).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from spectravlm.data.store import CubeStore, Grid, StoreTransaction
from spectravlm.errors import DataConfigError
from spectravlm.io import AtomicDirectory, OutputExistsError
from spectravlm.predict.tiling import OUTPUT_CHUNK, PredictionPlan, RegionExtent, Tile

Coordinates = Literal["auto", "map", "pixel"]
PREDICTIONS_GROUP = "predictions"
GEOTIFF_BLOCK = 1024
"""Edge of the blocks copied from the Zarr arrays into a GeoTIFF."""
GDAL_CACHE_MB = 16
"""GDAL's block cache while the GeoTIFFs are written (its default, 5% of RAM, would grow with the scene)."""
_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
_CHUNK_KEYS: dict[str, Any] = {"name": "default", "separator": "."}


@dataclass(frozen=True)
class Layer:
    """One output layer: name (array and band description), units, long name."""

    name: str
    units: str = ""
    description: str = ""


class MapOutputs:
    """The outputs of one prediction run (see the module docstring).

    Args:
        plan: the prediction plan (regions, grids).
        layers: the layers to write, in band order.
        geotiff_dir: folder for the GeoTIFFs, or ``None`` for none.
        store_group: write a ``predictions`` group into each region's first store.
        overwrite: replace an existing GeoTIFF folder or ``predictions`` group.
        coordinates: GeoTIFF georeference: ``auto`` (the store's CRS and transform; a pixel grid without CRS
            where the store has none), ``map`` (the store's CRS, an error where it has none) or ``pixel``
            (pixel grid without CRS).
        attrs: JSON-able facts recorded with the outputs (model, checkpoint, window, overlap).

    """

    def __init__(
        self,
        plan: PredictionPlan,
        layers: Sequence[Layer],
        geotiff_dir: str | Path | None = None,
        store_group: bool = False,
        overwrite: bool = False,
        coordinates: Coordinates = "auto",
        attrs: dict[str, Any] | None = None,
    ) -> None:
        if geotiff_dir is None and not store_group:
            raise DataConfigError(
                "nothing to write: give a GeoTIFF folder (output_dir) and/or store_group: true"
            )
        if coordinates not in ("auto", "map", "pixel"):
            raise DataConfigError(f"coordinates must be 'auto', 'map' or 'pixel', got {coordinates!r}")
        if not layers:
            raise DataConfigError("no layers to write")
        self.plan = plan
        self.layers = list(layers)
        self.geotiff_dir = None if geotiff_dir is None else Path(geotiff_dir).absolute()
        self.store_group = store_group
        self.overwrite = overwrite
        self.coordinates = coordinates
        self.attrs = dict(attrs or {})
        self._folder: AtomicDirectory | None = None
        self._transactions: list[StoreTransaction] = []
        self.groups: list[str] = []  # per region, the Zarr group that receives the tiles
        self.arrays: list[dict[str, zarr.Array]] = []
        self.written: list[Path] = []

    # ---- before anything is written --------------------------------------------------------------------

    def check(self) -> None:
        """Raise before any write: an existing output without ``overwrite``, a store without CRS for ``map``.

        Raises:
            OutputExistsError: the GeoTIFF folder or a store's ``predictions`` group exists.
            DataConfigError: ``coordinates="map"`` for a store without CRS; a store group in a remote store.

        """
        for region in self.plan.regions:
            where = region.paths[0]
            if self.geotiff_dir is not None and self.coordinates == "map" and region.grid.crs_wkt is None:
                raise DataConfigError(
                    f"{where} has no CRS (a pixel grid, as BioMassters chips): cannot write its GeoTIFF in "
                    "map "
                    "coordinates; use coordinates: auto or pixel"
                )
            if self.store_group:
                if "://" in where:
                    raise DataConfigError(
                        f"{where}: a predictions group can only be written into a local store; write "
                        "GeoTIFFs "
                        "(output_dir) instead"
                    )
                if PREDICTIONS_GROUP in CubeStore.open(where).root and not self.overwrite:
                    raise OutputExistsError(
                        f"{where}/{PREDICTIONS_GROUP} already exists; pass overwrite=True (--overwrite) to "
                        "replace these predictions"
                    )
        if self.geotiff_dir is not None and self.geotiff_dir.exists() and not self.overwrite:
            raise OutputExistsError(
                f"{self.geotiff_dir} already exists; pass overwrite=True (--overwrite) to replace this "
                "prediction "
                "map folder"
            )

    # ---- set-up: rank 0 builds, every rank attaches --------------------------------------------------

    def begin(self) -> list[str]:
        """Create the build folder / store transactions and the arrays (rank 0); return the group paths."""
        self.check()
        scratch: Path | None = None
        if self.geotiff_dir is not None:
            self._folder = AtomicDirectory(self.geotiff_dir, self.overwrite, what="prediction map folder")
            scratch = self._folder.__enter__()
        try:
            groups = []
            for region in self.plan.regions:
                if self.store_group:
                    tx = StoreTransaction(region.paths[0], mode="append")
                    tx.__enter__()
                    self._transactions.append(tx)
                    root = tx.root
                    assert root is not None
                    if PREDICTIONS_GROUP in root:
                        del root[PREDICTIONS_GROUP]
                    group = root.create_group(PREDICTIONS_GROUP, attributes=self._group_attrs(region))
                    path = tx.tmp / PREDICTIONS_GROUP
                else:
                    assert scratch is not None
                    path = scratch / f".scratch-{region.name}.zarr"
                    group = zarr.open_group(
                        path, mode="w", zarr_format=3, attributes=self._group_attrs(region)
                    )
                self._create_arrays(group, region.grid)
                groups.append(str(path))
        except BaseException:
            self.abort()
            raise
        return groups

    def attach(self, groups: Sequence[str]) -> None:
        """Open the arrays of the groups :meth:`begin` created (on every rank)."""
        self.groups = list(groups)
        self.arrays = [
            {
                layer.name: zarr.open_array(Path(g) / layer.name, mode="r+", zarr_format=3)
                for layer in self.layers
            }
            for g in self.groups
        ]

    def _group_attrs(self, region: RegionExtent) -> dict[str, Any]:
        return {
            "title": f"spectravlm predictions of {region.paths[0]}",
            "layers": [layer.name for layer in self.layers],
            "window_size": self.plan.window_size,
            "overlap": self.plan.overlap,
            "blend": "cosine ramp over the overlap, float32 accumulators",
            **self.attrs,
        }

    def _create_arrays(self, group: zarr.Group, grid: Grid) -> None:
        chunks = (min(OUTPUT_CHUNK, grid.height), min(OUTPUT_CHUNK, grid.width))
        for layer in self.layers:
            group.create_array(
                layer.name,
                shape=(grid.height, grid.width),
                chunks=chunks,
                dtype="float32",
                fill_value=np.nan,
                compressors=_COMPRESSOR,
                chunk_key_encoding=_CHUNK_KEYS,
                dimension_names=("y", "x"),
                attributes={
                    "units": layer.units,
                    "long_name": layer.description or layer.name,
                    "grid_mapping": "spatial_ref",
                    "coordinates": "spatial_ref",
                },
            )
        write_coordinates(group, grid)

    # ---- tiles -----------------------------------------------------------------------------------------

    def write_tile(self, tile: Tile, values: dict[str, np.ndarray]) -> None:
        """Write a finished tile's layers (chunk-aligned: tiles are multiples of the chunk edge)."""
        arrays = self.arrays[tile.region]
        for name, value in values.items():
            arrays[name][tile.slices()] = value

    # ---- the end: rank 0 converts and commits ----------------------------------------------------------

    def finish(self) -> list[Path]:
        """Write the GeoTIFFs from the arrays, then commit every output (rank 0). Returns the final paths."""
        try:
            written: list[Path] = []
            if self._folder is not None:
                assert self.geotiff_dir is not None
                for region, group in zip(self.plan.regions, self.groups, strict=True):
                    self._geotiff(region, Path(group), self._folder.tmp / f"{region.name}.tif")
                    if not self.store_group:
                        shutil.rmtree(group)
                    written.append(self.geotiff_dir / f"{region.name}.tif")
                self._folder.__exit__(None, None, None)
                self._folder = None
            for tx in self._transactions:
                tx.__exit__(None, None, None)
                written.append(tx.path / PREDICTIONS_GROUP)
            self._transactions = []
        except BaseException:
            self.abort()
            raise
        self.written = written
        return written

    def abort(self) -> None:
        """Remove every build folder and transaction (rank 0): the outputs stay as they were."""
        err = RuntimeError("prediction aborted")
        if self._folder is not None:
            self._folder.__exit__(RuntimeError, err, None)
            self._folder = None
        for tx in self._transactions:
            tx.__exit__(RuntimeError, err, None)
        self._transactions = []

    def _geotiff(self, region: RegionExtent, group: Path, path: Path) -> None:
        import rasterio
        import rasterio.shutil
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.windows import Window

        grid = region.grid
        crs = None
        transform = grid.transform
        if self.coordinates == "pixel":
            from affine import Affine

            transform = Affine.identity()
        elif grid.crs_wkt is not None:
            crs = rasterio.crs.CRS.from_wkt(grid.crs_wkt)
        arrays = [zarr.open_array(group / layer.name, mode="r") for layer in self.layers]
        plain = path.with_name(f".{path.stem}.tiled.tif")
        profile = {
            "driver": "GTiff",
            "height": grid.height,
            "width": grid.width,
            "count": len(self.layers),
            "dtype": "float32",
            "nodata": float("nan"),
            "crs": crs,
            "transform": transform,
            "tiled": True,
            "blockxsize": OUTPUT_CHUNK,
            "blockysize": OUTPUT_CHUNK,
            "compress": "deflate",
            "predictor": 3,
            "BIGTIFF": "IF_SAFER",
        }
        with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(plain, "w", **profile) as dst:
                for r in range(0, grid.height, GEOTIFF_BLOCK):
                    for c in range(0, grid.width, GEOTIFF_BLOCK):
                        h, w = min(GEOTIFF_BLOCK, grid.height - r), min(GEOTIFF_BLOCK, grid.width - c)
                        for k, arr in enumerate(arrays):
                            dst.write(np.asarray(arr[r : r + h, c : c + w]), k + 1, window=Window(c, r, w, h))
                for k, layer in enumerate(self.layers):
                    dst.set_band_description(k + 1, layer.name)
                    if layer.units:
                        dst.set_band_unit(k + 1, layer.units)
                dst.update_tags(**{k: str(v) for k, v in self._group_attrs(region).items()})
            rasterio.shutil.copy(
                plain,
                path,
                driver="COG",
                COMPRESS="DEFLATE",
                PREDICTOR="YES",
                BLOCKSIZE=OUTPUT_CHUNK,
                BIGTIFF="IF_SAFER",
                OVERVIEWS="AUTO",
            )
        plain.unlink()


def write_coordinates(group: zarr.Group, grid: Grid) -> None:
    """Pixel-centre ``y``/``x`` coordinates and the CF ``spatial_ref`` of ``grid`` (as in the stores)."""
    y, x = grid.coords()
    for name, values in (("y", y), ("x", x)):
        standard = f"projection_{name}_coordinate" if grid.crs_wkt else f"{name}_pixel"
        a = group.create_array(
            name, shape=values.shape, dtype="float64", fill_value=0.0, dimension_names=(name,),
            attributes={"standard_name": standard},
        )  # fmt: skip
        a[:] = values
    t = grid.transform
    group.create_array(
        "spatial_ref",
        shape=(),
        dtype="int64",
        fill_value=0,
        attributes={
            "crs_wkt": grid.crs_wkt or "",
            "spatial_ref": grid.crs_wkt or "",
            "GeoTransform": " ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e)),
        },
    )


__all__ = ["PREDICTIONS_GROUP", "Coordinates", "Layer", "MapOutputs", "write_coordinates"]
