"""Acquisition times of raster files: given, from a STAC item beside them, from their tags, from their path.

For each file the first source that answers wins:

1. ``date`` given by the user (``--date``): one scene, every file of it;
2. a STAC item JSON in the file's folder or a folder above it (up to the input root) whose assets
   point at the file: the item's ``datetime`` (or ``start_datetime``);
3. an acquisition-time tag in the file's metadata (GDAL metadata items such as ``ACQUISITION_DATE``,
   ``SENSING_TIME``, ``DATATAKE_1_DATATAKE_SENSING_START``, ``datetime``). ``TIFFTAG_DATETIME`` is
   *not* used: the TIFF specification makes it the file's creation time, not the acquisition's;
4. ``date_pattern`` in the file name;
5. ``date_pattern`` in the names of the folders above the file: a Sentinel product folder first
   (``S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_...SAFE``: the first date of a Sentinel product
   name is its sensing start), else the nearest folder with a date.

Times are UTC, stored to the second.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from spectravlm.errors import IngestError

DEFAULT_DATE_PATTERN = r"(?<!\d)(?P<date>\d{8}T\d{6}|\d{8}|\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2})?)(?!\d)"
"""Finds ``20200115T101031``, ``20200115``, ``2020-01-15`` or ``2020-01-15T10:10:31`` in a name."""

_PRODUCT_NAME = re.compile(r"^S[12][A-D]_")
DATE_FORMATS = ("%Y%m%dT%H%M%S", "%Y%m%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")
ACQUISITION_TAGS = (
    "ACQUISITION_DATETIME",
    "ACQUISITION_DATE",
    "ACQUISITIONDATE",
    "ACQUISITION_TIME",
    "DATE_ACQUIRED",
    "SENSING_TIME",
    "SENSING_DATE",
    "SENSING_START",
    "DATATAKE_1_DATATAKE_SENSING_START",
    "PRODUCT_START_TIME",
    "DATETIME",
    "START_DATETIME",
)
"""Metadata items (upper-cased) that name an acquisition time, in order of preference."""


def iso_time(text: str, where: str) -> np.datetime64:
    """Parse an ISO-8601 time (``Z`` or an offset allowed; converted to UTC) as ``datetime64[s]``."""
    raw = text.strip()
    candidates = [raw, raw.replace(" ", "T"), raw.replace(":", "-", 2).replace(" ", "T")]
    for c in candidates:
        try:
            value = datetime.fromisoformat(c)
        except ValueError:
            continue
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return np.datetime64(value.replace(microsecond=0), "s")
    raise IngestError(f"{where}: time {text!r} is not an ISO 8601 time (e.g. 2020-01-15T10:10:31Z)")


def parse_date(
    name: str, date_pattern: str = DEFAULT_DATE_PATTERN, date_format: str | None = None
) -> np.datetime64:
    """The acquisition time in ``name`` matched by ``date_pattern`` as ``datetime64[s]``.

    The named group ``date``, else the first group, else the whole match is parsed with
    ``date_format`` (``strptime``), or with the common forms in turn.
    """
    found = find_date(name, date_pattern, date_format)
    if found is None:
        raise IngestError(f"{name}: no date matching the pattern {date_pattern!r} in the file name")
    return found


def find_date(
    name: str, date_pattern: str = DEFAULT_DATE_PATTERN, date_format: str | None = None
) -> np.datetime64 | None:
    """Like :func:`parse_date`, ``None`` when nothing matches (a match that does not parse is an error)."""
    match = re.search(date_pattern, name)
    if match is None:
        return None
    if "date" in match.re.groupindex:
        text = match.group("date")
    else:
        text = match.group(1) if match.re.groups else match.group(0)
    for fmt in (date_format,) if date_format else DATE_FORMATS:
        try:
            return np.datetime64(datetime.strptime(text, fmt), "s")
        except ValueError:
            continue
    expected = date_format or " or ".join(DATE_FORMATS)
    raise IngestError(f"{name}: date text {text!r} does not parse as {expected}")


def tag_date(tags: dict[str, str], where: str) -> tuple[np.datetime64, str] | None:
    """The acquisition time among a file's metadata items (module docstring), with the item's name."""
    upper = {k.upper(): v for k, v in tags.items()}
    for key in ACQUISITION_TAGS:
        if key in upper and upper[key].strip():
            return iso_time(upper[key], f"{where} (metadata item {key})"), key
    return None


def folder_date(path: Path, date_pattern: str, date_format: str | None) -> tuple[np.datetime64, str] | None:
    """The time ``date_pattern`` finds in a folder name above ``path``, with the folder's name.

    A Sentinel product folder (``S1A_...``, ``S2B_MSIL2A_...``) wins over the folders below it (a SAFE
    granule folder's date is its datastrip's, seconds after the product's sensing start); otherwise the
    nearest folder with a date.
    """
    for folder in path.parents:
        if _PRODUCT_NAME.match(folder.name):
            found = find_date(folder.name, date_pattern, date_format)
            if found is not None:
                return found, folder.name
    for folder in path.parents:
        found = find_date(folder.name, date_pattern, date_format)
        if found is not None:
            return found, folder.name
    return None
