"""Checks on data before it is written: shapes, dtypes, dates, masks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spectravlm.errors import IngestError
from spectravlm.sensors import get_sensor

if TYPE_CHECKING:
    from spectravlm.data.store import SensorCube

ALLOWED_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")


def check_cube(cube: SensorCube, where: str) -> None:
    """Raise :class:`IngestError` naming ``where`` when ``cube`` cannot be stored as given."""
    sensor = get_sensor(cube.sensor)
    bands = sensor.canonical_names(cube.bands)
    data = cube.data
    if data.ndim != 4:
        raise IngestError(f"{where}: data must be (time, band, y, x), got {data.ndim} dims {data.shape}")
    t, c, h, w = data.shape
    if c != len(bands):
        raise IngestError(f"{where}: data has {c} bands, expected {len(bands)} ({', '.join(bands)})")
    if (h, w) != (cube.grid.height, cube.grid.width):
        raise IngestError(f"{where}: data is {h}x{w} px but the grid is {cube.grid.height}x{cube.grid.width}")
    if str(data.dtype) not in ALLOWED_DTYPES:
        raise IngestError(f"{where}: dtype {data.dtype} is not storable; expected one of {ALLOWED_DTYPES}")
    if sensor.kind == "sar" and not np.issubdtype(data.dtype, np.floating):
        raise IngestError(f"{where}: SAR backscatter must be float (dB or linear power), got {data.dtype}")
    times = np.asarray(cube.times)
    if times.shape != (t,) or not np.issubdtype(times.dtype, np.datetime64):
        raise IngestError(f"{where}: times must be ({t},) datetime64, got {times.shape} {times.dtype}")
    if len(np.unique(times)) != t:
        raise IngestError(f"{where}: duplicate acquisition times {times.tolist()}")
    if t == 0:
        raise IngestError(f"{where}: no dates to write")
    if cube.cloud is not None:
        cloud = np.asarray(cube.cloud)
        if cloud.shape != (t, h, w) or cloud.dtype != np.uint8:
            raise IngestError(
                f"{where}: cloud must be ({t}, {h}, {w}) uint8 0..100, got {cloud.shape} {cloud.dtype}"
            )
        if cloud.max(initial=0) > 100:
            raise IngestError(f"{where}: cloud probability above 100 ({int(cloud.max())})")
    if np.issubdtype(data.dtype, np.floating) and np.isinf(data).any():
        raise IngestError(f"{where}: data holds +-inf values; mark missing values with nodata or NaN")
