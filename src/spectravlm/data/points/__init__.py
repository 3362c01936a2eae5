"""Sparse and point targets: points files and GEDI L4A granules on cube stores, pixel time-series tables.

* :mod:`~spectravlm.data.points.table`: :class:`PointTable`, what every reader returns, and its counts.
* :mod:`~spectravlm.data.points.readers`: CSV, Parquet, GeoJSON, GeoPackage (:func:`read_points`).
* :mod:`~spectravlm.data.points.gedi`: GEDI L4A granules with h5py (:func:`read_gedi_l4a`,
    :class:`GediFilter`).
* :mod:`~spectravlm.data.points.attach`: a sparse target layer on a store's grid (:func:`attach_points`).
* :mod:`~spectravlm.data.points.windows`: cube-store windows for a sparse target (:class:`PointsDataModule`).
* :mod:`~spectravlm.data.points.sample`: points drawn from a layer, pixel time series sampled at points.
* :mod:`~spectravlm.data.points.series`, :mod:`~spectravlm.data.points.pointstore`,
  :mod:`~spectravlm.data.points.pixels`: pixel time-series tables, their Zarr store and data module
  (:class:`PixelSeriesDataModule`).

The layouts are documented in ``docs/points.md``.
"""

from spectravlm.data.points.attach import AttachReport, SparseTarget, attach_points, read_sparse_target
from spectravlm.data.points.gedi import GediFilter, read_gedi_l4a
from spectravlm.data.points.pixels import PixelSeriesDataModule
from spectravlm.data.points.readers import PointColumns, read_points
from spectravlm.data.points.sample import draw_points, sample_cubes, write_points_file
from spectravlm.data.points.table import PointTable, ReadReport, SourceCounts, canonical_target_units
from spectravlm.data.points.windows import PointsDataModule

__all__ = [
    "AttachReport",
    "GediFilter",
    "PixelSeriesDataModule",
    "PointColumns",
    "PointTable",
    "PointsDataModule",
    "ReadReport",
    "SourceCounts",
    "SparseTarget",
    "attach_points",
    "canonical_target_units",
    "draw_points",
    "read_gedi_l4a",
    "read_points",
    "read_sparse_target",
    "sample_cubes",
    "write_points_file",
]
