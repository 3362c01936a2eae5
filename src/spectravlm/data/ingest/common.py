"""What every ingest shares: writing a sensor group slab by slab with its statistics accumulated on the way.

The statistics of a new group come from the arrays the ingest holds in memory anyway (one pass, no
re-read of the store). When an ingest appends dates to a group that already exists, the stored dates
are read back once inside the same transaction so that ``stats`` cover the whole series.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from spectravlm.data.stats import GroupStats, add_stored_dates, stats_source
from spectravlm.data.store import SensorCube, SensorSpec, SensorWriter, StoreTransaction
from spectravlm.sensors import get_sensor

DEFAULT_CLOUD_THRESHOLD = 50.0
INGEST_STATS = "ingest (one pass over the arrays as they were written)"


class GroupIngest:
    """A sensor group being written: :class:`SensorWriter` plus, optionally, its statistics.

    Args:
        tx: the open transaction.
        group: the group to write (created, or extended by later dates).
        spec: the group description (all dates, ascending).
        stats: accumulate statistics and store them with the group.
        cloud_threshold: cloud probability at or above which a pixel is invalid (default: the stored
            group's threshold when appending, else 50).
        background: accumulate the statistics of a window in a background thread while the next one
            is read and written (one window in flight, so memory holds at most two).

    """

    def __init__(
        self,
        tx: StoreTransaction,
        group: str,
        spec: SensorSpec,
        stats: bool = True,
        cloud_threshold: float | None = None,
        background: bool = False,
    ) -> None:
        stored = tx.group_attrs(group)
        self._pool = ThreadPoolExecutor(1) if background and stats else None
        self._pending: Future[None] | None = None
        self.tx = tx
        self.group = group
        self.appending = stored is not None
        if cloud_threshold is None:
            cloud_threshold = float((stored or {}).get("cloud_threshold", DEFAULT_CLOUD_THRESHOLD))
        self.cloud_threshold = cloud_threshold
        self.writer: SensorWriter = tx.sensor_writer(group, spec)
        self.acc: GroupStats | None = None
        if stats:
            self.acc = GroupStats(
                self.writer.bands,
                spec.dtype,
                spec.units,
                get_sensor(spec.sensor).kind,
                spec.nodata,
                cloud_threshold,
                spec.scale_factor,
                spec.add_offset,
            )

    @property
    def times(self) -> np.ndarray:
        """The dates being written, ascending (indexes of :meth:`write`)."""
        return self.writer.times

    def write(
        self,
        t: int,
        data: np.ndarray,
        row: int = 0,
        col: int = 0,
        cloud: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        layers: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write one window of date ``t`` (of dates ``t ..`` for ``(n, C, h, w)`` data), add it to the stats.

        See :meth:`SensorWriter.write`.
        """
        self.writer.write(t, data, row, col, cloud, mask, layers)
        if self.acc is None:
            return
        values = np.moveaxis(data, 1, 0) if data.ndim == 4 else data
        if self._pool is None:
            self.acc.add(values, cloud, mask)
            return
        if self._pending is not None:
            self._pending.result()
        self._pending = self._pool.submit(self.acc.add, values, cloud, mask)

    def finish(self) -> None:
        """Store the statistics (over every date of the group) with the group."""
        if self._pool is not None:
            if self._pending is not None:
                self._pending.result()
            self._pool.shutdown()
        if self.acc is None:
            return
        how = INGEST_STATS
        if self.appending:
            add_stored_dates(self.acc, self.writer.group, self.writer.t0)
            how += f"; the {self.writer.t0} dates stored before were read back once"
        attrs = self.acc.attrs(stats_source(how))
        if self.acc.db is None:
            attrs |= {"stats_db": {}}
        self.tx.set_group_attrs(self.group, attrs)


def write_cube(
    tx: StoreTransaction,
    group: str,
    cube: SensorCube,
    stats: bool = True,
    cloud_threshold: float | None = None,
    background: bool = False,
) -> GroupIngest:
    """Write an in-memory :class:`SensorCube`, with statistics from the same arrays.

    With ``background`` the statistics are still being computed when this returns: call ``finish()`` on
    the returned :class:`GroupIngest` (the transaction's other writes can go on meanwhile).
    """
    from spectravlm.data.validate import check_cube

    check_cube(cube, where=f"{tx.path}/{group}")
    order = np.argsort(cube.times, kind="stable")
    spec = cube.spec()
    spec.times = np.asarray(cube.times)[order]
    writer = GroupIngest(tx, group, spec, stats=stats, cloud_threshold=cloud_threshold, background=background)
    sort = bool((order != np.arange(len(order))).any())

    def ordered(a: np.ndarray) -> np.ndarray:
        return a[order] if sort else a

    writer.write(  # all dates in one call: zarr encodes their chunks concurrently
        0,
        ordered(cube.data),
        cloud=None if cube.cloud is None else ordered(cube.cloud),
        mask=None if cube.mask is None else ordered(cube.mask),
        layers={name: ordered(layer.data) for name, layer in cube.layers.items()},  # type: ignore[arg-type]
    )
    if not background:
        writer.finish()
    return writer
