"""Point targets in memory: :class:`PointTable` (coordinates, CRS, value, error, date) and its report.

Every reader of :mod:`spectravlm.data.points` (CSV, Parquet, GeoJSON/GeoPackage, GEDI L4A granules) returns
a :class:`PointTable`: one row per point (a field plot, a GEDI shot), with

* ``x``, ``y`` in ``crs_wkt`` (longitude/latitude for EPSG:4326; ``crs_wkt is None`` only for points given
  in the pixel coordinates of a store without a CRS);
* ``value`` in ``units`` (a fact: ``t/ha``; biomass-density spellings such as GEDI's ``Mg / ha`` are stored
  as ``t/ha``, since 1 Mg = 1 t);
* ``se``: the standard error of each value in the same units (NaN where unknown), used for the
  inverse-variance mean of several points in one pixel and for inverse-variance loss weights;
* ``date``: ``datetime64[s]`` (NaT where unknown), compared with the store's dates and used by the temporal
  match window.

:class:`ReadReport` counts what each reader kept and dropped, file by file, so that a filter never removes
points silently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spectravlm.errors import IngestError

BIOMASS_DENSITY = "t/ha"
"""Canonical unit of above-ground biomass density (1 Mg/ha = 1 t/ha)."""

_BIOMASS_SPELLINGS = {
    "t/ha",
    "tha-1",
    "t.ha-1",
    "t*ha-1",
    "tonnes/ha",
    "tonne/ha",
    "tons/ha",
    "mg/ha",
    "mgha-1",
    "mg.ha-1",
    "mg*ha-1",
    "megagrams/ha",
    "megagram/ha",
    "megagramsperhectare",
    "megagramperhectare",
    "tonnesperhectare",
}


def canonical_target_units(units: str, where: str = "") -> str:
    """The canonical spelling of a target's units (``Mg / ha``, ``Mg ha-1`` and ``t/ha`` are ``t/ha``).

    Units the library does not convert are kept as given (``m`` for a canopy height): they are stored and
    compared as they are, never guessed.

    Raises:
        IngestError: empty units (a target's unit is a fact that must be stated).

    """
    text = (units or "").strip()
    if not text:
        prefix = f"{where}: " if where else ""
        raise IngestError(
            f"{prefix}the unit of the target values is not given; state it (e.g. units='t/ha', --units "
            "t/ha): "
            "a unit is never guessed"
        )
    key = re.sub(r"\s+", "", text).lower().replace("^", "").replace("⁻¹", "-1")
    return BIOMASS_DENSITY if key in _BIOMASS_SPELLINGS else text


@dataclass
class SourceCounts:
    """What one reader did with one file.

    Attributes:
        source: the file (and member, for a granule in a zip).
        rows: rows or shots read.
        kept: points kept.
        dropped: per reason (``fill value``, ``l4_quality_flag != 1``, ``missing coordinates``...), the
            rows that meet it; a row can meet several reasons.
        details: finer counts (per GEDI beam: ``{beam: {reason: count}}``).

    """

    source: str
    rows: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    details: dict[str, dict[str, int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """Human-readable lines (what ``spectravlm data points`` prints)."""
        reasons = ", ".join(f"{k}: {v}" for k, v in self.dropped.items() if v) or "none"
        out = [f"{self.source}: {self.rows} read, {self.kept} kept (dropped by reason: {reasons})"]
        for name, counts in self.details.items():
            out.append("    " + name + ": " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored with an attached layer)."""
        return {
            "source": self.source,
            "rows": self.rows,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "details": {k: dict(v) for k, v in self.details.items()},
        }


@dataclass
class ReadReport:
    """Counts of every file read into a :class:`PointTable`."""

    sources: list[SourceCounts] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows or shots read, over all files."""
        return sum(s.rows for s in self.sources)

    @property
    def kept(self) -> int:
        """Points kept, over all files."""
        return sum(s.kept for s in self.sources)

    def lines(self) -> list[str]:
        """Human-readable lines, one block per file, then the total."""
        out = [line for s in self.sources for line in s.lines()]
        if len(self.sources) > 1:
            out.append(f"total: {self.rows} read, {self.kept} kept")
        return out


@dataclass
class PointTable:
    """Point targets (see the module docstring).

    Attributes:
        x: ``[N]`` float64 first coordinate (longitude, easting, or pixel column + 0.5 without CRS).
        y: ``[N]`` float64 second coordinate (latitude, northing, or pixel row + 0.5).
        crs_wkt: the coordinates' CRS as WKT, or ``None`` for a store's own pixel coordinates.
        value: ``[N]`` float64 target values in ``units``.
        units: the values' unit (canonical, :func:`canonical_target_units`).
        se: ``[N]`` float64 standard errors in ``units`` (NaN where unknown).
        date: ``[N]`` ``datetime64[s]`` dates (NaT where unknown).
        name: what the values are (``agbd``, ``agb``), the default layer name.
        report: what the readers kept and dropped.

    """

    x: np.ndarray
    y: np.ndarray
    crs_wkt: str | None
    value: np.ndarray
    units: str
    se: np.ndarray
    date: np.ndarray
    name: str = "points"
    report: ReadReport = field(default_factory=ReadReport)

    def __post_init__(self) -> None:
        n = len(self.value)
        self.x = np.asarray(self.x, dtype=np.float64)
        self.y = np.asarray(self.y, dtype=np.float64)
        self.value = np.asarray(self.value, dtype=np.float64)
        self.se = np.asarray(self.se, dtype=np.float64)
        self.date = np.asarray(self.date).astype("datetime64[s]")
        for label, arr in (("x", self.x), ("y", self.y), ("se", self.se), ("date", self.date)):
            if arr.shape != (n,):
                raise IngestError(
                    f"point table {self.name!r}: {label} has shape {arr.shape}, expected ({n},)"
                )
        self.units = canonical_target_units(self.units, f"point table {self.name!r}")

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        crs = "pixel coordinates" if self.crs_wkt is None else _crs_label(self.crs_wkt)
        dated = int((~np.isnat(self.date)).sum())
        with_se = int(np.isfinite(self.se).sum())
        return (
            f"PointTable({self.name!r}, {len(self)} points in {crs}, {self.units}, {with_se} with a standard "
            f"error, {dated} dated)"
        )

    @staticmethod
    def concat(tables: Sequence[PointTable], name: str | None = None) -> PointTable:
        """One table of several (same CRS and units), with their reports.

        Raises:
            IngestError: tables in different CRSs or units (naming both).

        """
        if not tables:
            raise IngestError("no point table to concatenate")
        first = tables[0]
        for t in tables[1:]:
            if t.units != first.units:
                raise IngestError(
                    f"point tables in different units: {_origin(first)} in {first.units!r}, "
                    f"{_origin(t)} in {t.units!r}"
                )
            if (t.crs_wkt is None) != (first.crs_wkt is None) or (
                t.crs_wkt is not None
                and first.crs_wkt is not None
                and not _same_crs(t.crs_wkt, first.crs_wkt)
            ):
                raise IngestError(
                    f"point tables in different CRSs ({_crs_label(first.crs_wkt)}, {_crs_label(t.crs_wkt)}); "
                    "read them separately"
                )
        return PointTable(
            x=np.concatenate([t.x for t in tables]),
            y=np.concatenate([t.y for t in tables]),
            crs_wkt=first.crs_wkt,
            value=np.concatenate([t.value for t in tables]),
            units=first.units,
            se=np.concatenate([t.se for t in tables]),
            date=np.concatenate([t.date for t in tables]),
            name=name or first.name,
            report=ReadReport([s for t in tables for s in t.report.sources]),
        )

    def select(self, keep: np.ndarray) -> PointTable:
        """The rows where ``keep`` (bool ``[N]``) is True (the report is kept as it is)."""
        return PointTable(
            x=self.x[keep],
            y=self.y[keep],
            crs_wkt=self.crs_wkt,
            value=self.value[keep],
            units=self.units,
            se=self.se[keep],
            date=self.date[keep],
            name=self.name,
            report=self.report,
        )

    def to_frame(self) -> Any:
        """A :class:`pandas.DataFrame` with columns ``x, y, value, se, date`` (CRS in its ``attrs``)."""
        import pandas as pd

        frame = pd.DataFrame(
            {"x": self.x, "y": self.y, "value": self.value, "se": self.se, "date": self.date}
        )
        frame.attrs["crs_wkt"] = self.crs_wkt
        frame.attrs["units"] = self.units
        return frame


def _origin(table: PointTable) -> str:
    return table.report.sources[0].source if table.report.sources else table.name


def _crs_label(crs_wkt: str | None) -> str:
    if crs_wkt is None:
        return "pixel coordinates"
    from pyproj import CRS

    crs = CRS.from_user_input(crs_wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.name


def _same_crs(a: str, b: str) -> bool:
    from pyproj import CRS

    return bool(CRS.from_user_input(a) == CRS.from_user_input(b))


__all__ = [
    "BIOMASS_DENSITY",
    "PointTable",
    "ReadReport",
    "SourceCounts",
    "canonical_target_units",
]
