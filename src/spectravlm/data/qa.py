"""Instruction data from cube stores: templated questions about windows, answered from the stores themselves.

A record (one line of a JSONL file, the format in ``docs/vlm.md``) is a conversation about one *scene*: a
square window of a store, read over a date range, and a *region* of it (the whole window or a sub-window) that
the question names. Numbers are written plainly in the text (``152.3 t/ha``); the exact value the answer
states, its quantity and units are kept beside the text (``answer``), for metrics::

    {"id": "demo-r0-00032-00064-q3", "store": "demo.zarr", "split": "train", "type": "agb_mean",
     "window": {"row": 32, "col": 64, "size": 32},
     "region": {"row": 32, "col": 64, "height": 16, "width": 16},
     "bbox": [500640.0, 6899520.0, 500800.0, 6899680.0],
     "dates": ["2021-09-01", "2022-08-31"], "groups": ["s2", "s1"],
     "conversation": [
        {"role": "user",
         "content": "<image> What is the mean above-ground biomass in the north-west quarter of the scene?"},
        {"role": "assistant",
         "content": "The mean above-ground biomass in the north-west quarter of the scene is 152.3 t/ha."}],
     "answer": {"quantity": "agb", "units": "t/ha", "value": 152.3412, "text": "152.3"}}

:func:`generate_qa` writes such records for every window of one or many stores, split into train/val/test by
the same spatial blocks as regression (:func:`~spectravlm.data.windows.split_windows` over the windows that
:class:`~spectravlm.data.datamodule.CubeDataModule` makes for the same stores, window size, block size,
fractions and seed), deterministically for a seed. The question types are :data:`QUESTION_TYPES`, each with
several phrasings. Every answer is computed here from the store's arrays (numpy, float64, stored as float32),
by the definitions of the scene statistics of :mod:`spectravlm.vlm.experts`:

* ``agb_*``: the target over the region's finite pixels (mean, max, percentile, share above a threshold);
* ``cloud_share``: percent of the region's Sentinel-2 pixel observations over the scene's dates that are not
  clear (cloud probability at or above the store's threshold, or nodata);
* ``clear_dates``: the scene's Sentinel-2 dates whose cloud share in the region is below 10 %;
* ``valid_dates``: the scene's dates of a sensor with at least one valid pixel in the region;
* ``backscatter_level``: the mean dB value of a polarisation over the valid region pixels of every date;
* ``ndvi_change`` / ``backscatter_change``: the mean change from the scene's first to its last date of that
  sensor, over the region pixels valid on both.

The JSONL is written only when every record was made (one atomic write): a request the stores cannot answer
(a target they lack, a window outside them) writes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spectravlm.data.dataset import DEFAULT_CLOUD_THRESHOLD, CubeDataset
from spectravlm.data.stats import valid_pixels
from spectravlm.data.store import CubeStore, Grid
from spectravlm.data.windows import SPLITS, Window, auto_block_size, split_windows
from spectravlm.errors import DataConfigError
from spectravlm.io import OutputExistsError, atomic_write_text

# ---- question types ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionType:
    """A kind of question: the quantity its answer states, in which units, written with how many decimals.

    Attributes:
        name: The type's name (``agb_mean``).
        quantity: The quantity of the answer (``agb``, ``cloud_share``, ``valid_dates``, ``backscatter``,
            ``ndvi``, ``dates``); the number experts of the same quantity must state the same units.
        units: Units of the answer's value (``""`` for a list of dates).
        decimals: Decimals of the value in the answer's text.
        needs: What the store must hold: ``target`` (the regression target), ``optical``, ``sar``.

    """

    name: str
    quantity: str
    units: str
    decimals: int
    needs: str


QUESTION_TYPES: dict[str, QuestionType] = {
    t.name: t
    for t in (
        QuestionType("agb_mean", "agb", "t/ha", 1, "target"),
        QuestionType("agb_max", "agb", "t/ha", 1, "target"),
        QuestionType("agb_percentile", "agb", "t/ha", 1, "target"),
        QuestionType("agb_share_above", "agb_share", "%", 1, "target"),
        QuestionType("ndvi_change", "ndvi", "1", 3, "optical"),
        QuestionType("backscatter_change", "backscatter", "dB", 2, "sar"),
        QuestionType("backscatter_level", "backscatter", "dB", 2, "sar"),
        QuestionType("cloud_share", "cloud_share", "%", 1, "optical"),
        QuestionType("clear_dates", "dates", "", 0, "optical"),
        QuestionType("valid_dates", "valid_dates", "count", 0, "any"),
    )
}
"""The question types of the generator (:data:`QUESTION_TYPES` keys are the record ``type`` field)."""

AGB_UNITS = ("t/ha", "t ha-1", "Mg/ha", "Mg ha-1")
"""Spellings of the AGB target's units that AGB questions (in t/ha) accept: a tonne is a megagram."""
CLEAR_SHARE = 10.0
"""A date is clear in a region when under this percent of its pixels are not clear."""
MIN_COVER = 0.5
"""Share of a region's pixels that must hold a value (target, or valid on both dates of a change)."""
SENSOR_NAMES = {"optical": "Sentinel-2", "sar": "Sentinel-1"}

# Regions a question can name: the whole window, its quarters and its centre (fractions of the window).
REGIONS: dict[str, tuple[float, float, float, str]] = {
    "whole": (0.0, 0.0, 1.0, "the scene"),
    "nw": (0.0, 0.0, 0.5, "the north-west quarter of the scene"),
    "ne": (0.0, 0.5, 0.5, "the north-east quarter of the scene"),
    "sw": (0.5, 0.0, 0.5, "the south-west quarter of the scene"),
    "se": (0.5, 0.5, 0.5, "the south-east quarter of the scene"),
    "centre": (0.25, 0.25, 0.5, "the centre of the scene"),
}

# (question, answer) phrasings per type; {where} = "in <area>", {area} = "<area>", {v} = the value.
PHRASINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "agb_mean": (
        (
            "What is the mean above-ground biomass {where}?",
            "The mean above-ground biomass {where} is {v} t/ha.",
        ),
        (
            "How much above-ground biomass is there {where} on average, in t/ha?",
            "On average there is {v} t/ha.",
        ),
        ("Estimate the average AGB {where}.", "The average AGB {where} is {v} t/ha."),
    ),
    "agb_max": (
        (
            "What is the highest above-ground biomass {where}?",
            "The highest above-ground biomass is {v} t/ha.",
        ),
        ("What is the maximum AGB {where}, in t/ha?", "The maximum AGB {where} is {v} t/ha."),
    ),
    "agb_percentile": (
        (
            "What is the {q}th percentile of above-ground biomass {where}?",
            "The {q}th percentile is {v} t/ha.",
        ),
        ("Below which AGB do {q}% of the pixels {where} fall?", "They fall below {v} t/ha."),
    ),
    "agb_share_above": (
        ("What share of {area} has above-ground biomass above {thr} t/ha?", "{v}% of it is above that."),
        ("Which percentage of the pixels {where} exceed {thr} t/ha of AGB?", "{v}% of the pixels do."),
    ),
    "ndvi_change": (
        ("How much did the NDVI {where} change between {d1} and {d2}?", "The NDVI changed by {v}."),
        ("What is the NDVI difference {where} from {d1} to {d2}?", "The NDVI difference is {v}."),
    ),
    "backscatter_change": (
        (
            "How much did the Sentinel-1 {pol} backscatter {where} change between {d1} and {d2}?",
            "It changed by {v} dB.",
        ),
        (
            "What is the change of {pol} backscatter {where} from {d1} to {d2}, in dB?",
            "The {pol} backscatter changed by {v} dB.",
        ),
    ),
    "backscatter_level": (
        ("What is the mean Sentinel-1 {pol} backscatter {where}?", "The mean {pol} backscatter is {v} dB."),
        ("How strong is the {pol} backscatter {where} on average?", "On average it is {v} dB."),
    ),
    "cloud_share": (
        ("What share of {area} is covered by clouds from {d1} to {d2}?", "{v}% of it is cloudy."),
        ("How cloudy are the Sentinel-2 images of {area} between {d1} and {d2}?", "Clouds cover {v}% of it."),
    ),
    "clear_dates": (
        ("Which Sentinel-2 dates are clear {where} between {d1} and {d2}?", "The clear dates are {dates}."),
        ("On which dates from {d1} to {d2} is {area} free of clouds?", "It is clear on {dates}."),
    ),
    "valid_dates": (
        ("On how many dates does {sensor} observe {area}?", "{sensor} observes it on {v} dates."),
        ("How many valid {sensor} dates are there {where}?", "There are {v} valid dates."),
    ),
}
NO_CLEAR_DATE = "No date is clear."

# ---- records -------------------------------------------------------------------------------------------


@dataclass
class QARecord:
    """One conversation about a scene (a line of the JSONL; see the module docstring).

    Attributes:
        id: A unique name.
        store: The cube store (path or URL; a relative path is relative to the JSONL file's folder).
        type: The question type (a key of :data:`QUESTION_TYPES`, or ``custom`` for hand-written records).
        window: ``{"row", "col", "size"}`` of the scene in store pixels.
        region: ``{"row", "col", "height", "width"}`` in store pixels, inside the window: what the question
            asks about.
        dates: ``[start, end]`` ISO dates, inclusive: the scene holds every acquisition in this range.
        groups: The sensor groups of the scene, in the store's order.
        conversation: Turns ``{"role": "user" | "assistant", "content": ...}``; the user's first turn writes
            ``<image>`` where the scene goes; the loss is on the last assistant turn.
        answer: ``{"quantity", "units", "value", "text"}`` (or ``"dates"`` for lists of dates): what the last
            answer states, exactly.
        split: ``train``, ``val`` or ``test``.
        bbox: The region's ``[minx, miny, maxx, maxy]`` in the store's CRS (pixels without one).

    """

    id: str
    store: str
    type: str
    window: dict[str, int]
    region: dict[str, int]
    dates: list[str]
    groups: list[str]
    conversation: list[dict[str, str]]
    answer: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    bbox: list[float] = field(default_factory=list)

    @property
    def question(self) -> str:
        """The last user turn."""
        return [t["content"] for t in self.conversation if t["role"] == "user"][-1]

    @property
    def reply(self) -> str:
        """The last assistant turn (the answer trained on)."""
        return [t["content"] for t in self.conversation if t["role"] == "assistant"][-1]

    def to_json(self) -> str:
        """The record as one JSON line."""
        return json.dumps(asdict(self), ensure_ascii=False)


_REQUIRED = ("id", "store", "type", "window", "dates", "groups", "conversation")


def parse_record(doc: Any, where: str) -> QARecord:
    """Check the shape of one JSON record and build it (``region`` defaults to the window).

    Raises:
        DataConfigError: A missing or malformed field, naming ``where`` (file and line).

    """
    if not isinstance(doc, dict):
        raise DataConfigError(f"{where}: a record must be a JSON object; got {type(doc).__name__}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise DataConfigError(
            f"{where}: record lacks {missing}; a record has {list(_REQUIRED)} (+ region, answer)"
        )
    known = set(QARecord.__dataclass_fields__)
    unknown = sorted(set(doc) - known)
    if unknown:
        raise DataConfigError(f"{where}: unknown record fields {unknown}; known: {sorted(known)}")
    window = doc["window"]
    if not (isinstance(window, dict) and all(isinstance(window.get(k), int) for k in ("row", "col", "size"))):
        raise DataConfigError(f"{where}: window must be {{row, col, size}} in pixels; got {window!r}")
    region = doc.get("region") or {
        "row": window["row"], "col": window["col"], "height": window["size"], "width": window["size"],
    }  # fmt: skip
    if not all(isinstance(region.get(k), int) for k in ("row", "col", "height", "width")):
        raise DataConfigError(
            f"{where}: region must be {{row, col, height, width}} in pixels; got {region!r}"
        )
    r0, c0, size = window["row"], window["col"], window["size"]
    if not (
        r0 <= region["row"]
        and c0 <= region["col"]
        and region["height"] > 0
        and region["width"] > 0
        and region["row"] + region["height"] <= r0 + size
        and region["col"] + region["width"] <= c0 + size
    ):
        raise DataConfigError(f"{where}: region {region} is not inside window {window}")
    dates = doc["dates"]
    try:
        start, end = (np.datetime64(d, "D") for d in dates)
    except (TypeError, ValueError) as err:
        raise DataConfigError(f"{where}: dates must be [start, end] ISO dates; got {dates!r}") from err
    if end < start:
        raise DataConfigError(f"{where}: dates {dates} end before they start")
    turns = doc["conversation"]
    if (
        not isinstance(turns, list)
        or not turns
        or any(not isinstance(t, dict) or t.get("role") not in ("user", "assistant") for t in turns)
        or turns[-1].get("role") != "assistant"
        or not any(t["role"] == "user" for t in turns)
    ):
        raise DataConfigError(
            f"{where}: conversation must be a list of {{role: user|assistant, content}} turns ending "
            f"with the "
            "assistant's answer"
        )
    if not isinstance(doc["groups"], list) or not doc["groups"]:
        raise DataConfigError(f"{where}: groups must be a non-empty list of sensor groups")
    qtype = doc["type"]
    if qtype != "custom" and qtype not in QUESTION_TYPES:
        raise DataConfigError(
            f"{where}: type {qtype!r} is not known; known: {', '.join(QUESTION_TYPES)}, custom"
        )
    answer = doc.get("answer") or {}
    if qtype in QUESTION_TYPES:
        spec = QUESTION_TYPES[qtype]
        units = answer.get("units")
        if units is not None and not _same_answer_units(spec, str(units)):
            raise DataConfigError(
                f"{where}: a {qtype} answer is in {spec.units!r}; this record says {units!r}"
            )
    return QARecord(
        id=str(doc["id"]),
        store=str(doc["store"]),
        type=str(qtype),
        window=dict(window),
        region=dict(region),
        dates=[str(d) for d in dates],
        groups=[str(g) for g in doc["groups"]],
        conversation=[{"role": t["role"], "content": str(t.get("content", ""))} for t in turns],
        answer=dict(answer),
        split=str(doc.get("split", "train")),
        bbox=[float(v) for v in doc.get("bbox") or []],
    )


def _same_answer_units(spec: QuestionType, units: str) -> bool:
    if spec.quantity == "agb":
        return units in AGB_UNITS
    return units == spec.units


def read_qa(path: str | os.PathLike[str]) -> list[QARecord]:
    """Read and check the shape of every record of a JSONL file (store contents: :func:`check_records`).

    Raises:
        DataConfigError: A missing file, a line that is not JSON, a malformed record (naming the line).

    """
    file = Path(path)
    if not file.is_file():
        raise DataConfigError(f"{file}: no such instruction file")
    out = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataConfigError(f"{file}:{n}: not JSON: {err}") from err
        out.append(parse_record(doc, f"{file}:{n}"))
    if not out:
        raise DataConfigError(f"{file}: no record")
    ids = [r.id for r in out]
    twice = sorted({i for i in ids if ids.count(i) > 1})[:5]
    if twice:
        raise DataConfigError(f"{file}: record ids must be unique; repeated: {twice}")
    return out


def store_path(record: QARecord, root: Path | None) -> str:
    """The record's store as a path to open (relative paths are relative to ``root``, the JSONL's folder)."""
    if "://" in record.store or Path(record.store).is_absolute() or root is None:
        return record.store
    return str(root / record.store)


def check_records(records: Sequence[QARecord], root: Path | None, where: str) -> None:
    """Check every record against its store: groups, window inside the grid, the target AGB questions need.

    Raises:
        DataConfigError: Naming the record and what its store lacks.

    """
    stores: dict[str, CubeStore] = {}
    for record in records:
        path = store_path(record, root)
        if path not in stores:
            try:
                stores[path] = CubeStore.open(path)
            except Exception as err:
                raise DataConfigError(f"{where}: record {record.id!r}: store {path}: {err}") from err
        store = stores[path]
        missing = [g for g in record.groups if g not in store.groups]
        if missing:
            raise DataConfigError(
                f"{where}: record {record.id!r} reads groups {missing}, which {path} lacks; its groups: "
                f"{', '.join(store.groups)}"
            )
        grid = store.grid
        w = record.window
        if (
            w["row"] < 0
            or w["col"] < 0
            or w["row"] + w["size"] > grid.height
            or w["col"] + w["size"] > grid.width
        ):
            raise DataConfigError(
                f"{where}: record {record.id!r}: window {w} lies outside {path}'s grid of "
                f"{grid.height}x{grid.width} px"
            )
        spec = QUESTION_TYPES.get(record.type)
        if spec is not None and spec.needs == "target":
            target = _target_name(record)
            if target not in store.targets:
                raise DataConfigError(
                    f"{where}: record {record.id!r} asks about target {target!r}, which {path} lacks; its "
                    f"targets: {', '.join(store.targets) or '(none)'}"
                )


def _target_name(record: QARecord) -> str:
    return str(record.answer.get("target", "agb"))


# ---- reading a window's arrays ---------------------------------------------------------------------------


@dataclass
class _GroupWindow:
    """One sensor group over one window, every date: what the answers are computed from."""

    name: str
    kind: str
    bands: tuple[str, ...]
    days: np.ndarray  # (T,) datetime64[D]
    values: np.ndarray  # (T, C, H, W) float64 physical values (SAR in dB)
    valid: np.ndarray  # (T, H, W) bool


def _read_group(store: CubeStore, name: str, window: Window) -> _GroupWindow:
    g = store[name]
    rows, cols = window.slices()
    raw = g.read((slice(None), slice(None), rows, cols))
    cloud = g.read_cloud((slice(None), rows, cols))
    mask = g.read_mask((slice(None), rows, cols))
    threshold = float(g.zgroup.attrs.get("cloud_threshold", DEFAULT_CLOUD_THRESHOLD))  # type: ignore[arg-type]
    valid = np.zeros((len(raw), *raw.shape[2:]), dtype=bool)
    for t in range(len(raw)):  # the loader's rule: nodata, non-finite, cloud probability, quality mask
        valid[t] = valid_pixels(
            raw[t],
            g.nodata,
            None if cloud is None else cloud[t],
            threshold,
            None if mask is None else mask[t],
        )
    values = raw.astype(np.float64) * g.scale_factor + g.add_offset
    units = g.units.strip().lower()
    if g.sensor.kind == "sar" and units.startswith("linear"):
        with np.errstate(divide="ignore", invalid="ignore"):
            values = 10.0 * np.log10(np.maximum(values, 1e-10))
    return _GroupWindow(name, g.sensor.kind, g.bands, g.times.astype("datetime64[D]"), values, valid)


def _f32(x: float) -> float:
    return float(np.float32(x))


def _fmt(value: float, decimals: int) -> str:
    text = f"{round(value, decimals):.{decimals}f}"
    return "0" + ("." + "0" * decimals if decimals else "") if float(text) == 0 else text


def _fmt_dates(days: Sequence[str]) -> str:
    return days[0] if len(days) == 1 else ", ".join(days[:-1]) + " and " + days[-1]


# ---- answers (numpy, the definitions of the module docstring) ---------------------------------------------


def _in_range(g: _GroupWindow, start: np.datetime64, end: np.datetime64) -> np.ndarray:
    return np.flatnonzero((g.days >= start) & (g.days <= end))


def answer_agb(kind: str, agb: np.ndarray, region: np.ndarray, param: float | None = None) -> float | None:
    """An AGB answer over the region's finite target pixels (``None`` under :data:`MIN_COVER`)."""
    values = agb[region]
    values = values[np.isfinite(values)].astype(np.float64)
    if values.size < MIN_COVER * region.sum():
        return None
    if kind == "agb_mean":
        return _f32(values.mean())
    if kind == "agb_max":
        return _f32(values.max())
    if kind == "agb_percentile":
        return _f32(np.percentile(values, float(param or 50)))
    if kind == "agb_share_above":
        return _f32(100.0 * (values > float(param or 0)).mean())
    raise DataConfigError(f"not an AGB question type: {kind}")


def answer_cloud_share(g: _GroupWindow, dates: np.ndarray, region: np.ndarray) -> float | None:
    """Percent of the region's pixel observations on ``dates`` that are not clear."""
    if not len(dates):
        return None
    clear = g.valid[dates][:, region]
    return _f32(100.0 * (1.0 - clear.mean()))


def answer_valid_dates(g: _GroupWindow, dates: np.ndarray, region: np.ndarray) -> float:
    """How many of ``dates`` have a valid pixel in the region."""
    return float(sum(bool(g.valid[t][region].any()) for t in dates))


def answer_backscatter_level(
    g: _GroupWindow, dates: np.ndarray, region: np.ndarray, band: str
) -> float | None:
    """Mean dB of ``band`` over the valid region pixels of ``dates``."""
    b = g.bands.index(band)
    mask = g.valid[dates] & region
    if not mask.any():
        return None
    return _f32(g.values[dates, b][mask].mean())


def _change(
    g: _GroupWindow, x: np.ndarray, dates: np.ndarray, region: np.ndarray, ok: np.ndarray
) -> float | None:
    if len(dates) < 2:
        return None
    first, last = dates[0], dates[-1]
    mask = ok[first] & ok[last] & region
    if mask.sum() < MIN_COVER * region.sum():
        return None
    return _f32((x[last][mask] - x[first][mask]).mean())


def answer_ndvi_change(g: _GroupWindow, dates: np.ndarray, region: np.ndarray) -> float | None:
    """Mean NDVI change from the first to the last of ``dates`` over region pixels valid on both."""
    red, nir = g.values[:, g.bands.index("B04")], g.values[:, g.bands.index("B08")]
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = np.where(total > 0, (nir - red) / np.where(total > 0, total, 1.0), 0.0)
    return _change(g, ndvi, dates, region, g.valid & (total > 0))


def answer_backscatter_change(
    g: _GroupWindow, dates: np.ndarray, region: np.ndarray, band: str
) -> float | None:
    """Mean dB change of ``band`` from the first to the last of ``dates`` over region pixels valid on both."""
    return _change(g, g.values[:, g.bands.index(band)], dates, region, g.valid)


def answer_clear_dates(g: _GroupWindow, dates: np.ndarray, region: np.ndarray) -> list[str]:
    """The ``dates`` whose cloud share in the region is under :data:`CLEAR_SHARE` percent."""
    return [str(g.days[t]) for t in dates if 100.0 * (1.0 - g.valid[t][region].mean()) < CLEAR_SHARE]


# ---- the generator ----------------------------------------------------------------------------------------


@dataclass
class QASummary:
    """What :func:`generate_qa` wrote: records per split and per type, windows per split, the block size."""

    path: Path
    records: dict[str, int]
    types: dict[str, int]
    windows: dict[str, int]
    block_size: int


def qa_windows(
    stores: Sequence[str],
    groups: Sequence[str],
    targets: Sequence[str],
    window_size: int,
    block_size: int | None,
    split_fractions: tuple[float, float, float],
    seed: int,
) -> tuple[dict[str, list[Window]], int]:
    """The windows of each split, exactly as :class:`CubeDataModule` makes them for the same arguments.

    Returns:
        ``({split: windows}, block_size)``; windows without data (no valid pixel, or no finite target when
        ``targets`` are given) are left out, as the data module's ``empty_windows="skip"`` does.

    """
    full = CubeDataset(
        list(stores), groups=list(groups), targets=list(targets), window_size=window_size,
        empty_windows="mask", pool_slots=0,
    )  # fmt: skip
    if block_size is None:
        block_size = auto_block_size([(r.height, r.width) for r in full.regions], window_size)
    if block_size % window_size:
        raise DataConfigError(f"block_size {block_size} must be a multiple of window_size {window_size}")
    splits = split_windows(full.windows, block_size, split_fractions, seed)
    return {name: [w for w in splits[name] if full.has_data(w)] for name in SPLITS}, block_size


def generate_qa(
    stores: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    window_size: int = 32,
    per_window: int = 8,
    types: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    target: str = "agb",
    block_size: int | None = None,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    overwrite: bool = False,
) -> QASummary:
    """Write question/answer records about every window of ``stores`` to the JSONL file ``out``.

    Args:
        stores: Cube stores (regions), sharing their sensor groups.
        out: The JSONL file to write (atomically; an existing file only with ``overwrite``).
        window_size: Scene window edge in pixels.
        per_window: Records per window (types dealt in a seeded order, so each window gets a mix).
        types: Question types to ask (default: every type the stores can answer).
        groups: Sensor groups of the scenes (default: every group of the first store).
        target: The AGB target layer.
        block_size: Edge of the split blocks (default: as :class:`CubeDataModule`, at least 4 x 4 blocks).
        split_fractions: Train, val, test fractions of the blocks.
        seed: Seed of the split (as the data module's) and of the questions.
        overwrite: Replace an existing ``out``.

    Raises:
        DataConfigError: Unknown types, a target the stores lack for AGB types, groups they lack.
        OutputExistsError: ``out`` exists and ``overwrite`` is off.

    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    paths = [os.fspath(s) for s in stores]
    if not paths:
        raise DataConfigError("give at least one store")
    opened = [CubeStore.open(p) for p in paths]
    chosen = list(groups or opened[0].groups)
    for p, s in zip(paths, opened, strict=True):
        lack = [g for g in chosen if g not in s.groups]
        if lack:
            raise DataConfigError(f"{p} has no sensor group {lack}; its groups: {', '.join(s.groups)}")
    kinds = {opened[0][g].sensor.kind for g in chosen}
    has_target = all(target in s.targets for s in opened)
    for p, s in zip(paths, opened, strict=True):
        if target in s.targets:
            units = str(s.targets[target].attrs.get("units", ""))
            if units not in AGB_UNITS and (
                types is None
                or any(QUESTION_TYPES[t].needs == "target" for t in types if t in QUESTION_TYPES)
            ):
                raise DataConfigError(
                    f"{p}: target {target!r} is in {units!r}; AGB questions are asked in t/ha (accepted: "
                    f"{', '.join(AGB_UNITS)})"
                )
    if types is None:
        asked = [
            t.name for t in QUESTION_TYPES.values()
            if (t.needs == "target" and has_target) or t.needs == "any" or t.needs in kinds
        ]  # fmt: skip
    else:
        unknown = [t for t in types if t not in QUESTION_TYPES]
        if unknown:
            raise DataConfigError(
                f"question types {unknown} are not known; known: {', '.join(QUESTION_TYPES)}"
            )
        asked = list(types)
        for t in asked:
            need = QUESTION_TYPES[t].needs
            if need == "target" and not has_target:
                lacking = [p for p, s in zip(paths, opened, strict=True) if target not in s.targets]
                raise DataConfigError(
                    f"{t} questions need the target {target!r}, which {', '.join(lacking)} lack(s); "
                    f"their targets: "
                    f"{', '.join(sorted({n for s in opened for n in s.targets})) or '(none)'}"
                )
            if need in ("optical", "sar") and need not in kinds:
                raise DataConfigError(
                    f"{t} questions need a {SENSOR_NAMES[need]} group; the groups are {chosen}"
                )
    if "ndvi_change" in asked and not {"B04", "B08"} <= set(_first_of(opened[0], chosen, "optical") or ()):
        if types is not None:
            raise DataConfigError("ndvi_change questions need bands B04 and B08 in the Sentinel-2 group")
        asked.remove("ndvi_change")
    if not asked or per_window < 1:
        raise DataConfigError(f"nothing to ask: types {asked}, per_window {per_window}")
    splits, block = qa_windows(
        paths, chosen, [target] if has_target else [], window_size, block_size, split_fractions, seed
    )
    root = out.absolute().parent
    lines: list[str] = []
    counts = {name: 0 for name in SPLITS}
    by_type = {t: 0 for t in asked}
    for split in SPLITS:
        for w in splits[split]:
            store = opened[w.region]
            data = {g: _read_group(store, g, w) for g in chosen}
            agb = None
            if has_target:
                agb = np.asarray(store.targets[target][w.slices()], dtype=np.float32)
            rng = np.random.default_rng([seed, w.region, w.row, w.col])
            shown = _relative(paths[w.region], root)
            for k, record in enumerate(_window_records(data, agb, asked, per_window, rng, w, store.grid)):
                record.id = f"{Path(paths[w.region]).stem}-r{w.region}-{w.row:05d}-{w.col:05d}-q{k}"
                record.store, record.split = shown, split
                record.answer["target"] = (
                    target if record.answer.get("quantity") in ("agb", "agb_share") else None
                )
                record.answer = {k2: v for k2, v in record.answer.items() if v is not None}
                lines.append(record.to_json())
                counts[split] += 1
                by_type[record.type] += 1
    if not lines:
        raise DataConfigError(f"no window of {paths} could be asked about ({window_size} px windows)")
    atomic_write_text("\n".join(lines) + "\n", out)
    windows = {name: len(splits[name]) for name in SPLITS}
    return QASummary(out, counts, by_type, windows, block)


def _first_of(store: CubeStore, groups: Sequence[str], kind: str) -> tuple[str, ...] | None:
    for g in groups:
        if store[g].sensor.kind == kind:
            return store[g].bands
    return None


def _relative(path: str, root: Path) -> str:
    if "://" in path:
        return path
    try:
        return os.path.relpath(Path(path).absolute(), root)
    except ValueError:  # another drive (Windows)
        return str(Path(path).absolute())


def _window_records(
    data: dict[str, _GroupWindow],
    agb: np.ndarray | None,
    types: Sequence[str],
    n: int,
    rng: np.random.Generator,
    window: Window,
    grid: Grid,
) -> list[QARecord]:
    """Up to ``n`` records about one window (types dealt in a shuffled cycle; inapplicable ones skipped)."""
    order = [types[i] for i in rng.permutation(len(types))]
    out: list[QARecord] = []
    tries = 0
    while len(out) < n and tries < 4 * n + 4 * len(types):
        qtype = order[tries % len(order)]
        tries += 1
        record = _make(qtype, data, agb, rng, window, grid)
        if record is not None:
            out.append(record)
    return out


def _make(
    qtype: str,
    data: dict[str, _GroupWindow],
    agb: np.ndarray | None,
    rng: np.random.Generator,
    window: Window,
    grid: Grid,
) -> QARecord | None:
    """One record of type ``qtype`` about the window, or ``None`` when the window cannot answer it."""
    spec = QUESTION_TYPES[qtype]
    size = window.size
    name = str(rng.choice(list(REGIONS))) if rng.random() < 0.5 else "whole"
    fr, fc, fs, area = REGIONS[name]
    r0, c0, side = int(fr * size), int(fc * size), max(1, int(fs * size))
    region = np.zeros((size, size), dtype=bool)
    region[r0 : r0 + side, c0 : c0 + side] = True
    optical = next((g for g in data.values() if g.kind == "optical"), None)
    sar = next((g for g in data.values() if g.kind == "sar"), None)
    all_days = np.concatenate([g.days for g in data.values()])
    start, end = all_days.min(), all_days.max()
    slots: dict[str, str] = {"area": area, "where": f"in {area}"}
    value: float | None = None
    listed: list[str] | None = None
    phrasing = int(rng.integers(len(PHRASINGS[qtype])))
    if spec.needs == "target":
        if agb is None:
            return None
        param: float | None = None
        if qtype == "agb_percentile":
            param = float(rng.choice([10, 50, 90]))
            slots["q"] = str(int(param))
        elif qtype == "agb_share_above":
            param = float(rng.choice([50, 100, 150, 200]))
            slots["thr"] = str(int(param))
        value = answer_agb(qtype, agb, region, param)
    elif qtype in ("ndvi_change", "backscatter_change"):
        g = optical if qtype == "ndvi_change" else sar
        if g is None or len(g.days) < 2:
            return None
        band = None if qtype == "ndvi_change" else str(rng.choice([b for b in ("VV", "VH") if b in g.bands]))
        i, j = sorted(rng.choice(len(g.days), size=2, replace=False).tolist())
        start, end = g.days[i], g.days[j]
        dates = _in_range(g, start, end)
        if qtype == "ndvi_change":
            value = answer_ndvi_change(g, dates, region)
        else:
            assert band is not None
            value = answer_backscatter_change(g, dates, region, band)
            slots["pol"] = band
        slots |= {"d1": str(start), "d2": str(end)}
    elif qtype == "backscatter_level":
        if sar is None:
            return None
        band = str(rng.choice([b for b in ("VV", "VH") if b in sar.bands]))
        value = answer_backscatter_level(sar, _in_range(sar, start, end), region, band)
        slots["pol"] = band
    elif qtype in ("cloud_share", "clear_dates"):
        if optical is None or not len(optical.days):
            return None
        k = (
            int(rng.integers(1, min(4, len(optical.days)) + 1))
            if qtype == "cloud_share"
            else len(optical.days)
        )
        i = int(rng.integers(0, len(optical.days) - k + 1))
        start, end = optical.days[i], optical.days[i + k - 1]
        dates = _in_range(optical, start, end)
        if qtype == "cloud_share":
            value = answer_cloud_share(optical, dates, region)
        else:
            listed = answer_clear_dates(optical, dates, region)
        slots |= {"d1": str(start), "d2": str(end)}
    elif qtype == "valid_dates":
        g = optical if (sar is None or (optical is not None and rng.random() < 0.5)) else sar
        if g is None:
            return None
        value = answer_valid_dates(g, _in_range(g, start, end), region)
        slots["sensor"] = SENSOR_NAMES[g.kind]
    if value is None and listed is None:
        return None
    if not _visible(data, start, end):
        return None
    question, reply = PHRASINGS[qtype][phrasing]
    answer: dict[str, Any] = {"quantity": spec.quantity, "units": spec.units}
    if listed is not None:
        reply = reply.format(**slots, dates=_fmt_dates(listed)) if listed else NO_CLEAR_DATE
        answer = {"quantity": "dates", "dates": listed}
    else:
        assert value is not None
        text = _fmt(value, spec.decimals)
        reply = reply.format(**slots, v=text)
        answer |= {"value": value, "text": text}
    question = "<image> " + question.format(**slots)
    top, left = window.row + r0, window.col + c0
    t = grid.transform
    x0, y0 = t @ (left, top)
    x1, y1 = t @ (left + side, top + side)
    return QARecord(
        id="",
        store="",
        type=qtype,
        window={"row": window.row, "col": window.col, "size": size},
        region={"row": top, "col": left, "height": side, "width": side},
        dates=[str(start), str(end)],
        groups=list(data),
        conversation=[{"role": "user", "content": question}, {"role": "assistant", "content": reply}],
        answer=answer,
        bbox=[min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
    )


def _visible(data: dict[str, _GroupWindow], start: np.datetime64, end: np.datetime64) -> bool:
    """Whether the scene shows something: a date of some group in range with >= 90 % valid pixels."""
    for g in data.values():
        for t in _in_range(g, start, end):
            if g.valid[t].mean() >= 0.9:
                return True
    return False


__all__ = [
    "AGB_UNITS",
    "PHRASINGS",
    "QUESTION_TYPES",
    "REGIONS",
    "QARecord",
    "QASummary",
    "QuestionType",
    "check_records",
    "generate_qa",
    "parse_record",
    "qa_windows",
    "read_qa",
]
