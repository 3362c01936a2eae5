r"""``spectravlm ask``: one question about a window of a cube store, answered by a saved SpectraVLM.

::

    spectravlm ask STORE "What is the mean above-ground biomass?" --model runs/vlm \\
        --bbox 500000,6899680,500320,6900000 --dates 2021-06-01/2021-09-30 [--json]

The same from Python: :func:`ask` (and :func:`read_scene` for the window alone).

* ``--bbox minx,miny,maxx,maxy`` in the store's CRS (``--bbox-crs EPSG:4326`` for another CRS; for a
  store without georeference, pixel columns and rows). The window read is the smallest square of whole
  pixels that covers the box, moved inside the grid where it would cross its edge. Default: the whole
  grid (when it is square).
* ``--dates START/END`` (ISO dates, inclusive) keeps the acquisitions in that range; a sensor group
  without any date in it is left out. Default: every date.
* The window is read through the library's loader (:class:`~spectravlm.data.dataset.CubeDataset`),
  every group whose sensor the model's encoder takes (or ``--groups``).
* The question gets the image placeholder in front unless it writes one itself.
* ``--json`` prints ``{"text", "numbers", "window", "dates", "groups"}``; numbers are floats.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spectravlm.errors import DataConfigError

if TYPE_CHECKING:
    from spectravlm.stack import SensorStack
    from spectravlm.vlm.model import SpectraVLM


@dataclass
class SceneWindow:
    """Where a scene was read.

    Attributes:
        row: Top row of the window in the store's grid.
        col: Left column.
        size: Edge in pixels.
        bounds: ``(minx, miny, maxx, maxy)`` of the window in the store's CRS (pixel units without one).

    """

    row: int
    col: int
    size: int
    bounds: tuple[float, float, float, float]


@dataclass
class Answer:
    """An answer and what it was about.

    Attributes:
        text: The model's answer, numbers written from their values.
        numbers: The numbers of the answer as floats.
        window: The window read.
        dates: Per sensor group, the ISO dates given to the model.

    """

    text: str
    numbers: list[float]
    window: SceneWindow
    dates: dict[str, list[str]]

    def to_json(self) -> str:
        """The answer as one JSON object."""
        doc = asdict(self) | {"groups": list(self.dates)}
        return json.dumps(doc)


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not values[0] < values[2] or not values[1] < values[3]:
        raise DataConfigError(
            f"--bbox {text!r} is not 'minx,miny,maxx,maxy' with minx < maxx and miny < maxy"
        )
    return values[0], values[1], values[2], values[3]


def _parse_dates(text: str) -> tuple[np.datetime64, np.datetime64]:
    parts = text.split("/")
    try:
        start, end = (np.datetime64(p.strip(), "D") for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        start = end = None
    if start is None or end is None or end < start:
        raise DataConfigError(
            f"--dates {text!r} is not 'START/END' with ISO dates, START <= END (e.g. 2021-06-01/2021-09-30)"
        )
    return start, end


def _window(
    grid: object, bbox: tuple[float, float, float, float] | None, bbox_crs: str | None
) -> SceneWindow:
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    height, width = int(grid.height), int(grid.width)  # type: ignore[attr-defined]
    transform = grid.transform  # type: ignore[attr-defined]
    crs_wkt = grid.crs_wkt  # type: ignore[attr-defined]
    if bbox is None:
        if height != width:
            raise DataConfigError(f"the store's grid is {height}x{width} px, not square: give --bbox")
        r0, c0, size = 0, 0, height
    else:
        if bbox_crs is not None:
            if crs_wkt is None:
                raise DataConfigError(
                    "--bbox-crs needs a georeferenced store; this one has no CRS (give pixels)"
                )
            bbox = transform_bounds(CRS.from_user_input(bbox_crs), CRS.from_wkt(crs_wkt), *bbox)
        minx, miny, maxx, maxy = bbox
        cols, rows = zip(
            *(~transform @ (x, y) for x, y in ((minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy))),
            strict=True,
        )
        r0, r1 = max(math.floor(min(rows)), 0), min(math.ceil(max(rows)), height)
        c0, c1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)), width)
        if r1 <= r0 or c1 <= c0:
            raise DataConfigError(f"--bbox {bbox} lies outside the store's grid ({height}x{width} px)")
        size = max(r1 - r0, c1 - c0)
        if size > min(height, width):
            raise DataConfigError(f"--bbox needs a {size} px window; the grid is {height}x{width} px")
        r0, c0 = min(r0, height - size), min(c0, width - size)
    x0, y0 = transform @ (c0, r0)
    x1, y1 = transform @ (c0 + size, r0 + size)
    return SceneWindow(r0, c0, size, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))


def read_scene(
    store: str | Path,
    bbox: tuple[float, float, float, float] | None = None,
    bbox_crs: str | None = None,
    dates: tuple[np.datetime64, np.datetime64] | None = None,
    groups: Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
) -> tuple[SensorStack, SceneWindow]:
    """Read one window of a store as a batch of one scene (see the module docstring).

    Args:
        store: The cube store (path or URL).
        bbox: ``(minx, miny, maxx, maxy)``; ``None``: the whole (square) grid.
        bbox_crs: CRS of ``bbox`` when it is not the store's (``"EPSG:4326"``).
        dates: ``(start, end)`` inclusive; ``None``: every date.
        groups: Sensor groups to read (default: those whose sensor is in ``sensors``, else all).
        sensors: Catalogue sensors the model takes.

    Raises:
        DataConfigError: A box outside the grid, no date in range, no group the model takes.

    """
    from spectravlm.data.dataset import CubeDataset
    from spectravlm.data.store import CubeStore
    from spectravlm.data.windows import Window
    from spectravlm.stack import SensorStack

    opened = CubeStore.open(store)
    if groups is None:
        groups = [g for g, grp in opened.groups.items() if sensors is None or grp.sensor.name in sensors]
    if not groups:
        raise DataConfigError(f"{store} has no sensor group the model takes ({', '.join(sensors or [])})")
    window = _window(opened.grid, bbox, bbox_crs)
    ds = CubeDataset(
        [str(store)],
        groups=list(groups),
        window_size=window.size,
        windows=[Window(0, window.row, window.col, window.size)],
        empty_windows="mask",
        pool_slots=0,
    )
    stack = ds.read_batch([0])
    series = {}
    for name, s in stack.series.items():
        days = s.times[0].numpy().astype("datetime64[D]")
        keep = s.date_valid[0].numpy().copy()
        if dates is not None:
            keep &= (days >= dates[0]) & (days <= dates[1])
        index = np.flatnonzero(keep)
        if len(index):
            valid = s.valid[:, index]
            series[name] = replace(
                s,
                values=s.values[:, index],
                times=s.times[:, index],
                valid=valid,
                all_valid=bool(valid.all()),
            )
    if not series:
        span = "" if dates is None else f" between {dates[0]} and {dates[1]}"
        raise DataConfigError(
            f"the window {window} of {store} has no observed date{span} in groups {list(groups)}"
        )
    return SensorStack(series=series), window


def ask(
    model: SpectraVLM | str | Path,
    store: str | Path,
    question: str,
    bbox: tuple[float, float, float, float] | None = None,
    bbox_crs: str | None = None,
    dates: tuple[np.datetime64, np.datetime64] | str | None = None,
    groups: Sequence[str] | None = None,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float | None = None,
    seed: int | None = None,
    stop_strings: Sequence[str] | None = None,
) -> Answer:
    """Ask ``model`` (a SpectraVLM or a saved one's folder) one question about a window of ``store``."""
    import torch

    from spectravlm.vlm.model import SpectraVLM

    vlm = model if isinstance(model, SpectraVLM) else SpectraVLM.from_pretrained(model)
    span = _parse_dates(dates) if isinstance(dates, str) else dates
    scene, window = read_scene(store, bbox, bbox_crs, span, groups, vlm.encoder.config.sensors)
    token = vlm.config.image_token
    prompt = question if token in question else f"{token} {question}"
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    out = vlm.generate(
        scene, [prompt], max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
        top_p=top_p, stop_strings=stop_strings, generator=generator,
    )  # fmt: skip
    used = {
        g: [str(np.datetime64(int(d), "D")) for d in s.times[0].tolist()] for g, s in scene.series.items()
    }
    return Answer(text=out.texts[0].strip(), numbers=out.numbers[0], window=window, dates=used)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spectravlm ask",
        description="Ask a saved SpectraVLM one question about a window of a cube store.",
    )
    p.add_argument("store", help="cube store (path or URL)")
    p.add_argument("question", help="the question; '<image>' marks the scene (put in front when absent)")
    p.add_argument("--model", required=True, help="folder written by SpectraVLM.save_pretrained")
    p.add_argument("--bbox", default=None, help="minx,miny,maxx,maxy (default: whole grid)")
    p.add_argument("--bbox-crs", default=None, help="CRS of --bbox when not the store's, e.g. EPSG:4326")
    p.add_argument("--dates", default=None, help="START/END ISO dates, inclusive")
    p.add_argument(
        "--groups", default=None, help="comma-separated sensor groups (default: all the model takes)"
    )
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print the answer and its numbers as JSON")
    return p


def ask_main(argv: Sequence[str]) -> int:
    """Run ``spectravlm ask ...``; returns the exit code."""
    args = _parser().parse_args(list(argv))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    answer = ask(
        args.model,
        args.store,
        args.question,
        bbox=None if args.bbox is None else _parse_bbox(args.bbox),
        bbox_crs=args.bbox_crs,
        dates=None if args.dates is None else _parse_dates(args.dates),
        groups=None if args.groups is None else [g.strip() for g in args.groups.split(",") if g.strip()],
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        stop_strings=args.stop,
    )
    print(answer.to_json() if args.json else answer.text)
    return 0
