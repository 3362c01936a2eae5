"""``spectravlm data points ...`` and ``spectravlm data sample``: point targets and pixel time-series tables.

* ``points attach STORE FILES...``: GEDI L4A granules, CSV, Parquet, GeoJSON or GeoPackage points onto a
  store's grid as a sparse target layer (``<name>``, ``_se``, ``_count``, ``_date``), with the counts of every
  step printed.
* ``points info FILES...``: read and filter only: what would be attached, per file (and per GEDI beam).
* ``points draw STORE OUT``: random pixels of a store's target layer, with noise, as a points file (the demo).
* ``points map STORE CHECKPOINT OUT``: the wall-to-wall map of a ``PointsTask`` checkpoint, as a GeoTIFF.
* ``points series TABLE OUT``: a long-format pixel time-series table (Parquet or CSV) into a points store.
* ``sample STORE POINTS OUT``: the pixel time series of a cube store at points, into a points store.
"""

from __future__ import annotations

import argparse
from typing import Any

from spectravlm.errors import IngestError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=VALUE, e.g. s2=sentinel2_l2a or elevation=m"
        )
    return key.strip(), value.strip()


def _column_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("columns of CSV/Parquet/GeoJSON/GeoPackage points (not for GEDI granules)")
    g.add_argument("--value", default=None, help="the column of target values")
    g.add_argument("--units", default=None, help="their unit, e.g. t/ha (required for tables)")
    g.add_argument("--se", default=None, help="the column of standard errors (same units)")
    g.add_argument("--date", default=None, help="the column of dates")
    g.add_argument("--date-format", default=None, help="strptime format of the dates (default ISO 8601)")
    g.add_argument("--x", default=None, help="first-coordinate column (with --crs; default: lon/longitude)")
    g.add_argument("--y", default=None, help="second-coordinate column (with --crs; default: lat/latitude)")
    g.add_argument("--crs", default=None, help="CRS of --x/--y, e.g. EPSG:32633 ('pixel': store pixels)")
    f = p.add_argument_group("GEDI L4A shot filter (default: l4_quality_flag == 1 and degrade_flag == 0)")
    f.add_argument("--all-quality", action="store_true", help="keep shots with l4_quality_flag 0 too")
    f.add_argument("--keep-degraded", action="store_true", help="keep shots with a non-zero degrade_flag")
    f.add_argument("--min-sensitivity", type=float, default=None, help="keep shots with sensitivity >= this")
    f.add_argument("--beams", type=_csv, default=None, help="only these beams, e.g. BEAM0101,BEAM0110")


def add_points_parsers(sub: Any) -> None:
    """Add ``points`` and ``sample`` to the ``spectravlm data`` sub-commands."""
    points = sub.add_parser(
        "points", help="point targets: GEDI L4A granules, plots; pixel time-series tables"
    )
    psub = points.add_subparsers(dest="points_command", required=True)

    attach = psub.add_parser(
        "attach",
        help="attach points to a store as a sparse target layer (value, se, count, date)",
        description="Points are reprojected to the store's CRS (pyproj), snapped to its pixels, those "
        "outside the grid or the store's time range counted and dropped, and the points of one pixel "
        "combined by their inverse-variance mean. The store is changed atomically (docs/points.md).",
    )
    attach.add_argument("store", help="an existing cube store")
    attach.add_argument("files", nargs="+", help="GEDI L4A granules (.h5, .zip) or points files of one kind")
    attach.add_argument("--name", default=None, help="layer name (default: agbd for GEDI, else --value)")
    attach.add_argument("--time-margin", type=float, default=0.0, help="days added on each side of the "
                        "store's time range (default 0)")  # fmt: skip
    attach.add_argument("--no-time-check", action="store_true", help="keep dated points whatever their date")
    attach.add_argument("--overwrite", action="store_true", help="replace existing layers of that name")
    _column_args(attach)

    info = psub.add_parser("info", help="read and filter points; print the counts (nothing written)")
    info.add_argument("files", nargs="+")
    _column_args(info)

    draw = psub.add_parser(
        "draw", help="random pixels of a store's target layer, with noise, as a points file"
    )
    draw.add_argument("store")
    draw.add_argument("out", help=".csv, .parquet, .geojson or .gpkg")
    draw.add_argument("--target", default="agb", help="the target layer (default agb)")
    draw.add_argument("--n", type=int, default=1000, help="points (default 1000)")
    draw.add_argument("--noise-abs", type=float, default=0.0, help="noise standard deviation, target units")
    draw.add_argument("--noise-rel", type=float, default=0.0, help="plus this share of the value")
    draw.add_argument("--seed", type=int, default=0)
    draw.add_argument("--undated", action="store_true", help="no random dates")

    pmap = psub.add_parser(
        "map",
        help="the wall-to-wall map of a PointsTask checkpoint over a store, as a new GeoTIFF",
        description="Every pixel of the store, in windows of the model's window size; the store's CRS and "
        "transform; NaN where no sensor group has a valid observation. An existing file is never replaced.",
    )
    pmap.add_argument("store", help="a cube store with the model's sensor groups and bands")
    pmap.add_argument("checkpoint", help="a .ckpt of spectravlm.tasks.PointsTask")
    pmap.add_argument("out", help="the GeoTIFF to write (.tif; must not exist)")
    pmap.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    pmap.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu)")

    series = psub.add_parser(
        "series",
        help="a long-format pixel time-series table (one row per sample and date) into a points store",
        description="Band columns are <group>_<band> (s2_B02, s1_VV); each group needs --sensor and --units.",
    )
    series.add_argument("table", help="Parquet or CSV")
    series.add_argument("out", help="the points store to write")
    series.add_argument("--sensor", type=_pair, action="append", required=True, metavar="GROUP=SENSOR")
    series.add_argument("--group-units", type=_pair, action="append", required=True, metavar="GROUP=UNITS",
                        help="units of a group's band values: reflectance, dB, linear")  # fmt: skip
    series.add_argument("--sample", default="sample", help="sample-id column (default sample)")
    series.add_argument("--date", default="date", help="date column (default date)")
    series.add_argument("--date-format", default=None)
    series.add_argument("--x", default=None)
    series.add_argument("--y", default=None)
    series.add_argument("--crs", default=None)
    series.add_argument("--target", default=None, help="target column")
    series.add_argument("--units", default="", help="the target's unit, e.g. t/ha")
    series.add_argument("--target-se", default=None, help="column of the target's standard errors")
    series.add_argument("--static", type=_pair, action="append", default=[], metavar="COLUMN=UNITS")
    series.add_argument("--dynamic", type=_pair, action="append", default=[], metavar="COLUMN=UNITS")
    series.add_argument("--overwrite", action="store_true", help="replace an existing points store")

    sample = sub.add_parser(
        "sample",
        help="pixel time series of a cube store at points, into a points store",
        description="For every point inside the store's grid: the k x k pixels around it at every date of "
        "every sensor group, the store's static layers, and the point's value as the target "
        "(docs/points.md).",
    )
    sample.add_argument("store", help="a cube store")
    sample.add_argument("points", nargs="+", help="points files (or GEDI granules), then OUT")
    sample.add_argument("--neighbourhood", type=int, default=1, help="k (odd), default 1: single pixels")
    sample.add_argument("--groups", type=_csv, default=None, help="sensor groups (default all)")
    sample.add_argument("--static-layers", type=_csv, default=None, help="static layers (default all)")
    sample.add_argument("--cloud-threshold", type=float, default=None)
    sample.add_argument("--name", default=None, help="target name (default: agbd for GEDI, else --value)")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing points store")
    _column_args(sample)


def _read(args: argparse.Namespace, files: list[str]) -> Any:
    from spectravlm.data.points import GediFilter, PointColumns, read_points
    from spectravlm.data.points.readers import GEDI_SUFFIXES

    gedi = GediFilter(
        quality=not args.all_quality,
        not_degraded=not args.keep_degraded,
        min_sensitivity=args.min_sensitivity,
        beams=None if args.beams is None else tuple(args.beams),
    )
    columns = None
    if not all(f.lower().endswith(GEDI_SUFFIXES) for f in files):
        if args.value is None or args.units is None:
            raise IngestError(f"{files[0]}: name the value column and its unit (--value COLUMN --units t/ha)")
        columns = PointColumns(
            value=args.value,
            units=args.units,
            se=args.se,
            date=args.date,
            date_format=args.date_format,
            x=args.x,
            y=args.y,
            crs=args.crs,
        )
    return read_points(files, columns, gedi)


def run_points(args: argparse.Namespace) -> int:
    """Dispatch ``spectravlm data points ...`` and ``spectravlm data sample``."""
    if args.command == "sample":
        from spectravlm.data.points.pointstore import write_points_store
        from spectravlm.data.points.sample import sample_cubes

        if len(args.points) < 2:
            raise IngestError("spectravlm data sample STORE POINTS... OUT: give the points file(s) and OUT")
        *files, out = args.points
        table = _read(args, files)
        if args.name:
            table.name = args.name
        series, report = sample_cubes(
            args.store,
            table,
            neighbourhood=args.neighbourhood,
            groups=args.groups,
            static=args.static_layers,
            cloud_threshold=args.cloud_threshold,
        )
        write_points_store(out, series, overwrite=args.overwrite)
        for line in [*table.report.lines(), *report.lines()]:
            print(line)
        print(f"wrote {out}: {series!r}")
        return 0
    if args.points_command == "attach":
        from spectravlm.data.points import attach_points

        table = _read(args, args.files)
        attached = attach_points(
            args.store,
            table,
            name=args.name,
            time_margin_days=None if args.no_time_check else args.time_margin,
            overwrite=args.overwrite,
        )
        for line in attached.lines():
            print(line)
    elif args.points_command == "info":
        table = _read(args, args.files)
        for line in table.report.lines():
            print(line)
        print(repr(table))
    elif args.points_command == "draw":
        from spectravlm.data.points.sample import draw_points, write_points_file

        table = draw_points(
            args.store, args.target, args.n, args.noise_abs, args.noise_rel, args.seed, dated=not args.undated
        )
        path = write_points_file(table, args.out)
        print(f"wrote {path}: {table!r}")
    elif args.points_command == "map":
        from spectravlm.tasks.points import PointsTask
        from spectravlm.tasks.points_map import predict_map

        task = PointsTask.load_from_checkpoint(args.checkpoint, map_location="cpu")
        _, map_report = predict_map(task, args.store, args.out, args.batch_size, args.device)
        print(map_report)
    elif args.points_command == "series":
        from spectravlm.data.points.pointstore import write_points_store
        from spectravlm.data.points.series import SeriesColumns, read_series_parquet

        columns = SeriesColumns(
            sensors=dict(args.sensor),
            units=dict(args.group_units),
            sample=args.sample,
            date=args.date,
            date_format=args.date_format,
            x=args.x,
            y=args.y,
            crs=args.crs,
            target=args.target,
            target_units=args.units,
            target_se=args.target_se,
            static=dict(args.static),
            dynamic=dict(args.dynamic),
        )
        series = read_series_parquet(args.table, columns)
        write_points_store(args.out, series, overwrite=args.overwrite)
        print(f"wrote {args.out}: {series!r}")
    return 0


__all__ = ["add_points_parsers", "run_points"]
