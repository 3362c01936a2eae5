"""Checks on data before it is written (shapes, dtypes, dates, masks) and of a written store's chunks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING

import numpy as np
import zarr

from spectravlm.errors import IngestError
from spectravlm.sensors import get_sensor

if TYPE_CHECKING:
    from spectravlm.data.store import SensorCube, SensorSpec, SensorWriter

ALLOWED_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
LAYER_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")


def check_spec(spec: SensorSpec, where: str) -> None:
    """Raise :class:`IngestError` naming ``where`` when a group described by ``spec`` cannot be stored."""
    sensor = get_sensor(spec.sensor)
    bands = sensor.canonical_names(spec.bands)
    if len(set(bands)) != len(bands):
        raise IngestError(f"{where}: bands {', '.join(bands)} name a band twice")
    if spec.dtype not in ALLOWED_DTYPES:
        raise IngestError(f"{where}: dtype {spec.dtype} is not storable; expected one of {ALLOWED_DTYPES}")
    if sensor.kind == "sar" and not np.issubdtype(np.dtype(spec.dtype), np.floating):
        raise IngestError(f"{where}: SAR backscatter must be float (dB or linear power), got {spec.dtype}")
    times = np.asarray(spec.times)
    if times.ndim != 1 or not np.issubdtype(times.dtype, np.datetime64):
        raise IngestError(f"{where}: times must be (T,) datetime64, got {times.shape} {times.dtype}")
    if times.size == 0:
        raise IngestError(f"{where}: no dates to write")
    if len(np.unique(times)) != times.size:
        dup = sorted({str(t) for t in times.astype("datetime64[s]") if (times == t).sum() > 1})
        raise IngestError(f"{where}: duplicate acquisition times {', '.join(dup)}")
    if (np.diff(times.astype("datetime64[s]").astype("int64")) <= 0).any():
        raise IngestError(f"{where}: times must be ascending")
    for name, layer in spec.layers.items():
        if str(layer.stored_dtype) not in LAYER_DTYPES:
            raise IngestError(
                f"{where}: layer {name!r} dtype {layer.stored_dtype}; expected one of {LAYER_DTYPES}"
            )


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
        raise IngestError(f"{where}: duplicate acquisition times {[str(x) for x in times]}")
    if t == 0:
        raise IngestError(f"{where}: no dates to write")
    for what, array in (("cloud", cube.cloud), ("mask", cube.mask)):
        if array is not None and (array.shape != (t, h, w) or array.dtype != np.uint8):
            raise IngestError(
                f"{where}: {what} must be ({t}, {h}, {w}) uint8, got {array.shape} {array.dtype}"
            )
    for name, layer in cube.layers.items():
        if layer.data is None or layer.data.shape != (t, h, w):
            shape = None if layer.data is None else layer.data.shape
            raise IngestError(f"{where}: layer {name!r} must be ({t}, {h}, {w}), got {shape}")


def check_slab(
    writer: SensorWriter,
    t: int,
    data: np.ndarray,
    row: int,
    col: int,
    cloud: np.ndarray | None,
    mask: np.ndarray | None,
    layers: dict[str, np.ndarray],
) -> None:
    """Raise :class:`IngestError` when one window of one date does not fit the group being written."""
    where, spec = writer.where, writer.spec
    if not 0 <= t < len(spec.times):
        raise IngestError(f"{where}: date index {t} is outside the {len(spec.times)} dates being written")
    if data.ndim != 3 or data.shape[0] != writer.n_bands:
        raise IngestError(f"{where}: a window must be ({writer.n_bands}, h, w), got {data.shape}")
    if data.dtype != writer.dtype:
        raise IngestError(f"{where}: window dtype {data.dtype}, the group holds {writer.dtype}")
    _, h, w = data.shape
    if row < 0 or col < 0 or row + h > spec.grid.height or col + w > spec.grid.width:
        raise IngestError(
            f"{where}: window {h}x{w} at ({row}, {col}) leaves the {spec.grid.height}x{spec.grid.width} grid"
        )
    if np.issubdtype(data.dtype, np.floating) and np.isinf(data).any():
        raise IngestError(f"{where}: data holds +-inf values; mark missing values with nodata or NaN")
    if (cloud is not None) != spec.cloud:
        raise IngestError(f"{where}: the group {'has' if spec.cloud else 'has no'} cloud layer")
    if cloud is not None:
        if cloud.shape != (h, w) or cloud.dtype != np.uint8:
            raise IngestError(
                f"{where}: cloud must be ({h}, {w}) uint8 0..100, got {cloud.shape} {cloud.dtype}"
            )
        if cloud.max(initial=0) > 100:
            raise IngestError(f"{where}: cloud probability above 100 ({int(cloud.max())})")
    if (mask is not None) != (spec.mask_rule is not None):
        raise IngestError(f"{where}: the group {'has' if spec.mask_rule else 'has no'} quality mask")
    if mask is not None and (mask.shape != (h, w) or mask.dtype != np.uint8):
        raise IngestError(f"{where}: mask must be ({h}, {w}) uint8, got {mask.shape} {mask.dtype}")
    if sorted(layers) != sorted(spec.layers):
        raise IngestError(f"{where}: layers {sorted(layers)} given, the group has {sorted(spec.layers)}")
    for name, values in layers.items():
        if values.shape != (h, w):
            raise IngestError(f"{where}: layer {name!r} window must be ({h}, {w}), got {values.shape}")


# --------------------------------------------------------------------------------------------------
# Verifying a written store
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkProblem:
    """A chunk (or metadata document) of a store that cannot be read.

    Attributes:
        array: the array's path inside the store (``s2/data``).
        chunk: the chunk's grid index, or ``None`` for the array as a whole.
        error: what went wrong.

    """

    array: str
    chunk: tuple[int, ...] | None
    error: str

    def __str__(self) -> str:
        where = self.array if self.chunk is None else f"{self.array} chunk {'.'.join(map(str, self.chunk))}"
        return f"{where}: {self.error}"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_store` found: arrays and chunks read, and the problems."""

    path: str
    arrays: int
    chunks: int
    problems: tuple[ChunkProblem, ...]

    @property
    def ok(self) -> bool:
        """True when every chunk decoded."""
        return not self.problems


def _arrays(group: zarr.Group, prefix: str = "") -> list[tuple[str, zarr.Array]]:
    out: list[tuple[str, zarr.Array]] = []
    for name, node in sorted(group.members(), key=lambda kv: kv[0]):
        path = f"{prefix}{name}"
        if isinstance(node, zarr.Array):
            out.append((path, node))
        else:
            out.extend(_arrays(node, f"{path}/"))
    return out


def verify_store(path: str | os.PathLike[str], progress: bool = False) -> VerifyReport:
    """Open the store at ``path`` and decode every chunk of every array, collecting the ones that fail.

    A chunk that is absent is not a problem (it reads as the array's fill value, Zarr's rule for chunks
    that hold only the fill value); a chunk file that cannot be decoded (truncated, overwritten, a codec
    error) or decodes to the wrong size is. Metadata that does not open is reported as one problem.
    """
    from tqdm.auto import tqdm

    from spectravlm.data.store import CubeStore
    from spectravlm.errors import StoreError

    spath = os.fspath(path)
    try:
        store = CubeStore.open(spath)
    except StoreError as err:
        return VerifyReport(spath, 0, 0, (ChunkProblem("(store metadata)", None, str(err)),))
    arrays = _arrays(store.root)
    total = sum(int(a.nchunks) for _, a in arrays)
    problems: list[ChunkProblem] = []
    n = 0
    with tqdm(total=total, desc="verify", disable=not progress) as bar:
        for name, arr in arrays:
            grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks, strict=True)]
            for idx in product(*grid):
                sel = tuple(
                    slice(i * c, min((i + 1) * c, s))
                    for i, c, s in zip(idx, arr.chunks, arr.shape, strict=True)
                )
                try:
                    np.asarray(arr[sel])
                except Exception as err:  # any decode failure is what we are looking for
                    problems.append(ChunkProblem(name, tuple(idx), f"{type(err).__name__}: {err}"))
                n += 1
                bar.update(1)
    return VerifyReport(spath, len(arrays), n, tuple(problems))
