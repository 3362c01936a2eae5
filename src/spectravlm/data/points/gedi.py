"""GEDI L4A footprint above-ground biomass density (AGBD) granules as point targets.

A GEDI L4A V002 granule (ORNL DAAC, ``GEDI04_A_*.h5``; https://doi.org/10.3334/ORNLDAAC/2056) holds, per
beam group ``BEAM0000`` ... ``BEAM1011``, one row per laser shot (25 m footprint). What is read, per beam:

============================  ======================================================================
dataset                       use
============================  ======================================================================
``agbd``                      the value, Mg/ha (stored as t/ha: 1 Mg = 1 t); fill ``-9999``
``agbd_se``                   its standard error, Mg/ha; fill ``-9999`` -> unknown (NaN)
``lat_lowestmode``            latitude of the lowest mode (the ground), degrees, WGS84
``lon_lowestmode``            longitude, degrees
``delta_time``                seconds since 2018-01-01T00:00:00Z -> the shot's date
``l4_quality_flag``           1: "most useful biomass predictions" (the L4A user guide's filter)
``degrade_flag``              non-zero: degraded pointing or positioning
``sensitivity``               beam sensitivity (canopy cover the waveform can penetrate)
============================  ======================================================================

The default filter keeps shots with ``l4_quality_flag == 1`` and ``degrade_flag == 0`` whose ``agbd`` is not
the fill value; :class:`GediFilter` makes each part optional and adds a sensitivity floor and a beam
selection. Every criterion is counted per beam (a shot can meet several), with the kept shots, in the
:class:`~spectravlm.data.points.table.SourceCounts` of the file, so that the filter is never silent.

Granules are read with h5py, from an ``.h5`` file or from ``.h5`` members of a ``.zip`` (as NASA's data
subsetters deliver them; extracted to a temporary folder, then removed).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spectravlm.data.points.table import PointTable, ReadReport, SourceCounts
from spectravlm.errors import IngestError

FILL = -9999.0
"""GEDI's fill value for missing numbers."""

GEDI_EPOCH = np.datetime64("2018-01-01T00:00:00", "ns")
"""``delta_time`` counts seconds from this instant (UTC)."""

SHORT_NAME = "GEDI_L4A"
"""``METADATA/DatasetIdentification`` ``shortName`` of an L4A granule."""

DATASETS = (
    "agbd",
    "agbd_se",
    "lat_lowestmode",
    "lon_lowestmode",
    "delta_time",
    "l4_quality_flag",
    "degrade_flag",
    "sensitivity",
)
"""The datasets read from every beam group."""


def wgs84_wkt() -> str:
    """WKT of EPSG:4326 (longitude/latitude; pyproj's ``always_xy`` order is used everywhere)."""
    from pyproj import CRS

    return str(CRS.from_epsg(4326).to_wkt())


@dataclass(frozen=True)
class GediFilter:
    """Which GEDI L4A shots to keep (defaults: the L4A user guide's quality filter).

    Attributes:
        quality: keep only ``l4_quality_flag == 1``.
        not_degraded: keep only ``degrade_flag == 0``.
        min_sensitivity: keep only ``sensitivity >= min_sensitivity`` (``None``: no floor).
        beams: read only these beam groups (``("BEAM0101", "BEAM0110")``; ``None``: all).

    Shots whose ``agbd`` is the fill value or whose coordinates are not finite are always dropped.

    """

    quality: bool = True
    not_degraded: bool = True
    min_sensitivity: float | None = None
    beams: tuple[str, ...] | None = None

    def describe(self) -> str:
        """The filter in words (stored with an attached layer)."""
        parts = ["agbd != -9999"]
        if self.quality:
            parts.append("l4_quality_flag == 1")
        if self.not_degraded:
            parts.append("degrade_flag == 0")
        if self.min_sensitivity is not None:
            parts.append(f"sensitivity >= {self.min_sensitivity:g}")
        if self.beams is not None:
            parts.append(f"beams {', '.join(self.beams)}")
        return " and ".join(parts)


@contextmanager
def _granules(path: Path) -> Iterator[list[tuple[str, Path]]]:
    """``(label, h5 path)`` of the granule(s) in ``path``: an .h5 file, or the .h5 members of a zip."""
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix="gedi-") as tmp:
            members = [m for m in zf.namelist() if m.lower().endswith((".h5", ".hdf5", ".he5"))]
            if not members:
                raise IngestError(
                    f"{path}: a zip without any .h5 member; expected GEDI L4A granules (GEDI04_A_*.h5)"
                )
            out: list[tuple[str, Path]] = []
            for m in members:
                target = Path(tmp) / f"{len(out)}_{Path(m).name}"
                with zf.open(m) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
                out.append((f"{path}!{m}", target))
            yield out
        return
    yield [(str(path), path)]


def _beam_names(f: Any, where: str, beams: Sequence[str] | None) -> list[str]:
    names = sorted(k for k in f.keys() if k.startswith("BEAM"))
    if not names:
        raise IngestError(f"{where}: no BEAMxxxx group; expected a GEDI L4A granule (GEDI04_A_*.h5)")
    if beams is not None:
        missing = [b for b in beams if b not in names]
        if missing:
            raise IngestError(
                f"{where}: no beam group {', '.join(missing)}; the granule has {', '.join(names)}"
            )
        names = [b for b in names if b in beams]
    return names


def _check_l4a(f: Any, where: str) -> None:
    """Refuse a granule that says it is another product (or lacks the L4A biomass datasets)."""
    ident = f.get("METADATA/DatasetIdentification")
    if ident is not None and "shortName" in ident.attrs:
        short = ident.attrs["shortName"]
        short = short.decode() if isinstance(short, bytes) else str(short)
        if short != SHORT_NAME:
            raise IngestError(
                f"{where}: METADATA/DatasetIdentification shortName is {short!r}, expected {SHORT_NAME!r} "
                "(a GEDI L4A footprint biomass granule, GEDI04_A_*.h5)"
            )
        return
    beams = [k for k in f.keys() if k.startswith("BEAM")]
    if beams and "agbd" not in f[beams[0]]:
        raise IngestError(
            f"{where}: {beams[0]} has no 'agbd' dataset and the file has no METADATA/DatasetIdentification; "
            f"expected a GEDI L4A granule ({SHORT_NAME})"
        )


def read_beam(f: Any, beam: str, where: str) -> dict[str, np.ndarray]:
    """The :data:`DATASETS` of one beam group, as numpy arrays of equal length.

    Raises:
        IngestError: a dataset that is missing, or of another length than ``agbd`` (naming it).

    """
    g = f[beam]
    out: dict[str, np.ndarray] = {}
    for name in DATASETS:
        if name not in g:
            raise IngestError(
                f"{where}: dataset {beam}/{name} is missing; a GEDI L4A beam group has {', '.join(DATASETS)}"
            )
        out[name] = np.asarray(g[name][()])
    n = len(out["agbd"])
    for name, values in out.items():
        if values.shape != (n,):
            raise IngestError(f"{where}: {beam}/{name} has shape {values.shape}, {beam}/agbd has ({n},)")
    return out


def _beam_points(d: dict[str, np.ndarray], flt: GediFilter) -> tuple[np.ndarray, dict[str, int]]:
    """Which shots of one beam are kept, and the count of shots meeting each drop criterion."""
    agbd = d["agbd"].astype(np.float64)
    lon, lat = d["lon_lowestmode"].astype(np.float64), d["lat_lowestmode"].astype(np.float64)
    fill = (agbd == FILL) | ~np.isfinite(agbd)
    coords = (lon == FILL) | (lat == FILL) | ~np.isfinite(lon) | ~np.isfinite(lat)
    low_quality = d["l4_quality_flag"] != 1
    degraded = d["degrade_flag"] != 0
    keep = ~fill & ~coords
    counts = {
        "shots": len(agbd),
        "agbd fill": int(fill.sum()),
        "coordinates fill": int(coords.sum()),
        "l4_quality_flag != 1": int(low_quality.sum()),
        "degrade_flag != 0": int(degraded.sum()),
    }
    if flt.quality:
        keep &= ~low_quality
    if flt.not_degraded:
        keep &= ~degraded
    if flt.min_sensitivity is not None:
        low = ~(d["sensitivity"].astype(np.float64) >= flt.min_sensitivity)
        counts[f"sensitivity < {flt.min_sensitivity:g}"] = int(low.sum())
        keep &= ~low
    counts["kept"] = int(keep.sum())
    return keep, counts


def read_gedi_l4a(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], filter: GediFilter | None = None
) -> PointTable:
    """Read the shots of one or several GEDI L4A granules (``.h5``, or ``.zip`` of them) that pass ``filter``.

    Args:
        paths: granule files.
        filter: which shots to keep (default :class:`GediFilter`: quality flag 1, not degraded).

    Returns:
        A :class:`PointTable` named ``agbd`` in EPSG:4326 (longitude, latitude of the lowest mode), in t/ha,
        with each shot's standard error and date; its report counts, per file and beam, the shots read, each
        drop criterion and the shots kept.

    Raises:
        IngestError: a file that is not HDF5, not an L4A granule, or misses a beam dataset (naming the file
            and the dataset).

    """
    import h5py

    flt = filter or GediFilter()
    files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not files:
        raise IngestError("no GEDI granule given")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("x", "y", "value", "se", "date")}
    sources = []
    for file in files:
        path = Path(file)
        with _granules(path) as granules:
            for where, h5 in granules:
                try:
                    handle = h5py.File(h5, "r")
                except OSError as err:
                    raise IngestError(
                        f"{where}: not an HDF5 file ({err}); expected a GEDI L4A granule"
                    ) from None
                with handle as f:
                    _check_l4a(f, where)
                    counts = SourceCounts(source=where, rows=0, kept=0)
                    for beam in _beam_names(f, where, flt.beams):
                        d = read_beam(f, beam, where)
                        keep, per = _beam_points(d, flt)
                        counts.details[beam] = per
                        counts.rows += per["shots"]
                        counts.kept += per["kept"]
                        for reason, n in per.items():
                            if reason not in ("shots", "kept"):
                                counts.dropped[reason] = counts.dropped.get(reason, 0) + n
                        se = d["agbd_se"].astype(np.float64)[keep]
                        se[(se == FILL) | ~(se > 0)] = np.nan
                        seconds = d["delta_time"].astype(np.float64)[keep]
                        cols["x"].append(d["lon_lowestmode"].astype(np.float64)[keep])
                        cols["y"].append(d["lat_lowestmode"].astype(np.float64)[keep])
                        cols["value"].append(d["agbd"].astype(np.float64)[keep])
                        cols["se"].append(se)
                        cols["date"].append(gedi_time(seconds))
                    sources.append(counts)
    stacked = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    return PointTable(
        x=stacked["x"],
        y=stacked["y"],
        crs_wkt=wgs84_wkt(),
        value=stacked["value"],
        units="Mg/ha",
        se=stacked["se"],
        date=stacked["date"].astype("datetime64[s]")
        if len(stacked["date"])
        else np.zeros(0, "datetime64[s]"),
        name="agbd",
        report=ReadReport(sources),
    )


def gedi_time(delta_time: np.ndarray) -> np.ndarray:
    """``datetime64[ns]`` (UTC) of GEDI ``delta_time`` values (seconds since 2018-01-01T00:00:00Z)."""
    return GEDI_EPOCH + np.round(np.asarray(delta_time, dtype=np.float64) * 1e9).astype("timedelta64[ns]")


def is_gedi_granule(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a GEDI granule by its file name (``GEDI04_A_*.h5`` or a zip of them)."""
    name = Path(path).name.upper()
    return name.startswith("GEDI") or name.endswith((".H5", ".HDF5", ".HE5"))


__all__ = ["DATASETS", "FILL", "GEDI_EPOCH", "GediFilter", "gedi_time", "is_gedi_granule", "read_gedi_l4a"]
