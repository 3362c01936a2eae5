"""The ``spectravlm`` command.

``spectravlm data ...`` holds the data commands (demo store, ingest, statistics, info). Training
subcommands (``fit``, ``validate``, ``test``, ``predict``) go through LightningCLI and are added with the
pretraining task.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spectravlm.errors import SpectraVLMError


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
    stats.add_argument("--cloud-threshold", type=float, default=50.0, help="cloud probability cut (default 50)")

    ingest = sub.add_parser("ingest", help="ingest rasters into a store")
    isub = ingest.add_subparsers(dest="layout", required=True)
    bm = isub.add_parser("biomassters", help="a BioMassters chip (monthly *_S1_MM.tif, *_S2_MM.tif, *_agbm.tif)")
    bm.add_argument("chip_dir")
    bm.add_argument("store")
    bm.add_argument("--chip-id", default=None, help="chip id (inferred when the folder holds one chip)")
    bm.add_argument("--start-year", type=int, default=2020, help="year of month 00 (September)")
    bm.add_argument("--allow-missing", action="store_true", help="skip absent months instead of failing")
    bm.add_argument("--overwrite", action="store_true", help="replace an existing store")
    bm.add_argument("--no-stats", action="store_true", help="skip the statistics pass")
    return parser


def data_main(argv: Sequence[str]) -> int:
    """Run ``spectravlm data ...``; returns the exit code."""
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
        if args.layout == "biomassters":
            from spectravlm.data.ingest import ingest_biomassters
            from spectravlm.data.stats import compute_stats

            ingest_biomassters(
                args.chip_dir,
                args.store,
                chip_id=args.chip_id,
                start_year=args.start_year,
                allow_missing=args.allow_missing,
                overwrite=args.overwrite,
            )
            if not args.no_stats:
                compute_stats(args.store)
        from spectravlm.data.store import CubeStore

        print(CubeStore.open(args.store).summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spectravlm`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: spectravlm data {demo,info,stats,ingest} ...\n\nRun `spectravlm data -h` for details.")
        return 0
    try:
        if argv[0] == "data":
            return data_main(argv[1:])
        print(f"spectravlm: unknown command {argv[0]!r}; known: data", file=sys.stderr)
        return 2
    except SpectraVLMError as err:
        print(f"spectravlm: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
