"""``spectravlm data ...``: the cube-store commands (demo store, ingest, statistics, info)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spectravlm.data.store import SensorCube


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectravlm data", description="Cube-store data commands.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write the deterministic SYNTHETIC S1+S2+AGB demo store")
    demo.add_argument("store", help="path of the store to write, e.g. data/demo.zarr")
    demo.add_argument("--size", type=int, default=512, help="grid edge in pixels (default 512)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing store")

    info = sub.add_parser("info", help="print a summary of a store")
    info.add_argument("store")

    stats = sub.add_parser("stats", help="compute per-band statistics over valid pixels into the store")
    stats.add_argument("store")
    stats.add_argument(
        "--cloud-threshold", type=float, default=50.0, help="cloud probability cut (default 50)"
    )

    ingest = sub.add_parser("ingest", help="ingest rasters into a store")
    isub = ingest.add_subparsers(dest="layout", required=True)
    bm = isub.add_parser(
        "biomassters", help="a BioMassters chip (monthly *_S1_MM.tif, *_S2_MM.tif, *_agbm.tif)"
    )
    bm.add_argument("chip_dir")
    bm.add_argument("store")
    bm.add_argument("--chip-id", default=None, help="chip id (inferred when the folder holds one chip)")
    bm.add_argument("--start-year", type=int, default=2020, help="year of month 00 (September)")
    bm.add_argument("--allow-missing", action="store_true", help="skip absent months instead of failing")
    bm.add_argument("--overwrite", action="store_true", help="replace an existing store")
    bm.add_argument("--no-stats", action="store_true", help="skip the statistics pass")
    _ingest_geotiff_parser(isub)
    _ingest_s1_grd_parser(isub)
    _ingest_npy_parser(isub)
    return parser


def _common_ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--append", action="store_true", help="add to a store (a new group or later dates)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--title", default="", help="store title (new stores)")
    p.add_argument("--no-stats", action="store_true", help="skip the statistics pass")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ingest_geotiff_parser(isub: argparse._SubParsersAction) -> None:
    from spectravlm.data.ingest.geotiff import DEFAULT_DATE_PATTERN

    gt = isub.add_parser(
        "geotiff",
        help="GeoTIFF/COG time series: one file per date (multi-band) or per date and band",
        description="Dates come from the file names; bands of other resolutions are resampled onto the grid "
        "of the finest file of the first date (see spectravlm.data.ingest.geotiff).",
    )
    gt.add_argument("files", nargs="+", help="files, directories or glob patterns")
    gt.add_argument("store")
    gt.add_argument("--group", required=True, help="sensor group to write, e.g. s2")
    gt.add_argument("--sensor", required=True, help="catalogue sensor, e.g. sentinel2_l2a, sentinel1_grd")
    gt.add_argument("--units", required=True, help="physical units after scaling, e.g. reflectance, dB")
    gt.add_argument("--bands", type=_csv, default=None, help="comma-separated bands (file order / selection)")
    gt.add_argument("--band-pattern", default=None, help=r"regex finding a file's band, e.g. '_(B\d[\dA])\.'")
    gt.add_argument("--date-pattern", default=DEFAULT_DATE_PATTERN, help="regex finding a file's date")
    gt.add_argument("--date-format", default=None, help="strptime format of the matched date")
    gt.add_argument("--resolution", type=float, default=None, help="target pixel size in CRS units")
    gt.add_argument("--resampling", default="nearest", help="rasterio resampling method (default nearest)")
    gt.add_argument("--allow-reproject", action="store_true", help="warp files in another CRS")
    gt.add_argument("--nodata", type=float, default=None, help="raw nodata value (default: from the files)")
    gt.add_argument("--scale-factor", type=float, default=1.0, help="physical = raw * scale + offset")
    gt.add_argument("--add-offset", type=float, default=0.0)
    gt.add_argument("--orbit", choices=("ascending", "descending"), default=None, help="SAR orbit direction")
    _common_ingest_args(gt)


def _ingest_s1_grd_parser(isub: argparse._SubParsersAction) -> None:
    s1 = isub.add_parser(
        "s1-grd",
        help="Sentinel-1 GRD scenes with GCPs, warped to a projected grid (uncalibrated DN)",
        description="Each scene is a product directory (SAFE or AWS sentinel-s1-l1c layout). Values are "
        "uncalibrated DN^2 intensity (or DN amplitude); see spectravlm.data.ingest.s1_grd.",
    )
    s1.add_argument("scenes", nargs="+", help="product directories, one date each")
    s1.add_argument("store")
    s1.add_argument("--group", default="s1", help="sensor group to write (default s1)")
    s1.add_argument("--polarisations", type=_csv, default=None, help="e.g. VV,VH (default: all in the scene)")
    s1.add_argument("--crs", default=None, help="target CRS (default: UTM zone of the scene centre)")
    s1.add_argument("--resolution", type=float, default=None, help="pixel size in m (default: the scene's)")
    s1.add_argument("--resampling", default="bilinear", help="rasterio resampling method (default bilinear)")
    s1.add_argument("--quantity", choices=("intensity", "amplitude"), default="intensity")
    s1.add_argument("--orbit", choices=("ascending", "descending"), default=None, help="default: geometry")
    _common_ingest_args(s1)


def _ingest_npy_parser(isub: argparse._SubParsersAction) -> None:
    npy = isub.add_parser(
        "npy",
        help="a numpy array (.npy) of one sensor with its dates, bands and optional georeference",
    )
    npy.add_argument("array", help=".npy file")
    npy.add_argument("store")
    npy.add_argument("--group", required=True)
    npy.add_argument("--sensor", required=True)
    npy.add_argument("--bands", type=_csv, required=True, help="comma-separated band names in array order")
    npy.add_argument("--dates", type=_csv, required=True, help="comma-separated ISO dates in array order")
    npy.add_argument("--axes", default="t c y x", help="axis order, e.g. 't y x c' (default 't c y x')")
    npy.add_argument("--crs", default=None, help="CRS of the grid, e.g. EPSG:32633")
    npy.add_argument("--bounds", type=float, nargs=4, default=None, metavar=("W", "S", "E", "N"))
    npy.add_argument("--units", required=True, help="physical units after scaling, e.g. reflectance, dB")
    npy.add_argument("--nodata", type=float, default=None)
    npy.add_argument("--scale-factor", type=float, default=1.0)
    npy.add_argument("--add-offset", type=float, default=0.0)
    _common_ingest_args(npy)


def _run_ingest(args: argparse.Namespace) -> None:
    """Dispatch ``spectravlm data ingest <layout>``."""
    from spectravlm.data.ingest import ingest_arrays, ingest_biomassters, ingest_geotiff, ingest_s1_grd
    from spectravlm.data.stats import compute_stats

    if args.layout == "biomassters":
        ingest_biomassters(
            args.chip_dir,
            args.store,
            chip_id=args.chip_id,
            start_year=args.start_year,
            allow_missing=args.allow_missing,
            overwrite=args.overwrite,
        )
    elif args.layout == "geotiff":
        ingest_geotiff(
            args.files if len(args.files) > 1 else args.files[0],
            args.store,
            group=args.group,
            sensor=args.sensor,
            units=args.units,
            bands=args.bands,
            band_pattern=args.band_pattern,
            date_pattern=args.date_pattern,
            date_format=args.date_format,
            resolution=args.resolution,
            resampling=args.resampling,
            allow_reproject=args.allow_reproject,
            nodata=args.nodata,
            scale_factor=args.scale_factor,
            add_offset=args.add_offset,
            orbit=args.orbit,
            append=args.append,
            overwrite=args.overwrite,
            title=args.title,
        )
    elif args.layout == "s1-grd":
        ingest_s1_grd(
            args.scenes,
            args.store,
            group=args.group,
            polarisations=args.polarisations,
            crs=args.crs,
            resolution=args.resolution,
            resampling=args.resampling,
            quantity=args.quantity,
            orbit=args.orbit,
            append=args.append,
            overwrite=args.overwrite,
            title=args.title,
        )
    elif args.layout == "npy":
        cube = _npy_cube(args)
        ingest_arrays(args.store, args.group, cube, args.append, args.overwrite, args.title)
    if not args.no_stats:
        compute_stats(args.store)


def _npy_cube(args: argparse.Namespace) -> SensorCube:
    """Build the :class:`SensorCube` that ``spectravlm data ingest npy`` arguments describe."""
    from pathlib import Path

    import numpy as np
    from einops import rearrange
    from rasterio.crs import CRS
    from rasterio.transform import from_bounds

    from spectravlm.data.store import Grid, SensorCube
    from spectravlm.errors import IngestError

    path = Path(args.array)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise IngestError(f"{path}: not a plain .npy array: {err}") from err
    axes = args.axes.split()
    if sorted(axes) != ["c", "t", "x", "y"] or array.ndim != 4:
        raise IngestError(f"{path}: array {array.shape} with axes {args.axes!r}; expected 4 axes t, c, y, x")
    data = np.ascontiguousarray(rearrange(array, f"{args.axes} -> t c y x"))
    _, _, h, w = data.shape
    if (args.crs is None) != (args.bounds is None):
        raise IngestError("--crs and --bounds go together (a georeferenced grid needs both)")
    if args.crs is None:
        grid = Grid(height=h, width=w)
    else:
        crs = CRS.from_user_input(args.crs)
        epsg = crs.to_epsg()
        wkt = CRS.from_epsg(epsg).to_wkt() if epsg is not None else crs.to_wkt()
        grid = Grid(height=h, width=w, transform=from_bounds(*args.bounds, w, h), crs_wkt=wkt)
    try:
        times = np.array([np.datetime64(d, "s") for d in args.dates])
    except ValueError as err:
        raise IngestError(f"--dates {args.dates}: not ISO dates ({err})") from err
    return SensorCube(
        sensor=args.sensor,
        bands=args.bands,
        data=data,
        times=times,
        grid=grid,
        nodata=args.nodata,
        scale_factor=args.scale_factor,
        add_offset=args.add_offset,
        units=args.units,
        source=f"numpy array {path}",
    )


def data_main(argv: Sequence[str]) -> int:
    """Run ``spectravlm data ...``; returns the exit code."""
    if argv and argv[0] in ("qa", "tiny-llm"):  # instruction data for the VLM: spectravlm.cli.qa
        from spectravlm.cli.qa import qa_main

        return qa_main(argv)
    args = _data_parser().parse_args(list(argv))
    if args.command == "demo":
        from spectravlm.data.demo import write_demo_store

        write_demo_store(args.store, size=args.size, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote {args.store}")
        args.command = "info"
    if args.command == "info":
        from spectravlm.data.store import CubeStore

        print(CubeStore.open(args.store).summary())
    elif args.command == "stats":
        from spectravlm.data.stats import compute_stats

        results = compute_stats(args.store, cloud_threshold=args.cloud_threshold, progress=True)
        for group, bands in results.items():
            for band, s in bands.items():
                if s["count"]:
                    print(
                        f"{group} {band}: n={s['count']} mean={s['mean']:.4g} std={s['std']:.4g} "
                        f"p02={s['p02']:.4g} p50={s['p50']:.4g} p98={s['p98']:.4g}"
                    )
                else:
                    print(f"{group} {band}: no valid pixels")
    elif args.command == "ingest":
        _run_ingest(args)
        from spectravlm.data.store import CubeStore

        print(CubeStore.open(args.store).summary())
    return 0
