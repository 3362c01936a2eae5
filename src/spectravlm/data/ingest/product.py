"""Facts about products that an ingest may rely on when the files themselves are silent.

Each fact is a documented property of the product, recorded in the store with where it came from
(``nodata_source``, ``scale_source``, ``offset_source`` group attributes), never a guess:

* **No-data value**: Sentinel-2 L1C/L2A digital numbers use 0 for "no data" (pixels outside the swath
  or the tile footprint; ESA's product specification: ``NODATA`` special value 0); Sentinel-1 GRD
  digital numbers, and calibrated linear power computed from them, use 0 as well (0 is minus infinity in
  dB). These apply only when the files declare no nodata of their own.
* **Scale**: Sentinel-2 L1C/L2A digital numbers are reflectance x 10,000 (``QUANTIFICATION_VALUE`` /
  ``BOA_QUANTIFICATION_VALUE`` = 10000 in every processing baseline): scale factor 1e-4.
* **Offset**: from processing baseline 04.00 (products generated from 2022-01-25 and the reprocessed
  collection) digital numbers carry an offset of -1000 (``RADIO_ADD_OFFSET`` for L1C,
  ``BOA_ADD_OFFSET`` for L2A): reflectance = (DN - 1000) / 10000, i.e. ``add_offset = -0.1``. Older
  baselines have none. Where the offset comes from, in order: an explicit ``add_offset``; the STAC
  item's ``raster:bands`` ``offset``; the product metadata ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``
  found in a folder above the band files; the processing baseline in the product name (``_N0400_``,
  ``_N0510_``: the ``Nxxyy`` token is baseline ``xx.yy``) or given as ``processing_baseline``.
  When none of them says, the ingest stops and asks for one (``--add-offset`` or
  ``--processing-baseline``): the offset shifts every reflectance by 0.1, it is not guessed.

Sentinel-2 L2A scene classification (SCL) classes, for validity masks:

====  ==========================================
0     no data
1     saturated or defective
2     dark area pixels / cast shadows (>= 04.00)
3     cloud shadows
4     vegetation
5     not vegetated
6     water
7     unclassified
8     cloud, medium probability
9     cloud, high probability
10    thin cirrus
11    snow or ice
====  ==========================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from spectravlm.errors import IngestError

SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_or_cast_shadow",
    3: "cloud_shadow",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow_or_ice",
}
DEFAULT_SCL_INVALID: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
"""SCL classes that make a pixel invalid by default (add 11 to mask snow)."""
SCL_SNOW = 11

S2_SCALE = 1e-4
S2_OFFSET_FROM_BASELINE_4 = -0.1
_BASELINE_RE = re.compile(r"_N(\d{2})(\d{2})(?=[_.]|$)")
_S2_SENSORS = ("sentinel2_l1c", "sentinel2_l2a")


@dataclass(frozen=True)
class Fact:
    """A value and where it came from (stored as ``<name>_source``)."""

    value: float | None
    source: str


def default_nodata(sensor: str, dtype: str, units: str) -> Fact | None:
    """The product's no-data value for data the files declare none for, or ``None`` (module docstring)."""
    integer = dtype.startswith(("uint", "int"))
    if sensor in _S2_SENSORS and integer:
        return Fact(0.0, "product default: Sentinel-2 L1C/L2A digital number 0 = no data")
    if sensor == "sentinel1_grd" and units in ("DN", "linear"):
        return Fact(0.0, "product default: Sentinel-1 GRD digital number (and power) 0 = no data")
    return None


def baseline_from_name(path: Path | str) -> tuple[int, int] | None:
    """Processing baseline ``(major, minor)`` from an ``_Nxxyy`` token in the path's components."""
    for part in reversed(Path(path).parts):
        m = _BASELINE_RE.search(part)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def find_s2_metadata(path: Path, stop: Path | None = None) -> Path | None:
    """The ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` in a folder above ``path`` (up to ``stop``), if any."""
    for folder in [path.parent, *path.parent.parents]:
        for name in ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml"):
            if (folder / name).is_file():
                return folder / name
        if stop is not None and folder == stop:
            break
    return None


def s2_metadata_offset(mtd: Path) -> tuple[Fact, Fact]:
    """Scale and offset (in reflectance) from a Sentinel-2 product metadata file.

    Returns:
        ``(scale, offset)`` facts; the offset is 0 when the file lists no ``*_ADD_OFFSET`` (baselines
        before 04.00).

    Raises:
        IngestError: an unreadable file, no quantification value, or band offsets that differ.

    """
    try:
        root = ElementTree.parse(mtd).getroot()
    except (ElementTree.ParseError, OSError) as err:
        raise IngestError(f"{mtd}: not a readable Sentinel-2 metadata file: {err}") from err
    quant: float | None = None
    offsets: set[float] = set()
    for el in root.iter():
        tag = _local(el.tag)
        if tag in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE") and el.text:
            quant = float(el.text)
        elif tag in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET") and el.text:
            offsets.add(float(el.text))
    if quant is None or quant <= 0:
        raise IngestError(f"{mtd}: no QUANTIFICATION_VALUE / BOA_QUANTIFICATION_VALUE")
    if len(offsets) > 1:
        raise IngestError(
            f"{mtd}: bands carry different offsets {sorted(offsets)}; a sensor group has one offset "
            "(ingest the bands into separate groups)"
        )
    dn_offset = offsets.pop() if offsets else 0.0
    where = f"{mtd.name} ({mtd.parent.name})"
    scale = Fact(1.0 / quant, f"{where}: quantification value {quant:g}")
    offset = Fact(
        dn_offset / quant,
        f"{where}: add offset {dn_offset:g} DN" if dn_offset else f"{where}: no add offset listed",
    )
    return scale, offset


def s2_reflectance_scaling(
    sensor: str,
    dtype: str,
    units: str,
    files: list[Path],
    scale_factor: float | None,
    add_offset: float | None,
    processing_baseline: str | None = None,
    metadata_stop: Path | None = None,
    stac: tuple[Fact | None, Fact | None] = (None, None),
) -> tuple[Fact, Fact]:
    """Scale and offset of a group, with their sources (module docstring for the order).

    Args:
        sensor: catalogue sensor name.
        dtype: raw dtype of the files.
        units: canonical units of the group.
        files: the band files (their folders are searched for product metadata; their names for the
            baseline).
        scale_factor: explicit scale (wins).
        add_offset: explicit offset (wins).
        processing_baseline: explicit baseline (``"04.00"``), when no metadata says.
        metadata_stop: do not search for product metadata above this folder.
        stac: scale and offset from a STAC item's ``raster:bands``, when known.

    Raises:
        IngestError: Sentinel-2 integer reflectance whose offset nothing tells.

    """
    explicit_scale = None if scale_factor is None else Fact(scale_factor, "given (--scale-factor)")
    explicit_offset = None if add_offset is None else Fact(add_offset, "given (--add-offset)")
    if not (sensor in _S2_SENSORS and dtype.startswith(("uint", "int")) and units == "reflectance"):
        return (
            explicit_scale or stac[0] or Fact(1.0, "none (values are physical as stored)"),
            explicit_offset or stac[1] or Fact(0.0, "none (values are physical as stored)"),
        )
    scale, offset = explicit_scale or stac[0], explicit_offset or stac[1]
    if scale is None or offset is None:
        mtd = find_s2_metadata(files[0], metadata_stop) if files else None
        if mtd is not None:
            m_scale, m_offset = s2_metadata_offset(mtd)
            scale, offset = scale or m_scale, offset or m_offset
    if offset is None:
        baseline: tuple[int, int] | None = None
        source = ""
        if processing_baseline is not None:
            try:
                major, minor = (int(x) for x in processing_baseline.split("."))
            except ValueError:
                raise IngestError(
                    f"--processing-baseline {processing_baseline!r}: expected a baseline such as 04.00"
                ) from None
            baseline, source = (major, minor), f"given (--processing-baseline {processing_baseline})"
        elif files and (found := baseline_from_name(files[0])) is not None:
            baseline, source = found, f"processing baseline N{found[0]:02d}{found[1]:02d} in the product name"
        if baseline is not None:
            value = S2_OFFSET_FROM_BASELINE_4 if baseline >= (4, 0) else 0.0
            offset = Fact(value, f"{source}: {'-1000 DN (>= 04.00)' if value else 'none (< 04.00)'}")
    if offset is None:
        raise IngestError(
            f"{sensor} digital numbers: the reflectance offset is unknown (processing baseline >= 04.00 "
            "subtracts 1000 DN, older ones nothing) and no STAC raster:bands, MTD_MSIL*.xml or _Nxxyy "
            "product name says which; pass --add-offset -0.1 (baseline >= 04.00) or --add-offset 0, "
            "or --processing-baseline"
        )
    if scale is None:
        scale = Fact(S2_SCALE, "product default: Sentinel-2 digital numbers are reflectance x 10000")
    return scale, offset
