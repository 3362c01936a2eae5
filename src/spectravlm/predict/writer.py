"""``MapWriter``: the Lightning prediction writer of whole-scene maps (``spectravlm predict``).

With the data module's ``predict_windows: extent``, ``spectravlm predict`` runs the task's ``predict_step``
over every window of every store's extent, tile by tile (:mod:`spectravlm.predict.tiling`); this callback
blends the windows of each tile as they arrive (:class:`~spectravlm.predict.blend.MapAssembler`), writes each
finished tile, and at the end turns the arrays into the outputs
(:class:`~spectravlm.predict.output.MapOutputs`:
GeoTIFFs and/or a ``predictions`` group per store), atomically. Under DDP every rank takes its own tiles and
writes them into the shared build folder; rank 0 creates it and commits.

What it needs from the task: ``predict_step`` returning ``{"index": [B], "origin": [B,2], layer: [B,H,W]}``
and ``prediction_layers()`` naming the layers with their units (both regression tasks have them).

Memory: Lightning keeps every batch's predictions to return them from ``trainer.predict``; for a scene that
is the whole map, so this writer turns that off (``trainer.predict`` then returns ``None``). What stays in
memory is the tiles in flight (one or two float32 accumulators of ``tile_size`` x ``tile_size`` per layer) and
loader's batches.

Errors before any write (in ``setup``, on every rank): an existing output without ``overwrite``; a store
without CRS with ``coordinates: map``; a data module without extent windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from spectravlm.errors import DataConfigError
from spectravlm.predict.blend import MapAssembler
from spectravlm.predict.loader import extent_dataset, find_plan
from spectravlm.predict.output import Coordinates, Layer, MapOutputs
from spectravlm.predict.tiling import PredictionPlan


class MapWriter(BasePredictionWriter):
    """Write whole-scene prediction maps (see the module docstring).

    Args:
        output_dir: folder of the GeoTIFFs (one ``<store name>.tif`` per store), or ``None`` for none.
        store_group: also write a ``predictions`` group into each store (read with
            ``xarray.open_zarr(store, group="predictions")``).
        overwrite: replace an existing output folder or ``predictions`` group.
        coordinates: ``auto``, ``map`` or ``pixel`` (see :class:`~spectravlm.predict.output.MapOutputs`).

    """

    def __init__(
        self,
        output_dir: str | None = "maps",
        store_group: bool = False,
        overwrite: bool = False,
        coordinates: Coordinates = "auto",
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.store_group = store_group
        self.overwrite = overwrite
        self.coordinates = coordinates
        self.outputs: MapOutputs | None = None
        self.assembler: MapAssembler | None = None
        self.written: list[Path] = []

    def _outputs(self, plan: PredictionPlan, pl_module: L.LightningModule) -> MapOutputs:
        layers_of = getattr(pl_module, "prediction_layers", None)
        if not callable(layers_of):
            raise DataConfigError(
                f"{type(pl_module).__name__} has no prediction_layers(): it does not predict maps"
            )
        layers = [Layer(*layer) for layer in layers_of()]
        attrs = {"model": type(pl_module).__name__}
        return MapOutputs(
            plan, layers, self.output_dir, self.store_group, self.overwrite, self.coordinates, attrs
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the outputs before anything runs (every rank raises the same error)."""
        if stage != "predict":
            return
        from spectravlm.data.datamodule import CubeDataModule

        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, CubeDataModule):
            return  # checked in on_predict_start, from the loader's plan
        if getattr(dm, "predict_windows", "test") != "extent":
            raise DataConfigError(
                "MapWriter writes whole-scene maps: set data.predict_windows: extent (the data module now "
                "predicts on the test windows only)"
            )
        stores = getattr(dm, "predict_stores", None) or dm.stores
        _, plan = extent_dataset(
            dm, stores, getattr(dm, "predict_overlap", None), getattr(dm, "predict_tile_size", 1024)
        )
        self._outputs(plan, pl_module).check()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Create the outputs (rank 0), share their paths, and start assembling this rank's tiles."""
        plan = find_plan(trainer.predict_dataloaders)
        if plan is None:
            raise DataConfigError(
                "MapWriter needs the extent windows of CubeDataModule (data.predict_windows: extent); the "
                "predict loader has none"
            )
        trainer.predict_loop.return_predictions = False  # the maps go to disk, not into a list in memory
        self.outputs = self._outputs(plan, pl_module)
        groups = self.outputs.begin() if trainer.is_global_zero else None
        groups = trainer.strategy.broadcast(groups, src=0)
        assert groups is not None
        self.outputs.attach(groups)
        tiles = plan.rank_tiles(trainer.global_rank, trainer.world_size)
        self.assembler = MapAssembler(
            plan, tiles, [layer.name for layer in self.outputs.layers], self.outputs.write_tile
        )

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Blend the batch's windows; write the tiles they complete."""
        assert self.assembler is not None
        self.assembler.add(prediction)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Wait for every rank's tiles, then write the GeoTIFFs and commit (rank 0)."""
        assert self.assembler is not None and self.outputs is not None
        self.assembler.close()
        trainer.strategy.barrier("map_writer_tiles")
        if trainer.is_global_zero:
            self.written = self.outputs.finish()
            for path in self.written:
                print(f"spectravlm: wrote {path}")
        trainer.strategy.barrier("map_writer_done")
        self.outputs = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Remove the build folders (rank 0): an interrupted prediction leaves the outputs as they were."""
        if self.outputs is not None and trainer.is_global_zero:
            self.outputs.abort()
        self.outputs = None


__all__ = ["MapWriter"]
