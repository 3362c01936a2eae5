"""``spectravlm data ...``: the cube-store commands (demo store, ingest, statistics, info, verify).

Errors from the library are reported as one line naming the command-line flags to use: a message that
names a Python keyword (``allow_reproject=True``) is rewritten with the flag of the command that ran
(``--allow-reproject``).
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from spectravlm.errors import SpectraVLMError

if TYPE_CHECKING:
    from spectravlm.data.ingest.scenes import LayerSpec, Validity
    from spectravlm.data.store import SensorCube


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectravlm data", description="Cube-store data commands.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write the deterministic SYNTHETIC S1+S2+AGB demo store")
    demo.add_argument("store", help="path of the store to write, e.g. data/demo.zarr")
    demo.add_argument("--size", type=int, default=512, help="grid edge in pixels (default 512)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing store")

    info = sub.add_parser(
        "info", help="per group: units, scale/offset, nodata, dates, chunking, layers, statistics"
    )
    info.add_argument("store")

    verify = sub.add_parser("verify", help="decode every chunk of a store; list the corrupt ones (exit 1)")
    verify.add_argument("store")

    stats = sub.add_parser("stats", help="compute per-band statistics over valid pixels into the store")
    stats.add_argument("store")
    stats.add_argument(
        "--cloud-threshold", type=float, default=50.0, help="cloud probability cut (default 50)"
    )

    ingest = sub.add_parser("ingest", help="ingest rasters, STAC items or arrays into a store")
    isub = ingest.add_subparsers(dest="layout", required=True)
    _ingest_biomassters_parser(isub)
    _ingest_geotiff_parser(isub)
    _ingest_stac_parser(isub)
    _ingest_s1_grd_parser(isub)
    _ingest_npy_parser(isub)
    _ingest_static_parser(isub)
    return parser


def _common_ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--append", action="store_true", help="add to a store (a new group or later dates)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--title", default="", help="store title (new stores)")
    p.add_argument("--no-stats", action="store_true", help="do not compute statistics during the ingest")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated class numbers, e.g. 0,1,3,8,9,10"
        ) from None


def _ingest_biomassters_parser(isub: argparse._SubParsersAction) -> None:
    bm = isub.add_parser(
        "biomassters",
        help="a BioMassters chip, or a whole folder of chips (one store per chip)",
        description="One chip: CHIP_DIR holds its monthly *_S1_MM.tif, *_S2_MM.tif and *_agbm.tif; OUT is "
        "the store. Several chips in CHIP_DIR (the challenge's train_features/): OUT is a folder that gets "
        "OUT/<chip>.zarr per chip, with a process pool, a progress bar and a failure summary; a rerun "
        "skips the chips already ingested.",
    )
    bm.add_argument("chip_dir")
    bm.add_argument("store", help="the store (one chip) or the folder of stores (several chips)")
    bm.add_argument("--chip-id", default=None, help="ingest only this chip into the store OUT")
    bm.add_argument("--agbm-dir", default=None, help="folder of the *_agbm.tif targets (train_agbm/)")
    bm.add_argument("--start-year", type=int, default=2020, help="year of month 00 (September)")
    bm.add_argument("--allow-missing", action="store_true", help="skip absent months instead of failing")
    bm.add_argument("--workers", type=int, default=2, help="processes for a folder of chips (default 2)")
    bm.add_argument("--overwrite", action="store_true", help="replace an existing store (one chip)")
    bm.add_argument("--no-stats", action="store_true", help="do not compute statistics during the ingest")


def _values_args(p: argparse.ArgumentParser, units_required: bool) -> None:
    p.add_argument(
        "--units",
        required=units_required,
        help="physical units after scaling: reflectance, dB, linear or DN",
    )
    p.add_argument("--nodata", type=float, default=None, help="raw nodata (default: files, STAC, product)")
    p.add_argument("--scale-factor", type=float, default=None, help="physical = raw * scale + offset")
    p.add_argument(
        "--add-offset", type=float, default=None, help="(S2 baseline >= 04.00 digital numbers: -0.1)"
    )
    p.add_argument(
        "--processing-baseline", default=None, help="S2 processing baseline, e.g. 04.00 (tells the offset)"
    )
    p.add_argument("--resolution", type=float, default=None, help="target pixel size in CRS units")
    p.add_argument("--resampling", default="nearest", help="rasterio resampling method (default nearest)")
    p.add_argument("--allow-reproject", action="store_true", help="warp files in another CRS")
    p.add_argument("--orbit", choices=("ascending", "descending"), default=None, help="SAR orbit direction")
    p.add_argument(
        "--scl-invalid",
        type=_ints,
        default=None,
        help="SCL classes that are invalid (default 0,1,3,8,9,10: no data, saturated, cloud shadow, "
        "medium/high cloud probability, cirrus)",
    )
    p.add_argument("--mask-snow", action="store_true", help="also treat SCL class 11 (snow/ice) as invalid")
    p.add_argument(
        "--cloud-threshold", type=float, default=50.0, help="cloud probability that invalidates (default 50)"
    )


def _ingest_geotiff_parser(isub: argparse._SubParsersAction) -> None:
    from spectravlm.data.ingest.dates import DEFAULT_DATE_PATTERN

    gt = isub.add_parser(
        "geotiff",
        help="GeoTIFF/COG/JP2 time series: one file per date (multi-band) or per date and band",
        description="Dates come from --date, a STAC item beside the files, acquisition tags, the file names "
        "or the folder names (SAFE products). Bands are found in the file names; SCL and cloud-probability "
        "files become validity layers; other files are skipped and listed (--strict: an error). Bands of "
        "other resolutions are resampled onto the grid of the finest file of the first date "
        "(see docs/ingest.md).",
    )
    gt.add_argument("files", nargs="+", help="files, directories or glob patterns")
    gt.add_argument("store")
    gt.add_argument("--group", required=True, help="sensor group to write, e.g. s2")
    gt.add_argument("--sensor", required=True, help="catalogue sensor, e.g. sentinel2_l2a, sentinel1_grd")
    gt.add_argument("--bands", type=_csv, default=None, help="comma-separated bands (file order / selection)")
    gt.add_argument("--band-pattern", default=None, help=r"regex finding a file's band, e.g. '_(B\d[\dA])\.'")
    gt.add_argument("--date", default=None, help="acquisition date of a single scene (ISO, e.g. 2020-06-13)")
    gt.add_argument("--date-pattern", default=DEFAULT_DATE_PATTERN, help="regex finding a date in names")
    gt.add_argument("--date-format", default=None, help="strptime format of the matched date")
    gt.add_argument(
        "--layer",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "PATTERN", "UNITS"),
        help="an extra per-date layer: files matching PATTERN stored as NAME in UNITS (repeatable)",
    )
    gt.add_argument("--strict", action="store_true", help="files that are no band are an error")
    gt.add_argument("--read-threads", type=int, default=2, help="threads reading band files (default 2)")
    _values_args(gt, units_required=True)
    _common_ingest_args(gt)


def _ingest_stac_parser(isub: argparse._SubParsersAction) -> None:
    st = isub.add_parser(
        "stac",
        help="STAC items (files, collections, directories) or a STAC API search",
        description="Items of one sensor become one time series: datetime, band assets (eo:bands), "
        "raster:bands scale/offset/nodata and the SCL or cloud-probability asset come from the metadata.",
    )
    st.add_argument("sources", nargs="+", help="item/collection JSON files, directories, or a STAC API URL")
    st.add_argument("store")
    st.add_argument("--group", default="s2", help="sensor group to write (default s2)")
    st.add_argument("--sensor", required=True, help="catalogue sensor, e.g. sentinel2_l2a")
    st.add_argument("--bands", type=_csv, default=None, help="comma-separated bands to store")
    st.add_argument("--tile", default=None, help="only items of this tile (e.g. 33UUP)")
    st.add_argument("--collections", type=_csv, default=None, help="STAC API search: collections")
    st.add_argument("--bbox", type=float, nargs=4, default=None, metavar=("W", "S", "E", "N"))
    st.add_argument("--datetime", default=None, help="STAC API search: e.g. 2020-06-01/2020-08-31")
    st.add_argument("--max-items", type=int, default=None, help="STAC API search: at most this many")
    st.add_argument("--no-scl", action="store_true", help="do not use the SCL asset for validity")
    _values_args(st, units_required=False)
    _common_ingest_args(st)


def _ingest_s1_grd_parser(isub: argparse._SubParsersAction) -> None:
    s1 = isub.add_parser(
        "s1-grd",
        help="Sentinel-1 GRD scenes with GCPs, warped to a projected grid (calibrated when possible)",
        description="Each scene is a product directory (SAFE or AWS sentinel-s1-l1c layout). With the "
        "product's annotation/calibration files (or --calibration-constant) the values are calibrated "
        "sigma0: linear power (default) or dB (--db); without, uncalibrated DN (see docs/ingest.md).",
    )
    s1.add_argument("scenes", nargs="+", help="product directories, one date each")
    s1.add_argument("store")
    s1.add_argument("--group", default="s1", help="sensor group to write (default s1)")
    s1.add_argument("--polarisations", type=_csv, default=None, help="e.g. VV,VH (default: all in the scene)")
    s1.add_argument("--crs", default=None, help="target CRS (default: UTM zone of the scene centre)")
    s1.add_argument("--resolution", type=float, default=None, help="pixel size in m (default: the scene's)")
    s1.add_argument("--resampling", default="bilinear", help="rasterio resampling method (default bilinear)")
    out = s1.add_mutually_exclusive_group()
    out.add_argument("--db", action="store_true", help="store calibrated sigma0 in dB")
    out.add_argument("--linear", action="store_true", help="store calibrated sigma0 as linear power")
    out.add_argument("--dn", action="store_true", help="store uncalibrated digital numbers")
    s1.add_argument(
        "--calibration-constant",
        type=float,
        default=None,
        metavar="K",
        help="sigma0 = DN^2 / K^2 (instead of the product's calibration LUT)",
    )
    s1.add_argument(
        "--quantity", choices=("intensity", "amplitude"), default="intensity", help="for --dn: DN^2 or DN"
    )
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


def _ingest_static_parser(isub: argparse._SubParsersAction) -> None:
    st = isub.add_parser(
        "static",
        help="a static layer (DEM, slope, land cover) onto an existing store's grid",
        description="FILE is a raster (warped onto the store's grid) or a .npy of the grid's shape. "
        "The layer goes to the store's 'static' group with its units.",
    )
    st.add_argument("file", help="raster file or .npy array")
    st.add_argument("store", help="an existing store")
    st.add_argument("--name", required=True, help="layer name, e.g. dem")
    st.add_argument("--units", required=True, help="the layer's units, e.g. m, degree, class")
    st.add_argument("--long-name", default="", help="a description")
    st.add_argument("--nodata", type=float, default=None, help="value meaning no value")
    st.add_argument("--resampling", default="nearest", help="rasterio resampling onto the grid")


def _validity(args: argparse.Namespace) -> Validity:
    from spectravlm.data.ingest.product import DEFAULT_SCL_INVALID, SCL_SNOW
    from spectravlm.data.ingest.scenes import Validity

    classes = tuple(args.scl_invalid) if args.scl_invalid is not None else DEFAULT_SCL_INVALID
    if args.mask_snow and SCL_SNOW not in classes:
        classes = (*classes, SCL_SNOW)
    return Validity(scl_invalid=classes, cloud_threshold=args.cloud_threshold)


def _layers(args: argparse.Namespace) -> dict[str, tuple[str, LayerSpec]]:
    from spectravlm.data.ingest.scenes import LayerSpec

    return {name: (pattern, LayerSpec(units=units, long_name=name)) for name, pattern, units in args.layer}


def _run_ingest(args: argparse.Namespace) -> str:
    """Dispatch ``spectravlm data ingest <layout>``; returns the path to summarise."""
    from spectravlm.data.ingest import (
        ingest_arrays,
        ingest_biomassters,
        ingest_geotiff,
        ingest_s1_grd,
        ingest_stac,
    )

    stats = not args.no_stats if hasattr(args, "no_stats") else True
    if args.layout == "biomassters":
        from spectravlm.data.ingest.biomassters import find_chips, ingest_biomassters_folder

        chips = find_chips(args.chip_dir)
        if args.chip_id is None and len(chips) > 1:
            report = ingest_biomassters_folder(
                args.chip_dir,
                args.store,
                agbm_dir=args.agbm_dir,
                start_year=args.start_year,
                allow_missing=args.allow_missing,
                workers=args.workers,
                stats=stats,
            )
            print(report.summary())
            return ""
        ingest_biomassters(
            args.chip_dir,
            args.store,
            chip_id=args.chip_id,
            start_year=args.start_year,
            allow_missing=args.allow_missing,
            overwrite=args.overwrite,
            agbm_dir=args.agbm_dir,
            stats=stats,
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
            date=args.date,
            resolution=args.resolution,
            resampling=args.resampling,
            allow_reproject=args.allow_reproject,
            nodata=args.nodata,
            scale_factor=args.scale_factor,
            add_offset=args.add_offset,
            processing_baseline=args.processing_baseline,
            validity=_validity(args),
            layers=_layers(args),
            strict=args.strict,
            orbit=args.orbit,
            append=args.append,
            overwrite=args.overwrite,
            title=args.title,
            stats=stats,
            read_threads=args.read_threads,
        )
    elif args.layout == "stac":
        search: dict[str, Any] = {
            k: v
            for k, v in (
                ("collections", args.collections),
                ("bbox", args.bbox),
                ("datetime", args.datetime),
                ("max_items", args.max_items),
            )
            if v is not None
        }
        ingest_stac(
            args.sources if len(args.sources) > 1 else args.sources[0],
            args.store,
            group=args.group,
            sensor=args.sensor,
            units=args.units or "",
            bands=args.bands,
            search=search or None,
            tile=args.tile,
            resolution=args.resolution,
            resampling=args.resampling,
            allow_reproject=args.allow_reproject,
            nodata=args.nodata,
            scale_factor=args.scale_factor,
            add_offset=args.add_offset,
            processing_baseline=args.processing_baseline,
            validity=_validity(args),
            use_scl=not args.no_scl,
            orbit=args.orbit,
            append=args.append,
            overwrite=args.overwrite,
            title=args.title,
            stats=stats,
        )
    elif args.layout == "s1-grd":
        output = "db" if args.db else "linear" if args.linear else "dn" if args.dn else "auto"
        units = ingest_s1_grd(
            args.scenes,
            args.store,
            group=args.group,
            polarisations=args.polarisations,
            crs=args.crs,
            resolution=args.resolution,
            resampling=args.resampling,
            output=output,  # type: ignore[arg-type]
            calibration_constant=args.calibration_constant,
            quantity=args.quantity,
            orbit=args.orbit,
            append=args.append,
            overwrite=args.overwrite,
            title=args.title,
            stats=stats,
        )
        if units == "DN":
            print(
                "note: no calibration found (no annotation/calibration/calibration-*.xml): the store holds "
                "uncalibrated DN, which the encoder refuses; re-ingest with --calibration-constant K --db, "
                "or from a product with its calibration files",
                file=sys.stderr,
            )
    elif args.layout == "npy":
        cube = _npy_cube(args)
        ingest_arrays(args.store, args.group, cube, args.append, args.overwrite, args.title, stats=stats)
    elif args.layout == "static":
        from spectravlm.data.ingest.static import ingest_static

        ingest_static(
            args.file,
            args.store,
            args.name,
            args.units,
            long_name=args.long_name,
            nodata=args.nodata,
            resampling=args.resampling,
        )
    return str(args.store)


def _axes_hint(shape: tuple[int, ...], axes: list[str], n_bands: int, n_dates: int) -> str:
    """A ``--axes`` order under which ``shape`` has ``n_bands`` bands and ``n_dates`` dates, if one exists."""
    from itertools import permutations

    for order in permutations("tcyx"):
        sizes = dict(zip(order, shape, strict=True))
        if sizes["c"] == n_bands and sizes["t"] == n_dates and order != tuple(axes):
            return f"; the array's shape fits --axes '{' '.join(order)}'"
    return ""


def _npy_cube(args: argparse.Namespace) -> SensorCube:
    """Build the :class:`SensorCube` that ``spectravlm data ingest npy`` arguments describe."""
    from pathlib import Path

    import numpy as np
    from einops import rearrange
    from rasterio.crs import CRS
    from rasterio.transform import from_bounds

    from spectravlm.data.ingest.dates import iso_time
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
    if sorted(axes) != ["c", "t", "x", "y"]:
        raise IngestError(f"--axes {args.axes!r}: expected the four letters t, c, y, x in the array's order")
    if array.ndim != 4:
        raise IngestError(
            f"{path}: array of {array.ndim} dims {array.shape}; expected 4 (--axes {args.axes!r})"
        )
    sizes = dict(zip(axes, array.shape, strict=True))
    if sizes["c"] != len(args.bands) or sizes["t"] != len(args.dates):
        raise IngestError(
            f"{path}: shape {array.shape} read with --axes '{args.axes}' has {sizes['c']} bands and "
            f"{sizes['t']} dates, but --bands names {len(args.bands)} and --dates {len(args.dates)}"
            + _axes_hint(array.shape, axes, len(args.bands), len(args.dates))
        )
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
    times = np.array([iso_time(d, f"--dates {d}") for d in args.dates])
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


_KEYWORD = re.compile(r"\b([a-z][a-z0-9_]*)=(True|False|None|\S+?)?(?=[\s,;)]|$)")


def cli_message(text: str, parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """Rewrite Python keywords in a library message (``allow_reproject=True``) as the command's flags."""
    flags: set[str] = set()
    for action in _subparser(parser, argv)._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))

    def repl(m: re.Match[str]) -> str:
        flag = "--" + m.group(1).replace("_", "-")
        if flag not in flags:
            return m.group(0)
        value = m.group(2)
        return flag if value in (None, "True", "") else f"{flag} {value}"

    out = _KEYWORD.sub(repl, text)
    return re.sub(r"(--[a-z-]+) \(\1\)", r"\1", out)  # "--overwrite (--overwrite)" -> "--overwrite"


def _subparser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The deepest sub-command parser that ``argv`` selects."""
    current = parser
    for token in argv:
        choices = None
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                choices = action.choices
        if choices is None or token not in choices:
            continue
        current = choices[token]
    return current


def data_main(argv: Sequence[str]) -> int:
    """Run ``spectravlm data ...``; returns the exit code."""
    parser = _data_parser()
    args = parser.parse_args(list(argv))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)
            warnings.showwarning = _show_warning
            return _dispatch(args)
    except SpectraVLMError as err:
        err.args = (cli_message(str(err), parser, argv), *err.args[1:])
        raise


def _show_warning(message: Warning | str, category: type[Warning], filename: str, *_: Any, **__: Any) -> None:
    """Print the library's own warnings (skipped files, border fill) as one line each."""
    if "spectravlm" in filename and issubclass(category, UserWarning):
        print(f"spectravlm: warning: {message}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from spectravlm.data.demo import write_demo_store

        write_demo_store(args.store, size=args.size, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote {args.store}")
        args.command = "info"
    if args.command == "info":
        from spectravlm.data.store import CubeStore

        print(CubeStore.open(args.store).summary())
    elif args.command == "verify":
        from spectravlm.data.validate import verify_store

        report = verify_store(args.store, progress=True)
        for problem in report.problems:
            print(f"CORRUPT {problem}")
        state = "OK" if report.ok else f"{len(report.problems)} corrupt"
        print(f"{report.path}: {report.arrays} arrays, {report.chunks} chunks read: {state}")
        return 0 if report.ok else 1
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
        path = _run_ingest(args)
        if path:
            from spectravlm.data.store import CubeStore

            print(CubeStore.open(path).summary())
    return 0
